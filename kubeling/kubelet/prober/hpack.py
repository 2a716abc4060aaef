"""HPACK (RFC 7541): a complete decoder and a literal-only encoder, enough for an h2 client.

Decoding has to be complete because the peer chooses the representation: a gRPC server may
index, Huffman-code and evict as it likes, and ``grpc-status`` must still be read right.
Encoding can stay trivial: every field is sent as "literal without indexing, new name" with raw
strings, which any decoder accepts and which leaves the peer's view of our table empty.

Contract: one `Decoder` per connection and direction, fed every header block in the order the
frames arrived (the dynamic table is connection state). Errors raise `HPACKError`; the
connection is then unusable (RFC 7540 says COMPRESSION_ERROR).
"""

from __future__ import annotations

from collections import deque


class HPACKError(Exception):
    pass


STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)

# RFC 7541 Appendix B is a canonical Huffman code, so the code lengths alone define it: symbols
# sorted by (length, value) take consecutive codes. Listed here: length -> symbols (256 = EOS).
_CODE_LENGTHS: dict[int, tuple[int, ...]] = {
    5: (48, 49, 50, 97, 99, 101, 105, 111, 115, 116),
    6: (32, 37, 45, 46, 47, 51, 52, 53, 54, 55, 56, 57, 61, 65, 95, 98, 100, 102, 103, 104, 108,
        109, 110, 112, 114, 117),
    7: (58, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86,
        87, 89, 106, 107, 113, 118, 119, 120, 121, 122),
    8: (38, 42, 44, 59, 88, 90),
    10: (33, 34, 40, 41, 63),
    11: (39, 43, 124),
    12: (35, 62),
    13: (0, 36, 64, 91, 93, 126),
    14: (94, 125),
    15: (60, 96, 123),
    19: (92, 195, 208),
    20: (128, 130, 131, 162, 184, 194, 224, 226),
    21: (153, 161, 167, 172, 176, 177, 179, 209, 216, 217, 227, 229, 230),
    22: (129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164, 169, 170, 173, 178, 181, 185,
         186, 187, 189, 190, 196, 198, 228, 232, 233),
    23: (1, 135, 137, 138, 139, 140, 141, 143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166,
         168, 174, 175, 180, 182, 183, 188, 191, 197, 231, 239),
    24: (9, 142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237),
    25: (199, 207, 234, 235),
    26: (192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255),
    27: (203, 204, 211, 212, 214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252,
         253, 254),
    28: (2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
         29, 30, 31, 127, 220, 249),
    30: (10, 13, 22, 256),
}
_EOS = 256


def _build_codes() -> dict[tuple[int, int], int]:
    codes: dict[tuple[int, int], int] = {}
    code, prev_len = 0, 0
    for length in sorted(_CODE_LENGTHS):
        code <<= length - prev_len
        for sym in _CODE_LENGTHS[length]:
            codes[(length, code)] = sym
            code += 1
        prev_len = length
    return codes


_HUFFMAN = _build_codes()


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    acc = bits = 0
    for byte in data:
        for shift in range(7, -1, -1):
            acc = (acc << 1) | ((byte >> shift) & 1)
            bits += 1
            sym = _HUFFMAN.get((bits, acc))
            if sym is not None:
                if sym == _EOS:
                    raise HPACKError("EOS symbol inside a Huffman string")
                out.append(sym)
                acc = bits = 0
            elif bits > 30:
                raise HPACKError("invalid Huffman code")
    # Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if bits > 7 or acc != (1 << bits) - 1:
        raise HPACKError("invalid Huffman padding")
    return bytes(out)


def decode_int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (RFC 7541 5.1) starting at ``data[pos]``."""
    if pos >= len(data):
        raise HPACKError("truncated integer")
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HPACKError("truncated integer")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
        if shift > 63:
            raise HPACKError("integer overflow")


def encode_int(value: int, prefix: int, flags: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([flags | value])
    out = bytearray([flags | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_literal(headers: list[tuple[str, str]]) -> bytes:
    """Each field as "literal without indexing, new name", strings not Huffman-coded."""
    out = bytearray()
    for name, value in headers:
        out.append(0x00)
        for text in (name.encode(), value.encode()):
            out += encode_int(len(text), 7)
            out += text
    return bytes(out)


class Decoder:
    def __init__(self, max_table_size: int = 4096) -> None:
        self.max_allowed = max_table_size    # what we advertised (SETTINGS_HEADER_TABLE_SIZE)
        self.max_size = max_table_size       # the current limit, lowered by size updates
        self.size = 0
        self.table: deque[tuple[str, str]] = deque()   # newest first

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            b = block[pos]
            if b & 0x80:                                   # indexed field
                index, pos = decode_int(block, pos, 7)
                fields.append(self._get(index))
            elif b & 0x40:                                 # literal, incremental indexing
                name, value, pos = self._literal(block, pos, 6)
                fields.append((name, value))
                self._add(name, value)
            elif b & 0x20:                                 # dynamic table size update
                size, pos = decode_int(block, pos, 5)
                if size > self.max_allowed:
                    raise HPACKError(f"table size update {size} above {self.max_allowed}")
                self.max_size = size
                self._evict()
            else:                                          # literal, not indexed / never indexed
                name, value, pos = self._literal(block, pos, 4)
                fields.append((name, value))
        return fields

    def _get(self, index: int) -> tuple[str, str]:
        if index == 0:
            raise HPACKError("index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dyn = index - len(STATIC_TABLE) - 1
        if dyn >= len(self.table):
            raise HPACKError(f"index {index} outside the table")
        return self.table[dyn]

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[str, str, int]:
        index, pos = decode_int(block, pos, prefix)
        if index:
            name = self._get(index)[0]
        else:
            name, pos = self._string(block, pos)
        value, pos = self._string(block, pos)
        return name, value, pos

    @staticmethod
    def _string(block: bytes, pos: int) -> tuple[str, int]:
        if pos >= len(block):
            raise HPACKError("truncated string")
        huffman = block[pos] & 0x80
        length, pos = decode_int(block, pos, 7)
        if pos + length > len(block):
            raise HPACKError("truncated string")
        raw = block[pos:pos + length]
        data = huffman_decode(raw) if huffman else raw
        return data.decode("utf-8", "replace"), pos + length

    def _add(self, name: str, value: str) -> None:
        entry = len(name.encode()) + len(value.encode()) + 32
        if entry > self.max_size:
            # RFC 7541 4.4: an entry larger than the table empties it and is not added.
            self.table.clear()
            self.size = 0
            return
        self.table.appendleft((name, value))
        self.size += entry
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_size and self.table:
            name, value = self.table.pop()
            self.size -= len(name.encode()) + len(value.encode()) + 32
