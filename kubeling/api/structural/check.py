"""Decode-time checks: values of the wrong JSON type, and fields the schema does not know.

Upstream finds both while decoding a request body into Go structs: a wrong
type fails the request with 400 BadRequest (``json: cannot unmarshal string
into Go struct field DeploymentSpec.spec.replicas of type int32``), and
unknown fields are handled per ``fieldValidation`` (Strict: 400
``unknown field "spec.foo"``; Warn: a ``Warning:`` header; Ignore: dropped).

`check` reports both without changing the object. For each type error the
`FieldError` has kind ``TypeInvalid``, ``field`` set to the path and
``detail`` set to the sentence the API server should print. Unknown fields are
dotted paths (``spec.template.spec.containers[0].imagee``).

Built-in definitions (``schemas`` given) treat an object node that lists no
properties as free-form (RawExtension, FieldsV1, JSON). A CRD schema
(``schemas=None``) is structural: such a node knows no fields unless it sets
``x-kubernetes-preserve-unknown-fields``. At a custom resource's root,
apiVersion/kind/metadata are always known, and metadata is checked as ObjectMeta.
"""

from __future__ import annotations

from typing import Any

from kubeling.api import schema as schema_mod
from kubeling.api.errors import FieldError
from kubeling.api.schema import REF_PREFIX, Schemas
from kubeling.api.structural import nodes

_GO_JSON_TYPE = {"null": "null", "boolean": "bool", "integer": "number", "number": "number", "string": "string",
                 "array": "array", "object": "object"}


class _Walk:
    def __init__(self, schemas: Schemas | None) -> None:
        self.schemas = schemas
        self.crd = schemas is None
        self.errors: list[FieldError] = []
        self.unknown: list[str] = []

    def resolve(self, node: dict | None, struct: str) -> tuple[dict, str]:
        """Follow ``$ref``; also return the Go struct name for decode messages."""
        node = node or {}
        while self.schemas is not None and "$ref" in node:
            name = node["$ref"][len(REF_PREFIX):]
            struct = name
            node = self.schemas.defs[name]
        return node, struct

    def go_type(self, node: dict | None) -> str:
        """Roughly the Go type upstream names in its decode error for this node."""
        node = node or {}
        if "$ref" in node:
            name = node["$ref"][len(REF_PREFIX):]
            parts = name.split(".")
            short = f"{parts[-2]}.{parts[-1]}"
            if parts[-1] == "IntOrString":
                return "intstr.IntOrString"
            if parts[-1] == "Quantity":
                return "resource.Quantity"
            return short
        t = schema_mod.type_of(node)
        fmt = node.get("format")
        if t == "integer":
            return fmt if fmt in ("int32", "int64") else "int64"
        if t == "number":
            return "float64"
        if t == "boolean":
            return "bool"
        if t == "string":
            return "string" if fmt != "byte" else "[]uint8"
        if t == "array":
            return "[]" + self.go_type(node.get("items"))
        if t == "object" and isinstance(node.get("additionalProperties"), dict):
            return "map[string]" + self.go_type(node["additionalProperties"])
        return "interface {}" if t is None else "map[string]interface {}"

    def type_error(self, path: str, value: Any, expected: str, raw_node: dict, struct: str) -> None:
        got = nodes.json_type(value)
        if self.crd:
            detail = f'{path or "<root>"} in body must be of type {expected}: "{got}"'
        else:
            go_value = _GO_JSON_TYPE[got]
            if isinstance(value, float) and not value.is_integer():
                go_value = f"number {value}"
            short = struct.rsplit(".", 1)[-1] if struct else ""
            dotted = ".".join(p.split("[")[0] for p in path.split("."))
            detail = (f"json: cannot unmarshal {go_value} into Go struct field {short}.{dotted} of type "
                      f"{self.go_type(raw_node)}")
        self.errors.append(FieldError("TypeInvalid", path, detail, value))

    def walk(self, value: Any, raw_node: dict | None, path: str, struct: str) -> None:
        node, inner = self.resolve(raw_node, struct)
        if value is None or not node:
            return  # null decodes to the zero value; a node without schema accepts anything
        if nodes.int_or_string(node):
            if not (isinstance(value, str) or nodes.matches_type(value, "integer")):
                self.type_error(path, value, "integer or string" if self.crd else "", raw_node, struct)
            return
        if nodes.quantity_like(node):
            if not (isinstance(value, str) or nodes.matches_type(value, "number")):
                self.type_error(path, value, "string or number", raw_node, struct)
            return
        t = nodes.type_of(node)
        if t is None:
            if node.get("properties") and isinstance(value, dict):
                t = "object"
            else:
                return
        if not nodes.matches_type(value, t) or (t == "integer" and not self.crd and isinstance(value, float)):
            self.type_error(path, value, t, raw_node, struct)
            return
        if t == "array":
            for i, item in enumerate(value):
                self.walk(item, node.get("items"), f"{path}[{i}]", inner)
        elif t == "object":
            self.walk_object(value, node, path, inner)

    def walk_object(self, value: dict, node: dict, path: str, struct: str) -> None:
        props = node.get("properties") or {}
        addl = node.get("additionalProperties")
        free = nodes.preserves_unknown(node) or addl is True or \
            (not self.crd and not props and addl is None)
        for key, v in value.items():
            p = nodes.child_path(path, key)
            if key in props:
                self.walk(v, props[key], p, struct)
            elif isinstance(addl, dict):
                self.walk(v, addl, p, struct)
            elif nodes.embedded(node) and key in (*nodes.TYPE_META_FIELDS, "metadata"):
                self.embedded_field(key, v, p)
            elif not free:
                self.unknown.append(p)

    def embedded_field(self, key: str, value: Any, path: str) -> None:
        if key == "metadata":
            self.object_meta(value, path)
        elif value is not None and not isinstance(value, str):
            self.type_error(path, value, "string", {"type": "string"}, "")

    def object_meta(self, value: Any, path: str) -> None:
        """metadata of a custom resource: always ObjectMeta, whatever the CRD schema says."""
        defs = schema_mod.get()
        sub = _Walk(defs)
        sub.walk(value, {"$ref": REF_PREFIX + nodes.OBJECT_META}, path, nodes.OBJECT_META)
        self.errors += sub.errors
        self.unknown += sub.unknown


def check(obj: Any, node: dict | None, schemas: Schemas | None) -> tuple[list[FieldError], list[str]]:
    """Type errors and unknown field paths of ``obj`` against ``node`` (see the module docstring).

    For a custom resource the type errors are the ones `validate` reports too (upstream decodes
    custom resources as plain JSON and reports wrong types as 422 Invalid); the API server may
    use only the unknown fields from here and leave types to `validate`.
    """
    w = _Walk(schemas)
    if schemas is not None or not isinstance(obj, dict):
        w.walk(obj, node, "", "")
        return w.errors, w.unknown
    # A custom resource: its root always carries TypeMeta and ObjectMeta, whatever the schema says.
    node = node or {}
    props = node.get("properties") or {}
    body = {}
    for key, value in obj.items():
        if key == "metadata":
            w.object_meta(value, "metadata")
        elif key in nodes.TYPE_META_FIELDS and key not in props:
            w.embedded_field(key, value, key)
        else:
            body[key] = value
    w.walk_object(body, node, "", "")
    return w.errors, w.unknown
