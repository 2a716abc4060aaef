"""Go struct layouts read from a Go binary's runtime type metadata (kubectl's ELF file).

Why: the protobuf descriptors say which field number carries which value, but not what Go's
JSON encoder does with it. Kubernetes' Go types decide that: a *pointer* scalar that is set
(``replicas: 0``) is emitted even when zero, a plain scalar with ``omitempty`` is dropped when
zero, ``json:",inline"`` folds a sub-struct into its parent (``Volume.VolumeSource``), and a
named slice such as ``ExtraValue []string`` is a JSON array although protobuf wraps it in a
message. gogo-protobuf writes every non-pointer scalar on the wire, zero or not, so the wire
alone cannot tell ``replicas: 0`` (kept) from ``generation: 0`` (dropped). Every Go binary keeps
reflection metadata (type kinds, struct field names and tags) for ``encoding/json``, so the
kubectl binary that embeds the descriptors also tells us the Go side.

What is read (Go 1.17+ ``internal/abi`` layout, 64-bit little-endian ELF, non-PIE, as
kubectl 1.2x/1.3x is built):

- ``.typelink``: int32 offsets, from the start of the type data (``runtime.types``, the start of
  ``.rodata``), of the composite types; every other type is reached from those by following
  element, key, field and pointer-to-this links.
- ``abi.Type`` (48 bytes): size, ptrdata, hash, tflag@20, align, fieldAlign, kind@23, equal,
  gcdata, str@40 (name offset), ptrToThis@44. Struct types add pkgPath, then the fields slice
  at @56 of ``{name *byte, typ *Type, offset}``; pointer/slice types add elem at @48. An
  ``uncommonType`` (pkgPath name offset first) follows the kind-specific part when tflag&1.
- names: a flags byte (1 exported, 2 tag follows), a varint length, the bytes, then the tag.

Contract: `read(binary)` returns `GoTypes` or raises `GoTypesError`; it never executes the
binary. It only trusts what it can cross-check (every name offset must land inside the file).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from kubeling.api.protobuf.wire import read_varint

# Go reflect kinds (abi.Kind) that matter here.
BOOL, INT32, INT64, FLOAT64, ARRAY, MAP, POINTER, SLICE, STRING, STRUCT = 1, 5, 6, 14, 17, 21, 22, 23, 24, 25
_KIND_MASK = 0x1F
_TFLAG_UNCOMMON, _TFLAG_EXTRA_STAR, _TFLAG_NAMED = 1, 2, 4
_TYPE_SIZE = 48
# Where the uncommonType starts, by kind (the kind-specific struct's size).
_UNCOMMON_AT = {STRUCT: 80, POINTER: 56, SLICE: 56, ARRAY: 72, STRING: 48, BOOL: 48, INT32: 48,
                INT64: 48, FLOAT64: 48}

_PROTOBUF_TAG = re.compile(r'protobuf:"[a-z0-9]+,(\d+),')
_JSON_TAG = re.compile(r'json:"([^"]*)"')


class GoTypesError(ValueError):
    """The file is not a Go binary whose type metadata we can read."""


@dataclass(frozen=True)
class GoField:
    """One struct field that protobuf serializes (it has a ``protobuf:"..."`` tag)."""

    number: int          # protobuf field number
    json_name: str       # "" for json:",inline" and json:"-"
    omitempty: bool
    inline: bool         # json:",inline": the value's fields are the parent's fields in JSON
    skip: bool           # json:"-": never in JSON
    pointer: bool        # a nil pointer is absent on the wire; a set one is kept even when zero
    kind: int            # the field's Go kind (POINTER: of the pointee)


@dataclass
class GoTypes:
    """``structs``: ``"k8s.io/api/apps/v1.Deployment" -> {number: GoField}``;
    ``named``: kinds of named non-struct types (``"k8s.io/api/authentication/v1.ExtraValue"
    -> SLICE``)."""

    structs: dict[str, dict[int, GoField]] = field(default_factory=dict)
    named: dict[str, int] = field(default_factory=dict)


class _Elf:
    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF":
            raise GoTypesError("not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise GoTypesError("only 64-bit little-endian ELF binaries are supported")
        self.data = data
        shoff = struct.unpack_from("<Q", data, 0x28)[0]
        entsize, count, strndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", data, shoff + k * entsize) for k in range(count)]
        names_at = raw[strndx][4]
        self.sections: dict[str, tuple[int, int, int]] = {}
        for name, kind, _flags, addr, off, size in raw:
            end = data.index(b"\0", names_at + name)
            if kind != 8:  # SHT_NOBITS (.bss) has no bytes in the file
                self.sections[data[names_at + name:end].decode()] = (addr, off, size)
        self._spans = sorted(v for v in self.sections.values() if v[0])

    def offset(self, addr: int) -> int:
        for start, off, size in self._spans:
            if start <= addr < start + size:
                return addr - start + off
        raise GoTypesError(f"address {addr:#x} is outside the file's sections")


class _Reader:
    def __init__(self, data: bytes):
        self.elf = _Elf(data)
        self.data = data
        try:
            self.base = self.elf.sections[".rodata"][0]
            link = self.elf.sections[".typelink"]
        except KeyError as e:
            raise GoTypesError(f"no {e.args[0]} section: not a Go binary, or built in a way we "
                               f"cannot read") from None
        self.links = struct.unpack_from(f"<{link[2] // 4}i", data, link[1])

    def u64(self, addr: int, at: int = 0) -> int:
        return struct.unpack_from("<Q", self.data, self.elf.offset(addr) + at)[0]

    def name(self, addr: int) -> tuple[str, str]:
        """(name, tag) of the abi.Name at ``addr``."""
        o = self.elf.offset(addr)
        flags = self.data[o]
        length, o = read_varint(self.data, o + 1)
        text = self.data[o:o + length].decode("utf-8", "replace")
        tag = ""
        if flags & 2:
            tag_len, o2 = read_varint(self.data, o + length)
            tag = self.data[o2:o2 + tag_len].decode("utf-8", "replace")
        return text, tag

    def header(self, addr: int) -> tuple[int, int, int, int]:
        """(tflag, kind, str name offset, ptrToThis offset) of the abi.Type at ``addr``."""
        o = self.elf.offset(addr)
        tflag, kind = self.data[o + 20], self.data[o + 23] & _KIND_MASK
        str_off, ptr_to_this = struct.unpack_from("<ii", self.data, o + 40)
        return tflag, kind, str_off, ptr_to_this

    def qualified_name(self, addr: int, tflag: int, kind: int, str_off: int) -> str | None:
        """``"<pkg path>.<Name>"`` for a named type; None for unnamed or unreadable ones."""
        if not tflag & _TFLAG_NAMED or not tflag & _TFLAG_UNCOMMON or kind not in _UNCOMMON_AT:
            return None
        text, _ = self.name(self.base + str_off)
        if tflag & _TFLAG_EXTRA_STAR:
            text = text[1:]
        pkg_off = struct.unpack_from("<i", self.data, self.elf.offset(addr) + _UNCOMMON_AT[kind])[0]
        pkg, _ = self.name(self.base + pkg_off)
        return f"{pkg}.{text.rsplit('.', 1)[-1]}" if pkg else None


def _field(r: _Reader, tag: str, typ: int) -> GoField | None:
    m = _PROTOBUF_TAG.search(tag)
    if not m:
        return None
    j = _JSON_TAG.search(tag)
    parts = j.group(1).split(",") if j else [""]
    kind = r.header(typ)[1]
    pointer = kind == POINTER
    if pointer:
        kind = r.header(r.u64(typ, _TYPE_SIZE))[1]
    return GoField(number=int(m.group(1)), json_name=parts[0] if parts[0] != "-" else "",
                   omitempty="omitempty" in parts[1:], inline="inline" in parts[1:],
                   skip=parts[0] == "-" and len(parts) == 1, pointer=pointer, kind=kind)


def read(data: bytes) -> GoTypes:
    """Walk every type reachable from ``.typelink`` and collect protobuf-tagged structs."""
    r = _Reader(data)
    out = GoTypes()
    seen: set[int] = set()
    stack = [r.base + off for off in r.links]
    try:
        while stack:
            addr = stack.pop()
            if not addr or addr in seen:
                continue
            seen.add(addr)
            tflag, kind, str_off, ptr_to_this = r.header(addr)
            if ptr_to_this:
                stack.append(r.base + ptr_to_this)
            if kind in (POINTER, SLICE, ARRAY):
                stack.append(r.u64(addr, _TYPE_SIZE))
            elif kind == MAP:
                stack += [r.u64(addr, _TYPE_SIZE), r.u64(addr, _TYPE_SIZE + 8)]
            qualified = r.qualified_name(addr, tflag, kind, str_off)
            if kind != STRUCT:
                if qualified:
                    out.named[qualified] = kind
                continue
            fields_at, count = r.u64(addr, 56), r.u64(addr, 64)
            tagged: dict[int, GoField] = {}
            for k in range(count):
                name_addr, typ = r.u64(fields_at, 24 * k), r.u64(fields_at, 24 * k + 8)
                stack.append(typ)
                _, tag = r.name(name_addr)
                f = _field(r, tag, typ)
                if f is not None:
                    tagged[f.number] = f
            if qualified and tagged:
                out.structs[qualified] = tagged
    except (struct.error, IndexError) as e:
        raise GoTypesError(f"unreadable type metadata: {e}") from None
    if not out.structs:
        raise GoTypesError("no protobuf-tagged Go structs found")
    return out
