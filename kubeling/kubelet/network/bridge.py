"""`BridgeNetwork`: a bridge, a veth per pod and host-local IPAM — CNI's bridge plugin, in-process.

Per node (`ensure_node`, at agent start; repeated lazily by the first `setup`)::

    kubeling0 (bridge, up)  holds the gateway: the first host address of the podCIDR, /prefix
    unreachable <cluster CIDR>, unreachable <service CIDR>
        so that a packet to a pod of another node or to a Service VIP with no rule fails at once
        (ICMP unreachable) instead of leaving by the default route; the podCIDR's own route via
        the bridge is more specific and wins (and the overlay's routes to other nodes' podCIDRs)
    rule "iif lo to <service CIDR> lookup 1043", table 1043: <service CIDR> dev kubeling0
        the node's own packets to a ClusterIP get a route, so that kube-proxy's DNAT (nat
        OUTPUT, after routing) can send them on; see `ensure_node`
    net.ipv4.ip_forward = 1   (the one sysctl we set: pods are routed through the node)

Per sandbox (`setup`)::

    veth<first 8 hex of the sandbox id>  host side: enslaved to the bridge, hairpin on, up
        <==>  eth0 in the pod's netns: <IP>/<prefix>, up, default route via the gateway; lo up

Contracts:

- Everything happens in the network namespace the agent process runs in (the "node"), found
  through netlink (pyroute2) and ``/proc/sys/net`` — never ``/sys/class/net`` — so that an agent
  started inside a netns of its own (as the e2e harness runs each cluster) manages its own bridge.
- `setup` returns the pod IP. A retried `setup` of the same sandbox returns the same IP. A failed
  `setup` undoes what it did (veth, IP, hostPort rules) before raising `SandboxError`; so does a
  cancelled one, before the cancellation goes on.
- The bridge's ifindex is remembered once the bridge is made; a `setup` that finds it gone
  (deleted by hand) makes it again, with its address, and plugs the pod into the new one.
- `teardown` is idempotent and works when the netns is already gone: it deletes the host veth if
  it still exists (with it, its peer), the sandbox's hostPort rules and its IP reservation.
- The MAC of the bridge is fixed at creation (``0a:58`` + the gateway IP), so that it does not
  change as ports come and go, which would leave pods with a stale ARP entry for the gateway.
- The pod's side is configured over a netlink socket opened inside the pod's netns by a
  short-lived thread that ``setns()``es itself (a network namespace is per thread), never by
  pyroute2's ``netns=``, which forks the agent: a forked copy of an asyncio process shares its
  signal wakeup fd, the fork costs a copy of the agent's page tables per pod, and a fork of a
  threaded process may deadlock in the child.
- Two live sandboxes whose ids share their first 8 hex digits would share a veth name; with
  random 64-hex ids that is a 1-in-4-billion chance per pair, which we accept as upstream does.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kubeling.kubelet.network.hostport import HostPorts
from kubeling.kubelet.network.ipam import HostLocalIPAM
from kubeling.kubelet.runtime import SandboxConfig, SandboxError

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "kubeling0"
POD_IFNAME = "eth0"
NETWORK_NAME = "kubeling"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
RTN_UNREACHABLE = 7
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0


def host_veth_name(sandbox_id: str) -> str:
    """The host side of a sandbox's veth pair (15 characters at most, as IFNAMSIZ wants)."""
    return "veth" + sandbox_id[:8]


def bridge_mac(gateway: ipaddress.IPv4Address) -> str:
    """A locally administered MAC derived from the gateway IP: stable across restarts."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in gateway.packed)


SERVICE_TABLE = 1043           # the routing table of the node's own route to the service CIDR
SERVICE_RULE_PRIORITY = 1043


class BridgeNetwork:
    """The node's pod network plugin; see the module docstring."""

    NAME = "bridge"

    def __init__(self, root: Path, pod_cidr: str, *, bridge: str = DEFAULT_BRIDGE, mtu: int = 1500,
                 cluster_cidr: str = "10.42.0.0/16", service_cidr: str = "10.43.0.0/16") -> None:
        self.root = Path(root)
        self.pod_cidr = ipaddress.ip_network(pod_cidr, strict=False)
        self.bridge = bridge
        self.mtu = mtu
        self.cluster_cidr = ipaddress.ip_network(cluster_cidr, strict=False)
        self.service_cidr = ipaddress.ip_network(service_cidr, strict=False)
        self.ipam = HostLocalIPAM(self.root / "network", str(self.pod_cidr))
        self.gateway = self.ipam.gateway
        self.hostports = HostPorts(str(self.pod_cidr))
        self._node_ready = False
        self._bridge_lock = asyncio.Lock()
        # the bridge's ifindex once made: a pod's setup then sends no request about the bridge
        # (a lookup, an address, a link-up each); netlink requests are most of a pod's setup
        self._bridge_index: int | None = None

    # -- the node ---------------------------------------------------------------------------

    async def ensure_node(self) -> None:
        """Bridge up, unreachable routes, the node's own route to Services, ip_forward — idempotent."""
        async with AsyncIPRoute() as ipr:
            index = await self._ensure_bridge(ipr)
            for cidr in (self.cluster_cidr, self.service_cidr):
                await ignoring(errno.EEXIST, ipr.route(
                    "add", dst=str(cidr.network_address), dst_len=cidr.prefixlen, type="unreachable"))
            # The node's own processes (hostNetwork pods, tools) reach ClusterIPs too. Their
            # packets are routed before kube-proxy's DNAT in nat OUTPUT can change the
            # destination, and the unreachable route would fail them at connect(). So locally
            # made packets for the service CIDR (rule "iif lo") look up a table whose route
            # points at the bridge: DNAT then re-routes them to the endpoint; a VIP with no
            # rule ends as an unanswered ARP on the bridge (EHOSTUNREACH), never leaving the node.
            svc = self.service_cidr
            await ignoring(errno.EEXIST, ipr.route("add", dst=str(svc.network_address), dst_len=svc.prefixlen,
                                                  oif=index, table=SERVICE_TABLE, prefsrc=str(self.gateway)))
            await ignoring(errno.EEXIST, ipr.rule("add", table=SERVICE_TABLE, priority=SERVICE_RULE_PRIORITY,
                                                 dst=str(svc.network_address), dst_len=svc.prefixlen,
                                                 iifname="lo"))
        await asyncio.to_thread(_enable_ip_forward)
        # The hostPort chains are made by the first pod that has a hostPort, as portmap does:
        # a node whose iptables is unusable still runs every pod without one.
        self._node_ready = True

    async def _ensure_bridge(self, ipr: AsyncIPRoute) -> int:
        """The bridge's ifindex, creating it (with the gateway address) if it is missing."""
        async with self._bridge_lock:
            index = await link_index(ipr, self.bridge)
            if index is None:
                await ignoring(errno.EEXIST, ipr.link("add", ifname=self.bridge, kind="bridge",
                                                     address=bridge_mac(self.gateway), mtu=self.mtu))
                index = await link_index(ipr, self.bridge)
                if index is None:
                    raise OSError(errno.ENODEV, f"bridge {self.bridge} vanished right after its creation")
            await ignoring(errno.EEXIST, ipr.addr("add", index=index, address=str(self.gateway),
                                                 prefixlen=self.pod_cidr.prefixlen))
            await ipr.link("set", index=index, state="up")
            self._bridge_index = index
            return index

    # -- a sandbox --------------------------------------------------------------------------

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        """Wire the sandbox's netns to the bridge; returns its IP. See the module docstring."""
        try:
            if not self._node_ready:
                await self.ensure_node()
            ip = await self.ipam.allocate(sandbox_id)
            await self._plug(sandbox_id, netns_path, ip)
            await self.hostports.add(sandbox_id, ip, config.port_mappings)
            return ip
        except BaseException as e:
            # Also on cancellation (the pod was deleted mid-setup): undo, shielded, then re-raise.
            try:
                await asyncio.shield(self._unplug(sandbox_id))
            except Exception as undo:  # noqa: BLE001 - the setup error is the one to report
                log.warning("network: undoing the setup of %s failed too: %s", sandbox_id, undo)
            if not isinstance(e, Exception):
                raise
            raise SandboxError(f'failed to setup network for sandbox "{sandbox_id}": plugin type="{self.NAME}" '
                               f'name="{NETWORK_NAME}" failed (add): {_describe(e)}') from e

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        """Undo `setup`; idempotent, also once the netns is gone."""
        try:
            await self._unplug(sandbox_id)
        except Exception as e:
            raise SandboxError(f'failed to destroy network for sandbox "{sandbox_id}": plugin type="{self.NAME}" '
                               f'name="{NETWORK_NAME}" failed (delete): {_describe(e)}') from e

    async def _plug(self, sandbox_id: str, netns_path: str, ip: str) -> None:
        veth = host_veth_name(sandbox_id)
        async with AsyncIPRoute() as ipr:
            nsfd = os.open(netns_path, os.O_RDONLY)
            try:
                # The peer is born inside the pod's netns under its final name: no window in
                # which a half-made interface sits in the node's namespace.
                add = ipr.link("add", ifname=veth, kind="veth", mtu=self.mtu,
                               peer={"ifname": POD_IFNAME, "net_ns_fd": nsfd, "mtu": self.mtu})
                try:
                    await add
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise
                    # a setup retried after a crash: start over
                    stale = await link_index(ipr, veth)
                    if stale is not None:
                        await ignoring(errno.ENODEV, ipr.link("del", index=stale))
                    await ipr.link("add", ifname=veth, kind="veth", mtu=self.mtu,
                                   peer={"ifname": POD_IFNAME, "net_ns_fd": nsfd, "mtu": self.mtu})
            finally:
                os.close(nsfd)
            index = await link_index(ipr, veth)
            if index is None:
                raise OSError(errno.ENODEV, f"veth {veth} vanished right after its creation")
            bridge = self._bridge_index or await self._ensure_bridge(ipr)
            try:
                await ipr.link("set", index=index, master=bridge, state="up")
            except NetlinkError:
                # was the bridge deleted under us (EINVAL: no such master)? Then make it again.
                if await self._ensure_bridge(ipr) == bridge:
                    raise
                await ipr.link("set", index=index, master=self._bridge_index, state="up")
            # Hairpin: a pod reaching itself through a hostPort or a Service VIP gets the
            # packet back out of the port it came from.
            await ipr.brport("set", index=index, mode=1)
        fd = await asyncio.to_thread(netlink_fd_in, netns_path)
        async with AsyncIPRoute(fileno=fd) as pod:
            lo = await link_index(pod, "lo")
            eth0 = await link_index(pod, POD_IFNAME)
            if lo is None or eth0 is None:
                raise OSError(errno.ENODEV, f"{netns_path}: lo or {POD_IFNAME} is missing")
            await pod.link("set", index=lo, state="up")
            await pod.addr("add", index=eth0, address=ip, prefixlen=self.pod_cidr.prefixlen)
            await pod.link("set", index=eth0, state="up")
            await pod.route("add", dst="0.0.0.0", dst_len=0, gateway=str(self.gateway))

    async def _unplug(self, sandbox_id: str) -> None:
        """Remove the veth, the hostPort rules and the IP; each step tolerates 'already gone'."""
        errors: list[BaseException] = []
        try:
            async with AsyncIPRoute() as ipr:
                index = await link_index(ipr, host_veth_name(sandbox_id))
                if index is not None:
                    await ignoring(errno.ENODEV, ipr.link("del", index=index))
        except Exception as e:  # noqa: BLE001 - still free the rules and the IP
            errors.append(e)
        for step in (self.hostports.remove(sandbox_id), self.ipam.release(sandbox_id)):
            try:
                await step
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise errors[0]


def netlink_fd_in(netns_path: str) -> int:
    """A NETLINK_ROUTE socket of the netns at ``netns_path``, as a file descriptor the caller owns.

    Blocking. A socket belongs to the namespace it was created in, whichever thread uses it
    later; so a fresh thread joins the netns, makes the socket and ends (the thread is thrown
    away rather than switched back, so no pooled thread is ever left in a pod's namespace)."""
    out: dict[str, object] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            nsfd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(nsfd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns_path}: {os.strerror(err)}")
            finally:
                os.close(nsfd)
            out["fd"] = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE).detach()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = e

    thread = threading.Thread(target=work, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["fd"]  # type: ignore[return-value]


async def link_index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    """The ifindex of ``ifname`` in the current netns, or None."""
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


async def ignoring(codes: int | tuple[int, ...], request):
    """Await a netlink request, treating the errno ``codes`` (EEXIST, ENODEV ...) as success
    (the answer is then None)."""
    try:
        return await request
    except NetlinkError as e:
        if e.code not in (codes if isinstance(codes, tuple) else (codes,)):
            raise
        return None



def _enable_ip_forward() -> None:
    with open(IP_FORWARD, "r+") as f:
        if f.read().strip() != "1":
            f.seek(0)
            f.write("1")


def _describe(e: BaseException) -> str:
    if isinstance(e, NetlinkError):
        return f"netlink: {os.strerror(e.code) if e.code > 0 else e}"
    return str(e) or type(e).__name__
