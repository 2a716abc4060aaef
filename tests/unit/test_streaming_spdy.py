"""SPDY/3.1 framing, header compression and the session (streams, flow control, ping, goaway)."""

import asyncio
import struct
import zlib

import pytest

from kubeling.kubelet.streaming import spdy
from kubeling.kubelet.streaming.spdyconn import SpdyConnection, StreamClosed


@pytest.mark.parametrize("frame", [
    pytest.param(spdy.DataFrame(1, b"hello"), id="data"),
    pytest.param(spdy.DataFrame(3, b"", fin=True), id="data-fin-empty"),
    pytest.param(spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"]}, priority=2), id="syn-stream"),
    pytest.param(spdy.SynStream(5, {"a": ["1", "2"]}, fin=True, unidirectional=True), id="syn-stream-flags"),
    pytest.param(spdy.SynReply(1, {}), id="syn-reply-empty"),
    pytest.param(spdy.SynReply(7, {"x": ["y"]}, fin=True), id="syn-reply-fin"),
    pytest.param(spdy.HeadersFrame(9, {"k": ["v"]}), id="headers"),
    pytest.param(spdy.RstStream(3, spdy.CANCEL), id="rst"),
    pytest.param(spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]), id="settings"),
    pytest.param(spdy.Ping(2), id="ping"),
    pytest.param(spdy.GoAway(5, spdy.GOAWAY_PROTOCOL_ERROR), id="goaway"),
    pytest.param(spdy.WindowUpdate(0, 65536), id="window-update"),
])
def test_frames_round_trip(frame):
    out, inp = spdy.Framer(), spdy.Framer()
    assert inp.feed(out.encode(frame)) == [frame]


def test_header_blocks_share_one_compression_context_per_direction():
    """Later blocks refer back to earlier ones: decoding them out of order, or with a fresh
    context, must fail, and in order they all decode."""
    out, inp = spdy.Framer(), spdy.Framer()
    frames = [spdy.SynStream(i, {"streamtype": ["data"], "port": ["8080"], "requestid": [str(i // 2)]})
              for i in (1, 3, 5)]
    wire = [out.encode(f) for f in frames]
    assert len(wire[2]) < len(wire[0])          # the second and third reuse the first's strings
    assert inp.feed(b"".join(wire)) == frames
    with pytest.raises(spdy.ProtocolError):
        spdy.Framer().feed(wire[1])


def test_header_block_uses_the_spdy3_dictionary():
    block = spdy.Framer().encode(spdy.SynReply(1, {"content-type": ["text/plain"]}))[12:]
    assert block[0] & 0x0F == 8 and block[1] & 0x20       # deflate, FDICT set
    assert struct.unpack(">I", block[2:6])[0] == zlib.adler32(spdy.DICTIONARY)
    assert len(spdy.DICTIONARY) == 1423


def test_wire_layout_of_a_control_frame():
    wire = spdy.Framer().encode(spdy.Ping(7))
    assert wire == bytes([0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 7])


def test_partial_input_is_buffered_and_unknown_control_types_skipped():
    out, inp = spdy.Framer(), spdy.Framer()
    unknown = struct.pack(">HHI", 0x8003, 10, 4) + b"abcd"          # a CREDENTIAL frame
    wire = unknown + out.encode(spdy.DataFrame(1, b"x" * 100)) + out.encode(spdy.Ping(1))
    got = []
    for i in range(0, len(wire), 7):
        got += inp.feed(wire[i:i + 7])
    assert got == [spdy.DataFrame(1, b"x" * 100), spdy.Ping(1)]


@pytest.mark.parametrize("wire,why", [
    pytest.param(struct.pack(">HHI", 0x8002, 1, 0), "version", id="spdy2"),
    pytest.param(struct.pack(">HHI", 0x8003, 3, 2) + b"ab", "truncated", id="short-rst"),
    pytest.param(struct.pack(">HHI", 0x8003, 2, 8) + b"\0\0\0\1junk", "decompress", id="bad-zlib"),
])
def test_malformed_input_is_a_protocol_error(wire, why):
    with pytest.raises(spdy.ProtocolError, match=why if why != "version" else "unsupported"):
        spdy.Framer().feed(wire)


def test_header_bomb_is_refused():
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    big = struct.pack(">I", 1) + struct.pack(">I", 1) + b"a" + struct.pack(">I", 4 << 20) + b"b" * (4 << 20)
    block = comp.compress(big) + comp.flush(zlib.Z_SYNC_FLUSH)
    wire = struct.pack(">HHI", 0x8003, 2, len(block) + 4) + struct.pack(">I", 1) + block
    with pytest.raises(spdy.ProtocolError, match="too large"):
        spdy.Framer().feed(wire)


# -- the session -------------------------------------------------------------------------------

class Pipe:
    """One direction of an in-memory byte stream pair."""

    def __init__(self):
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: "Pipe | None" = None
        self.closed = False

    async def read(self) -> bytes:
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.peer.inbox.put_nowait(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.peer.inbox.put_nowait(b"")
            self.inbox.put_nowait(b"")


def pair():
    a, b = Pipe(), Pipe()
    a.peer, b.peer = b, a
    return a, b


async def _sessions():
    a, b = pair()
    server, client = SpdyConnection(a, server=True), SpdyConnection(b, server=False)
    tasks = [asyncio.create_task(server.serve()), asyncio.create_task(client.serve())]
    return server, client, tasks


def test_streams_carry_data_both_ways_with_half_close():
    async def main():
        server, client, tasks = await _sessions()
        c = await client.open_stream({"streamtype": ["stdin"]})
        s = await server.accept()
        assert s.header("streamType") == "stdin"
        await c.write(b"ping")
        await c.close()
        assert await s.read() == b"ping"
        assert await s.read() == b""                     # the client's FIN
        await s.write(b"pong" * 50_000)                  # several DATA frames
        await s.close()
        got = b""
        while chunk := await c.read():
            got += chunk
        assert got == b"pong" * 50_000
        assert not server.streams and not client.streams  # both halves closed: forgotten
        await client.close()
        await asyncio.gather(*tasks)
        assert await server.accept() is None
    asyncio.run(main())


def test_reset_ends_reads_and_refuses_writes():
    async def main():
        server, client, tasks = await _sessions()
        c = await client.open_stream({"streamtype": ["data"]})
        s = await server.accept()
        await c.reset()
        assert await s.read() == b""
        with pytest.raises(StreamClosed):
            for _ in range(100):
                await s.write(b"x")
                await asyncio.sleep(0)
        await server.close()
        await asyncio.gather(*tasks)
    asyncio.run(main())


def test_flow_control_holds_writes_only_for_a_peer_that_keeps_windows():
    async def main():
        server, client, tasks = await _sessions()
        c = await client.open_stream({})
        s = await server.accept()
        # The client never sent WINDOW_UPDATE/SETTINGS (as kubectl's spdystream): no holding.
        await asyncio.wait_for(s.write(b"a" * (3 * spdy.DEFAULT_WINDOW)), 2)
        assert not server.enforce_peer_windows
        # Now it announces a tiny window: writes wait for its credit, which reading gives back.
        await client.send(spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1024)]))
        c2 = await client.open_stream({})
        s2 = await server.accept()
        await asyncio.sleep(0.05)
        assert server.enforce_peer_windows
        server.send_window = 1024
        writer = asyncio.create_task(s2.write(b"b" * 4096))
        await asyncio.sleep(0.05)
        assert not writer.done()                           # 1 KiB sent, waiting
        await client.send(spdy.WindowUpdate(s2.id, 4096))
        await client.send(spdy.WindowUpdate(0, 4096))
        await asyncio.wait_for(writer, 2)
        got = b""
        while len(got) < 4096:
            got += await c2.read()
        assert got == b"b" * 4096
        drained = 0
        while drained < 3 * spdy.DEFAULT_WINDOW:
            drained += len(await c.read())
        await client.close()
        await asyncio.gather(*tasks)
    asyncio.run(main())


def test_reading_credits_the_window_back_to_the_peer():
    async def main():
        a, b = pair()
        server = SpdyConnection(a, server=True)
        task = asyncio.create_task(server.serve())
        peer = spdy.Framer()
        await b.write(peer.encode(spdy.SynStream(1, {})))
        stream = await server.accept()
        await b.write(peer.encode(spdy.DataFrame(1, b"z" * spdy.DEFAULT_WINDOW)))
        got = 0
        while got < spdy.DEFAULT_WINDOW:
            got += len(await stream.read())
        frames = []
        while not any(isinstance(f, spdy.WindowUpdate) and f.stream_id == 0 for f in frames):
            frames += peer.feed(await b.read())
        assert isinstance(frames[0], spdy.SynReply)     # replied at once, as upstream's server
        updates = {f.stream_id: f.delta for f in frames if isinstance(f, spdy.WindowUpdate)}
        assert updates == {1: spdy.DEFAULT_WINDOW, 0: spdy.DEFAULT_WINDOW}
        await b.close()
        await task
    asyncio.run(main())


def test_pings_are_echoed_and_goaway_stops_accepting():
    async def main():
        a, b = pair()
        server = SpdyConnection(a, server=True)
        task = asyncio.create_task(server.serve())
        peer = spdy.Framer()
        await b.write(peer.encode(spdy.Ping(1)) + peer.encode(spdy.Ping(2)))   # 2 is our parity: no echo
        assert peer.feed(await b.read()) == [spdy.Ping(1)]
        await b.write(peer.encode(spdy.GoAway(0)))
        assert await server.accept() is None
        await b.write(peer.encode(spdy.SynStream(1, {})))   # refused after GOAWAY
        assert peer.feed(await b.read()) == [spdy.RstStream(1, spdy.REFUSED_STREAM)]
        await b.close()
        await task
    asyncio.run(main())


def test_stream_ids_must_grow_and_have_the_peers_parity():
    async def main():
        a, b = pair()
        server = SpdyConnection(a, server=True)
        task = asyncio.create_task(server.serve())
        peer = spdy.Framer()
        await b.write(peer.encode(spdy.SynStream(2, {})))
        assert peer.feed(await b.read()) == [spdy.RstStream(2, spdy.PROTOCOL_ERROR)]
        await b.close()
        await task
    asyncio.run(main())
