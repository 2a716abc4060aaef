"""Kubernetes' protobuf schemas, taken from the descriptors every kubectl binary embeds.

gogo-protobuf registers each ``generated.proto`` of k8s.io/api, k8s.io/apimachinery, ... as a
gzipped ``FileDescriptorProto`` in the Go binary. We find those gzip streams, decode the
descriptors with a small wire decoder (descriptor.proto's field numbers, below), and join each
message with the Go struct it is generated from (`gotypes`: pointer, omitempty, inline, JSON
name), which decides how the value appears in JSON.

The table (`Table.messages`) maps a message's full name (``k8s.io.api.core.v1.ConfigMap``) to
`Message(fields={number: Field}, entry=is a map entry, list=Go named slice)`. On disk it is JSON:
``{"format": N, "source": ..., "go": bool, "messages": {name: [entry, list, {number: [json_name,
type, label, type_name, is_map, go_flags]}]}}``, where ``go_flags`` is None when the Go side is
unknown, else a string of ``p`` (pointer), ``o`` (omitempty), ``i`` (inline), ``s`` (json:"-").

Where `load()` looks, first hit wins: ``$KUBELING_PROTO_DESCRIPTORS``; then
``<sys.prefix>/share/kubeling/k8s-proto.json``; else it extracts from the first kubectl found
(``<sys.prefix>/bin/kubectl``, ``/usr/lib/google-cloud-sdk/bin/kubectl.1.32``, ``kubectl`` on
PATH) and caches the result at the second path. None found raises `Unavailable`.

CLI: ``python -m kubeling.api.protobuf.descriptors --kubectl PATH --out FILE``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import orjson

from kubeling.api.protobuf import gotypes
from kubeling.api.protobuf.wire import WireError, iter_fields

log = logging.getLogger(__name__)

FORMAT = 1
ENV = "KUBELING_PROTO_DESCRIPTORS"
KUBECTL_CANDIDATES = ("{prefix}/bin/kubectl", "/usr/lib/google-cloud-sdk/bin/kubectl.1.32")
INSTALL_HINT = ("run `make clients`, or `python -m kubeling.api.protobuf.descriptors --kubectl "
                "PATH --out FILE` with a kubectl binary and point $KUBELING_PROTO_DESCRIPTORS at "
                "FILE")

# FieldDescriptorProto.Type values.
DOUBLE, FLOAT, INT64, UINT64, INT32, FIXED64, FIXED32, BOOL, STRING = 1, 2, 3, 4, 5, 6, 7, 8, 9
MESSAGE, BYTES, UINT32, ENUM, SFIXED32, SFIXED64, SINT32, SINT64 = 11, 12, 13, 14, 15, 16, 17, 18
# FieldDescriptorProto.Label values.
OPTIONAL, REQUIRED, REPEATED = 1, 2, 3

_GZIP_MAGIC = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
_MAX_DESCRIPTOR = 4 << 20


class Unavailable(RuntimeError):
    """No descriptor table could be found or extracted."""


class Field(NamedTuple):
    json_name: str
    type: int
    label: int
    type_name: str        # full message name for MESSAGE/ENUM fields (no leading dot), else ""
    is_map: bool
    go: str | None        # Go flags (module docstring), None when unknown

    @property
    def repeated(self) -> bool:
        return self.label == REPEATED


@dataclass(frozen=True)
class Message:
    fields: dict[int, Field]
    entry: bool = False   # a map<K, V> entry: key is field 1, value field 2
    list: bool = False    # Go named slice (ExtraValue, Verbs): JSON is an array of field 1


@dataclass(frozen=True, eq=False)  # hashed by identity: decoders cache per-table indexes
class Table:
    messages: dict[str, Message]
    source: str = ""
    go: bool = False      # whether Go struct information was joined in

    def to_json(self) -> bytes:
        return orjson.dumps({
            "format": FORMAT, "source": self.source, "go": self.go,
            "messages": {name: [m.entry, m.list, {str(n): list(f) for n, f in m.fields.items()}]
                         for name, m in sorted(self.messages.items())},
        })

    @classmethod
    def from_json(cls, data: bytes) -> "Table":
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a format {FORMAT} descriptor table")
        messages = {name: Message({int(n): Field(*f) for n, f in fields.items()}, entry, is_list)
                    for name, (entry, is_list, fields) in doc["messages"].items()}
        return cls(messages, doc.get("source", ""), doc.get("go", False))


# -- descriptor.proto ---------------------------------------------------------------------------

def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else ""


def _field(buf: bytes) -> tuple[str, int, int, int, str, str]:
    """FieldDescriptorProto -> (name, number, label, type, type_name, json_name)."""
    name = type_name = json_name = ""
    number = label = typ = 0
    for n, _, v in iter_fields(buf):
        if n == 1:
            name = _str(v)
        elif n == 3:
            number = v
        elif n == 4:
            label = v
        elif n == 5:
            typ = v
        elif n == 6:
            type_name = _str(v).lstrip(".")
        elif n == 10:
            json_name = _str(v)
    return name, number, label, typ, type_name, json_name


def _messages(buf: bytes, prefix: str, out: dict[str, tuple[bool, list]]) -> None:
    """DescriptorProto (recursively with nested types) -> ``out[full name] = (entry, fields)``."""
    name, fields, nested, entry = "", [], [], False
    for n, _, v in iter_fields(buf):
        if n == 1:
            name = _str(v)
        elif n == 2:
            fields.append(_field(v))
        elif n == 3:
            nested.append(v)
        elif n == 7:  # MessageOptions; map_entry is its field 7
            entry = any(on == 7 and ov for on, _, ov in iter_fields(v))
    full = f"{prefix}.{name}" if prefix else name
    out[full] = (entry, fields)
    for sub in nested:
        _messages(sub, full, out)


def parse_file(buf: bytes) -> tuple[str, str, dict[str, tuple[bool, list]]]:
    """FileDescriptorProto -> (file name, package, {message full name: (entry, fields)})."""
    name, package, raw = "", "", []
    for n, _, v in iter_fields(buf):
        if n == 1:
            name = _str(v)
        elif n == 2:
            package = _str(v)
        elif n == 4:
            raw.append(v)
    messages: dict[str, tuple[bool, list]] = {}
    for m in raw:
        _messages(m, package, messages)
    return name, package, messages


def find_descriptors(binary: bytes) -> list[bytes]:
    """Every gzipped FileDescriptorProto of a ``generated.proto`` embedded in ``binary``."""
    found, i = [], 0
    while (i := binary.find(_GZIP_MAGIC, i)) >= 0:
        start, i = i, i + 1
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            head = d.decompress(binary[start:start + _MAX_DESCRIPTOR], 512)
        except zlib.error:
            continue
        # FileDescriptorProto starts with field 1 (name): 0x0a, length, then the name.
        if len(head) < 3 or head[0] != 0x0A or not head[2:2 + head[1]].endswith(b"generated.proto"):
            continue
        try:
            body = head + d.decompress(d.unconsumed_tail, _MAX_DESCRIPTOR)
        except zlib.error:
            continue
        found.append(body)
    return found


# -- joining with Go ----------------------------------------------------------------------------

def _go_flags(f: gotypes.GoField) -> str:
    return "".join(c for c, on in (("p", f.pointer), ("o", f.omitempty), ("i", f.inline),
                                   ("s", f.skip)) if on)


def build(descriptor_files: list[bytes], go: gotypes.GoTypes | None, source: str = "") -> Table:
    """Join descriptors (and Go struct info, when given) into a `Table`."""
    raw: dict[str, tuple[bool, list]] = {}
    for buf in descriptor_files:
        _, _, messages = parse_file(buf)
        raw.update(messages)
    # Go package "k8s.io/apiextensions-apiserver/pkg/..." is proto package "k8s.io.apiextensions_apiserver.pkg...".
    structs, named = {}, {}
    if go is not None:
        structs = {k.replace("/", ".").replace("-", "_"): v for k, v in go.structs.items()}
        named = {k.replace("/", ".").replace("-", "_"): v for k, v in go.named.items()}
    messages: dict[str, Message] = {}
    for full, (entry, fields) in raw.items():
        go_fields = structs.get(full)
        table_fields = {}
        for name, number, label, typ, type_name, json_name in fields:
            is_map = typ == MESSAGE and label == REPEATED and raw.get(type_name, (False,))[0]
            flags = None
            if go_fields is not None and number in go_fields:
                gf = go_fields[number]
                flags = _go_flags(gf)
                if gf.json_name:
                    json_name = gf.json_name
            table_fields[number] = Field(json_name or name, typ, label, type_name, bool(is_map), flags)
        is_list = named.get(full) == gotypes.SLICE and set(table_fields) == {1}
        messages[full] = Message(table_fields, entry, is_list)
    return Table(messages, source, go is not None)


def extract(kubectl: str | os.PathLike) -> Table:
    """The table from one kubectl binary; `Unavailable` when it holds no descriptors."""
    data = Path(kubectl).read_bytes()
    files = find_descriptors(data)
    if not files:
        raise Unavailable(f"{kubectl}: no embedded protobuf descriptors")
    try:
        go = gotypes.read(data)
    except gotypes.GoTypesError as e:
        # Still useful: field names and types are right; only Go's zero-value rules are guessed.
        log.warning("%s: Go type metadata unreadable (%s); zero-valued pointer fields will be "
                    "dropped from protobuf bodies", kubectl, e)
        go = None
    try:
        return build(files, go, str(kubectl))
    except WireError as e:
        raise Unavailable(f"{kubectl}: malformed descriptor: {e}") from None


# -- finding a table ----------------------------------------------------------------------------

def cache_path() -> Path:
    return Path(sys.prefix) / "share" / "kubeling" / "k8s-proto.json"


def kubectl_candidates() -> list[str]:
    paths = [p.format(prefix=sys.prefix) for p in KUBECTL_CANDIDATES]
    found = shutil.which("kubectl")
    if found:
        paths.append(found)
    return [p for p in dict.fromkeys(paths) if os.path.isfile(p)]


def write(table: Table, out: Path) -> None:
    """Atomically write ``table`` as JSON to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".k8s-proto-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(table.to_json())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the table is public data
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


@lru_cache(maxsize=1)
def load() -> Table:
    """The descriptor table, found as described in the module docstring (cached per process)."""
    tried = []
    env = os.environ.get(ENV)
    paths = ([Path(env)] if env else []) + [cache_path()]
    for path in paths:
        try:
            return Table.from_json(path.read_bytes())
        except (OSError, ValueError, TypeError, KeyError) as e:
            tried.append(f"{path}: {e.__class__.__name__}")
    for kubectl in kubectl_candidates():
        try:
            table = extract(kubectl)
        except (OSError, Unavailable) as e:
            tried.append(str(e))
            continue
        try:
            write(table, cache_path())
        except OSError as e:
            log.info("could not cache protobuf descriptors at %s: %s", cache_path(), e)
        return table
    raise Unavailable("protobuf schemas are unavailable (" + "; ".join(tried or ["no kubectl"])
                      + "); " + INSTALL_HINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubectl", help="kubectl binary to read (default: the first one found)")
    parser.add_argument("--out", default=str(cache_path()), help="where to write the JSON table")
    args = parser.parse_args(argv)
    candidates = [args.kubectl] if args.kubectl else kubectl_candidates()
    if not candidates:
        print(f"no kubectl found; {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        table = extract(candidates[0])
    except (OSError, Unavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write(table, Path(args.out))
    print(f"{args.out}: {len(table.messages)} messages from {table.source}"
          f"{'' if table.go else ' (without Go struct information)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
