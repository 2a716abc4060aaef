"""The IPVS proxy mode (``--proxy-mode=ipvs``), as upstream's ``pkg/proxy/ipvs``.

What it programs, per sync:

- a dummy device ``kube-ipvs0`` (left down, as upstream) holding every ClusterIP, externalIP
  and LoadBalancer ingress IP as a /32, so the node accepts packets for them;
- an IPVS virtual server per ``ClusterIP:port``, ``externalIP:port``, ``LB-IP:port`` and
  ``<node address>:nodePort``, scheduler ``rr`` (``--ipvs-scheduler``), with persistence
  (``IP_VS_SVC_F_PERSISTENT``, timeout = ``timeoutSeconds``) for ``sessionAffinity: ClientIP``;
- real servers = the endpoints `categorize_endpoints` picks (internal traffic policy for
  ClusterIPs, external policy for the others), masquerade forwarding, weight 1;
- upstream's iptables-with-ipset rules, written here as ONE nftables table ``ip
  kube-proxy-ipvs`` (no ``ipset`` on these machines): nft sets named as upstream's ipsets
  (``KUBE-CLUSTER-IP``, ``KUBE-LOOP-BACK``, ``KUBE-EXTERNAL-IP``, ``KUBE-LOAD-BALANCER``,
  ``KUBE-NODE-PORT-TCP``, ...) and chains named as upstream's (``KUBE-SERVICES``,
  ``KUBE-POSTROUTING``, ``KUBE-MARK-MASQ``, ``KUBE-NODE-PORT``, ``KUBE-LOAD-BALANCER``,
  ``KUBE-FORWARD``, ``KUBE-IPVS-FILTER``, ``KUBE-PROXY-FIREWALL``): masquerade by mark
  0x4000, hairpin through ``KUBE-LOOP-BACK``, LoadBalancer source ranges, and REJECT of new
  connections to a kube-ipvs0 address on a port that is no service. Being its own table, it
  never touches the iptables mode's chains.

The work is split so that all of it but the kernel calls is plain data, tested without IPVS:
`desired_state` (snapshot -> `IPVSState`), `diff` (current, desired -> `Plan`, with upstream's
graceful termination: a TCP real server that still has connections is set to weight 0 and
deleted by a later sync once they are gone; UDP/SCTP ones go at once), `nft_ruleset`
(state -> ``nft -f`` text). `_Kernel` reads and applies through netlink (pyroute2's IPVS
generic-netlink socket and IPRoute).

This kernel may have no IPVS: ``start()`` raises `ProxyModeUnavailable` when
``/proc/net/ip_vs`` is missing (the module ``ip_vs`` is not loaded or not built).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubeling.proxy.types import (
    EndpointsMap,
    NodeContext,
    ProxyModeUnavailable,
    ServicePortMap,
    ServicePortName,
    categorize_endpoints,
)

log = logging.getLogger(__name__)

DUMMY_DEVICE = "kube-ipvs0"
TABLE = "kube-proxy-ipvs"
PROC_IP_VS = "/proc/net/ip_vs"
DEFAULT_SCHEDULER = "rr"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
MASQ_MARK = 0x4000

IP_VS_SVC_F_PERSISTENT = 0x1
IP_VS_CONN_F_MASQ = 0
PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}

UNAVAILABLE = ("the kernel has no IPVS (ip_vs): load it with modprobe ip_vs, "
               "or use --proxy-mode=nftables")

# upstream's ipsets, as nft sets: name -> (nft type, comment)
_ADDR_PORT = "ipv4_addr . inet_proto . inet_service"
SETS: dict[str, tuple[str, str]] = {
    "KUBE-LOOP-BACK": ("ipv4_addr . inet_proto . inet_service . ipv4_addr",
                       "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    "KUBE-CLUSTER-IP": (_ADDR_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    "KUBE-EXTERNAL-IP": (_ADDR_PORT, "Kubernetes service external ip + port for masquerade and filter purpose"),
    "KUBE-EXTERNAL-IP-LOCAL": (_ADDR_PORT, "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    "KUBE-LOAD-BALANCER": (_ADDR_PORT, "Kubernetes service lb portal"),
    "KUBE-LOAD-BALANCER-LOCAL": (_ADDR_PORT, "Kubernetes service load balancer ip + port with "
                                 "externalTrafficPolicy=local"),
    "KUBE-LOAD-BALANCER-FW": (_ADDR_PORT, "Kubernetes service load balancer ip + port for load balancer with "
                              "sourceRange"),
    "KUBE-LOAD-BALANCER-SOURCE-CIDR": ("ipv4_addr . inet_proto . inet_service . ipv4_addr",
                                       "Kubernetes service load balancer ip + port + source cidr for packet "
                                       "filter purpose"),
    "KUBE-NODE-PORT-TCP": ("inet_service", "Kubernetes nodeport TCP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-TCP": ("inet_service", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    "KUBE-NODE-PORT-UDP": ("inet_service", "Kubernetes nodeport UDP port for masquerade purpose"),
    "KUBE-NODE-PORT-LOCAL-UDP": ("inet_service", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    "KUBE-NODE-PORT-SCTP-HASH": ("ipv4_addr . inet_service", "Kubernetes nodeport SCTP port for masquerade "
                                 "purpose with type 'hash ip:port'"),
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH": ("ipv4_addr . inet_service", "Kubernetes nodeport SCTP port with "
                                       "externalTrafficPolicy=local with type 'hash ip:port'"),
    "KUBE-HEALTH-CHECK-NODE-PORT": ("inet_service", "Kubernetes health check node port"),
    "KUBE-IPVS-IPS": ("ipv4_addr", "IPVS service ips"),
}
_INTERVAL_SETS = {"KUBE-LOAD-BALANCER-SOURCE-CIDR"}


# -- state as data ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class VirtualServer:
    """An IPVS service (upstream's ``utilipvs.VirtualServer``)."""

    address: str
    protocol: str               # TCP | UDP | SCTP
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0              # IP_VS_SVC_F_PERSISTENT for ClientIP affinity
    timeout: int = 0            # persistence timeout, seconds

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.address, self.protocol, self.port)

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{self.protocol}"


@dataclass(frozen=True, order=True)
class RealServer:
    """An IPVS destination; the connection counts are read from the kernel (0 in a desired state)."""

    address: str
    port: int
    weight: int = 1
    active_conns: int = 0
    inactive_conns: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass
class IPVSState:
    """What is (read from the kernel) or should be (computed) programmed."""

    virtual_servers: dict[tuple[str, str, int], VirtualServer] = field(default_factory=dict)
    real_servers: dict[tuple[str, str, int], dict[tuple[str, int], RealServer]] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)                # on kube-ipvs0
    # nft set name -> elements, each a tuple (one value for the single-type sets)
    sets: dict[str, set[tuple]] = field(default_factory=lambda: {name: set() for name in SETS})

    def add(self, vs: VirtualServer, real: Iterable[RealServer]) -> None:
        self.virtual_servers[vs.key] = vs
        self.real_servers[vs.key] = {rs.key: rs for rs in real}


@dataclass
class Plan:
    """The operations that take the current state to the desired one, in apply order."""

    add_addresses: list[str] = field(default_factory=list)
    del_addresses: list[str] = field(default_factory=list)
    add_virtual_servers: list[VirtualServer] = field(default_factory=list)
    update_virtual_servers: list[VirtualServer] = field(default_factory=list)
    del_virtual_servers: list[VirtualServer] = field(default_factory=list)
    add_real_servers: list[tuple[VirtualServer, RealServer]] = field(default_factory=list)
    update_real_servers: list[tuple[VirtualServer, RealServer]] = field(default_factory=list)
    del_real_servers: list[tuple[VirtualServer, RealServer]] = field(default_factory=list)
    # graceful termination: weight 0 now, deleted by a later sync once their connections end
    quiesce_real_servers: list[tuple[VirtualServer, RealServer]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f) for f in self.__dataclass_fields__)


def nodeport_addresses(node: NodeContext) -> list[str]:
    """The addresses NodePorts answer on: the node IPs inside ``--nodeport-addresses`` (all of
    them when it is empty), IPv4 only (this mode programs the ip family)."""
    ips = [ip for ip in node.node_ips if _ipv4(ip)]
    if not node.nodeport_addresses:
        return ips
    nets = [ipaddress.ip_network(c, strict=False) for c in node.nodeport_addresses if _ipv4(c, net=True)]
    out = [ip for ip in ips if any(ipaddress.ip_address(ip) in n for n in nets)]
    if any(ipaddress.ip_address("127.0.0.1") in n for n in nets):
        out.append("127.0.0.1")
    return out


def _ipv4(value: str, net: bool = False) -> bool:
    """A valid IPv4 address (or network): anything else is left out, so one bad value never
    fails a whole sync (IPv6 is not this mode's family: skipped quietly)."""
    try:
        (ipaddress.IPv4Network(value, strict=False) if net else ipaddress.IPv4Address(value))
    except ValueError:
        if ":" not in value:
            log.warning("ipvs: ignoring %r: not an IPv4 %s", value, "network" if net else "address")
        return False
    return True


def desired_state(services: ServicePortMap, endpoints: EndpointsMap, node: NodeContext,
                  scheduler: str = DEFAULT_SCHEDULER) -> IPVSState:
    """Every virtual server, real server, kube-ipvs0 address and set element for this
    snapshot (upstream's ``syncProxyRules`` before it touches the kernel)."""
    st = IPVSState()
    sets = st.sets
    np_addrs = nodeport_addresses(node)
    for spn in sorted(services):
        svc = services[spn]
        proto = svc.protocol
        if not svc.cluster_ip or svc.cluster_ip == "None" or proto not in PROTOCOLS or not _ipv4(svc.cluster_ip):
            continue
        p = proto.lower()
        cat = categorize_endpoints(endpoints.get(spn, ()), svc)
        internal = cat.local if svc.internal_policy_local else cat.cluster
        external = cat.local if svc.external_policy_local else cat.cluster
        flags, timeout = (IP_VS_SVC_F_PERSISTENT, svc.sticky_max_age_seconds) if svc.affinity else (0, 0)

        def vs(addr: str, port: int, eps) -> None:
            st.add(VirtualServer(addr, proto, port, scheduler, flags, timeout),
                   (RealServer(e.ip, e.port) for e in eps if _ipv4(e.ip)))

        vs(svc.cluster_ip, svc.port, internal)
        st.addresses.add(svc.cluster_ip)
        sets["KUBE-CLUSTER-IP"].add((svc.cluster_ip, p, svc.port))
        for e in cat.all_reachable:
            if e.is_local and _ipv4(e.ip):
                sets["KUBE-LOOP-BACK"].add((e.ip, p, e.port, e.ip))
        for ip in svc.external_ips:
            if not _ipv4(ip):
                continue
            vs(ip, svc.port, external)
            st.addresses.add(ip)
            sets["KUBE-EXTERNAL-IP-LOCAL" if svc.external_policy_local else "KUBE-EXTERNAL-IP"].add((ip, p, svc.port))
        for ip in svc.load_balancer_ips:
            if not _ipv4(ip):
                continue
            vs(ip, svc.port, external)
            st.addresses.add(ip)
            sets["KUBE-LOAD-BALANCER"].add((ip, p, svc.port))
            if svc.external_policy_local:
                sets["KUBE-LOAD-BALANCER-LOCAL"].add((ip, p, svc.port))
            if svc.load_balancer_source_ranges:
                sets["KUBE-LOAD-BALANCER-FW"].add((ip, p, svc.port))
                for cidr in svc.load_balancer_source_ranges:
                    if _ipv4(cidr, net=True):
                        net = str(ipaddress.ip_network(cidr, strict=False))
                        sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].add((ip, p, svc.port, net))
        if svc.node_port:
            for addr in np_addrs:
                vs(addr, svc.node_port, external)
            if proto == "SCTP":
                name = "KUBE-NODE-PORT-LOCAL-SCTP-HASH" if svc.external_policy_local else "KUBE-NODE-PORT-SCTP-HASH"
                sets[name].update((addr, svc.node_port) for addr in np_addrs)
            else:
                sets[f"KUBE-NODE-PORT-{proto}"].add((svc.node_port,))
                if svc.external_policy_local:
                    sets[f"KUBE-NODE-PORT-LOCAL-{proto}"].add((svc.node_port,))
        if svc.health_check_node_port:
            sets["KUBE-HEALTH-CHECK-NODE-PORT"].add((svc.health_check_node_port,))
    sets["KUBE-IPVS-IPS"] = {(a,) for a in st.addresses}
    return st


def graceful_termination_needed(protocol: str) -> bool:
    """Upstream's ``IsRsGracefulTerminationNeeded``: not for UDP and SCTP."""
    return protocol.upper() not in ("UDP", "SCTP")


def diff(current: IPVSState, desired: IPVSState) -> Plan:
    """The operations from ``current`` (only what this mode owns: virtual servers on
    kube-ipvs0 addresses and NodePort addresses) to ``desired``."""
    plan = Plan()
    plan.add_addresses = sorted(desired.addresses - current.addresses)
    plan.del_addresses = sorted(current.addresses - desired.addresses)
    for key, vs in sorted(desired.virtual_servers.items()):
        cur = current.virtual_servers.get(key)
        if cur is None:
            plan.add_virtual_servers.append(vs)
        elif (cur.scheduler, cur.flags, cur.timeout) != (vs.scheduler, vs.flags, vs.timeout):
            plan.update_virtual_servers.append(vs)
        want = desired.real_servers.get(key, {})
        have = current.real_servers.get(key, {}) if cur is not None else {}
        for rkey, rs in sorted(want.items()):
            got = have.get(rkey)
            if got is None:
                plan.add_real_servers.append((vs, rs))
            elif got.weight != rs.weight:
                plan.update_real_servers.append((vs, rs))      # back from graceful termination
        for rkey, got in sorted(have.items()):
            if rkey in want:
                continue
            busy = got.active_conns + got.inactive_conns > 0
            if graceful_termination_needed(vs.protocol) and busy:
                if got.weight != 0:
                    plan.quiesce_real_servers.append((vs, RealServer(got.address, got.port, 0)))
            else:
                plan.del_real_servers.append((vs, got))
    for key, cur in sorted(current.virtual_servers.items()):
        if key not in desired.virtual_servers:
            plan.del_virtual_servers.append(cur)
    return plan


# -- the nftables side -----------------------------------------------------------------------


def _element(value: tuple) -> str:
    return " . ".join(str(v) for v in value)


def nft_ruleset(state: IPVSState, node: NodeContext) -> str:
    """The whole table ``ip kube-proxy-ipvs`` for ``nft -f`` (replaced atomically: the text
    creates, deletes and re-declares it in one transaction)."""
    out = [f"add table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    for name, (typ, comment) in SETS.items():
        out.append(f"\tset {name} {{")
        out.append(f"\t\ttype {typ}")
        if name in _INTERVAL_SETS:
            out.append("\t\tflags interval")
        out.append(f'\t\tcomment "{comment}"')
        elems = sorted(state.sets.get(name, ()))
        if elems:
            out.append("\t\telements = { " + ", ".join(_element(e) for e in elems) + " }")
        out.append("\t}")
    addr_port = "ip daddr . meta l4proto . th dport"
    if node.masquerade_all:
        cluster_masq = f"{addr_port} @KUBE-CLUSTER-IP jump KUBE-MARK-MASQ"
    else:
        cluster_masq = f"ip saddr != {node.cluster_cidr} {addr_port} @KUBE-CLUSTER-IP jump KUBE-MARK-MASQ"
    chains: dict[str, list[str]] = {
        # base chains (hooks)
        "nat-prerouting": ["type nat hook prerouting priority dstnat; policy accept;", "jump KUBE-SERVICES"],
        "nat-output": ["type nat hook output priority -100; policy accept;", "jump KUBE-SERVICES"],
        "nat-postrouting": ["type nat hook postrouting priority srcnat; policy accept;", "jump KUBE-POSTROUTING"],
        "filter-forward": ["type filter hook forward priority filter; policy accept;", "jump KUBE-FORWARD"],
        "filter-input": ["type filter hook input priority filter; policy accept;", "jump KUBE-PROXY-FIREWALL",
                         "jump KUBE-IPVS-FILTER"],
        # upstream's chains
        "KUBE-SERVICES": [
            f"{addr_port} @KUBE-LOAD-BALANCER jump KUBE-LOAD-BALANCER",
            cluster_masq,
            f"fib saddr type != local {addr_port} @KUBE-EXTERNAL-IP jump KUBE-MARK-MASQ",
            "fib daddr type local jump KUBE-NODE-PORT",
            f"{addr_port} @KUBE-CLUSTER-IP accept",
            f"{addr_port} @KUBE-LOAD-BALANCER accept",
        ],
        "KUBE-LOAD-BALANCER": [
            f"{addr_port} @KUBE-LOAD-BALANCER-LOCAL return",
            "jump KUBE-MARK-MASQ",
        ],
        "KUBE-NODE-PORT": [
            "meta l4proto tcp tcp dport @KUBE-NODE-PORT-LOCAL-TCP return",
            "meta l4proto tcp tcp dport @KUBE-NODE-PORT-TCP jump KUBE-MARK-MASQ",
            "meta l4proto udp udp dport @KUBE-NODE-PORT-LOCAL-UDP return",
            "meta l4proto udp udp dport @KUBE-NODE-PORT-UDP jump KUBE-MARK-MASQ",
            "meta l4proto sctp ip daddr . sctp dport @KUBE-NODE-PORT-LOCAL-SCTP-HASH return",
            "meta l4proto sctp ip daddr . sctp dport @KUBE-NODE-PORT-SCTP-HASH jump KUBE-MARK-MASQ",
        ],
        "KUBE-MARK-MASQ": [f"meta mark set meta mark | {MASQ_MARK:#x}"],
        "KUBE-POSTROUTING": [
            f"{addr_port} . ip saddr @KUBE-LOOP-BACK masquerade",
            f"meta mark & {MASQ_MARK:#x} != {MASQ_MARK:#x} return",
            f"meta mark set meta mark ^ {MASQ_MARK:#x}",
            "masquerade fully-random",
        ],
        "KUBE-FORWARD": [
            "ct state invalid drop",
            f"meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} accept",
            "ct state related,established accept",
        ],
        "KUBE-PROXY-FIREWALL": [f"{addr_port} @KUBE-LOAD-BALANCER-FW jump KUBE-SOURCE-RANGES-FIREWALL"],
        "KUBE-SOURCE-RANGES-FIREWALL": [f"{addr_port} . ip saddr @KUBE-LOAD-BALANCER-SOURCE-CIDR return", "drop"],
        "KUBE-IPVS-FILTER": [
            f"{addr_port} @KUBE-LOAD-BALANCER return",
            f"{addr_port} @KUBE-CLUSTER-IP return",
            f"{addr_port} @KUBE-EXTERNAL-IP return",
            f"{addr_port} @KUBE-EXTERNAL-IP-LOCAL return",
            "meta l4proto tcp tcp dport @KUBE-HEALTH-CHECK-NODE-PORT return",
            "ct state new ip daddr @KUBE-IPVS-IPS reject",
        ],
    }
    for name, rules in chains.items():
        out.append(f"\tchain {name} {{")
        out += [f"\t\t{r}" for r in rules]
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def _nft(text: str, *, check: bool = False) -> None:
    argv = ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    r = subprocess.run(argv, input=text, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nft: {r.stderr.strip() or r.returncode}")


def _nft_table_exists() -> bool:
    r = subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True, text=True)
    return r.returncode == 0


def _nft_set_elements() -> int:
    r = subprocess.run(["nft", "-j", "list", "table", "ip", TABLE], capture_output=True, text=True)
    if r.returncode != 0:
        return 0
    n = 0
    for item in json.loads(r.stdout).get("nftables", []):
        s = item.get("set")
        if s:
            n += len(s.get("elem", []))
    return n


# -- the kernel side (netlink) ---------------------------------------------------------------


def ipvs_available() -> bool:
    return os.path.exists(PROC_IP_VS)


def parse_service(msg) -> VirtualServer | None:
    """A virtual server from an IPVS_CMD_NEW_SERVICE (dump) message; None for what this mode
    never makes (fwmark services, other protocols, IPv6)."""
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    if svc is None or svc.get_attr("IPVS_SVC_ATTR_AF") not in (None, socket.AF_INET):
        return None
    names = {v: k for k, v in PROTOCOLS.items()}
    proto = names.get(svc.get_attr("IPVS_SVC_ATTR_PROTOCOL"))
    addr, port = svc.get_attr("IPVS_SVC_ATTR_ADDR"), svc.get_attr("IPVS_SVC_ATTR_PORT")
    if proto is None or not addr:
        return None
    flags = svc.get_attr("IPVS_SVC_ATTR_FLAGS") or {}
    return VirtualServer(addr, proto, port, svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or DEFAULT_SCHEDULER,
                         flags.get("flags", 0) & IP_VS_SVC_F_PERSISTENT, svc.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0)


def parse_dest(msg) -> RealServer:
    """A real server, with its connection counts, from an IPVS_CMD_NEW_DEST (dump) message."""
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    return RealServer(dest.get_attr("IPVS_DEST_ATTR_ADDR"), dest.get_attr("IPVS_DEST_ATTR_PORT"),
                      dest.get_attr("IPVS_DEST_ATTR_WEIGHT") or 0,
                      dest.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
                      dest.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0)


def service_request(vs: VirtualServer, full: bool = True):
    """pyroute2's IPVSService for ``vs`` (only its key when not ``full``)."""
    from pyroute2.ipvs import IPVSService
    kw: dict = dict(addr=vs.address, port=vs.port, protocol=PROTOCOLS[vs.protocol])
    if full:
        kw.update(sched_name=vs.scheduler, timeout=vs.timeout, flags={"flags": vs.flags, "mask": 0xFFFFFFFF})
    return IPVSService(**kw)


def dest_request(rs: RealServer):
    """pyroute2's IPVSDest for ``rs``: masquerade forwarding (kube-proxy's only method)."""
    from pyroute2.ipvs import IPVSDest
    return IPVSDest(addr=rs.address, port=rs.port, weight=rs.weight, fwd_method=IP_VS_CONN_F_MASQ)


class _Kernel:
    """IPVS (generic netlink) and kube-ipvs0 (rtnetlink) through pyroute2. Blocking; the
    Proxier calls it in a thread."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.ipvs import IPVS
        self.ipr = IPRoute()
        self.ipvs = IPVS() if ipvs_available() else None

    def close(self) -> None:
        self.ipr.close()
        if self.ipvs is not None:
            self.ipvs.close()

    # kube-ipvs0
    def dummy_index(self, create: bool = False) -> int | None:
        found = self.ipr.link_lookup(ifname=DUMMY_DEVICE)
        if found:
            return found[0]
        if not create:
            return None
        self.ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")   # left down, as upstream
        return self.ipr.link_lookup(ifname=DUMMY_DEVICE)[0]

    def addresses(self) -> set[str]:
        idx = self.dummy_index()
        if idx is None:
            return set()
        return {a.get_attr("IFA_ADDRESS") for a in self.ipr.get_addr(index=idx, family=socket.AF_INET)}

    def add_address(self, ip: str) -> None:
        self.ipr.addr("add", index=self.dummy_index(create=True), address=ip, prefixlen=32)

    def del_address(self, ip: str) -> None:
        idx = self.dummy_index()
        if idx is not None:
            self.ipr.addr("del", index=idx, address=ip, prefixlen=32)

    def delete_dummy(self) -> None:
        idx = self.dummy_index()
        if idx is not None:
            self.ipr.link("del", index=idx)

    # IPVS
    _service = staticmethod(service_request)
    _dest = staticmethod(dest_request)

    def read(self, owned: set[str]) -> IPVSState:
        """The virtual servers on ``owned`` addresses, with their real servers."""
        st = IPVSState(addresses=self.addresses())
        if self.ipvs is None:
            return st
        for msg in self.ipvs.service("dump"):
            vs = parse_service(msg)
            if vs is None or vs.address not in owned:
                continue
            st.add(vs, (parse_dest(d) for d in self.ipvs.dest("dump", service=self._service(vs, full=False))))
        return st

    def apply(self, plan: Plan) -> list[str]:
        """Apply ``plan``; each failed operation is logged and reported, the rest go on."""
        errors: list[str] = []

        def attempt(what: str, fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - one bad object never stops the sync
                errors.append(f"{what}: {e}")

        for ip in plan.add_addresses:
            attempt(f"add address {ip}", self.add_address, ip)
        if self.ipvs is not None:
            for vs in plan.add_virtual_servers:
                attempt(f"add {vs}", self.ipvs.service, "add", self._service(vs))
            for vs in plan.update_virtual_servers:
                attempt(f"update {vs}", self.ipvs.service, "set", self._service(vs))
            for vs, rs in plan.add_real_servers:
                attempt(f"add {rs} to {vs}", self.ipvs.dest, "add", self._service(vs, False), self._dest(rs))
            for vs, rs in plan.update_real_servers + plan.quiesce_real_servers:
                attempt(f"set {rs} of {vs}", self.ipvs.dest, "set", self._service(vs, False), self._dest(rs))
            for vs, rs in plan.del_real_servers:
                attempt(f"delete {rs} of {vs}", self.ipvs.dest, "del", self._service(vs, False), self._dest(rs))
            for vs in plan.del_virtual_servers:
                attempt(f"delete {vs}", self.ipvs.service, "del", self._service(vs, False))
        for ip in plan.del_addresses:
            attempt(f"delete address {ip}", self.del_address, ip)
        for e in errors:
            log.warning("ipvs: %s", e)
        return errors

    def flush_owned(self, owned: set[str]) -> int:
        n = 0
        if self.ipvs is None:
            return 0
        for vs in self.read(owned).virtual_servers.values():
            self.ipvs.service("del", self._service(vs, full=False))
            n += 1
        return n


_SYSCTLS = {
    "net/ipv4/vs/conntrack": "1",              # let nat POSTROUTING see IPVS connections (masquerade)
    "net/ipv4/vs/conn_reuse_mode": "0",
    "net/ipv4/vs/expire_nodest_conn": "1",
    "net/ipv4/vs/expire_quiescent_template": "1",
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/arp_ignore": "1",       # never answer ARP for kube-ipvs0's addresses
    "net/ipv4/conf/all/arp_announce": "2",
}


def _set_sysctls() -> None:
    for key, value in _SYSCTLS.items():
        path = f"/proc/sys/{key}"
        try:
            with open(path) as f:
                if f.read().strip() == value:
                    continue
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            log.warning("ipvs: cannot set %s=%s: %s", key.replace("/", "."), value, e)


def cleanup() -> None:
    """Remove what the ipvs mode made in this netns (blocking, idempotent): the nft table, the
    virtual servers on kube-ipvs0's and the node's addresses (where IPVS exists), kube-ipvs0."""
    if _nft_table_exists():
        _nft(f"delete table ip {TABLE}\n")
    try:
        k = _Kernel()
    except Exception as e:  # noqa: BLE001 - no netlink here: nothing of ours either
        log.debug("ipvs cleanup: %s", e)
        return
    try:
        owned = k.addresses()
        if k.ipvs is not None:
            owned |= {a.get_attr("IFA_ADDRESS") for a in k.ipr.get_addr(family=socket.AF_INET)}
            k.flush_owned(owned)
        k.delete_dummy()
    finally:
        k.close()


# -- the mode --------------------------------------------------------------------------------


class Proxier:
    """The ipvs mode (see the module docstring)."""

    mode = "ipvs"

    def __init__(self, node: NodeContext, *, scheduler: str = DEFAULT_SCHEDULER) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown IPVS scheduler {scheduler!r} (one of {', '.join(SCHEDULERS)})")
        self.node, self.scheduler = node, scheduler
        self._kernel: _Kernel | None = None
        self._last_nft = ""
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if not ipvs_available():
            raise ProxyModeUnavailable(UNAVAILABLE)
        r = await asyncio.to_thread(subprocess.run, ["nft", "--version"], capture_output=True, text=True)
        if r.returncode != 0:
            raise ProxyModeUnavailable(f"the ipvs mode needs nft (Debian package nftables): {r.stderr.strip()}")
        await asyncio.to_thread(_set_sysctls)
        self._kernel = await asyncio.to_thread(_Kernel)
        try:
            await asyncio.to_thread(self._kernel.dummy_index, True)
        except Exception as e:  # noqa: BLE001 - reported as why the mode cannot run
            raise ProxyModeUnavailable(f"cannot create the dummy device {DUMMY_DEVICE} (is the kernel's dummy "
                                       f"driver there? modprobe dummy): {e}") from e

    def _owned(self, desired: IPVSState) -> set[str]:
        assert self._kernel is not None
        return self._kernel.addresses() | desired.addresses | set(nodeport_addresses(self.node))

    def _sync(self, desired: IPVSState, full: bool) -> None:
        kernel = self._kernel
        assert kernel is not None, "start() first"
        current = kernel.read(self._owned(desired))
        plan = diff(current, desired)
        text = nft_ruleset(desired, self.node)
        if full or text != self._last_nft:       # full syncs rewrite it even when unchanged
            self._last_nft = ""
            _nft(text)
            self._last_nft = text
        errors = kernel.apply(plan)
        if errors:
            raise RuntimeError(f"ipvs: {len(errors)} operations failed, first: {errors[0]}")

    async def sync(self, services: ServicePortMap, endpoints: EndpointsMap,
                   changed: set[ServicePortName] | None = None) -> None:
        async with self._lock:
            desired = desired_state(services, endpoints, self.node, self.scheduler)
            await asyncio.to_thread(self._sync, desired, changed is None)

    async def cleanup(self) -> None:
        async with self._lock:
            await asyncio.to_thread(cleanup)
            self._last_nft = ""

    def _count(self) -> dict[str, int]:
        out = {"virtual_servers": 0, "real_servers": 0, "addresses": 0, "set_elements": _nft_set_elements()}
        k = self._kernel or _Kernel()
        try:
            addrs = k.addresses()
            out["addresses"] = len(addrs)
            if k.ipvs is not None:
                st = k.read(addrs | set(nodeport_addresses(self.node)))
                out["virtual_servers"] = len(st.virtual_servers)
                out["real_servers"] = sum(len(r) for r in st.real_servers.values())
        finally:
            if k is not self._kernel:
                k.close()
        return out

    async def count_leaks(self) -> dict[str, int]:
        async with self._lock:      # one thread at a time on the netlink sockets
            return await asyncio.to_thread(self._count)
