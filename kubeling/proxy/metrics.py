"""kube-proxy's metrics, under upstream's names (``pkg/proxy/metrics/metrics.go``, subsystem
``kubeproxy``), served at ``/metrics`` on ``--metrics-bind-address`` (127.0.0.1:10249).

`ProxyMetrics` holds them in a registry of its own, so that a process (or a test) can hold
several without clashing in prometheus_client's global one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "kubeproxy_"


def _linear(start: float, width: float, count: int) -> list[float]:
    return [start + width * i for i in range(count)]


def _exponential(start: float, factor: float, count: int) -> list[float]:
    return [start * factor ** i for i in range(count)]


SYNC_BUCKETS = _exponential(0.001, 2, 15)
NETWORK_PROGRAMMING_BUCKETS = sorted(set(_linear(0.25, 0.25, 2) + _linear(1, 1, 59) + _linear(60, 5, 12)
                                         + _linear(120, 30, 7)))


class ProxyMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sync_duration = Histogram(PREFIX + "sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds", buckets=SYNC_BUCKETS, registry=r)
        self.sync_full_duration = Histogram(PREFIX + "sync_full_proxy_rules_duration_seconds",
                                            "SyncProxyRules latency in seconds for full resyncs",
                                            buckets=SYNC_BUCKETS, registry=r)
        self.sync_partial_duration = Histogram(PREFIX + "sync_partial_proxy_rules_duration_seconds",
                                               "SyncProxyRules latency in seconds for partial resyncs",
                                               buckets=SYNC_BUCKETS, registry=r)
        self.network_programming = Histogram(PREFIX + "network_programming_duration_seconds",
                                             "In Cluster Network Programming Latency in seconds",
                                             buckets=NETWORK_PROGRAMMING_BUCKETS, registry=r)
        self.last_timestamp = Gauge(PREFIX + "sync_proxy_rules_last_timestamp_seconds",
                                    "The last time proxy rules were successfully synced", registry=r)
        self.last_queued_timestamp = Gauge(PREFIX + "sync_proxy_rules_last_queued_timestamp_seconds",
                                           "The last time a sync of proxy rules was queued", registry=r)
        self.endpoint_changes_pending = Gauge(PREFIX + "sync_proxy_rules_endpoint_changes_pending",
                                              "Pending proxy rules Endpoint changes", registry=r)
        self.endpoint_changes_total = Counter(PREFIX + "sync_proxy_rules_endpoint_changes",
                                              "Cumulative proxy rules Endpoint changes", registry=r)
        self.service_changes_pending = Gauge(PREFIX + "sync_proxy_rules_service_changes_pending",
                                             "Pending proxy rules Service changes", registry=r)
        self.service_changes_total = Counter(PREFIX + "sync_proxy_rules_service_changes",
                                             "Cumulative proxy rules Service changes", registry=r)
        self.iptables_restore_failures = Counter(PREFIX + "sync_proxy_rules_iptables_restore_failures",
                                                 "Cumulative proxy iptables restore failures", registry=r)
        self.iptables_partial_restore_failures = Counter(
            PREFIX + "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures", registry=r)
        self.iptables_total = Gauge(PREFIX + "sync_proxy_rules_iptables_total",
                                    "Total number of iptables rules owned by kube-proxy", ["table"], registry=r)
        self.iptables_last = Gauge(PREFIX + "sync_proxy_rules_iptables_last",
                                   "Number of iptables rules written by kube-proxy in last sync", ["table"], registry=r)
        self.no_local_endpoints = Gauge(PREFIX + "sync_proxy_rules_no_local_endpoints_total",
                                        "Number of services with a Local traffic policy and no endpoints",
                                        ["traffic_policy"], registry=r)
        self.healthz = Counter(PREFIX + "proxy_healthz", "Cumulative proxy healthz HTTP status", ["code"], registry=r)
        self.livez = Counter(PREFIX + "proxy_livez", "Cumulative proxy livez HTTP status", ["code"], registry=r)
        self.conntrack_deleted = Counter(PREFIX + "sync_proxy_rules_conntrack_deleted_entries",
                                         "Stale UDP conntrack entries deleted after syncs", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
