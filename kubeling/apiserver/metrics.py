"""Prometheus metrics with upstream's names, on a registry of the server's own (so that
several servers in one process, as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20,
            30, 45, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("apiserver_request", "Counter of apiserver requests broken out for each verb, "
                                "resource and HTTP response code.", ["verb", "resource", "code"],
                                registry=self.registry)
        self.latency = Histogram("apiserver_request_duration_seconds", "Response latency distribution in seconds "
                                 "for each verb and resource.", ["verb", "resource"], buckets=_BUCKETS,
                                 registry=self.registry)
        self.watch_count = Gauge("apiserver_longrunning_requests", "Gauge of all active long-running apiserver "
                                 "requests.", ["verb"], registry=self.registry)

    def observe(self, verb: str, resource: str, code: int, seconds: float) -> None:
        self.requests.labels(verb, resource, str(code)).inc()
        if verb != "WATCH":
            self.latency.labels(verb, resource).observe(seconds)

    def watchers(self, delta: int) -> None:
        self.watch_count.labels("WATCH").inc(delta)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
