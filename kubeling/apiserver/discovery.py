"""API discovery documents: ``/version``, ``/api``, ``/apis``, ``/apis/<g>``, ``/api/v1``, ``/apis/<g>/<v>``.

Pure builders over a list of `kinds.Resource` (the built-ins plus the CRDs the
apiserver registered at runtime). Resources with ``discoverable=False`` (legacy
versions kubeling serves beyond upstream) are left out of every document.

Two forms are served for ``/api`` and ``/apis``:

- the legacy one (``APIVersions`` / ``APIGroupList``), then one ``APIResourceList``
  request per group-version;
- the aggregated one (``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``), which
  carries every resource of every version in a single response. kubectl 1.32 asks
  for it with ``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``
  and the reply's ``Content-Type`` must be that same media type
  (`negotiate_aggregated` tells the handler whether to serve it).

Ordering follows upstream: groups in `kinds.GROUP_ORDER` (then other groups, such
as CRD groups, by name); inside a group the preferred version first, then the
others by Kubernetes version priority; resources and subresources by name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass

from kubeling.api import kinds, schema
from kubeling.api.kinds import Resource

AGGREGATED_MEDIA_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


# --- subresources -------------------------------------------------------------------------

@dataclass(frozen=True)
class Subresource:
    """What discovery says about ``<resource>/<name>``.

    ``kind`` is ``(group, version, kind)`` of the object the subresource takes and
    returns; ``None`` means the parent's own kind. ``"{Kind}"`` inside the kind is
    replaced by the parent's kind (``pods/proxy`` -> ``PodProxyOptions``).
    """

    verbs: tuple[str, ...]
    kind: tuple[str, str, str] | None = None


SUBRESOURCES: dict[str, Subresource] = {
    "status": Subresource(("get", "patch", "update")),
    "approval": Subresource(("get", "patch", "update")),  # certificatesigningrequests/approval
    "scale": Subresource(("get", "patch", "update"), ("autoscaling", "v1", "Scale")),
    "binding": Subresource(("create",), ("", "v1", "Binding")),
    "eviction": Subresource(("create",), ("policy", "v1", "Eviction")),
    "log": Subresource(("get",)),
    "exec": Subresource(("create", "get"), ("", "v1", "PodExecOptions")),
    "attach": Subresource(("create", "get"), ("", "v1", "PodAttachOptions")),
    "portforward": Subresource(("create", "get"), ("", "v1", "PodPortForwardOptions")),
    "proxy": Subresource(("create", "delete", "get", "patch", "update"), ("", "v1", "{Kind}ProxyOptions")),
    "finalize": Subresource(("update",)),
    "token": Subresource(("create",), ("authentication.k8s.io", "v1", "TokenRequest")),
    "ephemeralcontainers": Subresource(("get", "patch", "update")),
}


def subresource_gvk(res: Resource, sub: str) -> tuple[str, str, str]:
    """The fully qualified (group, version, kind) that ``<res>/<sub>`` serves."""
    spec = SUBRESOURCES.get(sub, Subresource(("get",)))
    if spec.kind is None:
        return res.gvk
    group, version, kind = spec.kind
    return group, version, kind.replace("{Kind}", res.kind)


def subresource_verbs(sub: str) -> tuple[str, ...]:
    return SUBRESOURCES.get(sub, Subresource(("get",))).verbs


# --- ordering ----------------------------------------------------------------------------

_KUBE_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority_key(version: str) -> tuple:
    """Sort key putting versions in Kubernetes priority order (first = highest).

    GA before beta before alpha; a higher major first, then a higher pre-release
    number; versions not shaped like ``v<N>[alpha|beta<M>]`` last, by name.
    """
    m = _KUBE_VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), version)


def _served(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r.discoverable]


def _group_versions(group: str, resources: list[Resource]) -> list[str]:
    """The served versions of a group, preferred version first."""
    versions = sorted({r.version for r in resources if r.group == group}, key=version_priority_key)
    preferred = kinds.PREFERRED_VERSION.get(group)
    if preferred in versions:
        versions.remove(preferred)
        versions.insert(0, preferred)
    return versions


def _groups(resources: list[Resource]) -> list[str]:
    """Named groups (not the core group) in upstream's discovery order."""
    present = {r.group for r in resources if r.group}
    order = {g: i for i, g in enumerate(kinds.GROUP_ORDER)}
    return sorted(present, key=lambda g: (order.get(g, len(order)), g))


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


# --- /version ----------------------------------------------------------------------------

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def version_info() -> dict:
    """The ``version.Info`` served at ``/version`` (what ``kubectl version`` prints)."""
    major, minor, _patch = schema.KUBE_VERSION.split(".")
    machine = platform.machine().lower()
    commit = os.environ.get("KUBELING_GIT_COMMIT", "")
    # The build date is when this package was installed: stable for a process's life
    # and across restarts, which is what clients comparing versions expect.
    built = os.path.getmtime(os.path.dirname(os.path.abspath(__file__)))
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(max(int(minor) - 1, 0)),
        "gitVersion": f"v{schema.KUBE_VERSION}-kubeling",
        "gitCommit": commit,
        "gitTreeState": "clean" if commit else "",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built)),
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{_ARCH.get(machine, machine)}",
    }


# --- legacy discovery ----------------------------------------------------------------------

def api_versions(server_address: str) -> dict:
    """``/api``: the core group's versions and the address clients should use."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _api_group(group: str, resources: list[Resource]) -> dict:
    versions = _group_versions(group, resources)
    entries = [{"groupVersion": _group_version(group, v), "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(resources: list[Resource]) -> dict:
    """``/apis``: every named group with its versions and preferred version."""
    served = _served(resources)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_api_group(g, served) for g in _groups(served)],
    }


def api_group(group: str, resources: list[Resource]) -> dict | None:
    """``/apis/<group>``, or ``None`` when no version of the group is served."""
    served = _served(resources)
    if not group or not any(r.group == group for r in served):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, served)}


def storage_version_hash(res: Resource, resources: list[Resource]) -> str:
    """Upstream's opaque storage-version digest: 8 bytes of sha256("<g>/<v>/<kind>").

    The digest names the version the object is *stored* as: a legacy version's
    ``storage_version``; else the group's preferred version when it serves the
    same resource (``autoscaling/v1`` HPAs are stored as ``v2``); and the owning
    group's resource for shared storage (``events.k8s.io`` events are stored as
    core ``v1`` Events).
    """
    group, version, kind = res.group, res.version, res.kind
    preferred = kinds.PREFERRED_VERSION.get(res.group)
    if res.storage_version:
        group, _, version = res.storage_version.rpartition("/")
    elif not res.crd and preferred and preferred != res.version and any(
            (o.group, o.version, o.resource) == (res.group, preferred, res.resource) for o in resources):
        version = preferred
    owner = kinds.SHARED_STORAGE.get((res.group, res.resource))
    if owner:
        for other in resources:
            if (other.group, other.resource) == owner and other.storage_version is None:
                group, version, kind = other.group, other.version, other.kind
                break
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _has_storage(res: Resource) -> bool:
    # Create-only review resources (SelfSubjectAccessReview, ...) are never stored.
    return set(res.verbs) != {"create"}


def _api_resource(res: Resource, resources: list[Resource]) -> dict:
    out = {
        "name": res.resource,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        out["shortNames"] = list(res.short_names)
    if res.categories:
        out["categories"] = list(res.categories)
    if _has_storage(res):
        out["storageVersionHash"] = storage_version_hash(res, resources)
    return out


def _api_subresource(res: Resource, sub: str) -> dict:
    group, version, kind = subresource_gvk(res, sub)
    out = {"name": f"{res.resource}/{sub}", "singularName": "", "namespaced": res.namespaced}
    # Group and version are written only when they differ from the list's own.
    if (group, version) != (res.group, res.version):
        out["group"] = group
        out["version"] = version
    out["kind"] = kind
    out["verbs"] = list(subresource_verbs(sub))
    return out


def api_resource_list(group_version: str, resources: list[Resource]) -> dict | None:
    """``/api/v1`` or ``/apis/<g>/<v>``, or ``None`` when that group-version is not served."""
    served = _served(resources)
    group, _, version = group_version.rpartition("/")
    members = [r for r in served if (r.group, r.version) == (group, version)]
    if not members:
        return None
    entries = []
    for res in members:
        entries.append(_api_resource(res, served))
        entries.extend(_api_subresource(res, sub) for sub in res.subresources)
    entries.sort(key=lambda e: e["name"])
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}


# --- aggregated discovery (apidiscovery.k8s.io/v2) ----------------------------------------------

def negotiate_aggregated(accept: str | None) -> bool:
    """True when an ``Accept`` header asks for the aggregated v2 document.

    Clients list it first and fall back to plain JSON; any entry naming
    ``g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`` selects it.
    """
    for entry in (accept or "").split(","):
        parts = [p.strip() for p in entry.split(";")]
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if (parts[0] in ("application/json", "*/*", "application/*")
                and params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2"
                and params.get("as") == "APIGroupDiscoveryList"):
            return True
    return False


def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "version": version, "kind": kind}


def _resource_discovery(res: Resource) -> dict:
    out = {
        "resource": res.resource,
        "responseKind": _gvk(*res.gvk),
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "singularResource": res.singular,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        out["shortNames"] = list(res.short_names)
    if res.categories:
        out["categories"] = list(res.categories)
    subs = [{"subresource": sub, "responseKind": _gvk(*subresource_gvk(res, sub)),
             "verbs": list(subresource_verbs(sub))} for sub in sorted(res.subresources)]
    if subs:
        out["subresources"] = subs
    return out


def _group_discovery(group: str, resources: list[Resource]) -> dict:
    versions = []
    for version in _group_versions(group, resources):
        members = sorted((r for r in resources if (r.group, r.version) == (group, version)),
                         key=lambda r: r.resource)
        versions.append({"version": version, "resources": [_resource_discovery(r) for r in members],
                         "freshness": "Current"})
    metadata = {"name": group, "creationTimestamp": None} if group else {"creationTimestamp": None}
    return {"metadata": metadata, "versions": versions}


def _discovery_list(items: list[dict]) -> dict:
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": items}


def aggregated_api(resources: list[Resource]) -> dict:
    """Aggregated ``/api``: the core group's one version and all its resources."""
    served = _served(resources)
    items = [_group_discovery("", served)] if any(not r.group for r in served) else []
    return _discovery_list(items)


def aggregated_apis(resources: list[Resource]) -> dict:
    """Aggregated ``/apis``: every named group, every version, every resource."""
    served = _served(resources)
    return _discovery_list([_group_discovery(g, served) for g in _groups(served)])
