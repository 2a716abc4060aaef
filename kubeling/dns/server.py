"""`DNSServer`: UDP and TCP on one address, answering from `kubeling.dns.kubernetes.Kubernetes`
and forwarding everything else through `kubeling.dns.forward.Forward`.

One query's path:

1. The answer cache: the request's bytes after the ID (flags, question, EDNS, spelling), per
   protocol → the wire answer, valid while `Kubernetes.generation` is unchanged (any informer
   event clears it). A hit costs a dict lookup and a two-byte ID splice; CoreDNS's ``cache``
   plays this part. Only answers from the cluster zone are cached.
2. Parse (dnslib). Not a QUERY: NOTIMP. Not one question: FORMERR. Undecodable: FORMERR when
   the header can be read, else dropped.
3. `Kubernetes.lookup`: an authoritative answer (AA set) for the zone and the reverse names it
   knows; an ExternalName's CNAME target is chased for A/AAAA (inside the zone directly, else
   through the forwarder) and its records appended.
4. Otherwise `Forward.query`; SERVFAIL when no upstream answers.

UDP answers larger than the client's buffer (512 bytes, or its EDNS0 size up to 4096) are sent
truncated (TC, no records) so that the client retries over TCP. TCP connections carry any number
of length-prefixed queries and close after ``tcp_idle`` seconds of silence.
Every answered query is counted in `kubeling.dns.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from dnslib import OPCODE, QTYPE, RCODE, DNSError, DNSHeader, DNSQuestion, DNSRecord

from kubeling.dns import wire
from kubeling.dns.forward import Forward
from kubeling.dns.kubernetes import Answer, Kubernetes

log = logging.getLogger(__name__)

MAX_CACHE = 20000
MAX_CHASE = 8


def _error(data: bytes, rcode: int) -> bytes | None:
    """A bare reply with ``rcode`` to a request that did not parse or is not supported."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!HH", data[:4])
    rd = flags & 0x0100
    opcode = flags & 0x7800
    return struct.pack("!HHHHHH", qid, 0x8000 | opcode | rd | 0x0080 | rcode, 0, 0, 0, 0)


class DNSServer:
    """See the module docstring."""

    def __init__(self, kube: Kubernetes, forward: Forward | None, metrics=None, *, tcp_idle: float = 10.0) -> None:
        self.kube, self.forward, self.metrics = kube, forward, metrics
        self.tcp_idle = tcp_idle
        self._cache: dict[tuple[str, bytes], bytes] = {}
        self._cache_gen = -1
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self.addresses: list[tuple[str, int]] = []

    # -- listening ----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` over UDP and TCP; the port (useful when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        fam = "2" if family == socket.AF_INET6 else "1"
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self, fam), local_addr=(host, port),
                                                           family=family)
        self._udp.append(transport)
        port = transport.get_extra_info("sockname")[1]
        server = await asyncio.start_server(lambda r, w: self._serve_tcp(r, w, fam), host, port, family=family,
                                            reuse_address=True)
        self._tcp.append(server)
        self.addresses.append((host, port))
        log.info("DNS listening on %s:%d (udp, tcp)", host, port)
        return port

    async def close(self) -> None:
        for t in self._udp:
            t.close()
        for s in self._tcp:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        for s in self._tcp:
            try:
                await asyncio.wait_for(s.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at shutdown
                pass
        self._udp, self._tcp = [], []

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, family: str) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle)
                    (n,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(n), self.tcp_idle)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                reply = await self.handle(data, "tcp", family)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    # -- answering ----------------------------------------------------------------------------

    def cached(self, data: bytes, proto: str, family: str) -> bytes | None:
        """The answer from the cache, or None (a miss)."""
        if self._cache_gen != self.kube.generation:
            self._cache.clear()
            self._cache_gen = self.kube.generation
            return None
        hit = self._cache.get((proto, data[2:]))
        if hit is None:
            return None
        reply = data[:2] + hit[2:]
        if self.metrics:
            self.metrics.cache_hit("denial" if reply[3] & 0x0F else "success")
            self.metrics.observe(proto, family, _qtype_name(data), reply[3] & 0x0F, "cache", 0.0, len(data),
                                 len(reply))
        return reply

    async def handle(self, data: bytes, proto: str, family: str = "1") -> bytes | None:
        """The wire answer to one wire query (None: drop it)."""
        start = time.perf_counter()
        data = bytes(data)
        reply = self.cached(data, proto, family)
        if reply is not None:
            return reply
        plugin = "kubernetes"
        try:
            reply, plugin, qtype, cacheable = await self._answer(data, proto)
        except Exception:  # noqa: BLE001 - one bad query never takes the server down
            log.exception("DNS: failed to answer a query")
            if self.metrics:
                self.metrics.panics.inc()
            reply, qtype, cacheable = _error(data, RCODE.SERVFAIL), "other", False
        if reply is None:
            return None
        if cacheable and self._cache_gen == self.kube.generation:
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[(proto, data[2:])] = reply
            if self.metrics:
                self.metrics.cache_miss()
                self.metrics.cache_size(len(self._cache))
        if self.metrics:
            self.metrics.observe(proto, family, qtype, reply[3] & 0x0F, plugin, time.perf_counter() - start,
                                 len(data), len(reply))
        return reply

    async def _answer(self, data: bytes, proto: str) -> tuple[bytes | None, str, str, bool]:
        q = wire.parse_query(data)
        if q is None:
            q, err = _slow_parse(data)
            if q is None:
                return err, "", "other", False
        qtype = QTYPE.get(q.qtype, "other")
        ans = self.kube.lookup(None, q.name, q.qtype) if q.qclass in (1, 255) else None
        if ans is None:
            if self.forward is None or not self.forward.upstreams:
                return _error(data, RCODE.SERVFAIL), "forward", qtype, False
            reply = await self.forward.query(data, tcp=proto == "tcp")
            return (reply if reply is not None else _error(data, RCODE.SERVFAIL)), "forward", qtype, False
        cacheable = True
        if ans.chase and q.qtype in (QTYPE.A, QTYPE.AAAA, QTYPE.ANY):
            cacheable = await self._chase(ans, q.qtype)
        limit = 0
        if proto == "udp":
            limit = min(q.edns, 4096) if q.edns else 512
        reply = wire.pack_reply(q, ans.rcode, ans.answer, ans.authority, ans.additional, limit=limit)
        return reply, "kubernetes", qtype, cacheable

    async def _chase(self, ans: Answer, qtype: int) -> bool:
        """Append the records of the CNAME target; True when all of it came from the zone."""
        target = ans.chase
        for _ in range(MAX_CHASE):
            inner = self.kube.lookup(target + ".", target, qtype) if self.kube.in_zone(target) else None
            if inner is None:
                if self.forward is None or not self.forward.upstreams:
                    return False
                query = DNSRecord(DNSHeader(rd=1), q=DNSQuestion(target + ".", qtype))
                raw = await self.forward.query(bytes(query.pack()))
                if raw is None:
                    return False
                try:
                    for rr in DNSRecord.parse(raw).rr:
                        if rr.rtype in (QTYPE.A, QTYPE.AAAA):
                            ans.answer.append(wire.a(str(rr.rname), str(rr.rdata), rr.ttl))
                        elif rr.rtype == QTYPE.CNAME:
                            ans.answer.append(wire.cname(str(rr.rname), str(rr.rdata), rr.ttl))
                except (DNSError, struct.error, IndexError, ValueError, UnicodeDecodeError):
                    pass
                return False
            ans.answer.extend(inner.answer)
            if not inner.chase:
                return True
            target = inner.chase
        return True


def _slow_parse(data: bytes) -> tuple[wire.Query | None, bytes | None]:
    """The query by dnslib, for shapes the fast parser leaves alone; or (None, the error reply)."""
    try:
        req = DNSRecord.parse(data)
    except (DNSError, struct.error, IndexError, ValueError, UnicodeDecodeError):
        return None, _error(data, RCODE.FORMERR)
    if req.header.qr:
        return None, None
    if req.header.opcode != OPCODE.QUERY:
        return None, _error(data, RCODE.NOTIMP)
    if len(req.questions) != 1:
        return None, _error(data, RCODE.FORMERR)
    q = req.questions[0]
    opt = next((r for r in req.ar if r.rtype == QTYPE.OPT), None)
    flags = struct.unpack_from("!H", data, 2)[0]
    question = bytes(DNSRecord(DNSHeader(id=req.header.id), q=q).pack())[12:]
    return wire.Query(req.header.id, flags, question, str(q.qname).rstrip(".").lower(), q.qtype, q.qclass,
                      max(opt.rclass, 512) if opt is not None else 0), None


def _qtype_name(data: bytes) -> str:
    """The first question's type, read straight from the wire (for metrics on a cache hit)."""
    i = 12
    n = len(data)
    while i < n:
        ln = data[i]
        if ln == 0:
            if i + 3 <= n:
                return QTYPE.get(struct.unpack_from("!H", data, i + 1)[0], "other")
            return "other"
        i += ln + 1
    return "other"


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer, family: str) -> None:
        self.server, self.family = server, family
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.server.cached(data, "udp", self.family)
        if reply is not None:
            self.transport.sendto(reply, addr)
            return
        self.server.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr) -> None:
        reply = await self.server.handle(data, "udp", self.family)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS udp: %r", exc)
