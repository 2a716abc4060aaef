"""Legacy Deployment versions, served by conversion to and from ``apps/v1``.

Upstream removed ``extensions/v1beta1``, ``apps/v1beta1`` and ``apps/v1beta2``
Deployments in 1.16; kubeling still accepts them (old manifests keep working) and
stores every Deployment as ``apps/v1``. The versions are hidden from discovery
(see `kubeling.api.kinds`), so clients only reach them by asking explicitly.

Each legacy version had its *own* defaults, and upstream applied a version's
defaults when decoding it, *before* converting to the storage version. So an
``extensions/v1beta1`` Deployment without a strategy still gets
``maxUnavailable: 1, maxSurge: 1`` — not apps/v1's 25% — and its selector is
taken from the template labels, which apps/v1 would reject as missing::

    default                       extensions/v1beta1  apps/v1beta1  apps/v1beta2
    selector, metadata.labels     template labels     template      (required)
    replicas                      1                   1             1
    rollingUpdate.maxUnavailable  1                   25%           25%
    rollingUpdate.maxSurge        1                   25%           25%
    revisionHistoryLimit          2147483647          2             10
    progressDeadlineSeconds       2147483647          600           600

(2147483647 means "unset": keep every ReplicaSet, never time out.)

The field sets are otherwise the same, except ``spec.rollbackTo`` (extensions and
apps/v1beta1), which rolled back through the API and has no apps/v1 field: as
upstream, it becomes the ``deprecated.deployment.rollback.to`` annotation (the
revision), which the Deployment controller carries out and clears. Converting back (`from_storage`) only relabels the object.

Contract: `to_storage` / `from_storage` never mutate their argument; they return
the object unchanged (same instance) when there is nothing to convert.
"""

from __future__ import annotations

import copy

from kubeling.api import defaults
from kubeling.api.defaults import apps, podspec
from kubeling.api.defaults._util import child, is_empty, set_ptr

STORAGE_VERSION = "apps/v1"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
MAX_INT32 = 2**31 - 1
LEGACY_DEPLOYMENT_VERSIONS = ("extensions/v1beta1", "apps/v1beta1", "apps/v1beta2")
_KINDS = ("Deployment", "DeploymentList")


def is_legacy(api_version: str, kind: str) -> bool:
    """True for a Deployment (or DeploymentList) in one of the legacy versions."""
    return api_version in LEGACY_DEPLOYMENT_VERSIONS and kind in _KINDS


# --- each legacy version's SetDefaults_Deployment ---------------------------------------------
def _selector_and_labels_from_template(obj: dict, spec: dict) -> None:
    """extensions/v1beta1 and apps/v1beta1: both default from the template's labels."""
    meta = child(child(spec, "template"), "metadata")
    labels = meta.get("labels") if meta else None
    if not isinstance(labels, dict):
        return
    if spec.get("selector") is None:
        spec["selector"] = {"matchLabels": dict(labels)}
    obj_meta = child(obj, "metadata", create=True)
    if obj_meta is not None and is_empty(obj_meta.get("labels")):
        obj_meta["labels"] = dict(labels)


def _defaults_extensions_v1beta1(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    _selector_and_labels_from_template(obj, spec)
    set_ptr(spec, "replicas", 1)
    apps.deployment_strategy(spec, 1, 1, also_if_rolling_update_set=True)
    set_ptr(spec, "progressDeadlineSeconds", MAX_INT32)
    set_ptr(spec, "revisionHistoryLimit", MAX_INT32)


def _defaults_apps_v1beta1(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    _selector_and_labels_from_template(obj, spec)
    set_ptr(spec, "replicas", 1)
    apps.deployment_strategy(spec, "25%", "25%")
    set_ptr(spec, "revisionHistoryLimit", 2)
    set_ptr(spec, "progressDeadlineSeconds", 600)


_LEGACY_DEFAULTS = {
    "extensions/v1beta1": _defaults_extensions_v1beta1,
    "apps/v1beta1": _defaults_apps_v1beta1,
    "apps/v1beta2": apps.set_defaults_deployment,
}


def _deployment_to_storage(obj: dict, api_version: str) -> dict:
    out = copy.deepcopy(obj)
    _LEGACY_DEFAULTS[api_version](out)
    podspec.template_defaults(child(child(out, "spec"), "template", create=True))
    spec = child(out, "spec")
    rollback_to = spec.pop("rollbackTo", None) if spec is not None else None
    # as upstream's conversion: the request becomes an annotation the Deployment controller acts on
    annotations = out.setdefault("metadata", {}).get("annotations") or {}
    if rollback_to is not None:
        annotations[ROLLBACK_TO] = str(int(rollback_to.get("revision") or 0))
    else:
        annotations.pop(ROLLBACK_TO, None)
    if annotations:
        out["metadata"]["annotations"] = annotations
    else:
        out["metadata"].pop("annotations", None)
    out["apiVersion"] = STORAGE_VERSION
    out["kind"] = "Deployment"
    # Every legacy default is already set; this fills nothing of its own but makes
    # the result exactly what the apps/v1 decoder would hand the registry.
    defaults.apply_defaults(out)
    return out


def to_storage(obj: dict) -> dict:
    """A legacy Deployment (or list of them), defaulted in its own version, as apps/v1.

    Anything else is returned unchanged.
    """
    if not isinstance(obj, dict):
        return obj
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not is_legacy(api_version, kind):
        return obj
    if kind == "Deployment":
        return _deployment_to_storage(obj, api_version)
    out = {k: v for k, v in obj.items() if k != "items"}
    out["apiVersion"] = STORAGE_VERSION
    out["items"] = [
        _deployment_to_storage({**item, "apiVersion": api_version, "kind": "Deployment"}, api_version)
        if isinstance(item, dict) else item
        for item in obj.get("items") or []
    ]
    return out


def from_storage(obj: dict, group_version: str) -> dict:
    """An apps/v1 Deployment (or DeploymentList) relabelled as the requested legacy
    ``group_version`` for a response. Unchanged when no conversion applies."""
    if not isinstance(obj, dict) or group_version not in LEGACY_DEPLOYMENT_VERSIONS:
        return obj
    kind = obj.get("kind")
    if obj.get("apiVersion") != STORAGE_VERSION or kind not in _KINDS:
        return obj
    out = copy.deepcopy(obj)
    out["apiVersion"] = group_version
    if kind == "DeploymentList":
        for item in out.get("items") or []:
            if isinstance(item, dict) and item.get("apiVersion", STORAGE_VERSION) == STORAGE_VERSION:
                item["apiVersion"] = group_version
                item.setdefault("kind", "Deployment")
    return out
