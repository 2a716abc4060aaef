"""`Overlay`: routes from this node to every other node's pods, programmed from the Node objects
(flannel's ``vxlan`` and ``host-gw`` backends with its kube subnet manager, as k3s runs it).

Contract (used by `kubeling.kubelet.agent.Agent._node_network` and ``kubeling node cleanup``):

- ``Overlay(client, node_name, *, backend, node_ip, pod_cidr, cluster_cidr)``;
  ``await run(stop)`` until ``stop`` is set. ``routes_only=True`` is the control plane's mode
  (below).
- ``cleanup()``: blocking, idempotent; removes every device, route, neighbour, FDB entry and
  rule the overlay made in the current network namespace.

What a node programs (flannel's names, so that ``ip -d link``, ``bridge fdb`` and
``iptables-save`` read as on a k3s node)::

    vxlan (default)
      flannel.1            VXLAN, VNI 1, UDP 8472, nolearning, local <node IP>, on the uplink
                           (the device holding the node IP), MTU = uplink's - 50, MAC derived
                           from the node IP (stable across restarts, so peers never go stale);
                           address <podCIDR network address>/32 (e.g. 10.42.1.0/32)
      per peer Node        route  <its podCIDR> via <its network addr> dev flannel.1 onlink
                           neigh  <its network addr> lladdr <its VTEP MAC> PERMANENT
                           fdb    <its VTEP MAC> dst <its public IP> self permanent
    host-gw
      per peer Node        route  <its podCIDR> via <its public IP>

Routes carry the protocol number `ROUTE_PROTOCOL` (``ip route show proto 77``), so that what
the overlay made is told apart from every other route and removed exactly.

Peers come from Node objects: ``spec.podCIDR`` and the flannel annotations the peer published
(`BACKEND_TYPE`, `BACKEND_DATA` = ``{"VNI": 1, "VtepMAC": ...}``, `PUBLIC_IP`,
`SUBNET_MANAGER`); the public IP falls back to the Node's InternalIP. For vxlan a peer without
a VTEP MAC yet (its agent has not started, or runs host-gw) is skipped until the annotation
appears. This node publishes its own annotations at start (a merge patch of its Node).

Level-triggered: a Node informer (`SharedInformerFactory`) marks the state dirty on every add,
change and delete; one loop then computes the desired routes, neighbours and FDB entries from
*all* Nodes (`desired_state`) and makes the kernel match: what is missing or different is
replaced, what is ours but no longer wanted is deleted. It also runs every `RESYNC` seconds, so
an entry deleted by hand comes back. One failing entry is logged and the others still applied.

Masquerade, as flannel's ipMasq (its chains, ``iptables-save -t nat | grep FLANNEL``)::

    POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
    FLANNEL-POSTRTG  mark 0x4000/0x4000 (kube-proxy masquerades it)    RETURN
                     -s <podCIDR>  -d <cluster CIDR>                   RETURN   pod to pod
                     -s <cluster>  -d <podCIDR>                        RETURN
                     ! -s <cluster> -d <podCIDR>                       RETURN   to our pods
                     -s <cluster>  ! -d 224.0.0.0/4                    MASQUERADE --random-fully
                     ! -s <cluster> -d <cluster>                       MASQUERADE --random-fully
    FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
    FLANNEL-FWD      -s <cluster> ACCEPT;  -d <cluster> ACCEPT

The chains are written in one ``iptables-restore --noflush`` transaction and checked again at
every resync.

The control plane (``routes_only=True``, ``node_name=""``): ``kubeling cluster up`` runs the API
server with ``--disable-agent`` in the caller's namespace, which has no pod network, yet the
server must reach pods (``services/.../proxy``, ``pods/.../proxy``, webhooks) and pods must reach
the server back. ``kubeling cluster`` therefore runs ``kubeling cluster routes``, an overlay in
this mode beside the server: host-gw routes to every Node's podCIDR via its IP, kept current
from the Node objects, and nothing else (no device, no annotations, no masquerade). It works
whatever backend the nodes run, since they share the cluster bridge with the server. (The API
server itself cannot host it: it runs on uvloop, whose sockets refuse AF_NETLINK.)

Everything happens in the caller's network namespace over a netlink socket (pyroute2's
`AsyncIPRoute`), never with pyroute2's ``netns=``, which forks (see `bridge`); iptables runs as
an exec'd child.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import subprocess
from dataclasses import dataclass, field
from typing import Any

from kubeling.kubelet.network.bridge import ignoring, link_index

log = logging.getLogger(__name__)

VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
DEVICE = f"flannel.{VNI}"
ROUTE_PROTOCOL = 77
RESYNC = 30.0
MAIN_TABLE = 254
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
AF_BRIDGE = 7

PREFIX = "flannel.alpha.coreos.com/"
BACKEND_TYPE = PREFIX + "backend-type"
BACKEND_DATA = PREFIX + "backend-data"
PUBLIC_IP = PREFIX + "public-ip"
SUBNET_MANAGER = PREFIX + "kube-subnet-manager"

POSTRTG_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
KUBE_MASQ_MARK = "0x4000/0x4000"
MULTICAST = "224.0.0.0/4"
JUMPS = (("nat", "POSTROUTING", POSTRTG_CHAIN, MASQ_COMMENT), ("filter", "FORWARD", FWD_CHAIN, FWD_COMMENT))

BACKENDS = ("vxlan", "host-gw")


# -- what Nodes ask for (pure; unit-tested) ------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """Another node as the overlay sees it."""

    name: str
    subnet: ipaddress.IPv4Network
    public_ip: str
    vtep_mac: str = ""


@dataclass(frozen=True)
class Route:
    dst: ipaddress.IPv4Network
    gateway: str
    onlink: bool = False     # vxlan: via the peer's network address on flannel.1


@dataclass
class DesiredState:
    routes: dict[str, Route] = field(default_factory=dict)       # str(dst) -> route
    neighbours: dict[str, str] = field(default_factory=dict)     # peer network address -> VTEP MAC
    fdb: dict[str, str] = field(default_factory=dict)            # VTEP MAC -> peer public IP


def vtep_mac(node_ip: str) -> str:
    """A locally administered unicast MAC derived from the node IP: ``0e:6b:`` + its 4 bytes."""
    return "0e:6b:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(node_ip).packed)


def node_annotations(backend: str, node_ip: str, mac: str = "") -> dict[str, str]:
    """The flannel annotations a node publishes (flannel's kube subnet manager writes the same)."""
    data = json.dumps({"VNI": VNI, "VtepMAC": mac}, separators=(",", ":")) if backend == "vxlan" else "null"
    return {BACKEND_TYPE: backend, BACKEND_DATA: data, PUBLIC_IP: node_ip, SUBNET_MANAGER: "true"}


def internal_ip(node: dict) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            return a["address"]
    return ""


def peer_from_node(node: dict, backend: str) -> Peer | None:
    """The peer a Node describes for ``backend``, or None when it cannot be one (yet)."""
    meta = node.get("metadata") or {}
    ann = meta.get("annotations") or {}
    cidr = (node.get("spec") or {}).get("podCIDR")
    if not cidr:
        return None
    try:
        subnet = ipaddress.ip_network(cidr, strict=False)
        public_ip = str(ipaddress.IPv4Address(ann.get(PUBLIC_IP) or internal_ip(node)))
    except ValueError:
        return None
    if subnet.version != 4:
        return None
    if backend != "vxlan":
        return Peer(meta.get("name", ""), subnet, public_ip)
    if ann.get(BACKEND_TYPE) != "vxlan":
        return None
    try:
        data = json.loads(ann.get(BACKEND_DATA) or "null") or {}
        mac = str(data.get("VtepMAC") or "").lower()
    except (ValueError, AttributeError):
        return None
    if len(mac.split(":")) != 6:
        return None
    return Peer(meta.get("name", ""), subnet, public_ip, mac)


def peers(nodes: list[dict], self_name: str, backend: str, own_subnet: str = "") -> list[Peer]:
    """Every other Node that can be a peer, sorted by name. A Node claiming this node's own
    subnet is left out (a stale Node object after a rename must not steal our pods' traffic)."""
    own = ipaddress.ip_network(own_subnet, strict=False) if own_subnet else None
    out = []
    for node in nodes:
        if (node.get("metadata") or {}).get("name") == self_name:
            continue
        peer = peer_from_node(node, backend)
        if peer is not None and peer.subnet != own:
            out.append(peer)
    return sorted(out, key=lambda p: p.name)


def desired_state(peer_list: list[Peer], backend: str) -> DesiredState:
    """Routes, neighbours and FDB entries for ``peer_list`` (see the module docstring)."""
    want = DesiredState()
    for p in peer_list:
        if str(p.subnet) in want.routes:
            continue     # two Nodes claiming one subnet: the first (by name) wins, as a route can only go one way
        if backend == "vxlan":
            gw = str(p.subnet.network_address)
            want.routes[str(p.subnet)] = Route(p.subnet, gw, onlink=True)
            want.neighbours[gw] = p.vtep_mac
            want.fdb[p.vtep_mac] = p.public_ip
        else:
            want.routes[str(p.subnet)] = Route(p.subnet, p.public_ip)
    return want


def masq_rules(pod_cidr: str, cluster_cidr: str) -> str:
    """flannel's ipMasq rules for this node, as ``iptables-restore --noflush`` input."""
    pod, cluster = str(ipaddress.ip_network(pod_cidr, strict=False)), str(ipaddress.ip_network(cluster_cidr,
                                                                                                 strict=False))
    masq = f'-m comment --comment "{MASQ_COMMENT}"'
    fwd = f'-m comment --comment "{FWD_COMMENT}"'
    return "\n".join([
        "*nat",
        f":{POSTRTG_CHAIN} - [0:0]",
        f"-A {POSTRTG_CHAIN} -m mark --mark {KUBE_MASQ_MARK} {masq} -j RETURN",
        f"-A {POSTRTG_CHAIN} -s {pod} -d {cluster} {masq} -j RETURN",
        f"-A {POSTRTG_CHAIN} -s {cluster} -d {pod} {masq} -j RETURN",
        f"-A {POSTRTG_CHAIN} ! -s {cluster} -d {pod} {masq} -j RETURN",
        f"-A {POSTRTG_CHAIN} -s {cluster} ! -d {MULTICAST} {masq} -j MASQUERADE --random-fully",
        f"-A {POSTRTG_CHAIN} ! -s {cluster} -d {cluster} {masq} -j MASQUERADE --random-fully",
        "COMMIT",
        "*filter",
        f":{FWD_CHAIN} - [0:0]",
        f"-A {FWD_CHAIN} -s {cluster} {fwd} -j ACCEPT",
        f"-A {FWD_CHAIN} -d {cluster} {fwd} -j ACCEPT",
        "COMMIT",
        "",
    ])


def _jump_spec(chain: str, comment: str) -> list[str]:
    return ["-m", "comment", "--comment", comment, "-j", chain]


# -- the controller -------------------------------------------------------------------------------

class Overlay:
    """See the module docstring."""

    def __init__(self, client: Any, node_name: str, *, backend: str, node_ip: str, pod_cidr: str,
                 cluster_cidr: str, routes_only: bool = False, resync: float = RESYNC,
                 iptables: str = "iptables") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"flannel backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.client, self.node_name, self.backend = client, node_name, backend
        self.node_ip, self.pod_cidr, self.cluster_cidr = node_ip, pod_cidr, cluster_cidr
        self.routes_only, self.resync, self.iptables = routes_only, resync, iptables
        self.mac = vtep_mac(node_ip) if backend == "vxlan" and not routes_only else ""
        self.device_index: int | None = None
        self.published = routes_only
        self.applied = DesiredState()       # what the last reconcile made (for tests and logs)
        self.syncs = 0
        self._dirty = asyncio.Event()
        self.nodes = None                   # the Node informer, once running

    # -- run ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        from pyroute2 import AsyncIPRoute

        from kubeling.client.factory import SharedInformerFactory
        factory = SharedInformerFactory(self.client)
        self.nodes = factory.informer_for("", "v1", "nodes")
        self.nodes.add_handler(on_add=self._changed, on_update=self._changed, on_delete=self._changed)
        self._dirty.set()
        try:
            async with AsyncIPRoute() as ipr:
                factory.start(stop)
                await factory.wait_for_cache_sync()
                delay = 1.0
                while not stop.is_set():
                    try:
                        await self._sync(ipr)
                        delay = 1.0
                        wait = self.resync
                    except Exception as e:  # noqa: BLE001 - retried: one bad round must not end the overlay
                        log.warning("overlay: sync failed (retrying in %.0fs): %s", delay, e)
                        wait, delay = delay, min(delay * 2, 30.0)
                        self._dirty.set()
                    await _wait_any(stop, self._dirty, wait)
        finally:
            await factory.shutdown()

    def _changed(self, *objs: Any) -> None:
        self._dirty.set()

    async def _sync(self, ipr) -> None:
        self._dirty.clear()
        try:
            await self.program(ipr, self.nodes.list() if self.nodes is not None else [])
        finally:
            # published even when one peer's entry failed: the others must not wait for that peer
            if not self.published and (self.backend != "vxlan" or self.device_index is not None):
                await self._publish()
        self.syncs += 1

    async def program(self, ipr, nodes: list[dict]) -> None:
        """One round: this node's device and masquerade chains, then the entries ``nodes`` ask
        for (`apply`). ``ipr`` is an `AsyncIPRoute` of the namespace to program."""
        if not self.routes_only:
            if self.backend == "vxlan":
                self.device_index = await self._ensure_device(ipr)
            else:
                self.device_index = None
                await _delete_link(ipr, DEVICE)       # a node switched from vxlan to host-gw
            await asyncio.to_thread(ensure_masq, self.pod_cidr, self.cluster_cidr, self.iptables)
        want = desired_state(peers(nodes, self.node_name, self.backend, "" if self.routes_only else self.pod_cidr),
                             self.backend)
        await self.apply(ipr, want)

    async def _publish(self) -> None:
        ann = node_annotations(self.backend, self.node_ip, self.mac)
        await self.client.patch("", "v1", "nodes", self.node_name, {"metadata": {"annotations": ann}})
        self.published = True
        log.info("overlay: node %s published backend %s (public IP %s%s)", self.node_name, self.backend,
                 self.node_ip, f", VTEP MAC {self.mac}" if self.mac else "")

    async def _ensure_device(self, ipr) -> int:
        """flannel.1, made or re-made to match (VNI, port, local IP, MAC), up, with its /32."""
        uplink, mtu = await _uplink(ipr, self.node_ip)
        index = await link_index(ipr, DEVICE)
        if index is not None and not await _vxlan_matches(ipr, index, self.node_ip, self.mac):
            log.info("overlay: %s does not match (VNI %d, local %s, MAC %s): making it again", DEVICE, VNI,
                     self.node_ip, self.mac)
            await _delete_link(ipr, DEVICE)
            index = None
        if index is None:
            await ignoring((errno.EEXIST,), ipr.link(
                "add", ifname=DEVICE, kind="vxlan", vxlan_id=VNI, vxlan_port=VXLAN_PORT, vxlan_local=self.node_ip,
                vxlan_learning=0, vxlan_link=uplink, mtu=mtu - VXLAN_OVERHEAD, address=self.mac))
            index = await link_index(ipr, DEVICE)
            if index is None:
                raise OSError(errno.ENODEV, f"{DEVICE} vanished right after its creation")
            log.info("overlay: made %s (VNI %d, local %s, MTU %d)", DEVICE, VNI, self.node_ip, mtu - VXLAN_OVERHEAD)
        net = ipaddress.ip_network(self.pod_cidr, strict=False)
        addr = str(net.network_address)
        have = {(a.get("address"), a["prefixlen"]) for a in await _collect(ipr.addr("dump", index=index))
                if a["index"] == index}
        for a, plen in have:
            if (a, plen) != (addr, 32):
                await ignoring((errno.EADDRNOTAVAIL,), ipr.addr("del", index=index, address=a, prefixlen=plen))
        if (addr, 32) not in have:
            await ignoring((errno.EEXIST,), ipr.addr("add", index=index, address=addr, prefixlen=32))
        await ipr.link("set", index=index, state="up")
        return index

    async def apply(self, ipr, want: DesiredState) -> None:
        """Make the kernel's routes (protocol `ROUTE_PROTOCOL`), neighbours and FDB entries on
        flannel.1 match ``want``; failures are per entry (logged, retried next round)."""
        failed: list[str] = []

        async def attempt(what: str, request) -> None:
            try:
                await request
            except Exception as e:  # noqa: BLE001 - one peer's trouble must not stop the others
                failed.append(f"{what}: {e}")

        dev = self.device_index
        if dev is not None:
            for mac, ip in (await self._fdb(ipr, dev)).items():
                if want.fdb.get(mac) != ip:
                    await attempt(f"fdb del {mac}", ignoring((errno.ENOENT,), ipr.fdb(
                        "del", ifindex=dev, lladdr=mac, dst=ip)))
            for ip, mac in (await self._neighbours(ipr, dev)).items():
                if want.neighbours.get(ip) != mac:
                    await attempt(f"neigh del {ip}", ignoring((errno.ENOENT,), ipr.neigh(
                        "del", ifindex=dev, dst=ip, lladdr=mac)))
        have = await self._routes(ipr)
        for dst, r in have.items():
            if dst not in want.routes:
                await attempt(f"route del {dst}", ignoring((errno.ESRCH,), ipr.route(
                    "del", dst=str(r["net"].network_address), dst_len=r["net"].prefixlen, proto=ROUTE_PROTOCOL,
                    table=MAIN_TABLE)))
        if dev is not None:
            for mac, ip in want.fdb.items():
                await attempt(f"fdb {mac} dst {ip}", ipr.fdb("replace", ifindex=dev, lladdr=mac, dst=ip,
                                                             state=NUD_PERMANENT, flags=NTF_SELF))
            for ip, mac in want.neighbours.items():
                await attempt(f"neigh {ip} lladdr {mac}", ipr.neigh("replace", ifindex=dev, dst=ip, lladdr=mac,
                                                                    state=NUD_PERMANENT))
        for dst, route in want.routes.items():
            cur = have.get(dst)
            oif = dev if route.onlink else None
            if cur is not None and cur["gateway"] == route.gateway and (oif is None or cur["oif"] == oif):
                continue
            if route.onlink and dev is None:
                failed.append(f"route {dst}: no {DEVICE}")
                continue
            kw: dict[str, Any] = dict(dst=str(route.dst.network_address), dst_len=route.dst.prefixlen,
                                      gateway=route.gateway, proto=ROUTE_PROTOCOL, table=MAIN_TABLE)
            if route.onlink:
                kw.update(oif=dev, flags=RTNH_F_ONLINK)
            await attempt(f"route {dst} via {route.gateway}", ipr.route("replace", **kw))
        self.applied = want
        if failed:
            raise RuntimeError(f"{len(failed)} overlay entries failed: " + "; ".join(failed[:5]))

    async def _routes(self, ipr) -> dict[str, dict]:
        out = {}
        for m in await _collect(ipr.route("dump", table=MAIN_TABLE)):
            if m["proto"] != ROUTE_PROTOCOL or m["family"] != 2:
                continue
            net = ipaddress.ip_network(f"{m.get('dst') or '0.0.0.0'}/{m['dst_len']}", strict=False)
            out[str(net)] = {"net": net, "gateway": m.get("gateway") or "", "oif": m.get("oif")}
        return out

    async def _neighbours(self, ipr, dev: int) -> dict[str, str]:
        out = {}
        for m in await _collect(ipr.neigh("dump", ifindex=dev)):
            if m["ifindex"] == dev and m["family"] == 2 and m["state"] & NUD_PERMANENT and m.get("dst"):
                out[m.get("dst")] = (m.get("lladdr") or "").lower()
        return out

    async def _fdb(self, ipr, dev: int) -> dict[str, str]:
        out = {}
        for m in await _collect(ipr.fdb("dump", ifindex=dev)):
            if m["ifindex"] == dev and m["family"] == AF_BRIDGE and m.get("dst") and m.get("lladdr"):
                out[m.get("lladdr").lower()] = m.get("dst")
        return out


# -- helpers --------------------------------------------------------------------------------------

async def _wait_any(stop: asyncio.Event, dirty: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(dirty.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _collect(request) -> list:
    """The messages of a dump, whether pyroute2 answers with a list or an async iterator."""
    got = await request
    if hasattr(got, "__aiter__"):
        return [m async for m in got]
    return list(got)


async def _delete_link(ipr, name: str) -> None:
    index = await link_index(ipr, name)
    if index is not None:
        await ignoring((errno.ENODEV,), ipr.link("del", index=index))


async def pod_mtu(node_ip: str, backend: str, default: int = 1500) -> int:
    """The MTU pods get, as flannel hands it to the CNI bridge: the uplink's (the device holding
    the node IP), less the VXLAN header with the vxlan backend. ``default`` when the node IP is
    on no device (an agent given a --node-ip it does not hold)."""
    import ipaddress

    from pyroute2 import AsyncIPRoute
    try:
        if ipaddress.ip_address(node_ip).is_loopback:
            return default          # lo's 65536 says nothing about the network
        async with AsyncIPRoute() as ipr:
            _, mtu = await _uplink(ipr, node_ip)
    except (OSError, ValueError):
        return default
    return mtu - VXLAN_OVERHEAD if backend == "vxlan" else mtu


async def _uplink(ipr, node_ip: str) -> tuple[int, int]:
    """(ifindex, MTU) of the device holding ``node_ip``."""
    for a in await _collect(ipr.addr("dump")):
        if a.get("address") == node_ip:
            index = a["index"]
            link = (await ipr.link("get", index=index))[0]
            return index, int(link.get("mtu") or 1500)
    raise OSError(errno.EADDRNOTAVAIL, f"no device holds the node IP {node_ip}")


async def _vxlan_matches(ipr, index: int, local: str, mac: str) -> bool:
    link = (await ipr.link("get", index=index))[0]
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    if data is None:
        return False
    return (data.get("IFLA_VXLAN_ID") == VNI and data.get("IFLA_VXLAN_LOCAL") == local
            and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT and (link.get("address") or "").lower() == mac)


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)


def ensure_masq(pod_cidr: str, cluster_cidr: str, iptables: str = "iptables") -> None:
    """flannel's masquerade chains and the jumps to them; blocking, idempotent. The chains are
    rewritten only when a jump is missing or their rules differ."""
    want = masq_rules(pod_cidr, cluster_cidr)
    current = _run(f"{iptables}-save", "-t", "nat").stdout + _run(f"{iptables}-save", "-t", "filter").stdout
    wanted_rules = [line for line in want.splitlines() if line.startswith("-A ")]
    have_rules = [line for line in current.splitlines() if line.startswith(f"-A {POSTRTG_CHAIN} ")
                  or line.startswith(f"-A {FWD_CHAIN} ")]
    if _normalise(have_rules) != _normalise(wanted_rules):
        done = _run(f"{iptables}-restore", "-w", "--noflush", stdin=want)
        if done.returncode != 0:
            raise RuntimeError(f"{iptables}-restore: {done.stderr.strip()}")
    for table, builtin, chain, comment in JUMPS:
        spec = _jump_spec(chain, comment)
        if _run(iptables, "-w", "-t", table, "-C", builtin, *spec).returncode != 0:
            done = _run(iptables, "-w", "-t", table, "-A", builtin, *spec)
            if done.returncode != 0:
                raise RuntimeError(f"{iptables} -t {table} -A {builtin}: {done.stderr.strip()}")


def _normalise(rules: list[str]) -> list[str]:
    # iptables-save prints "-m comment --comment ..." where we put it and quotes the same way, but
    # adds "/32"-less forms and orders matches its own way: compare by sorted words
    return sorted(" ".join(sorted(r.replace('"', "").split())) for r in rules)


def cleanup_routes(via: str = "") -> None:
    """Delete the routes the overlay made (protocol `ROUTE_PROTOCOL`) in the current namespace;
    with ``via`` (a CIDR), only those whose gateway is inside it. Blocking, idempotent."""
    out = _run("ip", "-j", "-4", "route", "show", "proto", str(ROUTE_PROTOCOL)).stdout
    try:
        routes = json.loads(out or "[]")
    except ValueError:
        routes = []
    net = ipaddress.ip_network(via, strict=False) if via else None
    for r in routes:
        gw = r.get("gateway", "")
        if net is not None and not (gw and ipaddress.ip_address(gw) in net):
            continue
        _run("ip", "route", "del", r["dst"], "proto", str(ROUTE_PROTOCOL))


def cleanup(iptables: str = "iptables") -> None:
    """Remove flannel.1 (with it its neighbours and FDB entries), the overlay's routes and the
    masquerade chains with the jumps to them. Blocking, idempotent."""
    _run("ip", "link", "delete", DEVICE)
    cleanup_routes()
    for table, builtin, chain, comment in JUMPS:
        spec = _jump_spec(chain, comment)
        while _run(iptables, "-w", "-t", table, "-D", builtin, *spec).returncode == 0:
            pass
        _run(iptables, "-w", "-t", table, "-F", chain)
        _run(iptables, "-w", "-t", table, "-X", chain)
