"""CoreDNS's HTTP side: ``health`` (``:8080/health``), ``ready`` (``:8181/ready``) and
``prometheus`` (``:9153/metrics``), each on its own port of the DNS server's address; a port of
0 turns that listener off.

``/health`` answers 200 ``OK`` while the process serves. ``/ready`` answers 200 ``OK`` once the
informers have synced (the ``kubernetes`` plugin is ready), else 503 with the names of the plugins
not ready yet, as CoreDNS's ``ready`` plugin does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web


async def start(host: str, *, health_port: int, ready_port: int, metrics_port: int,
                ready: Callable[[], bool], metrics) -> list[web.AppRunner]:
    """Start the enabled listeners; the runners (``await runner.cleanup()`` stops one)."""
    runners = []

    async def health(_req: web.Request) -> web.Response:
        t0 = time.perf_counter()
        resp = web.Response(text="OK")
        if metrics is not None:
            metrics.health_duration.observe(time.perf_counter() - t0)
        return resp

    async def readiness(_req: web.Request) -> web.Response:
        if ready():
            return web.Response(text="OK")
        return web.Response(status=503, text="kubernetes")

    async def exposition(_req: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    for port, path, handler in ((health_port, "/health", health), (ready_port, "/ready", readiness),
                                (metrics_port, "/metrics", exposition if metrics is not None else None)):
        if not port or handler is None:
            continue
        app = web.Application()
        app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            for r in runners:
                await r.cleanup()
            raise
        runners.append(runner)
    return runners
