"""`Kubernetes`: the cluster zone's records, as CoreDNS's ``kubernetes`` plugin serves them.

Fed by informers (`Kubernetes.attach`) for Services, EndpointSlices, Namespaces and, with
``pods verified``, Pods; every event updates in-memory indexes and bumps `generation` (the
server's answer cache keys on it). Answering (`lookup`) reads only these indexes: it never
calls the API.

Records (kubernetes/dns docs/specification.md; ``<zone>`` is ``--cluster-domain``):

- ``<svc>.<ns>.svc.<zone>``: A/AAAA to the ClusterIP(s); a headless Service answers one A/AAAA
  per *ready* endpoint address (NXDOMAIN when it has none, as the spec says); an ExternalName
  Service answers a CNAME to ``spec.externalName`` (the server then chases the target).
- ``<hostname>.<svc>.<ns>.svc.<zone>``: an endpoint by its ``hostname`` (a StatefulSet's
  ``web-0.nginx``) or, without one, by its dashed address (``10-42-1-5``), as CoreDNS does.
- ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV for named ports: the Service's port and name
  for a ClusterIP Service; one record per ready endpoint (the endpoint's port) when headless.
  ``<svc>.<ns>.svc.<zone> SRV`` answers every named port, as CoreDNS does. Targets' A/AAAA go
  in the additional section.
- PTR for ClusterIPs and endpoint addresses (reverse names the index does not know are not
  ours: CoreDNS's ``fallthrough in-addr.arpa ip6.arpa`` forwards them).
- ``a-b-c-d.<ns>.pod.<zone>`` (``pods insecure``, k3s's default: any well-formed address in an
  existing namespace; ``verified``: only an address a Pod of that namespace has; ``disabled``).
- ``dns-version.<zone>`` TXT (schema 1.1.0, as CoreDNS reports), the zone's SOA and NS, and
  ``ns.dns.<zone>`` A to the cluster DNS IP.

Readiness is the EndpointSlice ``ready`` condition (nil means ready): the endpointslice
controller already sets it for not-ready pods of a ``publishNotReadyAddresses`` Service, and a
terminating endpoint is not ready. An existing name without records of the asked type answers
NOERROR with no data; a name that does not exist NXDOMAIN; both carry the zone's SOA in the
authority section, its TTL and minimum the configured TTL (``--ttl``, default 5 s). Names are
compared case-insensitively; answers echo the question's spelling.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE

from kubeling.client.store import object_of
from kubeling.dns import wire

log = logging.getLogger(__name__)

DNS_SCHEMA_VERSION = "1.1.0"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
POD_MODES = ("disabled", "insecure", "verified")


@dataclass
class ServiceRecord:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: list[str] = field(default_factory=list)
    external_name: str = ""
    ports: list[tuple[str, str, int]] = field(default_factory=list)   # (name, protocol, port)
    selector: bool = False

    @property
    def headless(self) -> bool:
        return self.type != "ExternalName" and not self.cluster_ips


@dataclass
class EndpointRecord:
    addresses: tuple[str, ...]
    hostname: str
    ready: bool


@dataclass
class SliceRecord:
    service: str
    endpoints: list[EndpointRecord]
    ports: list[tuple[str, str, int]]


@dataclass
class Answer:
    """What `Kubernetes.lookup` found: the rcode and the sections, plus ``chase`` (a CNAME target
    outside the zone that the server resolves for A/AAAA questions)."""

    rcode: int = RCODE.NOERROR
    answer: list = field(default_factory=list)
    authority: list = field(default_factory=list)
    additional: list = field(default_factory=list)
    chase: str = ""


def dashed(ip: str) -> str:
    """An address as one DNS label: ``10.42.1.5`` → ``10-42-1-5``, ``fd00::1`` → ``fd00--1``."""
    return ip.replace(".", "-").replace(":", "-")


def _undash(label: str) -> str | None:
    """The address a pod label names (``10-42-1-5``, ``fd00--1``), or None."""
    if label.count("-") == 3:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _canonical(ip: str) -> str:
    """An address as `reverse_to_ip` writes it (``fd00:0::1`` → ``fd00::1``)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def reverse_to_ip(name: str) -> str | None:
    """``5.1.42.10.in-addr.arpa`` → ``10.42.1.5``; a full ``ip6.arpa`` nibble name → the IPv6."""
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4:
            return None
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return None
    if name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        hexa = "".join(reversed(nibbles))
        try:
            return str(ipaddress.IPv6Address(int(hexa, 16)))
        except ValueError:
            return None
    return None


class Kubernetes:
    """The cluster zone (see the module docstring)."""

    def __init__(self, zone: str = "cluster.local", *, ttl: int = 5, pods: str = "insecure",
                 dns_ip: str = "", metrics: Any = None) -> None:
        if pods not in POD_MODES:
            raise ValueError(f"pods: {pods!r} is not one of {', '.join(POD_MODES)}")
        self.zone = zone.strip(".").lower()
        self.ttl = ttl
        self.pods = pods
        self.dns_ip = dns_ip
        self.metrics = metrics
        self.namespaces: set[str] = set()
        self.services: dict[tuple[str, str], ServiceRecord] = {}
        self.slices: dict[tuple[str, str], SliceRecord] = {}
        self._slices_of: dict[tuple[str, str], set[str]] = {}         # (ns, service) → slice names
        self._pod_ips: dict[str, dict[str, int]] = {}                # ns → ip → count (verified)
        self._pod_keys: dict[tuple[str, str], tuple[str, ...]] = {}  # (ns, pod) → its IPs
        self._ptr: dict[str, str] | None = None
        self._ready: dict[tuple[str, str], list] = {}     # ready_endpoints, until the next change
        self._soa: wire.Rec | None = None
        self.generation = 0
        self.serial = int(time.time())
        self._informers: list = []

    # -- feeding ------------------------------------------------------------------------------

    def attach(self, factory) -> list:
        """Register handlers on the factory's informers; the informers (to wait for sync)."""
        specs = [(("", "v1", "services"), self._on_service), (("discovery.k8s.io", "v1", "endpointslices"),
                 self._on_slice), (("", "v1", "namespaces"), self._on_namespace)]
        if self.pods == "verified":
            specs.append((("", "v1", "pods"), self._on_pod))
        out = []
        for gvr, handler in specs:
            inf = factory.informer_for(*gvr)
            inf.add_handler(on_add=lambda o, h=handler: h(o, False),
                            on_update=lambda old, new, h=handler: h(new, False),
                            on_delete=lambda o, h=handler: h(object_of(o), True))
            out.append(inf)
        self._informers = out
        return out

    def synced(self) -> bool:
        return bool(self._informers) and all(i.has_synced() for i in self._informers)

    def _changed(self) -> None:
        self.generation += 1
        self.serial = max(self.serial + 1, int(time.time()))
        self._ptr = None
        self._ready.clear()
        self._soa = None

    def _on_namespace(self, obj: dict, deleted: bool) -> None:
        name = obj["metadata"]["name"]
        if deleted:
            self.namespaces.discard(name)
        else:
            self.namespaces.add(name)
        self._changed()

    def _on_service(self, obj: dict, deleted: bool) -> None:
        try:
            meta, spec = obj["metadata"], obj.get("spec") or {}
            key = (meta["namespace"], meta["name"])
            if deleted:
                self.services.pop(key, None)
            else:
                ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
                self.services[key] = ServiceRecord(
                    key[0], key[1], spec.get("type") or "ClusterIP", ips if spec.get("type") != "ExternalName" else [],
                    (spec.get("externalName") or "").strip(".").lower(),
                    [(p.get("name") or "", (p.get("protocol") or "TCP").lower(), int(p["port"]))
                     for p in spec.get("ports") or [] if p.get("port")], bool(spec.get("selector")))
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring a Service that does not parse: %r", e)
            return
        self._changed()

    def _on_slice(self, obj: dict, deleted: bool) -> None:
        try:
            meta = obj["metadata"]
            ns, name = meta["namespace"], meta["name"]
            service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")
            old = self.slices.pop((ns, name), None)
            if old is not None:
                self._slices_of.get((ns, old.service), set()).discard(name)
            if not deleted and service and obj.get("addressType") in ("IPv4", "IPv6"):
                endpoints = []
                for ep in obj.get("endpoints") or []:
                    ready = (ep.get("conditions") or {}).get("ready")
                    endpoints.append(EndpointRecord(tuple(ep.get("addresses") or ()), (ep.get("hostname") or "").lower(),
                                                    ready is None or bool(ready)))
                ports = [(p.get("name") or "", (p.get("protocol") or "TCP").lower(), int(p["port"]))
                         for p in obj.get("ports") or [] if p.get("port")]
                self.slices[(ns, name)] = SliceRecord(service, endpoints, ports)
                self._slices_of.setdefault((ns, service), set()).add(name)
                self._observe_programming(obj, service)
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring an EndpointSlice that does not parse: %r", e)
            return
        self._changed()

    def _observe_programming(self, obj: dict, service: str) -> None:
        """coredns_kubernetes_dns_programming_duration_seconds: trigger time → now (headless only)."""
        if self.metrics is None:
            return
        stamp = ((obj["metadata"].get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION))
        svc = self.services.get((obj["metadata"]["namespace"], service))
        if not stamp or svc is None or not svc.headless:
            return
        from datetime import datetime
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        kind = "headless_with_selector" if svc.selector else "headless_without_selector"
        self.metrics.programming(kind, max(time.time() - when, 0.0))

    def _on_pod(self, obj: dict, deleted: bool) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        ips = self._pod_keys.pop(key, ())
        table = self._pod_ips.setdefault(key[0], {})
        for ip in ips:
            table[ip] -= 1
            if table[ip] <= 0:
                del table[ip]
        if not deleted:
            status = obj.get("status") or {}
            new = tuple({p["ip"] for p in status.get("podIPs") or [] if p.get("ip")} | (
                {status["podIP"]} if status.get("podIP") else set()))
            for ip in new:
                table[ip] = table.get(ip, 0) + 1
            if new:
                self._pod_keys[key] = new
        self._changed()

    # -- reading ------------------------------------------------------------------------------

    def ready_endpoints(self, namespace: str, service: str) -> list[tuple[str, str, list]]:
        """``(address, hostname label, ports)`` of every ready endpoint of the Service, once per address."""
        key = (namespace, service)
        out = self._ready.get(key)
        if out is not None:
            return out
        out, seen = [], set()
        for name in sorted(self._slices_of.get((namespace, service), ())):
            sl = self.slices.get((namespace, name))
            if sl is None:
                continue
            for ep in sl.endpoints:
                if not ep.ready:
                    continue
                for ip in ep.addresses:
                    if ip in seen:
                        continue
                    seen.add(ip)
                    out.append((ip, ep.hostname or dashed(ip), sl.ports))
        self._ready[key] = out
        return out

    def ptr_table(self) -> dict[str, str]:
        """Address → the name its PTR record names (rebuilt after a change, on the first PTR question)."""
        if self._ptr is None:
            table: dict[str, str] = {}
            for (ns, svc), names in self._slices_of.items():
                if (ns, svc) not in self.services:
                    continue
                for ip, host, _ in self.ready_endpoints(ns, svc):
                    table.setdefault(_canonical(ip), f"{host}.{svc}.{ns}.svc.{self.zone}.")
            for (ns, name), svc in self.services.items():
                for ip in svc.cluster_ips:
                    table[_canonical(ip)] = f"{name}.{ns}.svc.{self.zone}."   # a ClusterIP wins over an endpoint
            self._ptr = table
        return self._ptr

    def in_zone(self, name: str) -> bool:
        return name == self.zone or name.endswith("." + self.zone)

    # -- answering ----------------------------------------------------------------------------

    def soa(self) -> wire.Rec:
        if self._soa is not None:
            return self._soa
        zone = self.zone
        self._soa = wire.soa(zone + ".", f"ns.dns.{zone}.", f"hostmaster.{zone}.", self.serial, 7200, 1800, 86400,
                        self.ttl, self.ttl)
        return self._soa

    def _negative(self, rcode: int) -> Answer:
        return Answer(rcode=rcode, authority=[self.soa()])

    def _addr_rr(self, owner: str | None, ip: str) -> wire.Rec:
        return wire.a(owner, ip, self.ttl)

    def _addresses(self, owner, ips: list[str], qtype: int) -> Answer:
        want = [ip for ip in ips if (qtype == QTYPE.ANY or (qtype == QTYPE.A and ":" not in ip)
                                     or (qtype == QTYPE.AAAA and ":" in ip))]
        if not want:
            return self._negative(RCODE.NOERROR)
        return Answer(answer=[self._addr_rr(owner, ip) for ip in want])

    def lookup(self, owner: str | None, name: str, qtype: int) -> Answer | None:
        """The answer for ``name`` (lower case, no trailing dot), or None when it is not ours.
        ``owner`` is the answers' owner name (None: the question's, as the wire writes it)."""
        if name.endswith(".arpa"):
            return self._reverse(owner, name, qtype)
        if name == self.zone:
            labels: list[str] = []
        elif name.endswith("." + self.zone):
            labels = name[: -len(self.zone) - 1].split(".")
            labels.reverse()
        else:
            return None
        n = len(labels)
        if n == 0:
            if qtype == QTYPE.SOA:
                return Answer(answer=[self.soa()])
            if qtype == QTYPE.NS:
                return Answer(answer=[wire.ns(owner, f"ns.dns.{self.zone}.", self.ttl)],
                              additional=[self._addr_rr(f"ns.dns.{self.zone}.", self.dns_ip)] if self.dns_ip else [])
            return self._negative(RCODE.NOERROR)
        top = labels[0]
        if top == "dns-version" and n == 1:
            if qtype in (QTYPE.TXT, QTYPE.ANY):
                return Answer(answer=[wire.txt(owner, DNS_SCHEMA_VERSION, self.ttl)])
            return self._negative(RCODE.NOERROR)
        if top == "dns" and self.dns_ip:
            if n == 1:
                return self._negative(RCODE.NOERROR)
            if n == 2 and labels[1] == "ns":
                return self._addresses(owner, [self.dns_ip], qtype)
        if top == "svc":
            return self._service(owner, labels[1:], qtype)
        if top == "pod":
            return self._pod(owner, labels[1:], qtype)
        return self._negative(RCODE.NXDOMAIN)

    def _service(self, owner, labels: list[str], qtype: int) -> Answer:
        n = len(labels)
        if n == 0:
            return self._negative(RCODE.NOERROR)
        ns = labels[0]
        if ns not in self.namespaces:
            return self._negative(RCODE.NXDOMAIN)
        if n == 1:
            return self._negative(RCODE.NOERROR)
        svc = self.services.get((ns, labels[1]))
        if svc is None:
            return self._negative(RCODE.NXDOMAIN)
        if n == 2:
            if svc.type == "ExternalName":
                if not svc.external_name:
                    return self._negative(RCODE.NXDOMAIN)
                ans = Answer(answer=[wire.cname(owner, svc.external_name + ".", self.ttl)])
                if qtype not in (QTYPE.CNAME,):
                    ans.chase = svc.external_name
                return ans
            if svc.headless:
                eps = self.ready_endpoints(ns, svc.name)
                if not eps:
                    return self._negative(RCODE.NXDOMAIN)
                if qtype == QTYPE.SRV:
                    return self._srv(owner, svc, eps, None, None)
                return self._addresses(owner, [ip for ip, _, _ in eps], qtype)
            if qtype == QTYPE.SRV:
                return self._srv(owner, svc, [], None, None)
            return self._addresses(owner, svc.cluster_ips, qtype)
        if svc.type == "ExternalName":
            return self._negative(RCODE.NXDOMAIN)
        third = labels[2]
        if third.startswith("_"):
            proto = third[1:]
            if n == 3:   # _tcp.<svc>...: an empty non-terminal when a port uses that protocol
                used = any(p[1] == proto for p in svc.ports)
                return self._negative(RCODE.NOERROR if used else RCODE.NXDOMAIN)
            if n == 4 and labels[3].startswith("_"):
                port = labels[3][1:]
                if not any(p[0] == port and p[1] == proto for p in svc.ports):
                    return self._negative(RCODE.NXDOMAIN)
                eps = self.ready_endpoints(ns, svc.name) if svc.headless else []
                if svc.headless and not eps:
                    return self._negative(RCODE.NXDOMAIN)
                if qtype not in (QTYPE.SRV, QTYPE.ANY):
                    return self._negative(RCODE.NOERROR)
                return self._srv(owner, svc, eps, port, proto)
            return self._negative(RCODE.NXDOMAIN)
        if n == 3:   # <hostname>.<svc>.<ns>.svc.<zone>
            ips = [ip for ip, host, _ in self.ready_endpoints(ns, svc.name) if host == third]
            if not ips:
                return self._negative(RCODE.NXDOMAIN)
            return self._addresses(owner, ips, qtype)
        return self._negative(RCODE.NXDOMAIN)

    def _srv(self, owner, svc: ServiceRecord, eps: list, port: str | None, proto: str | None) -> Answer:
        zone, ttl = self.zone, self.ttl
        ans = Answer()
        if svc.headless:
            rows = []
            for ip, host, ports in eps:
                for pname, pproto, pnum in ports:
                    if pname and (port is None or (pname == port and pproto == proto)):
                        rows.append((pnum, f"{host}.{svc.name}.{svc.namespace}.svc.{zone}.", ip))
        else:
            target = f"{svc.name}.{svc.namespace}.svc.{zone}."
            rows = [(pnum, target, None) for pname, pproto, pnum in svc.ports
                    if pname and (port is None or (pname == port and pproto == proto))]
        if not rows:
            return self._negative(RCODE.NOERROR)
        weight = max(100 // len(rows), 1)
        extra_seen: set[tuple[str, str]] = set()
        for pnum, target, ip in rows:
            ans.answer.append(wire.srv(owner, 0, weight, pnum, target, ttl))
            for addr in ([ip] if ip else svc.cluster_ips):
                if (target, addr) not in extra_seen:
                    extra_seen.add((target, addr))
                    ans.additional.append(self._addr_rr(target, addr))
        return ans

    def _pod(self, owner, labels: list[str], qtype: int) -> Answer:
        n = len(labels)
        if self.pods == "disabled":
            return self._negative(RCODE.NXDOMAIN)
        if n == 0:
            return self._negative(RCODE.NOERROR)
        ns = labels[0]
        if ns not in self.namespaces:
            return self._negative(RCODE.NXDOMAIN)
        if n == 1:
            return self._negative(RCODE.NOERROR)
        if n != 2:
            return self._negative(RCODE.NXDOMAIN)
        ip = _undash(labels[1])
        if ip is None or (self.pods == "verified" and ip not in self._pod_ips.get(ns, {})):
            return self._negative(RCODE.NXDOMAIN)
        return self._addresses(owner, [ip], qtype)

    def _reverse(self, owner, name: str, qtype: int) -> Answer | None:
        ip = reverse_to_ip(name)
        if ip is None:
            return None
        target = self.ptr_table().get(ip)
        if target is None:
            return None
        if qtype not in (QTYPE.PTR, QTYPE.ANY):
            return Answer(authority=[])   # NOERROR, no data
        return Answer(answer=[wire.ptr(owner, target, self.ttl)])
