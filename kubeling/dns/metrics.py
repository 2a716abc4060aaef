"""`Metrics`: the DNS server's Prometheus metrics, with CoreDNS's names and labels.

Served on ``:9153/metrics`` (`kubeling.dns.health`). CoreDNS's series this server has:

- ``coredns_dns_requests_total{server,zone,view,proto,family,type}``
- ``coredns_dns_responses_total{server,zone,view,rcode,plugin}``
- ``coredns_dns_request_duration_seconds{server,zone,view,type}`` (histogram)
- ``coredns_dns_request_size_bytes`` / ``coredns_dns_response_size_bytes{server,zone,view,proto}``
- ``coredns_cache_hits_total{server,type,zone,view}``, ``coredns_cache_misses_total{server,zone,view}``,
  ``coredns_cache_entries{server,type,zone,view}``
- ``coredns_forward_requests_total{to}``, ``coredns_forward_responses_total{to,rcode}``,
  ``coredns_forward_request_duration_seconds{to,rcode}``
- ``coredns_kubernetes_dns_programming_duration_seconds{service_kind}``
- ``coredns_build_info{version,revision,goversion}``, ``coredns_panics_total``,
  ``coredns_plugin_enabled{server,zone,view,name}``, ``coredns_health_request_duration_seconds``

``server`` is ``dns://<address>:<port>``, ``zone`` the server block's (``.``), ``view`` empty, as a
default CoreDNS reports them. Label children are cached: a query costs a few dict lookups.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000)
DURATION_BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))
KNOWN_TYPES = {"A", "AAAA", "NS", "PTR", "SOA", "CNAME", "MX", "TXT", "SRV", "ANY", "NAPTR", "DS", "DNSKEY",
               "HTTPS", "SVCB", "CAA", "IXFR", "AXFR"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class Metrics:
    """Every DNS metric of one server, in its own registry (see the module docstring)."""

    def __init__(self, server: str, zone: str = ".") -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.server, self.zone = server, zone
        base = ("server", "zone", "view")
        # the per-query series are plain dicts, turned into metric families at scrape time
        # (`_Collector`): prometheus_client's locked children cost ~40 µs a query
        self._req: dict[tuple, int] = {}
        self._resp: dict[tuple, int] = {}
        self._dur: dict[str, _Hist] = {}
        self._rsize: dict[str, _Hist] = {}
        self._wsize: dict[str, _Hist] = {}
        self._hits: dict[str, int] = {}
        self._misses = 0
        r.register(_Collector(self))
        self.cache_entries = Gauge("coredns_cache_entries", "The number of elements in the cache.",
                                   ["server", "type", "zone", "view"], registry=r)
        self.forward_requests = Counter("coredns_forward_requests_total", "Counter of requests made per upstream.",
                                        ["to"], registry=r)
        self.forward_responses = Counter("coredns_forward_responses_total", "Counter of responses received per "
                                         "upstream.", ["to", "rcode"], registry=r)
        self.forward_duration = Histogram("coredns_forward_request_duration_seconds", "Histogram of the time each "
                                          "request took.", ["to", "rcode"], buckets=DURATION_BUCKETS, registry=r)
        self.programming_duration = Histogram(
            "coredns_kubernetes_dns_programming_duration_seconds", "Histogram of the time (in seconds) it took to "
            "program a dns instance.", ["service_kind"],
            buckets=tuple(0.001 * 2 ** i for i in range(20)), registry=r)
        self.health_duration = Histogram("coredns_health_request_duration_seconds", "Histogram of the time (in "
                                         "seconds) each request took.", buckets=DURATION_BUCKETS, registry=r)
        self.panics = Counter("coredns_panics_total", "A metrics that counts the number of panics.", registry=r)
        info = Gauge("coredns_build_info", "A metric with a constant '1' value labeled by version, revision, and "
                     "goversion from which CoreDNS was built.", ["version", "revision", "goversion"], registry=r)
        info.labels(_version(), "kubeling", "python").set(1)
        enabled = Gauge("coredns_plugin_enabled", "A metric that indicates whether a plugin is enabled on per "
                        "server and zone basis.", [*base, "name"], registry=r)
        for name in ("kubernetes", "forward", "cache", "health", "ready", "prometheus", "errors"):
            enabled.labels(server, zone, "", name).set(1)
        self._entries = self.cache_entries.labels(server, "success", zone, "")
        self.cache_entries.labels(server, "denial", zone, "").set(0)

    def observe(self, proto: str, family: str, qtype: str, rcode: int, plugin: str, seconds: float,
                request_size: int, response_size: int) -> None:
        """One answered query."""
        if qtype not in KNOWN_TYPES:
            qtype = "other"
        key = (proto, family, qtype)
        self._req[key] = self._req.get(key, 0) + 1
        key2 = (rcode, plugin)
        self._resp[key2] = self._resp.get(key2, 0) + 1
        h = self._dur.get(qtype)
        if h is None:
            h = self._dur[qtype] = _Hist(DURATION_BUCKETS)
        h.observe(seconds)
        h = self._rsize.get(proto)
        if h is None:
            h = self._rsize[proto] = _Hist(SIZE_BUCKETS)
        h.observe(request_size)
        h = self._wsize.get(proto)
        if h is None:
            h = self._wsize[proto] = _Hist(SIZE_BUCKETS)
        h.observe(response_size)

    def cache_hit(self, kind: str) -> None:
        self._hits[kind] = self._hits.get(kind, 0) + 1

    def cache_miss(self) -> None:
        self._misses += 1

    def cache_size(self, n: int) -> None:
        self._entries.set(n)

    def forwarded(self, to: str, rcode: int | None, seconds: float) -> None:
        self.forward_requests.labels(to).inc()
        if rcode is not None:
            name = RCODES.get(rcode, str(rcode))
            self.forward_responses.labels(to, name).inc()
            self.forward_duration.labels(to, name).observe(seconds)

    def programming(self, kind: str, seconds: float) -> None:
        self.programming_duration.labels(kind).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kubeling")
    except PackageNotFoundError:
        return "0.0.0"


class _Hist:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, n in zip(self.bounds, self.counts):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


class _Collector:
    """The per-query series of a `Metrics`, as CoreDNS names them."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self):
        return []

    def collect(self):
        m = self.m
        base = [m.server, m.zone, ""]
        c = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
                                labels=["server", "zone", "view", "proto", "family", "type"])
        for (proto, family, qtype), n in sorted(m._req.items()):
            c.add_metric([*base, proto, family, qtype], n)
        yield c
        c = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                labels=["server", "zone", "view", "rcode", "plugin"])
        for (rcode, plugin), n in sorted(m._resp.items()):
            c.add_metric([*base, RCODES.get(rcode, str(rcode)), plugin], n)
        yield c
        for name, doc, table, label in (
                ("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took per "
                 "zone.", m._dur, "type"),
                ("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and "
                 "protocol.", m._rsize, "proto"),
                ("coredns_dns_response_size_bytes", "Size of the returned response in bytes.", m._wsize, "proto")):
            h = HistogramMetricFamily(name, doc, labels=["server", "zone", "view", label])
            for key in sorted(table):
                h.add_metric([*base, key], table[key].buckets(), table[key].sum)
            yield h
        c = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.",
                                labels=["server", "type", "zone", "view"])
        for kind, n in sorted(m._hits.items()):
            c.add_metric([m.server, kind, m.zone, ""], n)
        yield c
        c = CounterMetricFamily("coredns_cache_misses", "The count of cache misses. Deprecated, derive misses from "
                                "cache hits/requests counters.", labels=["server", "zone", "view"])
        c.add_metric(base, m._misses)
        yield c
