"""Decoded built-in objects made to look as upstream's Go types leave them (upstream decodes
every request into typed structs): ``null`` fields are absent, ``null`` list items and map values
are zero values, and fields the schema does not know are dropped when asked (fieldValidation)."""

from __future__ import annotations

import copy
from typing import Any

from kubeling.api import schema


def normalize(value: Any, node: dict | None, schemas, drop_unknown: bool) -> Any:
    """Make a decoded built-in object look as it would after decoding into upstream's Go types:
    ``null`` fields are absent, ``null`` list items and map values are zero values, and (when
    asked) fields the schema does not know are dropped. Returns the value to keep."""
    node = schemas.resolve(node) if node else None
    if not node:
        return value
    if value is None:
        return copy.copy(_ZERO.get(schema.type_of(node)))  # fresh {} / []
    if isinstance(value, list):
        item = node.get("items")
        if isinstance(item, dict):
            value[:] = [normalize(v, item, schemas, drop_unknown) for v in value]
            value[:] = [v for v in value if v is not None]
        return value
    if not isinstance(value, dict):
        return value
    props, addl = node.get("properties"), node.get("additionalProperties")
    if props is None and not isinstance(addl, dict):
        return value  # free-form: RawExtension, FieldsV1, IntOrString, ...
    for k in list(value):
        if props and k in props:
            if value[k] is None:
                del value[k]
            else:
                value[k] = normalize(value[k], props[k], schemas, drop_unknown)
        elif isinstance(addl, dict):
            v = normalize(value[k], addl, schemas, drop_unknown)
            if v is None:
                del value[k]
            else:
                value[k] = v
        elif drop_unknown:
            del value[k]
    return value


_ZERO = {"object": {}, "string": "", "integer": 0, "number": 0, "boolean": False, "array": []}
