"""Pruning of custom resources: drop every field a structural schema does not specify.

Kept regardless of the schema: the root's apiVersion/kind/metadata, and the
same three fields of an ``x-kubernetes-embedded-resource`` object. Metadata
keeps only ObjectMeta's fields. Below ``x-kubernetes-preserve-unknown-fields``
unknown fields stay, but known properties under it are still pruned
recursively. ``allOf``/``anyOf``/``oneOf``/``not`` only validate, so they never
keep a field alive.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.structural import nodes


def _prune_meta(meta: Any) -> None:
    if isinstance(meta, dict):
        known = nodes.object_meta_fields()
        for key in [k for k in meta if k not in known]:
            del meta[key]


def _prune(value: Any, node: dict | None) -> None:
    if node is None:
        return
    if isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            for item in value:
                _prune(item, items)
        return
    if not isinstance(value, dict):
        return
    props = node.get("properties") or {}
    addl = node.get("additionalProperties")
    keep_unknown = nodes.preserves_unknown(node) or addl is True
    is_embedded = nodes.embedded(node)
    for key in list(value):
        if key in props:
            _prune(value[key], props[key])
        elif isinstance(addl, dict):
            _prune(value[key], addl)
        elif is_embedded and key in nodes.TYPE_META_FIELDS:
            continue
        elif is_embedded and key == "metadata":
            _prune_meta(value[key])
        elif not keep_unknown:
            del value[key]
    if is_embedded and "metadata" in props:
        _prune_meta(value.get("metadata"))


def prune(obj: dict, node: dict | None) -> None:
    """Prune a custom resource in place against its version's openAPIV3Schema."""
    node = node or {}
    props = node.get("properties") or {}
    for key in list(obj):
        if key in nodes.TYPE_META_FIELDS:
            continue
        if key == "metadata":
            _prune_meta(obj[key])
        elif key in props:
            _prune(obj[key], props[key])
        elif isinstance(node.get("additionalProperties"), dict):
            _prune(obj[key], node["additionalProperties"])
        elif not nodes.preserves_unknown(node):
            del obj[key]
