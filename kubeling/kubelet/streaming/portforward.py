"""Serving ``portForward`` (upstream ``kubelet/pkg/cri/streaming/portforward``).

Two forms, one dialer (``dial(port) -> (reader, writer)``, a TCP connection to the pod's port):

**SPDY** (``portforward.k8s.io``; kubectl, plainly upgraded or tunnelled in a WebSocket). Every
forwarded connection is a pair of client-opened streams sharing a ``requestID`` header: an
``error`` stream and a ``data`` stream, both with a ``port`` header. Once both exist we dial;
a failure is written as text on the error stream. Bytes are copied both ways; when the pod closes
its side the data stream is half-closed, then the error stream; the client's FIN on the data
stream half-closes the pod connection. Clients older than ``requestID`` are paired by stream id
(the data stream is the error stream's id + 2), as upstream does. A pair that stays incomplete
for `PAIR_TIMEOUT` is reset.

**WebSocket channels** (the Python client): the ports are the ``ports`` query parameter; port
*i* uses channel ``2*i`` for data and ``2*i+1`` for errors, and the server first sends, on each
of them, the port number as two little-endian bytes. When every pod connection has closed, the
WebSocket is closed (the client reads until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from kubeling.kubelet.streaming import spdy, wsstream
from kubeling.kubelet.streaming.spdyconn import SpdyConnection, SpdyStream, StreamClosed

log = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"
PAIR_TIMEOUT = 30.0

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_port(text: str) -> int | None:
    try:
        port = int(text)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def forward_error(port: int, pod: str, uid: str, err: Exception | str) -> str:
    return f"error forwarding port {port} to pod {pod}, uid {uid}: {err}"


# -- SPDY ----------------------------------------------------------------------------------------

async def serve_spdy(conn: SpdyConnection, dial: Dial, pod: str, uid: str) -> None:
    """Forward every stream pair the client opens until the connection ends."""
    pending: dict[str, dict[str, SpdyStream]] = {}
    born: dict[str, float] = {}
    tasks: set[asyncio.Task] = set()
    try:
        while (stream := await conn.accept()) is not None:
            kind = stream.header("streamtype")
            rid = stream.header("requestid")
            if not rid:   # clients before requestID: pair by stream id
                rid = str(stream.id if kind == "error" else stream.id - 2)
            if kind not in ("data", "error"):
                await stream.reset(spdy.PROTOCOL_ERROR)
                continue
            pair = pending.setdefault(rid, {})
            born.setdefault(rid, time.monotonic())
            pair[kind] = stream
            if len(pair) == 2:
                pending.pop(rid)
                born.pop(rid, None)
                task = asyncio.create_task(_forward_pair(pair["data"], pair["error"], dial, pod, uid))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for old in [r for r, t in born.items() if time.monotonic() - t > PAIR_TIMEOUT]:
                born.pop(old)
                for s in pending.pop(old, {}).values():
                    await s.reset(spdy.CANCEL)
    finally:
        for task in list(tasks):
            task.cancel()


async def _forward_pair(data: SpdyStream, error: SpdyStream, dial: Dial, pod: str, uid: str) -> None:
    port = parse_port(data.header("port"))
    try:
        if port is None:
            await error.write(f"invalid port header {data.header('port')!r}".encode())
            return
        try:
            reader, writer = await dial(port)
        except Exception as e:  # noqa: BLE001 - reported to the client, as upstream does
            await error.write(forward_error(port, pod, uid, e).encode())
            return
        try:
            await _pump_pair(data, reader, writer)
        finally:
            writer.close()
    except StreamClosed:
        pass
    finally:
        with contextlib.suppress(StreamClosed):
            await data.close()
            await error.close()


async def _pump_pair(data: SpdyStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def inbound() -> None:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    into_pod = asyncio.create_task(inbound())
    try:
        while chunk := await reader.read(32 * 1024):
            await data.write(chunk)
    except (ConnectionError, OSError):
        pass
    finally:
        # The pod closed its side: as upstream, the forwarding of this connection ends here.
        into_pod.cancel()


# -- WebSocket channels --------------------------------------------------------------------------

async def serve_websocket(conn: wsstream.ChannelConn, ports: list[int], dial: Dial, pod: str, uid: str) -> None:
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task] = []
    try:
        for i, port in enumerate(ports):
            prefix = bytes((port & 0xFF, port >> 8))
            await conn.send(2 * i, prefix)
            await conn.send(2 * i + 1, prefix)
        for i, port in enumerate(ports):
            try:
                reader, writer = await dial(port)
            except Exception as e:  # noqa: BLE001
                await conn.send(2 * i + 1, forward_error(port, pod, uid, e).encode())
                continue
            writers[i] = writer
            pumps.append(asyncio.create_task(_ws_outbound(conn, 2 * i, reader)))
        receiver = asyncio.create_task(_ws_inbound(conn, writers))
        if pumps:
            await asyncio.wait([receiver, asyncio.gather(*pumps, return_exceptions=True)],
                               return_when=asyncio.FIRST_COMPLETED)
        else:
            await receiver
        receiver.cancel()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        for task in pumps:
            task.cancel()
        for writer in writers.values():
            writer.close()
        await conn.close()


async def _ws_outbound(conn: wsstream.ChannelConn, channel: int, reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(32 * 1024):
            await conn.send(channel, chunk)


async def _ws_inbound(conn: wsstream.ChannelConn, writers: dict[int, asyncio.StreamWriter]) -> None:
    while (got := await conn.receive()) is not None:
        channel, data = got
        writer = writers.get(channel // 2) if channel % 2 == 0 else None
        if writer is None:
            continue
        if data is None:   # v5 close signal: no more data for this port
            with contextlib.suppress(OSError):
                writer.write_eof()
            continue
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(data)
            await writer.drain()
