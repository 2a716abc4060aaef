"""Upstream defaulting for built-in kinds: ``apply_defaults(obj)``.

The registry calls `apply_defaults` on every object it decodes from a request
(create, update, patch results), exactly where upstream's codec runs the scheme's
defaulting functions. It dispatches on ``(group, version, kind)`` read from
``apiVersion`` / ``kind`` to one covering defaulter per kind, registered in the
explicit `REGISTRY` below (one module per API group, named like upstream's
``pkg/apis/<group>``).

Contract:

- in place, idempotent, and never overwrites a value the user set (Go's notion of
  "unset": missing/null, and "" / 0 for plain scalar fields);
- pure: no I/O, no clock, no cluster state — things that need state (clusterIP,
  finalizers, priority, service-account tokens) belong to the registry strategies
  and admission;
- never raises on malformed input (wrong types are left for validation);
- unknown kinds are a no-op; a ``<Kind>List`` defaults each item, like upstream's
  ``SetObjectDefaults_<Kind>List``;
- metadata is only touched where upstream's defaulters touch it (labels copied
  from a template, the namespace name label).

Kinds without any upstream defaulter (ConfigMap, ServiceAccount, Event, Role,
ClusterRole, Ingress, PodDisruptionBudget, Lease, ControllerRevision, ...) are
deliberately absent.
"""

from __future__ import annotations

from typing import Callable

from kubeling.api.defaults import (
    apiextensions,
    apps,
    autoscaling,
    batch,
    core,
    discovery,
    networking,
    rbac,
    scheduling,
    storage,
)

Defaulter = Callable[[dict], None]

REGISTRY: dict[tuple[str, str, str], Defaulter] = {
    **core.DEFAULTERS,
    **apps.DEFAULTERS,
    **batch.DEFAULTERS,
    **autoscaling.DEFAULTERS,
    **networking.DEFAULTERS,
    **rbac.DEFAULTERS,
    **storage.DEFAULTERS,
    **scheduling.DEFAULTERS,
    **discovery.DEFAULTERS,
    **apiextensions.DEFAULTERS,
}


def gvk_of(obj: dict) -> tuple[str, str, str]:
    """``(group, version, kind)`` from an object's ``apiVersion`` and ``kind``."""
    api_version = obj.get("apiVersion") or ""
    kind = obj.get("kind") or ""
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return "", "", ""
    group, _, version = api_version.rpartition("/")
    return group, version, kind


def apply_defaults(obj: dict) -> None:
    """Apply upstream's defaults for ``obj``'s kind, in place (see the module contract)."""
    if not isinstance(obj, dict):
        return
    group, version, kind = gvk_of(obj)
    defaulter = REGISTRY.get((group, version, kind))
    if defaulter is not None:
        defaulter(obj)
        return
    items = obj.get("items")
    if kind.endswith("List") and isinstance(items, list):
        item_kind = kind[: -len("List")]
        item_defaulter = REGISTRY.get((group, version, item_kind))
        if item_defaulter is None:
            return
        for item in items:
            if isinstance(item, dict) and item.get("kind", item_kind) == item_kind:
                item_defaulter(item)
