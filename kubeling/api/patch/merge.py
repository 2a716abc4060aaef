"""JSON Merge Patch (RFC 7386) over plain dicts.

An object in the patch merges into the target key by key; ``null`` deletes a
key; anything else (arrays included) replaces the target value wholesale.

Errors follow the apiserver's ``application/merge-patch+json`` handling: a
``null`` patch is 400 "Invalid JSON Patch"; a patch that is not an object
replaces the whole document, which then cannot be decoded as an object, so it
is 422 Invalid on the field ``patch``.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from kubeling.api import errors


def apply(doc: dict, patch: Any) -> dict:
    """Merge ``patch`` into a copy of ``doc`` and return it."""
    if patch is None:
        raise errors.bad_request("Invalid JSON Patch")
    if not isinstance(patch, dict):
        shown = orjson.dumps(patch).decode()
        kind = {"list": "array", "str": "string", "int": "number", "float": "number"}.get(
            type(patch).__name__, type(patch).__name__)
        raise errors.invalid("", "", "", [errors.invalid_value(
            "patch", shown, f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}")])
    return merge_value(copy.deepcopy(doc), patch)


def merge_value(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch); ``target`` may be modified in place."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge_value(target.get(key), value)
    return target
