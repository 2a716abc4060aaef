"""The protobuf wire format: varints, tags and length-delimited fields, both ways.

Only what Kubernetes' messages use: wire types 0 (varint), 1 (64-bit), 2 (length-delimited)
and 5 (32-bit). Groups (3/4) never occur in Kubernetes' protos and are rejected.

Contract: readers raise `WireError` (a `ValueError`) on truncated or malformed input; they never
read past the buffer they were given. Writers produce the canonical encoding (shortest varints,
fields in the order the caller emits them), which is what Go's gogo-protobuf marshallers emit.
"""

from __future__ import annotations

import struct
from typing import Iterator

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Malformed or truncated protobuf bytes."""


def read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    """Decode one unsigned varint at ``i``; returns (value, next offset)."""
    result = shift = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError("truncated varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) for every field of one message, in wire order.

    The value is an ``int`` for varints, ``bytes`` for length-delimited fields and the raw
    little-endian ``bytes`` (8 or 4 long) for fixed-width ones; callers interpret them by the
    field's declared type.
    """
    buf = memoryview(buf)
    i, n = 0, len(buf)
    while i < n:
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, i = read_varint(buf, i)
        elif wire == LEN:
            size, i = read_varint(buf, i)
            if i + size > n:
                raise WireError(f"field {number}: length {size} runs past the end of the message")
            value, i = bytes(buf[i:i + size]), i + size
        elif wire == FIXED64:
            if i + 8 > n:
                raise WireError(f"field {number}: truncated 64-bit value")
            value, i = bytes(buf[i:i + 8]), i + 8
        elif wire == FIXED32:
            if i + 4 > n:
                raise WireError(f"field {number}: truncated 32-bit value")
            value, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def to_int64(value: int) -> int:
    """A varint read as a two's-complement int64/int32 (negative ints use all 10 bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unpack_varints(payload: bytes) -> list[int]:
    """The elements of a packed repeated varint field."""
    out, i = [], 0
    while i < len(payload):
        value, i = read_varint(payload, i)
        out.append(value)
    return out


def double(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


def float32(raw: bytes) -> float:
    return struct.unpack("<f", raw)[0]


# -- writing -----------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    """Encode a non-negative int, or a negative int64 as its 10-byte two's complement."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def len_field(number: int, payload: bytes) -> bytes:
    return key(number, LEN) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return key(number, VARINT) + varint(value)


def double_field(number: int, value: float) -> bytes:
    return key(number, FIXED64) + struct.pack("<d", value)
