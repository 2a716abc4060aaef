"""The controller's Prometheus metrics and health endpoint, with ingress-nginx's names.

Served on ``--healthz-port`` (10254, ingress-nginx's) of the nginx bind address: ``/metrics``
and ``/healthz`` (200 while nginx runs with the current configuration, 500 otherwise). A port
that is taken is logged and left; the controller goes on without it.

Series (every one carries ``controller_class``, ``controller_namespace``, ``controller_pod``):

- ``nginx_ingress_controller_config_hash`` — a hash of the running nginx.conf;
- ``nginx_ingress_controller_config_last_reload_successful`` (1/0) and
  ``nginx_ingress_controller_config_last_reload_successful_timestamp_seconds``;
- ``nginx_ingress_controller_success`` / ``nginx_ingress_controller_errors`` — counters of
  reloads applied and refused (upstream's names carry no ``_total``);
- ``nginx_ingress_controller_ssl_expire_time_seconds{host,namespace,secret_name}`` — when each
  served certificate expires.
"""

from __future__ import annotations

import hashlib
import logging
import time

from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


class IngressMetrics:
    def __init__(self, controller_class: str, pod: str, namespace: str = "kube-system") -> None:
        self.labels = {"controller_class": controller_class, "controller_namespace": namespace,
                       "controller_pod": pod}
        self.config_hash = 0
        self.last_ok = True
        self.last_ok_time = 0.0
        self.reloads = 0
        self.errors = 0
        self.expiry: dict[tuple[str, str, str], float] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- what the controller tells ---------------------------------------------------------

    def reloaded(self, text: str) -> None:
        self.config_hash = int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)
        self.last_ok, self.last_ok_time = True, time.time()
        self.reloads += 1

    def refused(self) -> None:
        self.last_ok = False
        self.errors += 1

    def certificates(self, servers) -> None:
        expiry = {}
        for srv in servers:
            if srv.ssl is None:
                continue
            try:
                cert = x509.load_pem_x509_certificates(srv.ssl.pem)[0]
                ns, _, name = srv.ssl.secret.partition("/")
                expiry[(srv.hostname, ns, name)] = cert.not_valid_after_utc.timestamp()
            except ValueError:
                continue
        self.expiry = expiry

    # -- exposition --------------------------------------------------------------------------

    def text(self) -> bytes:
        """The exposition: the collector's families, then the two counters written by hand —
        prometheus_client would rename them ``*_total``, upstream's names have no suffix."""
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        extra = []
        for name, doc, value in (("nginx_ingress_controller_success",
                                  "Cumulative number of Ingress controller reload operations", self.reloads),
                                 ("nginx_ingress_controller_errors",
                                  "Cumulative number of Ingress controller errors during reload operations",
                                  self.errors)):
            extra += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name}{{{labels}}} {float(value)}"]
        return generate_latest(self.registry) + ("\n".join(extra) + "\n").encode()

    def collect(self):
        names, values = list(self.labels), list(self.labels.values())

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        yield gauge("nginx_ingress_controller_config_hash", "Running configuration hash actually running",
                    self.config_hash)
        yield gauge("nginx_ingress_controller_config_last_reload_successful",
                    "Whether the last configuration reload attempt was successful", 1 if self.last_ok else 0)
        yield gauge("nginx_ingress_controller_config_last_reload_successful_timestamp_seconds",
                    "Timestamp of the last successful configuration reload.", self.last_ok_time)
        ssl = GaugeMetricFamily("nginx_ingress_controller_ssl_expire_time_seconds",
                                "Number of seconds since 1970 to the SSL Certificate expire.",
                                labels=names + ["host", "namespace", "secret_name"])
        for (host, ns, name), when in sorted(self.expiry.items()):
            ssl.add_metric(values + [host, ns, name], when)
        yield ssl


async def serve(host: str, port: int, metrics: IngressMetrics, healthy) -> web.AppRunner | None:
    """``/metrics`` and ``/healthz`` on host:port; None (logged) if the port cannot be had."""
    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.text(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 500, text="ok" if ok else "nginx is not serving")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        log.error("cannot serve metrics and /healthz on %s:%d: %s; going on without them", host, port, e)
        await runner.cleanup()
        return None
    return runner
