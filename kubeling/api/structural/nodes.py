"""Small facts about schema nodes and JSON values shared by the structural modules."""

from __future__ import annotations

from typing import Any

from kubeling.api import schema

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Always known at the root of a custom resource, and kept in embedded resources.
TYPE_META_FIELDS = ("apiVersion", "kind")


def type_of(node: dict) -> str | None:
    return schema.type_of(node)


def nullable(node: dict) -> bool:
    t = node.get("type")
    return bool(node.get("nullable")) or (isinstance(t, list) and "null" in t)


def int_or_string(node: dict) -> bool:
    """IntOrString, in CRD form (the extension) or in the built-in form (a oneOf of both)."""
    if node.get("x-kubernetes-int-or-string"):
        return True
    return _one_of_types(node) == {"integer", "string"}


def quantity_like(node: dict) -> bool:
    return _one_of_types(node) == {"number", "string"}


def _one_of_types(node: dict) -> set[str]:
    alts = node.get("oneOf") or node.get("anyOf")
    if not alts or "type" in node:
        return set()
    return {schema.type_of(a) for a in alts if isinstance(a, dict)} - {None}


def preserves_unknown(node: dict) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields"))


def embedded(node: dict) -> bool:
    return bool(node.get("x-kubernetes-embedded-resource"))


def json_type(value: Any) -> str:
    """The OpenAPI name of a JSON value's type, as upstream's validation messages print it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def matches_type(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def object_meta_fields() -> set[str]:
    return set(schema.get().defs[OBJECT_META].get("properties", {}))
