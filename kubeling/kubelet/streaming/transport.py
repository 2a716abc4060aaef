"""Byte streams for the streaming protocols, and taking over an HTTP connection after ``101``.

Three `spdyconn.ByteStream` implementations:

- `SocketStream`: an asyncio (reader, writer) pair (a dialled connection).
- `WebSocketBytes`: the binary messages of a WebSocket read as one byte stream, each write one
  binary message. This is kubectl 1.31+'s port-forward tunnel (subprotocol
  ``SPDY/3.1+portforward.k8s.io``): SPDY frames carried in WebSocket messages with no
  alignment between the two.
- `Hijacked`: an aiohttp server connection after we answered ``101 Switching Protocols`` for an
  upgrade aiohttp does not know (``SPDY/3.1``) or that we relay without parsing (the API server's
  proxy). `hijack()` sends the 101 and installs a raw payload parser on aiohttp's protocol, so
  every later byte from the client arrives in our reader, bytes aiohttp buffered behind the
  upgrade request included. Reading is flow-controlled (the socket pauses while our buffer is
  full); writes wait for the socket to drain.

Who closes what: the owner of a `ByteStream` calls ``close()`` once; the handler that called
`hijack()` must then return its response (aiohttp closes the connection: it was marked
force-close).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

READ_CHUNK = 64 * 1024


class SocketStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(READ_CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class WebSocketBytes:
    """``ws`` is an aiohttp `web.WebSocketResponse` or `ClientWebSocketResponse`."""

    def __init__(self, ws) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                if msg.data:
                    return msg.data
            elif msg.type == WSMsgType.TEXT:
                if msg.data:
                    return msg.data.encode()
            elif msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            else:
                return b""

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


class _RawParser:
    """aiohttp's payload-parser interface (what `WebSocketReader` implements), feeding a reader."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


class Hijacked:
    def __init__(self, request: web.Request, response: web.StreamResponse, reader: asyncio.StreamReader) -> None:
        self.request, self.response, self.reader = request, response, reader
        self._closed = False

    async def read(self) -> bytes:
        try:
            return await self.reader.read(READ_CHUNK)
        except (ConnectionError, asyncio.IncompleteReadError):
            return b""

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("connection closed")
        await self.response.write(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self.response.write_eof()
        transport = self.request.transport
        if transport is not None:
            transport.close()


async def hijack(request: web.Request, headers: dict[str, str] | list[tuple[str, str]]) -> Hijacked:
    """Answer ``101 Switching Protocols`` with ``headers`` and take over the connection."""
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    if request.transport is not None:
        reader.set_transport(request.transport)  # a full buffer pauses reading from the socket
    request.protocol.set_parser(_RawParser(reader))
    return Hijacked(request, response, reader)
