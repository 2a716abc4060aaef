"""SPDY/3.1 framing (draft-mbelshe-httpbis-spdy-00 as amended by SPDY/3.1), sans I/O.

kubectl speaks SPDY/3.1 for ``exec``/``attach``/``cp`` when WebSockets are refused, and for
``port-forward`` (plainly after an ``Upgrade: SPDY/3.1``, or tunnelled in WebSocket messages).
This module only turns bytes into frames and frames into bytes; `spdyconn.SpdyConnection` runs a
session over a byte stream.

Wire format (all integers big-endian)::

    control frame   |1| version(15)=3 | type(16) | flags(8) | length(24) | payload
    data frame      |0| stream id(31)            | flags(8) | length(24) | data

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``count(32)`` then ``len(32) name len(32)
value`` pairs, names lower-case, several values of one name joined with NUL. Each direction of a
connection compresses every header block with *one* zlib stream primed with the SPDY/3
dictionary and flushed with ``Z_SYNC_FLUSH`` after each block, so a `Framer` is stateful and
belongs to exactly one connection; blocks must be decoded in the order they arrived.

Contracts:
- `Framer.feed(data)` returns every complete frame in ``data`` plus what was buffered; partial
  frames stay buffered. Malformed input raises `ProtocolError` (the caller sends GOAWAY and
  closes). Unknown control frame types are skipped, as the spec requires.
- Header values are `str` (latin-1, as HTTP/1.1 headers); `Headers` maps a lower-case name to
  its list of values.
- Decompressed header blocks are capped at `MAX_HEADER_BLOCK` bytes (a tiny compressed block
  may otherwise expand without bound).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR, \
    FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = range(1, 10)
# GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
# SETTINGS ids this implementation reads.
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024          # the initial per-stream window of SPDY/3.1
MAX_FRAME_PAYLOAD = (1 << 24) - 1
MAX_HEADER_BLOCK = 1 << 20

Headers = dict[str, list[str]]

# The SPDY/3 header-compression dictionary (spec section 2.6.10.1): length-prefixed words, then
# a run of status codes, reason phrases, dates and common values.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    """The peer broke the framing rules; the session cannot continue."""


@dataclass
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)   # (flags, id, value)
    clear: bool = False


@dataclass
class Ping:
    id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block; names are lower-cased, values joined with NUL."""
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n = name.lower().encode("latin-1")
        v = "\0".join(values).encode("latin-1")
        parts += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    try:
        (count,), pos = struct.unpack_from(">I", block), 4
        out: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode("latin-1")
            pos += 4 + n
            (v,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + v].decode("latin-1")
            if len(value) != v or len(name) != n:
                raise ProtocolError("truncated header block")
            pos += 4 + v
            if not name or name != name.lower():
                raise ProtocolError(f"invalid header name {name!r}")
            out.setdefault(name, []).extend(value.split("\0"))
        return out
    except struct.error:
        raise ProtocolError("truncated header block") from None


class Framer:
    """Encodes and decodes the frames of one connection (one zlib context per direction)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._compress = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                          zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self._decompress = zlib.decompressobj(15, zdict=DICTIONARY)

    # -- encoding ------------------------------------------------------------------------------

    def _headers(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._compress.compress(block) + self._compress.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_PAYLOAD:
            raise ValueError("frame payload too large")
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def encode(self, f: Frame) -> bytes:
        if isinstance(f, DataFrame):
            if len(f.data) > MAX_FRAME_PAYLOAD:
                raise ValueError("frame payload too large")
            flags = FLAG_FIN if f.fin else 0
            return struct.pack(">II", f.stream_id & 0x7FFFFFFF, (flags << 24) | len(f.data)) + f.data
        if isinstance(f, SynStream):
            flags = (FLAG_FIN if f.fin else 0) | (FLAG_UNIDIRECTIONAL if f.unidirectional else 0)
            head = struct.pack(">IIBB", f.stream_id, f.associated_id, (f.priority & 7) << 5, 0)
            return self._control(SYN_STREAM, flags, head + self._headers(f.headers))
        if isinstance(f, SynReply):
            return self._control(SYN_REPLY, FLAG_FIN if f.fin else 0,
                                 struct.pack(">I", f.stream_id) + self._headers(f.headers))
        if isinstance(f, HeadersFrame):
            return self._control(HEADERS, FLAG_FIN if f.fin else 0,
                                 struct.pack(">I", f.stream_id) + self._headers(f.headers))
        if isinstance(f, RstStream):
            return self._control(RST_STREAM, 0, struct.pack(">II", f.stream_id, f.status))
        if isinstance(f, Settings):
            body = struct.pack(">I", len(f.entries)) + b"".join(
                struct.pack(">II", (fl << 24) | sid, val) for fl, sid, val in f.entries)
            return self._control(SETTINGS, 1 if f.clear else 0, body)
        if isinstance(f, Ping):
            return self._control(PING, 0, struct.pack(">I", f.id))
        if isinstance(f, GoAway):
            return self._control(GOAWAY, 0, struct.pack(">II", f.last_good_stream_id, f.status))
        if isinstance(f, WindowUpdate):
            return self._control(WINDOW_UPDATE, 0, struct.pack(">II", f.stream_id, f.delta))
        raise TypeError(f"not a SPDY frame: {f!r}")

    # -- decoding ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            word, flags_len = struct.unpack_from(">II", self._buf)
            length = flags_len & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            flags = flags_len >> 24
            if word & 0x80000000:
                version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
                if version != VERSION:
                    raise ProtocolError(f"unsupported SPDY version {version}")
                frame = self._control_frame(ftype, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(DataFrame(word & 0x7FFFFFFF, payload, bool(flags & FLAG_FIN)))
        return frames

    def _inflate(self, block: bytes) -> Headers:
        try:
            raw = self._decompress.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from None
        if self._decompress.unconsumed_tail:
            raise ProtocolError("header block too large")
        return decode_header_block(raw)

    def _control_frame(self, ftype: int, flags: int, p: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        try:
            if ftype == SYN_STREAM:
                sid, assoc, prio = struct.unpack_from(">IIB", p)
                return SynStream(sid & 0x7FFFFFFF, self._inflate(p[10:]), assoc & 0x7FFFFFFF, prio >> 5, fin,
                                 bool(flags & FLAG_UNIDIRECTIONAL))
            if ftype == SYN_REPLY:
                return SynReply(struct.unpack_from(">I", p)[0] & 0x7FFFFFFF, self._inflate(p[4:]), fin)
            if ftype == HEADERS:
                return HeadersFrame(struct.unpack_from(">I", p)[0] & 0x7FFFFFFF, self._inflate(p[4:]), fin)
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return RstStream(sid & 0x7FFFFFFF, status)
            if ftype == SETTINGS:
                (count,) = struct.unpack_from(">I", p)
                entries = []
                for i in range(count):
                    fid, val = struct.unpack_from(">II", p, 4 + 8 * i)
                    entries.append((fid >> 24, fid & 0xFFFFFF, val))
                return Settings(entries, bool(flags & 1))
            if ftype == PING:
                return Ping(struct.unpack_from(">I", p)[0])
            if ftype == GOAWAY:
                last = struct.unpack_from(">I", p)[0] & 0x7FFFFFFF
                status = struct.unpack_from(">I", p, 4)[0] if len(p) >= 8 else GOAWAY_OK
                return GoAway(last, status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise ProtocolError(f"truncated control frame of type {ftype}") from None
        return None  # unknown types (CREDENTIAL, NOOP) are ignored, as the spec says
