"""The agent's client-side load balancer over the API servers (k3s's ``pkg/agent/loadbalancer``).

A node agent does not talk to one API server: it talks to ``127.0.0.1:6444`` of its own network
namespace (``kubeling agent --lb-server-port``, k3s's default), where this balancer forwards each
TCP connection, bytes unchanged (TLS passes through: the API servers' serving certificates name
127.0.0.1), to one healthy server of a list::

    kubelet, kube-proxy, NetworkPolicy controller, overlay, certificate manager
        └── https://127.0.0.1:6444 ──▶ LoadBalancer ──▶ the active server ──(fails)──▶ the next one

- The list starts from ``--server`` (one URL, or several separated by commas: the *default*
  servers) and is kept up to date from the ``default/kubernetes`` Endpoints, which list every
  API server (`follow_endpoints`, run with the agent's ``system:kubeling-controller`` identity,
  as k3s's agent watches them with its ``system:k3s-controller`` one). The default servers stay
  at the end of the list as the last resort, and an empty Endpoints is ignored. The list is saved
  (``<agent>/etc/agent-load-balancer.json``) so that a restarted agent knows every server.
- Every new connection goes to the *active* server. A failed dial marks that server failed and
  the next healthy one is tried (when none is healthy, every server is tried); when no server
  answers, the connection is reset at once. A successful dial to another server makes it the
  active one: each switch is logged (and kept in `switches`).
- Every `check_interval` seconds each server is checked (a TCP dial; the agent checks
  ``/readyz`` over TLS with the cluster CA: any answer below 500 is healthy). Two failed checks
  in a row mark a server failed, one good check or dial marks it healthy again.
- When the active server fails (a dial or the checks) and another one is healthy, the
  connections to it are closed, so the clients reconnect — through the next server; watches
  resume from their resourceVersion — and so are the connections to a server that leaves the
  list. With no healthy server left, nothing is cut: every new dial tries every server.
- The saved file also names the active server (``active``), counts the switches and gives the
  time of the last one (``switched_at``, epoch seconds), for operators and tests.

Copying is asyncio `Protocol` to `Protocol` (no streams, no task per connection once it is
established), with flow control both ways (a full write buffer pauses reading on the other side)
and half-close passed on.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_PORT = 6444          # k3s's --lb-server-port
STATE_FILE = "agent-load-balancer.json"

HealthCheck = Callable[[str, int], Awaitable[bool]]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_addresses(servers: str) -> list[str]:
    """``--server https://a:6443,https://b:6443`` → ``["a:6443", "b:6443"]`` (ValueError if one is
    not an https URL)."""
    out = []
    for url in (s.strip() for s in servers.split(",")):
        if not url:
            continue
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"--server {url!r}: expected https://<host>:<port>")
        address = join_address(parsed.hostname, parsed.port or 443)
        if address not in out:
            out.append(address)
    if not out:
        raise ValueError("--server: no server given")
    return out


def addresses_from_endpoints(endpoints: dict | None) -> list[str]:
    """The ``host:port`` of every ready address of an Endpoints object (the ``https`` port, or the
    only one), in the object's order."""
    out = []
    for subset in (endpoints or {}).get("subsets") or []:
        ports = subset.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "https"), None)
        if port is None and ports:
            port = ports[0].get("port")
        if not port:
            continue
        for a in subset.get("addresses") or []:
            if a.get("ip"):
                address = join_address(a["ip"], int(port))
                if address not in out:
                    out.append(address)
    return out


async def tcp_check(host: str, port: int, timeout: float = 5.0) -> bool:
    """Healthy when a TCP connection opens."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def readyz_check(ca_pem: bytes, timeout: float = 5.0) -> HealthCheck:
    """A check that asks the server's ``/readyz`` over TLS verified by ``ca_pem`` (no client
    credentials): healthy when it answers with a status below 500 (401/403 still mean a server
    that serves; 500 is a failing readiness check, such as an unreachable etcd). The chain is
    checked, not the name: a server's certificate need not name the address the Endpoints give."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.check_hostname = False

    async def check(host: str, port: int) -> bool:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx), timeout)
            writer.write(f"GET /readyz HTTP/1.1\r\nHost: {join_address(host, port)}\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), timeout)
            parts = line.split()
            return len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) < 500
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError):
            return False
        finally:
            if writer is not None:
                writer.close()
    return check


class _Conn:
    """One client connection and its connection to a server."""
    __slots__ = ("lb", "client", "backend", "server", "eofs", "task", "closed")

    def __init__(self, lb: "LoadBalancer") -> None:
        self.lb = lb
        self.client: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.server = ""
        self.eofs = 0
        self.task: asyncio.Task | None = None
        self.closed = False

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for t in (self.client, self.backend):
            if t is not None and not t.is_closing():
                t.abort() if abort else t.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.lb._forget(self)

    def eof(self, towards: asyncio.Transport | None) -> bool:
        """One side ended its stream: pass the half-close on; both ended: close."""
        self.eofs += 1
        if self.eofs >= 2 or towards is None or not towards.can_write_eof() or towards.is_closing():
            self.close()
            return False
        towards.write_eof()
        return True


class _Side(asyncio.Protocol):
    """One end of a `_Conn`: what it receives is written to the other end."""

    def __init__(self, conn: _Conn, is_client: bool) -> None:
        self.conn, self.is_client = conn, is_client

    def _other(self) -> asyncio.Transport | None:
        return self.conn.backend if self.is_client else self.conn.client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.is_client:
            self.conn.client = transport
            transport.pause_reading()              # until a server is connected
            self.conn.task = asyncio.get_running_loop().create_task(self.conn.lb._connect(self.conn))
        else:
            self.conn.backend = transport

    def data_received(self, data: bytes) -> None:
        other = self._other()
        if other is not None and not other.is_closing():
            other.write(data)

    def eof_received(self) -> bool:
        return self.conn.eof(self._other())

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()

    def pause_writing(self) -> None:               # this end's write buffer is full
        other = self._other()
        if other is not None and not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self._other()
        if other is not None and not other.is_closing():
            other.resume_reading()


class LoadBalancer:
    """See the module docstring. ``servers`` are ``host:port`` addresses, the default ones."""

    def __init__(self, servers: list[str], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 name: str = "apiserver", health_check: HealthCheck | None = None, check_interval: float = 5.0,
                 dial_timeout: float = 5.0, failures_to_fail: int = 2, state_dir: str | os.PathLike | None = None,
                 any_port_if_busy: bool = False) -> None:
        if not servers:
            raise ValueError("a load balancer needs at least one server")
        self.name, self.host, self.port = name, host, port
        self.defaults = list(dict.fromkeys(servers))
        self.servers = list(self.defaults)
        self.active = self.servers[0]
        self.health_check: HealthCheck = health_check or tcp_check
        self.check_interval, self.dial_timeout, self.failures_to_fail = check_interval, dial_timeout, failures_to_fail
        self.any_port_if_busy = any_port_if_busy
        self.state_path = Path(state_dir) / STATE_FILE if state_dir else None
        self.failed: set[str] = set()
        self.switches: list[tuple[float, str, str]] = []      # (time.time(), from, to)
        self._check_failures: dict[str, int] = {}
        self._conns: dict[str, set[_Conn]] = {}
        self._pending: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._checker: asyncio.Task | None = None
        self._load_state()

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return join_address(self.host, self.port)

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    def connections(self, server: str | None = None) -> int:
        if server is not None:
            return len(self._conns.get(server, ()))
        return sum(len(c) for c in self._conns.values())

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory = lambda: _Side(_Conn(self), True)  # noqa: E731
        try:
            self._server = await loop.create_server(factory, self.host, self.port, reuse_address=True)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or not self.any_port_if_busy:
                raise
            log.warning("load balancer %s: %s is in use (another agent in this network namespace?): "
                        "listening on a free port instead", self.name, self.address)
            self._server = await loop.create_server(factory, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._checker = loop.create_task(self._check_loop(), name=f"lb-{self.name}-health")
        self._save_state()
        log.info("load balancer %s on %s: servers %s, active %s", self.name, self.address,
                 ", ".join(self.servers), self.active)

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for conn in [*self._pending, *(c for s in self._conns.values() for c in s)]:
            conn.close(abort=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> "LoadBalancer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- the server list ------------------------------------------------------------------------------

    def update(self, servers: list[str]) -> None:
        """A new list (from the Endpoints): those servers first, in order, then the default ones
        not in it. An empty list is ignored. Connections to a server that left are closed."""
        servers = [s for s in dict.fromkeys(servers) if s]
        if not servers:
            return
        new = servers + [d for d in self.defaults if d not in servers]
        if new == self.servers:
            return
        gone = [s for s in self.servers if s not in new]
        log.info("load balancer %s: servers %s (were %s)", self.name, ", ".join(new), ", ".join(self.servers))
        self.servers = new
        for s in gone:
            self.failed.discard(s)
            self._check_failures.pop(s, None)
            self._close_server(s)
        if self.active not in new:
            self._switch(self._next_healthy(), "it left the server list")
        self._save_state()

    def _load_state(self) -> None:
        if self.state_path is None:
            return
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        if state.get("defaults") == self.defaults and state.get("servers"):
            self.servers = list(dict.fromkeys([*state["servers"], *self.defaults]))
            self.active = state.get("active") if state.get("active") in self.servers else self.servers[0]

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"defaults": self.defaults, "servers": self.servers, "active": self.active,
                                       "switches": len(self.switches),
                                       "switched_at": self.switches[-1][0] if self.switches else None}))
            os.replace(tmp, self.state_path)
        except OSError as e:
            log.warning("load balancer %s: cannot save the server list: %s", self.name, e)

    # -- choosing a server ----------------------------------------------------------------------------

    def _order(self) -> list[str]:
        """The servers, from the active one on."""
        i = self.servers.index(self.active) if self.active in self.servers else 0
        return self.servers[i:] + self.servers[:i]

    def _next_healthy(self) -> str:
        """The first healthy server after the active one (from the top when it left the list)."""
        order = self._order()
        if self.active not in self.servers:
            return next((s for s in order if s not in self.failed), order[0])
        return next((s for s in order[1:] if s not in self.failed), self.active)

    def _candidates(self) -> list[str]:
        order = self._order()
        healthy = [s for s in order if s not in self.failed]
        return healthy or order          # none healthy: try them all anyway

    def _switch(self, to: str, why: str) -> None:
        if to == self.active:
            return
        log.warning("load balancer %s: switched from server %s to %s (%s)", self.name, self.active, to, why)
        self.switches.append((time.time(), self.active, to))
        self.active = to
        self._save_state()

    def _mark_failed(self, server: str, why: str) -> None:
        if server not in self.failed:
            log.warning("load balancer %s: server %s failed: %s", self.name, server, why)
            self.failed.add(server)
        if server == self.active:
            # its clients move to the next healthy server; with none, they stay (every dial
            # tries every server then)
            nxt = self._next_healthy()
            if nxt != server:
                self._close_server(server)
                self._switch(nxt, f"{server} failed")

    def _mark_healthy(self, server: str) -> None:
        self._check_failures.pop(server, None)
        if server in self.failed:
            self.failed.discard(server)
            log.info("load balancer %s: server %s is healthy again", self.name, server)

    def _close_server(self, server: str) -> None:
        conns = self._conns.pop(server, set())
        if conns:
            log.info("load balancer %s: closing %d connection(s) to %s", self.name, len(conns), server)
        for conn in conns:
            conn.close(abort=True)

    def _forget(self, conn: _Conn) -> None:
        self._pending.discard(conn)
        if conn.server:
            conns = self._conns.get(conn.server)
            if conns is not None:
                conns.discard(conn)

    async def _connect(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        self._pending.add(conn)
        try:
            for server in self._candidates():
                host, port = split_address(server)
                try:
                    await asyncio.wait_for(loop.create_connection(lambda: _Side(conn, False), host, port),
                                           self.dial_timeout)
                except (OSError, asyncio.TimeoutError) as e:
                    self._mark_failed(server, f"dial: {e or 'timed out'}")
                    continue
                if conn.closed:                          # the client left meanwhile
                    if conn.backend is not None:
                        conn.backend.close()
                    return
                self._pending.discard(conn)
                conn.server = server
                self._conns.setdefault(server, set()).add(conn)
                self._mark_healthy(server)
                if server != self.active:
                    self._switch(server, f"{self.active} did not answer")
                assert conn.client is not None
                conn.client.resume_reading()
                return
            log.warning("load balancer %s: no server answers (%s)", self.name, ", ".join(self.servers))
            conn.close(abort=True)                       # reset: the client retries
        except asyncio.CancelledError:
            conn.close(abort=True)
            raise

    # -- health checks ----------------------------------------------------------------------------------

    async def check_now(self) -> None:
        """One round of checks of every server."""
        servers = list(self.servers)
        results = await asyncio.gather(*(self.health_check(*split_address(s)) for s in servers),
                                       return_exceptions=True)
        for server, ok in zip(servers, results):
            if server not in self.servers:
                continue
            if ok is True:
                self._mark_healthy(server)
                continue
            n = self._check_failures[server] = self._check_failures.get(server, 0) + 1
            if n >= self.failures_to_fail or server in self.failed:
                self._mark_failed(server, f"{n} failed health check(s)"
                                  + (f": {ok}" if isinstance(ok, BaseException) else ""))
        if self.active in self.failed:
            nxt = self._next_healthy()
            if nxt != self.active:
                self._close_server(self.active)
                self._switch(nxt, f"{self.active} failed")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.check_now()
            except Exception:  # noqa: BLE001 - checked again next round
                log.exception("load balancer %s: health checks", self.name)


async def follow_endpoints(lb: LoadBalancer, client, stop: asyncio.Event) -> None:
    """Keep ``lb``'s server list equal to the ``default/kubernetes`` Endpoints (k3s's agent
    tunnel does the same), with ``client`` — one allowed to list and watch Endpoints."""
    from kubeling.client.factory import SharedInformerFactory
    factory = SharedInformerFactory(client)
    informer = factory.informer_for("", "v1", "endpoints", namespace="default",
                                    field_selector="metadata.name=kubernetes")

    def changed(*objs) -> None:
        lb.update(addresses_from_endpoints(objs[-1]))
    informer.add_handler(on_add=changed, on_update=changed)
    factory.start(stop)
    try:
        await stop.wait()
    finally:
        await factory.shutdown()
