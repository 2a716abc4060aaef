"""`Forward`: names outside the cluster zone go to upstream resolvers, as CoreDNS's ``forward``.

Upstreams come from ``--upstream`` or, by default, the ``nameserver`` lines of the host's
``/etc/resolv.conf`` (``--resolv-conf``; CoreDNS's ``forward . /etc/resolv.conf``). An upstream
that is this server itself (its listen address, or the cluster DNS IP that leads back to it) is
dropped: a query must never loop.

A query goes over UDP with a fresh message ID (the reply must match the ID and the question;
one connected socket per upstream is shared by all queries),
over TCP when the client asked over TCP or a UDP reply came back truncated. Each upstream is
tried in order, each with ``timeout`` seconds; when none answers the caller answers SERVFAIL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import struct
import time
from pathlib import Path

log = logging.getLogger(__name__)


def parse_upstream(text: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``[fd00::1]:53`` or ``fd00::1`` → (host, port)."""
    text = text.strip()
    if text.startswith("dns://"):
        text = text[len("dns://"):]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    ipaddress.ip_address(text)
    return text, 53


def resolv_conf_nameservers(path: str | Path = "/etc/resolv.conf") -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append(fields[1].split("%", 1)[0])
    return out


def upstreams(explicit: list[str], resolv_conf: str, *, exclude: set[tuple[str, int]]) -> list[tuple[str, int]]:
    """The upstream list: ``explicit`` or resolv.conf's, less any of ``exclude`` (ourselves)."""
    found = [parse_upstream(u) for u in explicit] if explicit else \
        [(ns, 53) for ns in resolv_conf_nameservers(resolv_conf)]
    out = []
    for host, port in found:
        if (host, port) in exclude:
            log.warning("forward: dropping upstream %s:%d: it is this DNS server itself", host, port)
            continue
        if (host, port) not in out:
            out.append((host, port))
    return out


class _UpstreamSocket(asyncio.DatagramProtocol):
    """One connected UDP socket to an upstream, shared by every query to it: replies are matched
    to their waiters by message ID and question (CoreDNS's forward keeps connections too)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[bytes, tuple[asyncio.Future, bytes]] = {}
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        entry = self.pending.get(data[:2]) if len(data) >= 12 else None
        if entry is None:
            return
        fut, question = entry
        if question and data[12:12 + len(question)].lower() != question.lower():
            return
        if not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # an ICMP error on a connected socket: nobody answers there; fail the waiters now
        for fut, _ in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.error_received(exc or ConnectionError("upstream socket closed"))


def _question_bytes(query: bytes) -> bytes:
    """The first question's wire bytes (name, type, class), to match a reply against."""
    i = 12
    while i < len(query):
        n = query[i]
        if n == 0:
            return query[12:i + 5]
        if n & 0xC0:
            return b""
        i += n + 1
    return b""


class Forward:
    """Upstream resolution (see the module docstring)."""

    def __init__(self, upstreams: list[tuple[str, int]], *, timeout: float = 2.0, metrics=None) -> None:
        self.upstreams = upstreams
        self.timeout = timeout
        self.metrics = metrics
        self._sockets: dict[tuple[str, int], _UpstreamSocket] = {}

    async def query(self, query: bytes, *, tcp: bool = False) -> bytes | None:
        """The upstream's reply to ``query`` (wire format), with ``query``'s ID; None if none answered."""
        if len(query) < 12:
            return None
        client_id = query[:2]
        for host, port in self.upstreams:
            qid = secrets.token_bytes(2)
            msg = qid + query[2:]
            start = time.monotonic()
            to = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            try:
                if tcp:
                    reply = await self._tcp(host, port, msg)
                else:
                    reply = await self._udp(host, port, msg)
                    if len(reply) > 2 and reply[2] & 0x02:   # TC: ask again over TCP
                        reply = await self._tcp(host, port, msg)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
                log.debug("forward to %s failed: %r", to, e)
                if self.metrics:
                    self.metrics.forwarded(to, None, time.monotonic() - start)
                continue
            if len(reply) < 12:
                continue
            if self.metrics:
                self.metrics.forwarded(to, reply[3] & 0x0F, time.monotonic() - start)
            return client_id + reply[2:]
        return None

    async def _socket(self, host: str, port: int) -> _UpstreamSocket:
        sock = self._sockets.get((host, port))
        if sock is None or sock.closed:
            loop = asyncio.get_running_loop()
            _, sock = await loop.create_datagram_endpoint(_UpstreamSocket, remote_addr=(host, port))
            old = self._sockets.get((host, port))
            if old is not None and not old.closed:   # another query made one meanwhile
                sock.transport.close()
                return old
            self._sockets[(host, port)] = sock
        return sock

    async def _udp(self, host: str, port: int, msg: bytes) -> bytes:
        sock = await self._socket(host, port)
        qid = msg[:2]
        while qid in sock.pending:
            qid = secrets.token_bytes(2)
        msg = qid + msg[2:]
        fut = asyncio.get_running_loop().create_future()
        sock.pending[qid] = (fut, _question_bytes(msg))
        try:
            sock.transport.sendto(msg)
            return await asyncio.wait_for(fut, self.timeout)
        finally:
            sock.pending.pop(qid, None)

    def close(self) -> None:
        for sock in self._sockets.values():
            if sock.transport is not None:
                sock.transport.close()
        self._sockets.clear()

    async def _tcp(self, host: str, port: int, msg: bytes) -> bytes:
        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack("!H", len(msg)) + msg)
                await writer.drain()
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await reader.readexactly(n)
                if reply[:2] != msg[:2]:
                    raise ConnectionError("an upstream reply with another message ID")
                return reply
            finally:
                writer.close()
        return await asyncio.wait_for(exchange(), self.timeout)
