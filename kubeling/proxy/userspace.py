"""The userspace proxy mode (``--proxy-mode=userspace``): the seed's original kube-proxy, as
upstream's removed ``pkg/proxy/userspace`` was.

Each service port gets a listener of its own on an ephemeral port of the node (upstream's
choice: the listener's port *is* the service port, so no ``SO_ORIGINAL_DST`` is needed), and
nat rules send the service's addresses to it:

- ``KUBE-PORTALS-CONTAINER`` (from ``PREROUTING``: pods and other hosts) and
  ``KUBE-PORTALS-HOST`` (from ``OUTPUT``: the node's own processes) REDIRECT
  ``clusterIP:port``, the ``externalIPs`` and the LoadBalancer ingress IPs to the listener;
- ``KUBE-NODEPORT-CONTAINER`` / ``KUBE-NODEPORT-HOST`` (only for local destinations,
  ``-m addrtype --dst-type LOCAL``) REDIRECT ``<node address>:nodePort`` to it.

The chains are applied with ``iptables-restore --noflush`` in one batch per sync (their names
are upstream's userspace names, distinct from the iptables mode's ``KUBE-SERVICES`` family).
When no service is left, the chains and their jumps are removed. A partial sync (``changed``
given) whose rules come out the same — only endpoints moved, which the balancer takes at once —
runs no iptables command at all; full syncs always rewrite the chains.

Balancing is upstream's ``LoadBalancerRR``: true round robin over the ready endpoints of a port
(endpoint i, i+1, ... for successive new connections or UDP sessions), and with
``sessionAffinity: ClientIP`` the client (as the relay sees its IP) sticks to its endpoint
until ``timeoutSeconds`` pass without a new connection. A failed dial tries the next endpoint
(upstream's ``tryConnect``, with its growing dial timeouts).

Relays never await per chunk: a TCP connection is two `asyncio.Protocol`\\ s writing into each
other's transports, with back-pressure (``pause_writing`` pauses the other side's reading)
and half-close passed through. UDP keeps a per-client "session" (a connected socket to the
endpoint) that ends after ``udp_idle_timeout`` seconds without traffic (upstream's
``--udp-timeout``, 250 ms there; 1 s here).

Endpoint changes affect only new connections and sessions; established relays go on. A
service port that goes away closes its listener (and its UDP sessions). Traffic policies:
a port whose internal and external policies pick different endpoints (``internalTrafficPolicy``
/ ``externalTrafficPolicy: Local``) gets a second listener for its external addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubeling.proxy.types import (
    Endpoint,
    EndpointsMap,
    NodeContext,
    ProxyModeUnavailable,
    ServicePort,
    ServicePortMap,
    ServicePortName,
    categorize_endpoints,
)

log = logging.getLogger(__name__)

PORTALS_CONTAINER = "KUBE-PORTALS-CONTAINER"
PORTALS_HOST = "KUBE-PORTALS-HOST"
NODEPORT_CONTAINER = "KUBE-NODEPORT-CONTAINER"
NODEPORT_HOST = "KUBE-NODEPORT-HOST"
CHAINS = (PORTALS_CONTAINER, PORTALS_HOST, NODEPORT_CONTAINER, NODEPORT_HOST)

# (built-in chain, insert at the top?, match, our chain): upstream's userspace jumps. The
# portals come before anything else in the chain; the NodePort jumps last.
JUMPS = (
    ("PREROUTING", True, '-m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules"',
     PORTALS_CONTAINER),
    ("OUTPUT", True, '-m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules"',
     PORTALS_HOST),
    ("PREROUTING", False, '-m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: '
     'this must be the last rule in the chain"', NODEPORT_CONTAINER),
    ("OUTPUT", False, '-m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: '
     'this must be the last rule in the chain"', NODEPORT_HOST),
)

# upstream's EndpointDialTimeouts: one try per entry, each on the next endpoint
ENDPOINT_DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)
UDP_IDLE_TIMEOUT = 1.0
NOFILE_LIMIT = 64000
WRITE_BUFFER_HIGH = 4 * 1024 * 1024

_JUMP_LINE = re.compile(r"^-A (PREROUTING|OUTPUT) (.*)-j (%s)\s*$" % "|".join(CHAINS))


# -- balancing -------------------------------------------------------------------------------


@dataclass
class _Affinity:
    endpoint: Endpoint
    last_used: float


@dataclass
class _BalancerState:
    endpoints: list[Endpoint] = field(default_factory=list)
    index: int = 0
    affinity: bool = False
    ttl: float = 10800.0
    clients: dict[str, _Affinity] = field(default_factory=dict)


class LoadBalancerRR:
    """Round robin with optional ClientIP affinity, per key (upstream's ``LoadBalancerRR``).

    ``update(key, endpoints, affinity, ttl)`` sets a key's endpoints (order kept; the position
    of the round robin survives the change); ``next_endpoint(key, client_ip)`` picks one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._states: dict[object, _BalancerState] = {}

    def update(self, key: object, endpoints: Sequence[Endpoint], affinity: bool = False,
               ttl: float = 10800.0) -> None:
        st = self._states.setdefault(key, _BalancerState())
        new = list(endpoints)
        if new != st.endpoints:
            keep = set(new)
            st.clients = {ip: a for ip, a in st.clients.items() if a.endpoint in keep}
            st.index = st.index % len(new) if new else 0
            st.endpoints = new
        if not affinity:
            st.clients.clear()
        st.affinity, st.ttl = affinity, float(ttl)

    def remove(self, key: object) -> None:
        self._states.pop(key, None)

    def endpoints(self, key: object) -> list[Endpoint]:
        st = self._states.get(key)
        return list(st.endpoints) if st else []

    def next_endpoint(self, key: object, client_ip: str = "", reset_affinity: bool = False) -> Endpoint | None:
        st = self._states.get(key)
        if st is None or not st.endpoints:
            return None
        now = self.clock()
        if st.affinity and client_ip and not reset_affinity:
            a = st.clients.get(client_ip)
            if a is not None and now - a.last_used < st.ttl:
                a.last_used = now
                return a.endpoint
        ep = st.endpoints[st.index % len(st.endpoints)]
        st.index = (st.index + 1) % len(st.endpoints)
        if st.affinity and client_ip:
            st.clients[client_ip] = _Affinity(ep, now)
        return ep

    def cleanup_stale_sessions(self) -> int:
        """Forget affinities older than their timeout (upstream's CleanupStaleStickySessions)."""
        now, n = self.clock(), 0
        for st in self._states.values():
            stale = [ip for ip, a in st.clients.items() if now - a.last_used >= st.ttl]
            for ip in stale:
                del st.clients[ip]
            n += len(stale)
        return n


# -- TCP relays ------------------------------------------------------------------------------


class _RelaySide(asyncio.Protocol):
    """One socket of a relay; it writes what it reads into its peer's transport."""

    def __init__(self, relays: set) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _RelaySide | None = None
        self.eof = False
        self.closed = False
        self.relays = relays
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            # not linked yet (uvloop may read before a pause in connection_made takes effect)
            self.pending.append(data)
            self.transport.pause_reading()
        elif peer.transport is not None and not peer.closed:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None:
            return True             # passed on once linked
        if peer.closed or peer.transport is None:
            return False
        if peer.eof:
            peer.transport.close()
            return False
        try:
            peer.transport.write_eof()
        except (OSError, RuntimeError):
            peer.transport.close()
            return False
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.relays.discard(self)
        peer = self.peer
        # an endpoint side not linked yet (a dial given up on) leaves the client alone
        if peer is not None and peer.peer is self and peer.transport is not None and not peer.closed:
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()


class _ClientSide(_RelaySide):
    """The accepted connection: reading waits until the endpoint side is connected."""

    def __init__(self, sock: TCPProxySocket) -> None:
        super().__init__(sock.relays)
        self.sock = sock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        self.relays.add(self)
        peer = transport.get_extra_info("peername")
        task = asyncio.get_running_loop().create_task(self.sock.dial(self, peer[0] if peer else ""))
        self.sock.tasks.add(task)
        task.add_done_callback(self.sock.tasks.discard)


# -- listeners -------------------------------------------------------------------------------


class ProxySocket:
    """A listener of one service port (upstream's ``ProxySocket``)."""

    protocol = "TCP"

    def __init__(self, key: tuple[ServicePortName, str], balancer: LoadBalancerRR) -> None:
        self.key, self.balancer = key, balancer
        self.port = 0
        self.service: ServicePort | None = None

    async def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _bind(kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class TCPProxySocket(ProxySocket):
    protocol = "TCP"

    def __init__(self, key, balancer: LoadBalancerRR) -> None:
        super().__init__(key, balancer)
        self.server: asyncio.AbstractServer | None = None
        self.relays: set[_RelaySide] = set()
        self.tasks: set[asyncio.Task] = set()
        self.dial_timeouts = ENDPOINT_DIAL_TIMEOUTS

    async def open(self) -> None:
        sock = _bind(socket.SOCK_STREAM)
        try:
            sock.listen(1024)
            self.port = sock.getsockname()[1]
            self.server = await asyncio.get_running_loop().create_server(
                lambda: _ClientSide(self), sock=sock, backlog=1024)
        except BaseException:
            sock.close()
            raise

    async def dial(self, client: _ClientSide, client_ip: str) -> None:
        """Connect the accepted ``client`` to an endpoint: the next one in the round robin (or
        the client's), then the next after it on each failure (upstream's ``tryConnect``)."""
        loop = asyncio.get_running_loop()
        for i, timeout in enumerate(self.dial_timeouts):
            if client.closed:
                return
            ep = self.balancer.next_endpoint(self.key, client_ip, reset_affinity=i > 0)
            if ep is None:
                log.debug("userspace: no endpoint for %s", self.key[0])
                break
            backend = _RelaySide(self.relays)
            backend.peer = client       # the endpoint may answer before create_connection returns
            try:
                async with asyncio.timeout(timeout):     # no extra task per dial, unlike wait_for
                    await loop.create_connection(lambda b=backend: b, ep.ip, ep.port)
            except (OSError, asyncio.TimeoutError) as e:
                log.debug("userspace: dial %s for %s failed: %s", ep, self.key[0], e)
                continue
            if client.closed:
                backend.transport.close()
                return
            client.peer = backend
            if backend.closed:          # reset by the endpoint before the link was made
                client.transport.close()
                return
            self.relays.add(backend)
            for data in client.pending:
                backend.transport.write(data)
            client.pending.clear()
            if client.eof:
                client.eof_received()
            else:
                client.transport.resume_reading()
            return
        _reset(client.transport)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def close_relays(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for side in list(self.relays):
            if side.transport is not None:
                side.transport.abort()
        self.relays.clear()


def _reset(transport: asyncio.BaseTransport | None) -> None:
    """Close with a RST, so the client fails at once (no endpoint could be reached)."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    transport.abort()


class _UDPListenerProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UDPProxySocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr) -> None:
        self.owner.from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("userspace: udp listener %s: %s", self.owner.key[0], exc)


class _UDPSession(asyncio.DatagramProtocol):
    """One client's traffic to one endpoint: a connected socket, ended when idle."""

    def __init__(self, owner: UDPProxySocket, client: tuple) -> None:
        self.owner, self.client = owner, client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.pending:
            transport.sendto(data)  # type: ignore[attr-defined]
        self.pending.clear()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is None:
            if len(self.pending) < 64:
                self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr) -> None:
        self.last = time.monotonic()
        listener = self.owner.transport
        if listener is not None:
            listener.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from the endpoint: the next datagram starts a new session
        log.debug("userspace: udp session %s -> %s: %s", self.client, self.owner.key[0], exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def arm(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()

        def check() -> None:
            if self.closed:
                return
            idle = time.monotonic() - self.last
            if idle >= timeout:
                self.close()
            else:
                self.timer = loop.call_later(timeout - idle, check)

        self.timer = loop.call_later(timeout, check)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()
        if self.owner.sessions.get(self.client) is self:
            del self.owner.sessions[self.client]


class UDPProxySocket(ProxySocket):
    protocol = "UDP"

    def __init__(self, key, balancer: LoadBalancerRR, idle_timeout: float = UDP_IDLE_TIMEOUT) -> None:
        super().__init__(key, balancer)
        self.idle_timeout = idle_timeout
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple, _UDPSession] = {}
        self.tasks: set[asyncio.Task] = set()

    async def open(self) -> None:
        sock = _bind(socket.SOCK_DGRAM)
        try:
            self.port = sock.getsockname()[1]
            self.transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _UDPListenerProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    def from_client(self, data: bytes, addr: tuple) -> None:
        session = self.sessions.get(addr)
        if session is None:
            ep = self.balancer.next_endpoint(self.key, addr[0])
            if ep is None:
                return
            session = self.sessions[addr] = _UDPSession(self, addr)
            session.arm(self.idle_timeout)
            task = asyncio.get_running_loop().create_task(self._connect(session, ep))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        session.send(data)

    async def _connect(self, session: _UDPSession, ep: Endpoint) -> None:
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: session, remote_addr=(ep.ip, ep.port))
        except OSError as e:
            log.debug("userspace: udp %s -> %s: %s", session.client, ep, e)
            session.close()

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


# -- rules -----------------------------------------------------------------------------------


def _iptables_save() -> str:
    r = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def _restore(text: str) -> None:
    r = subprocess.run(["iptables-restore", "--noflush"], input=text, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"iptables-restore: {r.stderr.strip() or r.returncode}")


def _current(saved: str) -> tuple[set[str], list[str], int]:
    """(our chains that exist, our jump lines as saved, rules in our chains)."""
    chains, jumps, rules = set(), [], 0
    for line in saved.splitlines():
        if line.startswith(":") and line[1:].split(" ", 1)[0] in CHAINS:
            chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            chain = line.split(" ", 2)[1]
            if chain in CHAINS:
                rules += 1
            elif _JUMP_LINE.match(line):
                jumps.append(line)
    return chains, jumps, rules


def removal_batch(saved: str) -> str:
    """The ``iptables-restore --noflush`` text that removes our jumps and chains ("" if none)."""
    chains, jumps, _ = _current(saved)
    if not chains and not jumps:
        return ""
    out = ["*nat"]
    out += [f":{c} - [0:0]" for c in CHAINS if c in chains]
    out += ["-D" + line[2:] for line in jumps]
    out += [f"-X {c}" for c in CHAINS if c in chains]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def cleanup() -> None:
    """Remove the userspace mode's chains and jumps from this netns (blocking, idempotent).
    Its listeners belong to the proxy process and end with it."""
    text = removal_batch(_iptables_save())
    if text:
        _restore(text)


def _ipv4(value: str, net: bool = False) -> bool:
    """A valid IPv4 address (or network, with ``net``): anything else would fail the whole
    iptables-restore batch, so it is left out (and logged) instead."""
    try:
        (ipaddress.IPv4Network(value, strict=False) if net else ipaddress.IPv4Address(value))
    except ValueError:
        log.warning("userspace: ignoring %r: not an IPv4 %s", value, "network" if net else "address")
        return False
    return True


def _proto_match(proto: str, port: int) -> str:
    p = proto.lower()
    return f"-p {p} -m {p} --dport {port}"


def portal_rules(listeners: Sequence[tuple[ServicePortName, str, ServicePort, int]], node: NodeContext,
                 has_external: set[ServicePortName]) -> list[str]:
    """The rules (``-A CHAIN ...`` lines) for these listeners: (name, "internal"|"external",
    service port, listener port). A port without an "external" listener takes its external
    addresses on the internal one."""
    out: list[str] = []
    nodeport_dsts = [c if "/" in c else f"{c}/32" for c in node.nodeport_addresses if ":" not in c and _ipv4(c, True)] \
        or [f"{ip}/32" for ip in node.node_ips if ":" not in ip and _ipv4(ip)]
    for spn, kind, svc, lport in listeners:
        proto = svc.protocol.lower()
        comment = f'-m comment --comment "{spn}"'
        to = f"-j REDIRECT --to-ports {lport}"
        match = _proto_match(proto, svc.port)
        portals: list[tuple[str, str]] = []
        if kind == "internal" and _ipv4(svc.cluster_ip):
            portals.append((f"-d {svc.cluster_ip}/32", match))
        if kind == "external" or spn not in has_external:
            portals += [(f"-d {ip}/32", match) for ip in svc.external_ips if ":" not in ip and _ipv4(ip)]
            for ip in svc.load_balancer_ips:
                if ":" in ip or not _ipv4(ip):
                    continue
                if svc.load_balancer_source_ranges:
                    portals += [(f"-s {src} -d {ip}/32", match) for src in svc.load_balancer_source_ranges
                                if ":" not in src and _ipv4(src, True)]
                else:
                    portals.append((f"-d {ip}/32", match))
            if svc.node_port:
                np = _proto_match(proto, svc.node_port)
                for chain in (NODEPORT_CONTAINER, NODEPORT_HOST):
                    if nodeport_dsts:
                        out += [f"-A {chain} -d {d} {np} {comment} {to}" for d in nodeport_dsts]
                    else:
                        out.append(f"-A {chain} {np} {comment} {to}")
        for dst, m in portals:
            for chain in (PORTALS_CONTAINER, PORTALS_HOST):
                out.append(f"-A {chain} {dst} {m} {comment} {to}")
    return out


def sync_batch(saved: str, rules: Sequence[str]) -> str:
    """The ``iptables-restore --noflush`` text that makes our chains hold exactly ``rules``
    (flushing them), adding the jumps that are missing; with no rules, the removal batch."""
    if not rules:
        return removal_batch(saved)
    _, jumps, _ = _current(saved)
    have = {line.rsplit("-j ", 1)[1].strip() for line in jumps}
    out = ["*nat"] + [f":{c} - [0:0]" for c in CHAINS]
    for builtin, first, match, chain in JUMPS:
        if chain not in have:
            verb = f"-I {builtin} 1" if first else f"-A {builtin}"
            out.append(f"{verb} {match} -j {chain}")
    out += rules
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def raise_nofile_limit(want: int = NOFILE_LIMIT) -> int:
    """Two sockets per relayed connection and one listener per service port: raise the
    open-files limit as upstream's userspace proxy did (64000); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    for new in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            return new[0]
        except (ValueError, OSError):
            continue
    log.warning("userspace: open files limited to %d", soft)
    return soft


# -- the mode --------------------------------------------------------------------------------


class Proxier:
    """The userspace mode (see the module docstring)."""

    mode = "userspace"

    def __init__(self, node: NodeContext, *, udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.udp_idle_timeout = udp_idle_timeout
        self.balancer = LoadBalancerRR(clock)
        self.sockets: dict[tuple[ServicePortName, str], ProxySocket] = {}
        self._applied: list[str] | None = None     # the rules of the last successful sync
        self._unsupported: set[ServicePortName] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        for tool in ("iptables-save", "iptables-restore"):
            try:
                r = await asyncio.to_thread(subprocess.run, [tool, "--version"], capture_output=True, text=True)
            except FileNotFoundError:
                raise ProxyModeUnavailable(f"the userspace proxy mode needs {tool} (Debian package iptables)") from None
            if r.returncode != 0:
                raise ProxyModeUnavailable(f"{tool} does not work here: {r.stderr.strip()}")
        raise_nofile_limit()

    def _desired(self, services: ServicePortMap, endpoints: EndpointsMap,
                 only: set[ServicePortName] | None = None):
        """(name, "internal"|"external") -> (service port, its endpoints), for every port or
        for those in ``only``."""
        desired: dict[tuple[ServicePortName, str], tuple[ServicePort, list[Endpoint]]] = {}
        items = services.items() if only is None else ((spn, services[spn]) for spn in only if spn in services)
        for spn, svc in items:
            if not svc.cluster_ip or svc.cluster_ip == "None":
                continue
            if svc.protocol not in ("TCP", "UDP"):
                if spn not in self._unsupported:
                    self._unsupported.add(spn)
                    log.warning("userspace: %s: protocol %s is not proxied in userspace mode", spn, svc.protocol)
                continue
            cat = categorize_endpoints(endpoints.get(spn, ()), svc)
            internal = cat.local if svc.internal_policy_local else cat.cluster
            desired[(spn, "internal")] = (svc, internal)
            if svc.externally_accessible and svc.internal_policy_local != svc.external_policy_local:
                desired[(spn, "external")] = (svc, cat.local if svc.external_policy_local else cat.cluster)
        return desired

    async def sync(self, services: ServicePortMap, endpoints: EndpointsMap,
                   changed: set[ServicePortName] | None = None) -> None:
        async with self._lock:
            partial = changed is not None and self._applied is not None
            if partial:
                desired = self._desired(services, endpoints, set(changed))
                stale = [k for k in self.sockets if k[0] in changed and k not in desired]
            else:
                desired = self._desired(services, endpoints)
                stale = [k for k in self.sockets if k not in desired]
            dirty = bool(stale)
            for key in stale:
                self.sockets.pop(key).close()
                self.balancer.remove(key)
            for key, (svc, eps) in desired.items():
                sock = self.sockets.get(key)
                if sock is None:
                    if svc.protocol == "TCP":
                        sock = TCPProxySocket(key, self.balancer)
                    else:
                        sock = UDPProxySocket(key, self.balancer, self.udp_idle_timeout)
                    try:
                        await sock.open()
                    except OSError as e:
                        log.warning("userspace: cannot open a listener for %s: %s", key[0], e)
                        continue
                    self.sockets[key] = sock
                    log.info("userspace: %s (%s) listens on port %d", key[0], key[1], sock.port)
                if sock.service != svc:
                    sock.service = svc
                    dirty = True
                self.balancer.update(key, eps, svc.affinity, svc.sticky_max_age_seconds)
            if partial and not dirty:
                return      # only endpoints moved: the balancer has them already, no rule changes
            if not partial:
                self.balancer.cleanup_stale_sessions()
            has_external = {spn for spn, kind in self.sockets if kind == "external"}
            listeners = [(spn, kind, s.service, s.port) for (spn, kind), s in sorted(self.sockets.items())]
            rules = portal_rules(listeners, self.node, has_external)
            if partial and rules == self._applied:
                return
            saved = await asyncio.to_thread(_iptables_save)
            text = sync_batch(saved, rules)
            self._applied = None
            if text:
                await asyncio.to_thread(_restore, text)
            self._applied = rules

    async def cleanup(self) -> None:
        async with self._lock:
            for key, sock in list(self.sockets.items()):
                sock.close()
                if isinstance(sock, TCPProxySocket):
                    sock.close_relays()
                self.balancer.remove(key)
            self.sockets.clear()
            self._applied = None
            await asyncio.to_thread(cleanup)

    async def count_leaks(self) -> dict[str, int]:
        chains, jumps, rules = _current(await asyncio.to_thread(_iptables_save))
        return {
            "listeners": len(self.sockets),
            "udp_sessions": sum(len(s.sessions) for s in self.sockets.values() if isinstance(s, UDPProxySocket)),
            "chains": len(chains),
            "rules": rules + len(jumps),
        }
