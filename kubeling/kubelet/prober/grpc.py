"""grpc probes: ``grpc.health.v1.Health/Check`` over cleartext HTTP/2 (h2c), with no gRPC library.

A probe needs one unary call, so this is the least HTTP/2 that a real gRPC server accepts:

    connect   TCP, client preface + our SETTINGS, wait for the server's SETTINGS (ack it).
              Refused or reset connections are retried until the deadline, as upstream's
              blocking dial does; running out of time here is "failed to connect service".
    call      one HEADERS (HPACK literals) + one DATA (END_STREAM) on stream 1, then read:
              response HEADERS, DATA (the message), trailing HEADERS with ``grpc-status``;
              a trailers-only answer is one HEADERS with END_STREAM. SETTINGS and PING are
              acknowledged, WINDOW_UPDATE and PRIORITY ignored, every header block (any
              stream) goes through the one HPACK decoder to keep its table in step.

The response is small, so flow control never needs a WINDOW_UPDATE from us. The whole probe
shares one deadline (the probe's timeoutSeconds); the messages are upstream's
(``service unhealthy (responded with "NOT_SERVING")``, ``timeout: failed to connect service
"10.42.0.5:9000" within 1s: context deadline exceeded`` ...).
"""

from __future__ import annotations

import asyncio
import struct
import urllib.parse

from kubeling.kubelet.prober.hpack import Decoder, HPACKError, encode_literal
from kubeling.kubelet.prober.probe import (
    KUBE_MAJOR_MINOR,
    Outcome,
    Result,
    go_duration,
    join_host_port,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_FRAME = 16384                  # SETTINGS_MAX_FRAME_SIZE we keep at its default
_SETTINGS_ENABLE_PUSH = 0x2
_STREAM = 1
_PATH = "/grpc.health.v1.Health/Check"

# google.golang.org/grpc/codes, as Go prints them.
CODE_NAMES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
              "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
              "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
              "Unauthenticated")
UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 2, 4, 12, 13, 14
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_HTTP_TO_GRPC = {400: INTERNAL, 401: 16, 403: 7, 404: UNIMPLEMENTED, 429: UNAVAILABLE,
                 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}


class H2Error(Exception):
    """The peer broke HTTP/2 (or closed); during connect this means "try again"."""


class RPCError(Exception):
    def __init__(self, code: int, desc: str) -> None:
        super().__init__(desc)
        self.code, self.desc = code, desc

    def __str__(self) -> str:
        name = CODE_NAMES[self.code] if 0 <= self.code < len(CODE_NAMES) else f"Code({self.code})"
        return f"rpc error: code = {name} desc = {self.desc}"


async def probe_grpc(host: str, port: int, service: str, timeout: float) -> Outcome:
    addr = join_host_port(host, port)
    shown = go_duration(timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            conn = await _dial(host, port, deadline)
    except TimeoutError:
        return Outcome(Result.FAILURE, f'timeout: failed to connect service "{addr}" within '
                                       f"{shown}: context deadline exceeded")
    try:
        async with asyncio.timeout_at(deadline):
            status = await conn.check(addr, service, deadline - loop.time())
    except TimeoutError:
        status = RPCError(DEADLINE_EXCEEDED, "context deadline exceeded")
    except (H2Error, HPACKError, ConnectionError, asyncio.IncompleteReadError) as e:
        status = RPCError(UNAVAILABLE, f"connection error: {e or 'EOF'}")
    except RPCError as e:
        status = e
    finally:
        conn.close()
    if isinstance(status, RPCError):
        if status.code == UNIMPLEMENTED:
            return Outcome(Result.FAILURE, "error: this server does not implement the grpc health "
                                           f"protocol (grpc.health.v1.Health): {status.desc}")
        if status.code == DEADLINE_EXCEEDED:
            return Outcome(Result.FAILURE, f"timeout: health rpc did not complete within {shown}")
        return Outcome(Result.FAILURE, f"error: health rpc probe failed: {status}")
    if status != 1:
        name = SERVING_STATUS.get(status, str(status))
        return Outcome(Result.FAILURE, f'service unhealthy (responded with "{name}")')
    return Outcome(Result.SUCCESS, "service healthy")


async def _dial(host: str, port: int, deadline: float) -> _Conn:
    """Connect until the server's preface (SETTINGS) arrives; the caller bounds it in time."""
    backoff = 0.1
    while True:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            conn = _Conn(reader, writer)
            await conn.handshake()
            return conn
        except (OSError, H2Error, HPACKError, asyncio.IncompleteReadError):
            if writer is not None:
                writer.transport.abort()
        # Like grpc-go's reconnect backoff, shortened: probes have seconds, not minutes.
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 1.0)


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = Decoder()

    def close(self) -> None:
        self.writer.transport.abort()

    async def handshake(self) -> None:
        self.writer.write(PREFACE + _frame(SETTINGS, 0, 0, struct.pack(">HI", _SETTINGS_ENABLE_PUSH, 0)))
        await self.writer.drain()
        ftype, flags, _, _ = await self._read_frame()
        if ftype != SETTINGS or flags & ACK:
            raise H2Error("the server's preface is not a SETTINGS frame")
        self.writer.write(_frame(SETTINGS, ACK, 0))

    async def _read_frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        if length > _MAX_FRAME:
            raise H2Error(f"frame of {length} bytes above SETTINGS_MAX_FRAME_SIZE")
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return head[3], head[4], stream, await self.reader.readexactly(length)

    async def check(self, authority: str, service: str, remaining: float) -> int:
        """One Health/Check call; the serving status, or `RPCError`."""
        headers = [(":method", "POST"), (":scheme", "http"), (":path", _PATH),
                   (":authority", authority), ("content-type", "application/grpc"),
                   ("user-agent", f"kube-probe/{KUBE_MAJOR_MINOR}"), ("te", "trailers"),
                   ("grpc-timeout", f"{max(1, int(remaining * 1000))}m")]
        name = service.encode()
        request = (b"\x0a" + _varint(len(name)) + name) if name else b""
        message = b"\x00" + struct.pack(">I", len(request)) + request
        self.writer.write(_frame(HEADERS, END_HEADERS, _STREAM, encode_literal(headers))
                          + _frame(DATA, END_STREAM, _STREAM, message))
        await self.writer.drain()

        response: dict[str, str] | None = None
        body = bytearray()
        while True:
            ftype, flags, stream, payload = await self._read_frame()
            if ftype == SETTINGS and not flags & ACK:
                self.writer.write(_frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                self.writer.write(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY and int.from_bytes(payload[:4], "big") & 0x7FFFFFFF < _STREAM:
                raise RPCError(UNAVAILABLE, "the connection is draining (GOAWAY)")
            elif ftype == RST_STREAM and stream == _STREAM:
                code = int.from_bytes(payload[:4], "big")
                raise RPCError(UNAVAILABLE if code == 0x7 else INTERNAL,
                               f"stream terminated by RST_STREAM with error code: {code}")
            elif ftype in (HEADERS, PUSH_PROMISE):
                fields = await self._header_block(ftype, flags, payload)
                if stream != _STREAM or ftype == PUSH_PROMISE:
                    continue
                if response is None:
                    response = fields
                    _check_http_status(fields)
                if flags & END_STREAM:
                    return _finish(fields, bytes(body))
            elif ftype == DATA and stream == _STREAM:
                body += _unpad(flags, payload)
                if flags & END_STREAM:
                    raise RPCError(INTERNAL, "server closed the stream without sending trailers")

    async def _header_block(self, ftype: int, flags: int, payload: bytes) -> dict[str, str]:
        block = _unpad(flags, payload)
        if ftype == HEADERS and flags & PRIORITY_FLAG:
            block = block[5:]
        elif ftype == PUSH_PROMISE:
            block = block[4:]
        while not flags & END_HEADERS:
            ctype, flags, _, more = await self._read_frame()
            if ctype != CONTINUATION:
                raise H2Error("a header block was interrupted")
            block += more
        return dict(self.decoder.decode(block))


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    pad = payload[0] if payload else 0
    if pad >= len(payload):
        raise H2Error("padding longer than the frame")
    return payload[1:len(payload) - pad]


def _check_http_status(fields: dict[str, str]) -> None:
    status = fields.get(":status", "")
    if status != "200" and "grpc-status" not in fields:
        code = int(status) if status.isdigit() else 0
        raise RPCError(_HTTP_TO_GRPC.get(code, UNKNOWN),
                       f"unexpected HTTP status code received from server: {status}")


def _finish(trailers: dict[str, str], body: bytes) -> int:
    raw = trailers.get("grpc-status")
    if raw is None or not raw.isdigit():
        raise RPCError(INTERNAL, "server closed the stream without sending trailers")
    code = int(raw)
    if code != 0:
        raise RPCError(code, urllib.parse.unquote(trailers.get("grpc-message", "")))
    if len(body) < 5:
        raise RPCError(INTERNAL, "grpc: the response has no message")
    if body[0] != 0:
        raise RPCError(INTERNAL, "grpc: a compressed response was not asked for")
    length = struct.unpack(">I", body[1:5])[0]
    return _serving_status(body[5:5 + length])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise RPCError(INTERNAL, "grpc: failed to unmarshal the response")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _serving_status(message: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, an enum); other fields are skipped."""
    status, pos = 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(message, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise RPCError(INTERNAL, "grpc: failed to unmarshal the response")
    return status
