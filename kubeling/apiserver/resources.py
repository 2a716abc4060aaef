"""The set of resources this server serves right now: built-ins plus CRD-defined ones.

`ResourceMap` is read on every request and replaced (never mutated in place)
when CRDs change, so a request sees one consistent snapshot. Each entry is a
`Served`: the `kinds.Resource`, its storage prefix and storage version, and for
custom resources the CRD's schema, printer columns and subresource paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    printer_columns: tuple = ()       # CRD additionalPrinterColumns
    status_path: str | None = None    # CRD subresources.status present -> ".status"
    scale: dict | None = None         # CRD subresources.scale
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

    @property
    def has_status(self) -> bool:
        return "status" in self.res.subresources


def builtin_served() -> list[Served]:
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
        out.append(Served(r, kinds.storage_prefix(r), storage_gv, node))
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
