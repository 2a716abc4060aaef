"""The set of resources this server serves right now: built-ins plus CRD-defined ones.

`ResourceMap` is read on every request and replaced (never mutated in place) when CRDs
change, so a request sees one consistent snapshot. Each entry is a `Served`: one served version
of a resource, with its `kinds.Resource` (discovery facts), the storage prefix and version it
shares with the resource's other versions, the schema of the served version, and the resource's
`Strategy` (everything the generic store needs to know about it; see ``registry/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeling.api import kinds, schema

# (group, resource) -> the group/version objects are stored in when several versions share storage.
STORAGE_VERSION = {
    ("autoscaling", "horizontalpodautoscalers"): "autoscaling/v2",
    ("events.k8s.io", "events"): "v1",
    ("", "events"): "v1",
}


@dataclass(frozen=True)
class Served:
    res: kinds.Resource
    prefix: str                       # store key prefix, shared by every version of the group/resource
    storage_gv: str                   # apiVersion objects are stored in
    schema: dict | None = None        # schema node for structural checks (built-in: upstream's; CR: openAPIV3Schema)
    strategy: Any = None              # registry.Strategy: the resource's behaviour
    scale: dict | None = None         # CRD subresources.scale (spec/status/selector paths)
    crd_name: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def key(self, namespace: str | None, name: str) -> str:
        if self.res.namespaced:
            return f"{self.prefix}{namespace}/{name}"
        return f"{self.prefix}{name}"

    def list_prefix(self, namespace: str | None) -> str:
        if self.res.namespaced and namespace:
            return f"{self.prefix}{namespace}/"
        return self.prefix


def builtin_served(strategies: dict) -> list[Served]:
    """Every built-in served version, each with the strategy of the resource it is stored as
    (``strategies``: `registry.strategies()`, one instance per stored resource of one server)."""
    schemas = schema.get()
    out = []
    for r in kinds.BUILTIN:
        storage_gv = r.storage_version or STORAGE_VERSION.get((r.group, r.resource), r.group_version)
        # The schema of the served version; legacy versions have none upstream, so they are
        # checked after conversion, against the storage version's.
        node = schemas.for_gvk(r.group, r.version, r.kind)
        if node is None:
            sg, _, sv = storage_gv.rpartition("/")
            node = schemas.for_gvk(sg, sv, r.kind)
        out.append(Served(r, kinds.storage_prefix(r), storage_gv, node, strategies[kinds.storage_resource(r)]))
    return out


class ResourceMap:
    """An immutable snapshot of what is served, indexed the ways requests need."""

    def __init__(self, served: list[Served]) -> None:
        self.served = served
        self.by_gvr = {(s.res.group, s.res.version, s.res.resource): s for s in served}
        self.groups: dict[str, list[str]] = {}
        for s in served:
            versions = self.groups.setdefault(s.res.group, [])
            if s.res.version not in versions:
                versions.append(s.res.version)

    def get(self, group: str, version: str, resource: str) -> Served | None:
        return self.by_gvr.get((group, version, resource))

    def resources(self) -> list[kinds.Resource]:
        return [s.res for s in self.served]

    def with_custom(self, custom: list[Served]) -> "ResourceMap":
        builtins = [s for s in self.served if not s.res.crd]
        return ResourceMap(builtins + custom)
