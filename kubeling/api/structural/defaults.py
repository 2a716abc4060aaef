"""Structural defaulting of custom resources from a schema's ``default`` values.

Top-down, as upstream: at each object, a missing property whose schema has a
``default`` gets a deep copy of it, and then the walk goes into every present
value (including values just defaulted, so nested defaults apply too). A
``null`` where the schema is not ``nullable`` is treated as absent: replaced by
the default if there is one, else dropped (upstream prunes such nulls before
defaulting). Items of arrays and values of maps are walked too; defaults at
the root itself do not apply (there is always an object there).
"""

from __future__ import annotations

import copy
from typing import Any

from kubeling.api.structural import nodes


def _default(value: Any, node: dict | None) -> None:
    if not node:
        return
    if isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for item in value:
                _default(item, items)
        return
    if not isinstance(value, dict):
        return
    for key, sub in (node.get("properties") or {}).items():
        if key not in value or (value[key] is None and not nodes.nullable(sub)):
            if "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif key in value:
                del value[key]
                continue
            else:
                continue
        _default(value[key], sub)
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        props = node.get("properties") or {}
        for key in list(value):
            if key in props:
                continue
            if value[key] is None and not nodes.nullable(addl):
                if "default" in addl:
                    value[key] = copy.deepcopy(addl["default"])
                else:
                    del value[key]
                    continue
            _default(value[key], addl)


def apply_defaults(obj: Any, node: dict | None) -> None:
    """Apply ``default`` values of a CRD schema to ``obj`` in place."""
    _default(obj, node)
