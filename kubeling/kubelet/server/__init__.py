"""The agent's HTTPS endpoint (upstream ``pkg/kubelet/server``): what the API server proxies
``pods/log``, ``exec``, ``attach``, ``portforward`` and ``nodes/proxy`` to.

Routes, as upstream's kubelet serves them::

    GET  /containerLogs/{ns}/{pod}/{container}   CRI logs (follow, previous, tailLines, ...)  handlers
    *    /exec/{ns}/{pod}/{container}            exec: WebSocket or SPDY upgrade               streams
    *    /attach/{ns}/{pod}/{container}          attach: WebSocket or SPDY upgrade             streams
    *    /portForward/{ns}/{pod}                 port-forward: WebSocket, tunnel or SPDY       streams
    GET  /stats/summary                          the Summary API (host.stats_summary)          handlers
    GET  /metrics/resource                       Prometheus text (host.metrics_resource)       handlers
    GET  /pods                                   a PodList of the pods on this node            handlers
    GET  /healthz                                "ok"                                          handlers

Every request is authenticated by client certificate and authorized (`auth`). The server knows
nothing of pods itself: it asks its `AgentHost` (the agent) and the host's runtime.

Lifecycle: ``await server.start()`` listens (``server.port`` is the bound port, useful with
``port=0``); ``await server.close()`` stops listening and ends open streams. ``run(stop)`` does
both around ``stop.wait()``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from aiohttp import web

from kubeling.kubelet.runtime import RuntimeService
from kubeling.kubelet.server import auth


class AgentHost(Protocol):
    """What the server needs from the agent."""

    node_name: str
    runtime: RuntimeService

    def find_pod(self, namespace: str, name: str) -> dict | None:
        """The pod bound to this node, with the status the agent last computed; None if unknown."""

    def container_id(self, pod: dict, container_name: str) -> str | None:
        """The runtime id of the container's current instance (None if it has none)."""

    def sandbox_id(self, pod: dict) -> str | None:
        """The runtime id of the pod's ready sandbox (None if it has none)."""

    def log_dir(self, pod: dict) -> Path:
        """``<root>/logs/pods/<ns>_<name>_<uid>``: ``<container>/<restartCount>.log`` in CRI format."""

    async def stats_summary(self) -> dict: ...

    async def metrics_resource(self) -> str: ...

    def running_pods(self) -> list[dict]: ...


class AgentServer:
    def __init__(self, host: AgentHost, *, bind: str = "0.0.0.0", port: int = 10250, cert: Path, key: Path,
                 client_ca: Path, addresses: list[str] | None = None) -> None:
        """``cert``/``key``: the serving certificate, made self-signed there if missing.
        ``client_ca``: the CA whose client certificates are accepted (the cluster CA)."""
        self.host = host
        self.bind = bind
        self.port = port
        self.cert, self.key, self.client_ca = Path(cert), Path(key), Path(client_ca)
        self.addresses = addresses or []
        self._runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        from kubeling.kubelet.server import handlers, streams

        app = web.Application(middlewares=[auth.middleware])
        app[handlers.HOST] = self.host
        handlers.add_routes(app)
        streams.add_routes(app)
        return app

    async def start(self) -> None:
        auth.ensure_self_signed(self.cert, self.key, self.host.node_name, [self.bind, *self.addresses])
        ctx = auth.server_ssl_context(self.cert, self.key, self.client_ca)
        self._runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port, ssl_context=ctx)
        await site.start()
        if self._runner.addresses:
            self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await asyncio.shield(self.close())
