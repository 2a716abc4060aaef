"""kube-proxy's health checks (upstream ``pkg/proxy/healthcheck``).

- `ProxierHealth`: ``/healthz`` and ``/livez`` on ``--healthz-bind-address`` (0.0.0.0:10256).
  Healthy unless an update was queued more than ``timeout`` (2 x ``--sync-period``) ago and no
  sync has succeeded since; ``/healthz`` also answers 503 while this node is being deleted
  (``nodeEligible`` false), as upstream, so load balancers stop sending here. The body is
  upstream's JSON: ``{"lastUpdated": ..., "currentTime": ..., "nodeEligible": ...}``.
- `ServiceHealthServer`: for every LoadBalancer Service with ``externalTrafficPolicy: Local``,
  an HTTP server on its ``healthCheckNodePort`` answering 200 when this node has a local
  endpoint for it and 503 otherwise, with upstream's body
  ``{"service": {"namespace", "name"}, "localEndpoints": n, "serviceProxyHealthy": bool}``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

from aiohttp import web

log = logging.getLogger(__name__)


def _rfc3339(t: float) -> str:
    if t <= 0:
        return ""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ProxierHealth:
    def __init__(self, timeout: float, metrics=None) -> None:
        self.timeout = timeout
        self.metrics = metrics
        self.last_updated = 0.0
        self.oldest_pending_queued: float | None = None
        self.node_eligible = True

    def queued(self) -> None:
        if self.oldest_pending_queued is None:
            self.oldest_pending_queued = time.time()

    def updated(self) -> None:
        self.last_updated = time.time()
        self.oldest_pending_queued = None

    def healthy(self) -> bool:
        if self.oldest_pending_queued is None:
            return True
        return time.time() - self.oldest_pending_queued < self.timeout

    def _body(self) -> str:
        return json.dumps({"lastUpdated": _rfc3339(self.last_updated), "currentTime": _rfc3339(time.time()),
                           "nodeEligible": self.node_eligible})

    async def healthz(self, request: web.Request) -> web.Response:
        code = 200 if self.healthy() and self.node_eligible else 503
        if self.metrics is not None:
            self.metrics.healthz.labels(str(code)).inc()
        return web.Response(status=code, text=self._body(), content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def livez(self, request: web.Request) -> web.Response:
        code = 200 if self.healthy() else 503
        if self.metrics is not None:
            self.metrics.livez.labels(str(code)).inc()
        return web.Response(status=code, text=self._body(), content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff"})

    def routes(self) -> list:
        return [web.get("/healthz", self.healthz), web.get("/livez", self.livez)]


class ServiceHealthServer:
    """One listener per health check node port; `sync` opens and closes them."""

    def __init__(self, bind: str = "0.0.0.0") -> None:
        self.bind = bind
        self._servers: dict[int, tuple[str, web.AppRunner]] = {}    # port -> (service, runner)
        self._local: dict[str, int] = {}                              # service -> local endpoints

    async def sync(self, wanted: dict[str, int], local_endpoints: dict[str, int]) -> None:
        """``wanted``: service ("ns/name") -> health check node port; ``local_endpoints``: service
        -> how many ready endpoints it has on this node."""
        self._local = dict(local_endpoints)
        by_port = {port: svc for svc, port in wanted.items() if port}
        for port in list(self._servers):
            if by_port.get(port) != self._servers[port][0]:
                _, runner = self._servers.pop(port)
                await runner.cleanup()
        for port, svc in by_port.items():
            if port in self._servers:
                continue
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handler(svc))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.bind, port, reuse_address=True).start()
            except OSError as e:
                log.error("health check node port %d for %s: %s", port, svc, e)
                await runner.cleanup()
                continue
            self._servers[port] = (svc, runner)

    def _handler(self, svc: str):
        ns, _, name = svc.partition("/")

        async def handle(request: web.Request) -> web.Response:
            n = self._local.get(svc, 0)
            body = {"service": {"namespace": ns, "name": name}, "localEndpoints": n, "serviceProxyHealthy": True}
            return web.Response(status=200 if n else 503, text=json.dumps(body), content_type="application/json",
                                headers={"X-Content-Type-Options": "nosniff", "X-Load-Balancing-Endpoint-Weight": str(n)})
        return handle

    @property
    def ports(self) -> list[int]:
        return sorted(self._servers)

    async def close(self) -> None:
        for _, runner in self._servers.values():
            await runner.cleanup()
        self._servers.clear()
