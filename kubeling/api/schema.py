"""Upstream's OpenAPI definitions, read at runtime from the kubernetes-validate package.

kubernetes-validate ships each Kubernetes release's definitions as JSON Schema
(``$defs`` with ``#/$defs/<name>`` references, types written as ``["string", "null"]``),
keeping upstream's extensions: ``x-kubernetes-group-version-kind``,
``x-kubernetes-patch-merge-key``, ``x-kubernetes-patch-strategy``,
``x-kubernetes-list-type``, ``x-kubernetes-list-map-keys``, ``x-kubernetes-map-type``.

Everything that needs a schema (OpenAPI documents, strategic merge patch,
server-side apply, structural validation, ``kubectl explain``) reads it from here.

A *schema node* is a plain dict in that JSON-Schema form. Nodes may hold a
``$ref``; call `resolve` before reading ``properties``/``items``. CRD schemas
(openAPIV3Schema) are nodes of the same shape with no ``$ref``.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import orjson

KUBE_VERSION = "1.33.0"
REF_PREFIX = "#/$defs/"


class Schemas:
    def __init__(self, defs: dict[str, dict]) -> None:
        self.defs = defs
        self._by_gvk: dict[tuple[str, str, str], str] = {}
        for name, node in defs.items():
            for gvk in node.get("x-kubernetes-group-version-kind", ()):
                key = (gvk.get("group", ""), gvk["version"], gvk["kind"])
                # Prefer the definition under io.k8s.api.* for kinds listed twice.
                if key not in self._by_gvk or name.startswith("io.k8s.api."):
                    self._by_gvk[key] = name

    def name_for_gvk(self, group: str, version: str, kind: str) -> str | None:
        return self._by_gvk.get((group, version, kind))

    def for_gvk(self, group: str, version: str, kind: str) -> dict | None:
        name = self.name_for_gvk(group, version, kind)
        return self.defs[name] if name else None

    def resolve(self, node: dict | None) -> dict:
        """Follow ``$ref`` (possibly chained) to the definition it names."""
        while node and "$ref" in node:
            node = self.defs[node["$ref"][len(REF_PREFIX):]]
        return node or {}

    def gvks(self) -> list[tuple[str, str, str]]:
        return list(self._by_gvk)


def type_of(node: dict) -> str | None:
    """The non-null JSON type of a node: ``["string", "null"]`` -> ``"string"``."""
    t = node.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t


def child(schemas: Schemas | None, node: dict | None, key: str) -> dict | None:
    """The schema for ``node[key]`` (an object property or a map value), resolved."""
    if node is None:
        return None
    node = schemas.resolve(node) if schemas else node
    props = node.get("properties")
    if props and key in props:
        return schemas.resolve(props[key]) if schemas else props[key]
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        return schemas.resolve(addl) if schemas else addl
    return None


def items(schemas: Schemas | None, node: dict | None) -> dict | None:
    """The schema for the items of a list node, resolved."""
    if node is None:
        return None
    node = schemas.resolve(node) if schemas else node
    it = node.get("items")
    if isinstance(it, dict):
        return schemas.resolve(it) if schemas else it
    return None


@functools.lru_cache(maxsize=None)
def get(version: str = KUBE_VERSION) -> Schemas:
    """The definitions of one Kubernetes release, loaded once per process."""
    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    data: dict[str, Any] = orjson.loads(root.joinpath(f"v{version}-local", "_definitions.json").read_bytes())
    return Schemas(data["$defs"])
