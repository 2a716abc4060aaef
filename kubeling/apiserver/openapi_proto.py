"""The ``/openapi/v2`` document as gnostic's ``openapi.v2.Document`` protobuf message.

kubectl asks for ``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``
(answered with Content-Type `MEDIA_TYPE`, see `wants_protobuf`) on some code paths (``kubectl explain --output plaintext-openapiv2``, the v2
fallback of apply's patch metadata and of the ``fieldValidation`` check). The
field numbers are those of gnostic-models' ``openapiv2/OpenAPIv2.proto``.

A small hand-written proto3 encoder: varints, length-delimited fields, 64-bit
doubles; default values (empty string, false, 0) are omitted as proto3 does,
while a message chosen in a ``oneof`` is always written, even when empty, so
the reader sees which branch was taken. As with upstream's gnostic encoding, a
numeric constraint equal to 0 (``minimum: 0``) or a false flag is therefore
indistinguishable from an absent one. Vendor extensions (``x-kubernetes-*``)
and ``default``/``enum``/``example`` values are ``Any`` messages whose ``yaml``
field holds the value as JSON (a YAML subset every YAML reader accepts).

Keys Swagger 2.0 has no field for (``oneOf``/``anyOf``/``not``/``nullable``)
are not encoded; `openapi_v2.build_v2` already strips them from CRD schemas.
"""

from __future__ import annotations

import struct

import orjson

from kubeling.api.protobuf import wire

# Clients send either form in Accept; the reply's Content-Type must be the dotted one,
# because Go's mime.ParseMediaType (in kubectl) rejects the "@" of the older form.
MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
MEDIA_TYPE_DEPRECATED = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def wants_protobuf(accept: str | None) -> bool:
    """True when an ``Accept`` header prefers the protobuf form of ``/openapi/v2``.

    kubectl sends only the protobuf media type when it wants it; a header that
    also offers ``application/json`` earlier is answered with JSON.
    """
    for entry in (accept or "").split(","):
        media = entry.split(";")[0].strip()
        if media in (MEDIA_TYPE, MEDIA_TYPE_DEPRECATED):
            return True
        if media in ("application/json", "*/*", "application/*"):
            return False
    return False

# --- wire format ----------------------------------------------------------------------------


_varint, _tag, _len = wire.varint, wire.key, wire.len_field


def _msg(field: int, payload: bytes) -> bytes:
    """A sub-message, written even when empty (presence matters for oneof and singular messages)."""
    return _len(field, payload)


def _str(field: int, value: str | None) -> bytes:
    return _len(field, value.encode()) if value else b""


def _strs(field: int, values) -> bytes:
    return b"".join(_len(field, v.encode()) for v in values or ())


def _bool(field: int, value) -> bytes:
    return _tag(field, 0) + b"\x01" if value else b""


def _int(field: int, value) -> bytes:
    return _tag(field, 0) + _varint(int(value)) if value else b""


def _double(field: int, value) -> bytes:
    return _tag(field, 1) + struct.pack("<d", float(value)) if value else b""


# --- gnostic messages ----------------------------------------------------------------------------


def _any(value) -> bytes:
    """``Any{yaml=2}``."""
    return _str(2, orjson.dumps(value).decode())


def _named_any(field: int, name: str, value) -> bytes:
    """``NamedAny{name=1, value=2}``."""
    return _msg(field, _str(1, name) + _msg(2, _any(value)))


def _extensions(field: int, obj: dict) -> bytes:
    return b"".join(_named_any(field, k, obj[k]) for k in sorted(obj) if k.startswith("x-"))


# Schema scalar fields: JSON key -> (field number, encoder).
_SCHEMA_SCALARS = {
    "$ref": (1, _str), "format": (2, _str), "title": (3, _str), "description": (4, _str),
    "multipleOf": (6, _double), "maximum": (7, _double), "exclusiveMaximum": (8, _bool),
    "minimum": (9, _double), "exclusiveMinimum": (10, _bool), "maxLength": (11, _int),
    "minLength": (12, _int), "pattern": (13, _str), "maxItems": (14, _int), "minItems": (15, _int),
    "uniqueItems": (16, _bool), "maxProperties": (17, _int), "minProperties": (18, _int),
    "discriminator": (26, _str), "readOnly": (27, _bool),
}


def schema(node: dict) -> bytes:
    """``Schema`` (fields 1-31 of OpenAPIv2.proto)."""
    out = bytearray()
    for key, (field, enc) in _SCHEMA_SCALARS.items():
        if key in node:
            out += enc(field, node[key])
    if "default" in node:
        out += _msg(5, _any(node["default"]))
    out += _strs(19, node.get("required"))
    for value in node.get("enum") or ():
        out += _msg(20, _any(value))
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        out += _msg(21, _msg(1, schema(addl)))  # AdditionalPropertiesItem{schema=1}
    elif isinstance(addl, bool):
        out += _msg(21, _tag(2, 0) + (b"\x01" if addl else b"\x00"))  # {boolean=2}, false is meaningful
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        out += _msg(22, _strs(1, types))  # TypeItem{value=1}
    items = node.get("items")
    if isinstance(items, dict):
        items = [items]
    if isinstance(items, list):
        out += _msg(23, b"".join(_msg(1, schema(i)) for i in items))  # ItemsItem{schema=1}
    for sub in node.get("allOf") or ():
        out += _msg(24, schema(sub))
    props = node.get("properties")
    if isinstance(props, dict):
        # Properties{additional_properties=1: NamedSchema{name=1, value=2}}
        out += _msg(25, b"".join(_msg(1, _str(1, k) + _msg(2, schema(v))) for k, v in props.items()))
    if "example" in node:
        out += _msg(30, _any(node["example"]))
    out += _extensions(31, node)
    return bytes(out)


def _parameter(p: dict) -> bytes:
    """``ParametersItem{parameter=1: Parameter{body_parameter=1 | non_body_parameter=2}}``."""
    if "$ref" in p:
        return _msg(2, _str(1, p["$ref"]) + _str(2, p.get("description")))  # JsonReference
    where = p.get("in", "")
    if where == "body":
        body = (_str(1, p.get("description")) + _str(2, p.get("name")) + _str(3, where)
                + _bool(4, p.get("required")) + _msg(5, schema(p.get("schema") or {})) + _extensions(6, p))
        return _msg(1, _msg(1, body))
    common = _bool(1, p.get("required")) + _str(2, where) + _str(3, p.get("description")) + _str(4, p.get("name"))
    if where == "query":
        # QueryParameterSubSchema: type=6, format=7, unique_items=20, vendor_extension=23
        sub = common + _str(6, p.get("type")) + _str(7, p.get("format")) + _bool(20, p.get("uniqueItems"))
        sub += _extensions(23, p)
        branch = 3
    elif where == "path":
        # PathParameterSubSchema: type=5, format=6, unique_items=19, vendor_extension=22
        sub = common + _str(5, p.get("type")) + _str(6, p.get("format")) + _bool(19, p.get("uniqueItems"))
        sub += _extensions(22, p)
        branch = 4
    else:  # header (HeaderParameterSubSchema has the same numbering as the path one)
        sub = common + _str(5, p.get("type")) + _str(6, p.get("format")) + _bool(19, p.get("uniqueItems"))
        sub += _extensions(22, p)
        branch = 1
    return _msg(1, _msg(2, _msg(branch, sub)))  # NonBodyParameter{<branch>}


def _responses(responses: dict) -> bytes:
    """``Responses{response_code=1: NamedResponseValue{name, ResponseValue{response=1}}}``."""
    out = bytearray()
    for code, resp in responses.items():
        body = _str(1, resp.get("description"))
        if "schema" in resp:
            body += _msg(2, _msg(1, schema(resp["schema"])))  # SchemaItem{schema=1}
        body += _extensions(5, resp)
        out += _msg(1, _str(1, code) + _msg(2, _msg(1, body)))
    return bytes(out)


def _operation(op: dict) -> bytes:
    """``Operation`` (tags=1 ... vendor_extension=13)."""
    return (_strs(1, op.get("tags")) + _str(2, op.get("summary")) + _str(3, op.get("description"))
            + _str(5, op.get("operationId")) + _strs(6, op.get("produces")) + _strs(7, op.get("consumes"))
            + b"".join(_msg(8, _parameter(p)) for p in op.get("parameters") or ())
            + _msg(9, _responses(op.get("responses") or {})) + _strs(10, op.get("schemes"))
            + _bool(11, op.get("deprecated")) + _extensions(13, op))


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict) -> bytes:
    out = bytearray(_str(1, item.get("$ref")))
    for method, field in _METHODS.items():
        if method in item:
            out += _msg(field, _operation(item[method]))
    for p in item.get("parameters") or ():
        out += _msg(9, _parameter(p))
    out += _extensions(10, item)
    return bytes(out)


def _security_definitions(defs: dict) -> bytes:
    """Only apiKey schemes are written (``SecurityDefinitionsItem{api_key_security=2}``)."""
    out = bytearray()
    for name, d in defs.items():
        if d.get("type") != "apiKey":
            continue
        key = _str(1, d.get("type")) + _str(2, d.get("name")) + _str(3, d.get("in")) + _str(4, d.get("description"))
        out += _msg(1, _str(1, name) + _msg(2, _msg(2, key)))
    return bytes(out)


def _security_requirement(req: dict) -> bytes:
    """``SecurityRequirement{additional_properties=1: NamedStringArray{name, StringArray{value}}}``."""
    return b"".join(_msg(1, _str(1, k) + _msg(2, _strs(1, v))) for k, v in req.items())


def v2_protobuf(doc: dict) -> bytes:
    """Encode a Swagger 2.0 document dict (from `openapi_v2.build_v2`) as ``openapi.v2.Document``."""
    info = doc.get("info") or {}
    out = bytearray(_str(1, doc.get("swagger")))
    out += _msg(2, _str(1, info.get("title")) + _str(2, info.get("version")) + _str(3, info.get("description"))
                + _extensions(7, info))
    out += _str(3, doc.get("host")) + _str(4, doc.get("basePath"))
    out += _strs(5, doc.get("schemes")) + _strs(6, doc.get("consumes")) + _strs(7, doc.get("produces"))
    paths = doc.get("paths") or {}
    out += _msg(8, b"".join(_msg(2, _str(1, path) + _msg(2, _path_item(item))) for path, item in paths.items()))
    definitions = doc.get("definitions") or {}
    out += _msg(9, b"".join(_msg(1, _str(1, name) + _msg(2, schema(node))) for name, node in definitions.items()))
    for req in doc.get("security") or ():
        out += _msg(12, _security_requirement(req))
    if doc.get("securityDefinitions"):
        out += _msg(13, _security_definitions(doc["securityDefinitions"]))
    out += _extensions(16, doc)
    return bytes(out)
