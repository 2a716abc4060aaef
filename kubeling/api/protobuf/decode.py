"""Decode a Kubernetes protobuf body into the JSON dict Go's JSON encoder makes of the same object.

The envelope (``application/vnd.kubernetes.protobuf``) is the magic ``k8s\\x00`` followed by a
``runtime.Unknown``: typeMeta=1 {apiVersion=1, kind=2}, raw=2 (the object's own message),
contentEncoding=3, contentType=4.

How a field becomes JSON follows the Go struct it was generated from (see `descriptors`):

- a scalar is emitted when it is a set pointer (``replicas: 0``), when it is non-zero, or when its
  JSON tag lacks ``omitempty`` (``name: ""``); gogo writes every non-pointer scalar on the wire,
  so presence alone says nothing for those;
- a message field that is on the wire is emitted, empty or not (``resources: {}``): gogo writes
  non-pointer structs always and pointer structs only when set, which is what Go's JSON does;
- ``json:",inline"`` fields are merged into their parent, ``json:"-"`` ones dropped;
- empty repeated fields and maps are omitted (Go emits ``null`` for a nil slice without
  omitempty; to every Kubernetes decoder that is the same as absent);
- well-known messages have their own JSON: meta.v1 Time (RFC 3339, seconds; empty = ``null``),
  MicroTime (6 fractional digits), Duration (Go duration string), resource.Quantity (its string),
  intstr.IntOrString (int or string), runtime.RawExtension, meta.v1.FieldsV1 and apiextensions
  JSON (embedded JSON), JSONSchemaPropsOr{Array,Bool,StringArray}; Go named slices wrapped in
  a message (``ExtraValue``, ``Verbs``) are arrays; bytes are base64.

Contract: `decode_object` raises `DecodeError` for malformed bytes and `UnknownKind` when the
(apiVersion, kind) has no message in the table. It never returns partial objects.
"""

from __future__ import annotations

import base64
import datetime as dt
from functools import lru_cache

import orjson

from kubeling.api.protobuf import descriptors as d
from kubeling.api.protobuf import wire

MAGIC = b"k8s\x00"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_APIEXT = ("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1",
           "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class DecodeError(ValueError):
    """The body is not a well-formed Kubernetes protobuf message."""


class UnknownKind(DecodeError):
    """No protobuf message is known for the body's apiVersion and kind."""


def decode_object(data: bytes, expected_gvk: tuple[str, str, str] | None = None,
                  table: d.Table | None = None) -> dict:
    """Decode one enveloped object; ``expected_gvk`` = (group, version, kind) fills in an empty
    typeMeta. ``table`` defaults to `descriptors.load()` (which may raise `Unavailable`)."""
    if not data.startswith(MAGIC):
        raise DecodeError(f"provided data does not appear to be a protobuf message, expected "
                          f"prefix {list(MAGIC)}")
    table = table or d.load()
    api_version = kind = content_encoding = content_type = ""
    raw = b""
    try:
        for n, _, v in wire.iter_fields(data[len(MAGIC):]):
            if n == 1 and isinstance(v, bytes):
                for tn, _, tv in wire.iter_fields(v):
                    if tn == 1 and isinstance(tv, bytes):
                        api_version = tv.decode()
                    elif tn == 2 and isinstance(tv, bytes):
                        kind = tv.decode()
            elif n == 2 and isinstance(v, bytes):
                raw = v
            elif n == 3 and isinstance(v, bytes):
                content_encoding = v.decode()
            elif n == 4 and isinstance(v, bytes):
                content_type = v.decode()
    except (wire.WireError, UnicodeDecodeError) as e:
        raise DecodeError(f"malformed runtime.Unknown envelope: {e}") from None
    if not kind and expected_gvk:
        group, version, kind = expected_gvk
        api_version = f"{group}/{version}" if group else version
    if not kind:
        raise DecodeError("Object 'Kind' is missing in the protobuf body")
    if content_encoding:
        raise DecodeError(f"unsupported protobuf content encoding {content_encoding!r}")
    if content_type and not content_type.startswith("application/vnd.kubernetes.protobuf"):
        obj = _json(raw)  # an Unknown may carry JSON verbatim
        if not isinstance(obj, dict):
            raise DecodeError("the embedded object is not a JSON object")
    else:
        message = message_for(table, api_version, kind)
        try:
            obj = _Decoder(table).message(message, raw)
        except (wire.WireError, UnicodeDecodeError, OverflowError, ValueError) as e:
            raise DecodeError(f"malformed {kind} protobuf: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **{k: v for k, v in obj.items()
                                                         if k not in ("apiVersion", "kind")}}


# -- (apiVersion, kind) -> message ----------------------------------------------------------------

@lru_cache(maxsize=8)
def _kinds(table: d.Table) -> dict[tuple[str, str], list[str]]:
    """(version, Kind) -> proto packages declaring that message, e.g. ("v1", "Event") ->
    ["k8s.io.api.core.v1", "k8s.io.api.events.v1"]."""
    index: dict[tuple[str, str], list[str]] = {}
    for name, msg in table.messages.items():
        if msg.entry:
            continue
        package, kind = name.rsplit(".", 1)
        version = package.rsplit(".", 1)[-1]
        index.setdefault((version, kind), []).append(package)
    return index


@lru_cache(maxsize=512)
def _message_for(table: d.Table, api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    packages = _kinds(table).get((version, kind), [])
    # A package is named after the group's first DNS label (k8s.io.api.rbac.v1 serves
    # rbac.authorization.k8s.io/v1; apiextensions_apiserver...apiextensions.v1 serves
    # apiextensions.k8s.io/v1); the core group's package is "core".
    label = group.split(".", 1)[0] if group else "core"
    matching = [p for p in packages if p.rsplit(".", 2)[-2] == label]
    if len(matching) == 1:
        return f"{matching[0]}.{kind}"
    # meta.k8s.io kinds (DeleteOptions, ...) are registered into every group version.
    if f"{META}.{kind}" in table.messages and version == "v1" and not matching:
        return f"{META}.{kind}"
    if not matching and len(packages) == 1:
        return f"{packages[0]}.{kind}"  # e.g. internal.apiserver.k8s.io in ...apiserverinternal
    raise UnknownKind(f'no kind "{kind}" is registered for version "{api_version}"')


def message_for(table: d.Table, api_version: str, kind: str) -> str:
    """The proto message full name that carries objects of ``apiVersion``/``kind``."""
    return _message_for(table, api_version, kind)


# -- messages --------------------------------------------------------------------------------------

def _json(raw: bytes):
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"embedded JSON is malformed: {e}") from None


def _time(data: bytes, micro: bool) -> str | None:
    if not data:
        return None  # Go's zero time marshals as an empty message, and as JSON null
    seconds = nanos = 0
    for n, _, v in wire.iter_fields(data):
        if n == 1:
            seconds = wire.to_int64(v)
        elif n == 2:
            nanos = wire.to_int64(v)
    when = _EPOCH + dt.timedelta(seconds=seconds)
    if micro:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos // 1000:06d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time keeps whole seconds only


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: 0s, 1.5µs, 250ms, 1m30s, 1h0m0s."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        digits = len(str(unit)) - 1
        return str(whole) + (("." + f"{rest:0{digits}d}".rstrip("0")) if rest else "")

    if u < 1_000_000_000:
        unit, suffix = ((1, "ns") if u < 1000 else (1000, "µs") if u < 1_000_000
                        else (1_000_000, "ms"))
        return sign + frac(u, unit) + suffix
    hours, rest = divmod(u, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return sign + out + frac(rest, 1_000_000_000) + "s"


def _first(data: bytes, number: int, default=None):
    for n, _, v in wire.iter_fields(data):
        if n == number:
            default = v
    return default


def _special(name: str, data: bytes, dec: "_Decoder"):
    """JSON for messages with a custom Go JSON form; ``NotImplemented`` for ordinary ones."""
    short = name.rsplit(".", 1)[-1]
    package = name[:-len(short) - 1]
    if package == META:
        if short in ("Time", "MicroTime"):
            return _time(data, short == "MicroTime")
        if short == "Duration":
            return go_duration(wire.to_int64(_first(data, 1, 0)))
        if short == "FieldsV1":
            return _json(_first(data, 1, b""))
    elif name == "k8s.io.apimachinery.pkg.api.resource.Quantity":
        return (_first(data, 1, b"") or b"0").decode()
    elif name == "k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        if _first(data, 1, 0) == 1:
            return _first(data, 3, b"").decode()
        return wire.to_int64(_first(data, 2, 0))
    elif name == "k8s.io.apimachinery.pkg.runtime.RawExtension":
        raw = _first(data, 1, b"")
        return decode_object(raw, table=dec.table) if raw.startswith(MAGIC) else _json(raw)
    elif package in _APIEXT:
        return _apiextensions(name, short, data, dec)
    return NotImplemented


def _apiextensions(name: str, short: str, data: bytes, dec: "_Decoder"):
    if short == "JSON":
        return _json(_first(data, 1, b""))
    if short not in ("JSONSchemaPropsOrArray", "JSONSchemaPropsOrBool", "JSONSchemaPropsOrStringArray"):
        return NotImplemented
    props = name.rsplit(".", 1)[0] + ".JSONSchemaProps"
    schema_no = 2 if short == "JSONSchemaPropsOrBool" else 1
    schema, many, allows = None, [], False
    for n, _, v in wire.iter_fields(data):
        if n == schema_no:
            schema = dec.message(props, v)
        elif short == "JSONSchemaPropsOrArray" and n == 2:
            many.append(dec.message(props, v))
        elif short == "JSONSchemaPropsOrStringArray" and n == 2:
            many.append(v.decode())
        elif short == "JSONSchemaPropsOrBool" and n == 1:
            allows = bool(v)
    if short == "JSONSchemaPropsOrBool":
        return schema if schema is not None else allows
    return many if many else schema


def _is_zero(value) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == b""


class _Decoder:
    def __init__(self, table: d.Table):
        self.table = table

    def message(self, name: str, data: bytes):
        special = _special(name, data, self)
        if special is not NotImplemented:
            return special
        msg = self.table.messages.get(name)
        if msg is None:
            raise DecodeError(f"no descriptor for message {name}")
        if msg.list:
            return self._collect(msg, data)
        return self._fields(msg, data)

    def _collect(self, msg: d.Message, data: bytes) -> list:
        return self._fields(msg, data).get(msg.fields[1].json_name, [])

    def _fields(self, msg: d.Message, data: bytes) -> dict:
        singles: dict[int, object] = {}    # last one wins, as in Go's generated Unmarshal
        lists: dict[int, list] = {}
        maps: dict[int, dict] = {}
        for n, w, v in wire.iter_fields(data):
            f = msg.fields.get(n)
            if f is None:
                continue  # unknown fields are skipped, as Go's generated Unmarshal does
            if f.is_map:
                key, value = self._entry(f.type_name, v)
                maps.setdefault(n, {})[key] = value
            elif f.repeated:
                items = lists.setdefault(n, [])
                if w == wire.LEN and f.type not in (d.STRING, d.BYTES, d.MESSAGE):
                    items.extend(self._unpacked(f, v))  # packed encoding
                else:
                    items.append(self.scalar_or_message(f, v))
            else:
                singles[n] = self.scalar_or_message(f, v)
        result: dict = {}
        for n in sorted(msg.fields):  # Go emits struct fields in declaration (= number) order
            f = msg.fields[n]
            if maps.get(n):
                result[f.json_name] = maps[n]
            elif lists.get(n):
                result[f.json_name] = lists[n]
            elif n in singles:
                self._emit(result, f, singles[n])
        return result

    def _emit(self, result: dict, f: d.Field, value) -> None:
        flags = f.go
        if flags is not None and "s" in flags:
            return
        if flags is not None and "i" in flags and isinstance(value, dict):
            result.update(value)
            return
        if f.type == d.MESSAGE:
            if isinstance(value, list) and not value:
                return  # an empty Go named slice (Verbs), like any empty repeated field
            result[f.json_name] = value
        elif flags is None:
            if not _is_zero(value):
                result[f.json_name] = value
        elif "p" in flags or "o" not in flags or not _is_zero(value):
            result[f.json_name] = value

    def _entry(self, entry_name: str, data: bytes) -> tuple:
        entry = self.table.messages[entry_name]
        key_f, value_f = entry.fields[1], entry.fields[2]
        key = value = None
        for n, _, v in wire.iter_fields(data):
            if n == 1:
                key = self.scalar_or_message(key_f, v)
            elif n == 2:
                value = self.scalar_or_message(value_f, v)
        if key is None:
            key = self.scalar_or_message(key_f, b"" if key_f.type in (d.STRING, d.BYTES) else 0)
        if value is None:
            value = self.scalar_or_message(value_f, b"" if value_f.type in (
                d.STRING, d.BYTES, d.MESSAGE) else 0)
        return (str(key) if not isinstance(key, str) else key), value

    def _unpacked(self, f: d.Field, payload: bytes) -> list:
        if f.type in (d.DOUBLE, d.FIXED64, d.SFIXED64):
            return [self.scalar_or_message(f, payload[i:i + 8]) for i in range(0, len(payload), 8)]
        if f.type in (d.FLOAT, d.FIXED32, d.SFIXED32):
            return [self.scalar_or_message(f, payload[i:i + 4]) for i in range(0, len(payload), 4)]
        return [self.scalar_or_message(f, v) for v in wire.unpack_varints(payload)]

    def scalar_or_message(self, f: d.Field, v):
        t = f.type
        if t == d.MESSAGE:
            if not isinstance(v, bytes):
                raise DecodeError(f"field {f.json_name}: expected a length-delimited message")
            return self.message(f.type_name, v)
        if t == d.STRING:
            return _need(f, v, bytes).decode("utf-8", "replace")
        if t == d.BYTES:
            return base64.b64encode(_need(f, v, bytes)).decode()
        if t == d.BOOL:
            return bool(_need(f, v, int))
        if t in (d.INT64, d.INT32, d.ENUM):
            return wire.to_int64(_need(f, v, int))
        if t in (d.UINT64, d.UINT32):
            return _need(f, v, int)
        if t in (d.SINT32, d.SINT64):
            n = _need(f, v, int)
            return (n >> 1) ^ -(n & 1)
        if t == d.DOUBLE:
            return wire.double(_need(f, v, bytes))
        if t == d.FLOAT:
            return wire.float32(_need(f, v, bytes))
        if t in (d.FIXED64, d.FIXED32, d.SFIXED64, d.SFIXED32):
            raw = _need(f, v, bytes)
            return int.from_bytes(raw, "little", signed=t in (d.SFIXED64, d.SFIXED32))
        raise DecodeError(f"field {f.json_name}: unsupported protobuf type {t}")


def _need(f: d.Field, v, kind: type):
    if not isinstance(v, kind):
        raise DecodeError(f"field {f.json_name}: wrong wire type for its declared type")
    return v
