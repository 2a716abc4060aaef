"""The gnostic protobuf encoding of /openapi/v2, checked with a minimal wire-format decoder.

The decoder below knows only the wire format and the OpenAPIv2.proto field
numbers; it turns the bytes back into the Swagger JSON shape so the whole
document can be compared with what `build_v2` produced.
"""

from __future__ import annotations

import struct

import orjson
import pytest
import yaml

from kubeling.api import kinds, schema
from kubeling.api.kinds import Resource
from kubeling.apiserver import openapi
from kubeling.apiserver.openapi_proto import _varint


def fields(buf: bytes) -> list[tuple[int, object]]:
    """(field number, value) pairs: int for varints, bytes for length-delimited, float for fixed64."""
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            size, i = _read_varint(buf, i)
            value, i = buf[i:i + size], i + size
            assert len(value) == size, "truncated"
        elif wire == 1:
            value, i = struct.unpack("<d", buf[i:i + 8])[0], i + 8
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, value))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def one(buf: bytes, number: int):
    values = [v for n, v in fields(buf) if n == number]
    assert len(values) == 1, (number, values)
    return values[0]


def many(buf: bytes, number: int) -> list:
    return [v for n, v in fields(buf) if n == number]


def text(buf: bytes, number: int, default: str = "") -> str:
    values = many(buf, number)
    return values[-1].decode() if values else default


def any_value(buf: bytes):
    return yaml.safe_load(text(buf, 2))  # Any{yaml=2}


def extensions(buf: bytes, number: int) -> dict:
    return {text(named, 1): any_value(one(named, 2)) for named in many(buf, number)}


# --- decoding back to the Swagger JSON shape ---------------------------------------------------

SCHEMA_STRINGS = {1: "$ref", 2: "format", 3: "title", 4: "description", 13: "pattern"}
SCHEMA_BOOLS = {8: "exclusiveMaximum", 10: "exclusiveMinimum", 16: "uniqueItems", 27: "readOnly"}
SCHEMA_INTS = {11: "maxLength", 12: "minLength", 14: "maxItems", 15: "minItems", 17: "maxProperties",
               18: "minProperties"}
SCHEMA_DOUBLES = {6: "multipleOf", 7: "maximum", 9: "minimum"}


def decode_schema(buf: bytes) -> dict:
    out: dict = {}
    for number, value in fields(buf):
        if number in SCHEMA_STRINGS:
            out[SCHEMA_STRINGS[number]] = value.decode()
        elif number in SCHEMA_BOOLS:
            out[SCHEMA_BOOLS[number]] = bool(value)
        elif number in SCHEMA_INTS:
            out[SCHEMA_INTS[number]] = value
        elif number in SCHEMA_DOUBLES:
            out[SCHEMA_DOUBLES[number]] = value
        elif number == 5:
            out["default"] = any_value(value)
        elif number == 19:
            out.setdefault("required", []).append(value.decode())
        elif number == 20:
            out.setdefault("enum", []).append(any_value(value))
        elif number == 21:
            branch, inner = fields(value)[0]
            out["additionalProperties"] = decode_schema(inner) if branch == 1 else bool(inner)
        elif number == 22:
            types = [t.decode() for t in many(value, 1)]
            out["type"] = types[0] if len(types) == 1 else types
        elif number == 23:
            out["items"] = decode_schema(one(value, 1))
        elif number == 24:
            out.setdefault("allOf", []).append(decode_schema(value))
        elif number == 25:
            out["properties"] = {text(n, 1): decode_schema(one(n, 2)) for n in many(value, 1)}
        elif number == 31:
            out[text(value, 1)] = any_value(one(value, 2))
        else:
            raise AssertionError(f"unexpected Schema field {number}")
    return out


def decode_parameter(buf: bytes) -> dict:
    item_branch, item = fields(buf)[0]
    assert item_branch == 1, "ParametersItem.parameter"
    branch, param = fields(item)[0]
    if branch == 1:  # BodyParameter
        out = {"in": text(param, 3), "name": text(param, 2), "schema": decode_schema(one(param, 5))}
        if many(param, 4):
            out["required"] = True
        if many(param, 1):
            out["description"] = text(param, 1)
        return out
    kind, sub = fields(param)[0]  # NonBodyParameter: header=1, query=3, path=4
    type_field, unique_field = {3: (6, 20), 4: (5, 19), 1: (5, 19)}[kind]
    out = {"description": text(sub, 3), "in": text(sub, 2), "name": text(sub, 4), "type": text(sub, type_field)}
    if many(sub, unique_field):
        out["uniqueItems"] = True
    if many(sub, 1):
        out["required"] = True
    return out


def decode_operation(buf: bytes) -> dict:
    out = {
        "consumes": [v.decode() for v in many(buf, 7)],
        "description": text(buf, 3),
        "operationId": text(buf, 5),
        "produces": [v.decode() for v in many(buf, 6)],
        "schemes": [v.decode() for v in many(buf, 10)],
        "tags": [v.decode() for v in many(buf, 1)],
        "responses": {},
    }
    params = [decode_parameter(p) for p in many(buf, 8)]
    if params:
        out["parameters"] = params
    for named in many(one(buf, 9), 1):
        response = one(one(named, 2), 1)  # ResponseValue.response
        decoded = {"description": text(response, 1)}
        if many(response, 2):
            decoded["schema"] = decode_schema(one(one(response, 2), 1))
        out["responses"][text(named, 1)] = decoded
    out.update(extensions(buf, 13))
    return out


METHODS = {2: "get", 3: "put", 4: "post", 5: "delete", 6: "options", 7: "head", 8: "patch"}


def decode_document(buf: bytes) -> dict:
    info = one(buf, 2)
    paths = {}
    for named in many(one(buf, 8), 2):
        item_buf = one(named, 2)
        item = {METHODS[n]: decode_operation(v) for n, v in fields(item_buf) if n in METHODS}
        params = [decode_parameter(p) for p in many(item_buf, 9)]
        if params:
            item["parameters"] = params
        paths[text(named, 1)] = item
    definitions = {text(n, 1): decode_schema(one(n, 2)) for n in many(one(buf, 9), 1)}
    security_definitions = {}
    for named in many(one(buf, 13), 1):
        key = one(one(named, 2), 2)  # SecurityDefinitionsItem.api_key_security
        security_definitions[text(named, 1)] = {"description": text(key, 4), "in": text(key, 3),
                                                "name": text(key, 2), "type": text(key, 1)}
    security = [{text(n, 1): [v.decode() for v in many(one(n, 2), 1)] for n in many(req, 1)}
                for req in many(buf, 12)]
    return {"swagger": text(buf, 1), "info": {"title": text(info, 1), "version": text(info, 2)},
            "paths": paths, "definitions": definitions, "securityDefinitions": security_definitions,
            "security": security}


# --- tests ---------------------------------------------------------------------------------------

CRD = Resource("stable.example.com", "v1", "crontabs", "CronTab", True, ("ct",), (), ("status", "scale"), crd=True)
CRD_SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "replicas": {"type": "integer", "minimum": 0, "maximum": 10.5, "default": 1},
    "mode": {"type": "string", "enum": ["a", "b"], "maxLength": 3},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "free": {"type": "object", "additionalProperties": False},
}}}}


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi.build_v2([*kinds.BUILTIN, CRD], schema.get(), {CRD.gvk: CRD_SCHEMA})


@pytest.fixture(scope="module")
def encoded(doc) -> bytes:
    return openapi.v2_protobuf(doc)


def test_top_level_fields(doc, encoded):
    assert text(encoded, 1) == "2.0"
    info = one(encoded, 2)
    assert (text(info, 1), text(info, 2)) == ("Kubernetes", doc["info"]["version"])
    assert [text(n, 1) for n in many(one(encoded, 8), 2)] == list(doc["paths"])
    assert [text(n, 1) for n in many(one(encoded, 9), 1)] == list(doc["definitions"])


_SCALAR_KEYS = {*SCHEMA_BOOLS.values(), *SCHEMA_INTS.values(), *SCHEMA_DOUBLES.values()}


def proto3_view(node):
    """The document as proto3 can carry it: scalar constraints equal to 0/false have no presence."""
    if isinstance(node, dict):
        return {k: proto3_view(v) for k, v in node.items()
                if not (k in _SCALAR_KEYS and not isinstance(v, (dict, list)) and not v)}
    if isinstance(node, list):
        return [proto3_view(v) for v in node]
    return node


def test_whole_document_round_trips(doc, encoded):
    """Every path, operation, parameter, response and definition decodes back to the JSON document."""
    assert decode_document(encoded) == proto3_view(orjson.loads(orjson.dumps(doc)))


def test_field_validation_is_a_query_parameter(encoded):
    """kubectl's v2 check reads Parameter.non_body_parameter.query_parameter_sub_schema.name."""
    paths = {text(n, 1): one(n, 2) for n in many(one(encoded, 8), 2)}
    patch = one(paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"], 8)
    assert text(patch, 5) == "patchAppsV1NamespacedDeployment"
    names = set()
    for item in many(patch, 8):
        parameter = one(item, 1)
        for branch, value in fields(parameter):
            if branch == 2:  # non-body
                query = many(value, 3)
                names.update(text(q, 4) for q in query)
    assert {"fieldValidation", "force", "dryRun", "fieldManager"} <= names
    assert extensions(patch, 13)["x-kubernetes-group-version-kind"] == {
        "group": "apps", "kind": "Deployment", "version": "v1"}


def test_vendor_extensions_are_yaml_any(encoded):
    definitions = {text(n, 1): one(n, 2) for n in many(one(encoded, 9), 1)}
    deployment = definitions["io.k8s.api.apps.v1.Deployment"]
    assert extensions(deployment, 31)["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}]
    spec = decode_schema(definitions["io.k8s.api.apps.v1.DeploymentSpec"])
    assert spec["properties"]["strategy"]["x-kubernetes-patch-strategy"] == "retainKeys"
    assert spec["properties"]["strategy"]["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"


def test_crd_constraints_encoded(encoded):
    definitions = {text(n, 1): one(n, 2) for n in many(one(encoded, 9), 1)}
    spec = decode_schema(definitions["com.example.stable.v1.CronTab"])["properties"]["spec"]["properties"]
    # minimum 0 is proto3's default value, which the wire format cannot tell from "unset".
    assert spec["replicas"] == {"type": "integer", "maximum": 10.5, "default": 1}
    assert spec["mode"] == {"type": "string", "enum": ["a", "b"], "maxLength": 3}
    assert spec["labels"]["additionalProperties"] == {"type": "string"}
    assert spec["free"]["additionalProperties"] is False


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**35, -1, -(2**40)])
def test_varint_round_trip(value):
    decoded, end = _read_varint(_varint(value), 0)
    assert end == len(_varint(value))
    assert decoded == value % (1 << 64)


@pytest.mark.parametrize("accept,expected", [
    pytest.param("application/com.github.proto-openapi.spec.v2@v1.0+protobuf", True, id="kubectl"),
    pytest.param("application/com.github.proto-openapi.spec.v2.v1.0+protobuf", True, id="dotted"),
    pytest.param("application/json", False, id="json"),
    pytest.param("application/json, application/com.github.proto-openapi.spec.v2.v1.0+protobuf", False,
                 id="json-first"),
    pytest.param(None, False, id="none"),
])
def test_wants_protobuf(accept, expected):
    assert openapi.wants_v2_protobuf(accept) is expected
