"""apps/v1 defaulting: upstream's ``pkg/apis/apps/v1/defaults.go`` plus the pod
template and volume-claim-template walks of the generated ``SetObjectDefaults_*``.

ControllerRevision has no defaulter. The legacy Deployment versions
(extensions/v1beta1, apps/v1beta1, apps/v1beta2) are defaulted in
`kubeling.api.convert`, before conversion to apps/v1.
"""

from __future__ import annotations

from kubeling.api.defaults import podspec
from kubeling.api.defaults.core import set_object_defaults_persistent_volume_claim
from kubeling.api.defaults._util import child, dicts, set_ptr, set_zero


def deployment_strategy(spec: dict, max_unavailable, max_surge, *, also_if_rolling_update_set: bool = False) -> None:
    """Strategy type RollingUpdate, and the rolling-update bounds when rolling.

    extensions/v1beta1 also filled the bounds whenever ``rollingUpdate`` was given,
    whatever the type (``also_if_rolling_update_set``).
    """
    strategy = child(spec, "strategy", create=True)
    if strategy is None:
        return
    set_zero(strategy, "type", "RollingUpdate")
    rolling = strategy.get("rollingUpdate") is not None and also_if_rolling_update_set
    if strategy["type"] == "RollingUpdate" or rolling:
        ru = child(strategy, "rollingUpdate", create=True)
        if ru is not None:
            set_ptr(ru, "maxUnavailable", max_unavailable)
            set_ptr(ru, "maxSurge", max_surge)


def set_defaults_deployment(obj: dict) -> None:
    """``SetDefaults_Deployment`` (apps/v1; apps/v1beta2 is identical)."""
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_ptr(spec, "replicas", 1)
    deployment_strategy(spec, "25%", "25%")
    set_ptr(spec, "revisionHistoryLimit", 10)
    set_ptr(spec, "progressDeadlineSeconds", 600)


def set_object_defaults_deployment(obj: dict) -> None:
    set_defaults_deployment(obj)
    podspec.template_defaults(child(child(obj, "spec"), "template", create=True))


def set_object_defaults_replica_set(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_ptr(spec, "replicas", 1)
    podspec.template_defaults(child(spec, "template", create=True))


def set_object_defaults_daemon_set(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    strategy = child(spec, "updateStrategy", create=True)
    if strategy is not None:
        set_zero(strategy, "type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            ru = child(strategy, "rollingUpdate", create=True)
            if ru is not None:
                set_ptr(ru, "maxUnavailable", 1)
                set_ptr(ru, "maxSurge", 0)
    set_ptr(spec, "revisionHistoryLimit", 10)
    podspec.template_defaults(child(spec, "template", create=True))


def set_object_defaults_stateful_set(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_zero(spec, "podManagementPolicy", "OrderedReady")
    strategy = child(spec, "updateStrategy", create=True)
    if strategy is not None:
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            set_ptr(strategy, "rollingUpdate", {})
        # An explicit RollingUpdate without a rollingUpdate block gets no partition.
        ru = child(strategy, "rollingUpdate")
        if strategy["type"] == "RollingUpdate" and ru is not None:
            set_ptr(ru, "partition", 0)
    retention = child(spec, "persistentVolumeClaimRetentionPolicy", create=True)
    if retention is not None:
        set_zero(retention, "whenDeleted", "Retain")
        set_zero(retention, "whenScaled", "Retain")
    set_ptr(spec, "replicas", 1)
    set_ptr(spec, "revisionHistoryLimit", 10)
    podspec.template_defaults(child(spec, "template", create=True))
    for claim in dicts(spec, "volumeClaimTemplates"):
        set_object_defaults_persistent_volume_claim(claim)
        # Upstream's apps/v1 conversion stamps these on every claim template
        # (kubernetes#87583 kept the pre-1.17 reflective-conversion behaviour).
        claim["apiVersion"] = "v1"
        claim["kind"] = "PersistentVolumeClaim"


DEFAULTERS = {
    ("apps", "v1", "Deployment"): set_object_defaults_deployment,
    ("apps", "v1", "ReplicaSet"): set_object_defaults_replica_set,
    ("apps", "v1", "DaemonSet"): set_object_defaults_daemon_set,
    ("apps", "v1", "StatefulSet"): set_object_defaults_stateful_set,
}
