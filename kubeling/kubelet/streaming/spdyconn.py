"""A SPDY/3.1 session over a byte stream (upstream: ``moby/spdystream`` behind apimachinery's
``httpstream/spdy``), as the server of kubectl's exec/attach/port-forward streams.

Concurrency model: one task runs `SpdyConnection.serve`, the only reader of the transport; it
decodes frames and hands data to streams. Any task may write: frames are encoded and written
under one lock (the header compressor is a single zlib stream, so encoding order is wire order).

Streams::

    peer SYN_STREAM ──► open (SYN_REPLY sent at once, as upstream's server does) ──► accept()
    open ── peer FIN ──► half-closed (remote): read() returns b"" after the buffered data
    open ── close() ───► half-closed (local): a DATA frame with FIN, sent once
    any ─── RST_STREAM either way, or the connection ending ──► closed: read() returns b"",
                                                               write() raises StreamClosed

Flow control (SPDY/3.1): every stream starts with a 64 KiB window each way, plus a connection
window. We always credit what the application has *read* back to the peer with WINDOW_UPDATE.
We hold our own writes to the peer's windows only once the peer shows it keeps them (it sent a
WINDOW_UPDATE or a SETTINGS initial window): kubectl's spdystream never sends either and never
enforces them, so holding writes for it would stall every transfer after 64 KiB. A peer that
ignores our windows is bounded by `MAX_BUFFERED` per stream (then RST FLOW_CONTROL_ERROR).

Pings from the peer are echoed; a GOAWAY from the peer stops `accept()`. `close()` sends GOAWAY
and closes the transport; `serve()` returns when the transport ends, after closing every stream.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Protocol

from kubeling.kubelet.streaming import spdy

log = logging.getLogger(__name__)

MAX_CHUNK = 32 * 1024
MAX_BUFFERED = 16 * 1024 * 1024


class ByteStream(Protocol):
    """A bidirectional byte stream: a socket, a hijacked HTTP connection, or WebSocket messages."""

    async def read(self) -> bytes:
        """The next bytes; b"" at end of stream."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class StreamClosed(Exception):
    """Writing to a stream that was closed locally, reset, or whose connection ended."""


class SpdyStream:
    def __init__(self, conn: SpdyConnection, stream_id: int, headers: spdy.Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self.remote_closed = False
        self.local_closed = False
        self.reset_status = 0
        self.send_window = conn.peer_initial_window
        self.unacked = 0

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower()) or [""]
        return values[0]

    @property
    def closed(self) -> bool:
        return bool(self.reset_status) or (self.remote_closed and self.local_closed)

    async def read(self) -> bytes:
        """The next data the peer sent; b"" once it finished (FIN), reset, or the connection ended."""
        while not self._chunks:
            if self.remote_closed or self.reset_status:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        await self.conn._consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.local_closed or self.reset_status or self.conn.ended:
                raise StreamClosed(f"stream {self.id} is closed")
            n = await self.conn._reserve(self, min(len(view), MAX_CHUNK))
            if n == 0:
                continue
            await self.conn.send(spdy.DataFrame(self.id, bytes(view[:n])))
            view = view[n:]

    async def close(self) -> None:
        """Half-close: tell the peer we will send nothing more (idempotent)."""
        if self.local_closed or self.reset_status or self.conn.ended:
            self.local_closed = True
            return
        self.local_closed = True
        await self.conn.send(spdy.DataFrame(self.id, b"", fin=True))
        self.conn._forget_if_done(self)

    async def reset(self, status: int = spdy.CANCEL) -> None:
        if self.reset_status or self.conn.ended:
            return
        self._mark_reset(status)
        await self.conn.send(spdy.RstStream(self.id, status))

    # -- called by the connection ----------------------------------------------------------------

    def _deliver(self, data: bytes, fin: bool) -> bool:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if fin:
            self.remote_closed = True
        self._readable.set()
        return self._buffered <= MAX_BUFFERED

    def _mark_reset(self, status: int) -> None:
        self.reset_status = status
        self.remote_closed = self.local_closed = True
        self._readable.set()
        self.conn._window_changed.set()
        self.conn.streams.pop(self.id, None)


class SpdyConnection:
    def __init__(self, transport: ByteStream, *, server: bool = True) -> None:
        self.transport = transport
        self.server = server
        self.protocol = ""        # the negotiated X-Stream-Protocol-Version, set by the upgrader
        self.framer = spdy.Framer()
        self.streams: dict[int, SpdyStream] = {}
        self.peer_initial_window = spdy.DEFAULT_WINDOW
        self.send_window = spdy.DEFAULT_WINDOW      # the connection-level window of the peer
        self.enforce_peer_windows = False
        self.unacked = 0
        self.ended = False
        self.going_away = False
        self._last_peer_id = 0
        self._next_id = 2 if server else 1
        self._accepted: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._wlock = asyncio.Lock()
        self._window_changed = asyncio.Event()

    # -- public --------------------------------------------------------------------------------

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the connection ended or went away."""
        if self.ended or self.going_away:
            return None if self._accepted.empty() else self._accepted.get_nowait()
        return await self._accepted.get()

    async def open_stream(self, headers: spdy.Headers, *, fin: bool = False) -> SpdyStream:
        """Open a stream of our own (used by tests and clients); does not wait for SYN_REPLY."""
        sid, self._next_id = self._next_id, self._next_id + 2
        stream = self.streams[sid] = SpdyStream(self, sid, headers)
        stream.local_closed = fin
        await self.send(spdy.SynStream(sid, headers, fin=fin))
        return stream

    async def send(self, frame: spdy.Frame) -> None:
        async with self._wlock:
            if self.ended:
                raise StreamClosed("connection closed")
            data = self.framer.encode(frame)
            try:
                await self.transport.write(data)
            except (ConnectionError, RuntimeError, OSError) as e:
                self._end()
                raise StreamClosed(f"connection lost: {e}") from None

    async def ping(self, ping_id: int) -> None:
        await self.send(spdy.Ping(ping_id))

    async def close(self, status: int = spdy.GOAWAY_OK) -> None:
        if not self.ended:
            try:
                await self.send(spdy.GoAway(self._last_peer_id, status))
            except StreamClosed:
                pass
        self._end()
        await self.transport.close()

    async def serve(self) -> None:
        """Read frames until the transport ends (or the peer breaks the protocol)."""
        try:
            while not self.ended:
                data = await self.transport.read()
                if not data:
                    break
                for frame in self.framer.feed(data):
                    await self._handle(frame)
        except spdy.ProtocolError as e:
            log.info("SPDY protocol error from peer: %s", e)
            try:
                await self.send(spdy.GoAway(self._last_peer_id, spdy.GOAWAY_PROTOCOL_ERROR))
            except StreamClosed:
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._end()

    # -- frame handling ------------------------------------------------------------------------

    async def _handle(self, f: spdy.Frame) -> None:
        if isinstance(f, spdy.DataFrame):
            stream = self.streams.get(f.stream_id)
            if stream is None or stream.remote_closed:
                return  # data racing a reset we sent: dropped, as spdystream does
            if not stream._deliver(f.data, f.fin):
                await stream.reset(spdy.FLOW_CONTROL_ERROR)
                return
            if f.fin:
                self._forget_if_done(stream)
        elif isinstance(f, spdy.SynStream):
            await self._syn_stream(f)
        elif isinstance(f, spdy.RstStream):
            stream = self.streams.get(f.stream_id)
            if stream is not None:
                stream._mark_reset(f.status)
        elif isinstance(f, spdy.WindowUpdate):
            self.enforce_peer_windows = True
            if f.stream_id == 0:
                self.send_window += f.delta
            elif (stream := self.streams.get(f.stream_id)) is not None:
                stream.send_window += f.delta
            self._window_changed.set()
        elif isinstance(f, spdy.Settings):
            for _flags, sid, value in f.entries:
                if sid == spdy.SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = value - self.peer_initial_window
                    self.peer_initial_window = value
                    self.enforce_peer_windows = True
                    for stream in self.streams.values():
                        stream.send_window += delta
                    self._window_changed.set()
        elif isinstance(f, spdy.Ping):
            if (f.id % 2 == 1) == self.server:   # the peer's ping (clients use odd ids): echo it
                await self.send(f)
        elif isinstance(f, spdy.GoAway):
            self.going_away = True
            self._accepted.put_nowait(None)
        # SYN_REPLY and HEADERS need no action for the streams a server opens (none).

    async def _syn_stream(self, f: spdy.SynStream) -> None:
        peer_parity = 1 if self.server else 0
        if f.stream_id % 2 != peer_parity or f.stream_id <= self._last_peer_id:
            await self.send(spdy.RstStream(f.stream_id, spdy.PROTOCOL_ERROR))
            return
        self._last_peer_id = f.stream_id
        if self.going_away:
            await self.send(spdy.RstStream(f.stream_id, spdy.REFUSED_STREAM))
            return
        stream = self.streams[f.stream_id] = SpdyStream(self, f.stream_id, f.headers)
        stream.remote_closed = f.fin
        stream.local_closed = f.unidirectional
        await self.send(spdy.SynReply(f.stream_id, {}))
        self._accepted.put_nowait(stream)

    # -- flow control --------------------------------------------------------------------------

    async def _consumed(self, stream: SpdyStream, n: int) -> None:
        """Credit ``n`` read bytes back to the peer, in batches of half a window."""
        stream.unacked += n
        self.unacked += n
        try:
            if stream.unacked >= spdy.DEFAULT_WINDOW // 2 and not stream.remote_closed:
                delta, stream.unacked = stream.unacked, 0
                await self.send(spdy.WindowUpdate(stream.id, delta))
            if self.unacked >= spdy.DEFAULT_WINDOW // 2:
                delta, self.unacked = self.unacked, 0
                await self.send(spdy.WindowUpdate(0, delta))
        except StreamClosed:
            pass

    async def _reserve(self, stream: SpdyStream, want: int) -> int:
        """How much of ``want`` may be sent now, waiting for window if the peer keeps windows."""
        while self.enforce_peer_windows:
            if stream.reset_status or self.ended:
                raise StreamClosed(f"stream {stream.id} is closed")
            allowed = min(want, stream.send_window, self.send_window)
            if allowed > 0:
                stream.send_window -= allowed
                self.send_window -= allowed
                return allowed
            self._window_changed.clear()
            await self._window_changed.wait()
        return want

    # -- bookkeeping ---------------------------------------------------------------------------

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.remote_closed and stream.local_closed:
            self.streams.pop(stream.id, None)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for stream in list(self.streams.values()):
            stream.remote_closed = stream.local_closed = True
            stream._readable.set()
        self.streams.clear()
        self._window_changed.set()
        self._accepted.put_nowait(None)
