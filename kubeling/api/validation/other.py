"""The smaller groups: autoscaling (HPA), policy (PDB), coordination (Lease),
scheduling (PriorityClass) and storage (StorageClass). Events are in `events`.
"""

from __future__ import annotations

from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta
from kubeling.api.validation.apps import _not_over_100_percent, validate_int_or_percent
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden

METRIC_TYPES = ("ContainerResource", "External", "Object", "Pods", "Resource")
TARGET_TYPES = ("AverageValue", "Utilization", "Value")
HIGHEST_USER_PRIORITY = 1_000_000_000


# --- HorizontalPodAutoscaler ------------------------------------------------------------------------

def validate_hpa(hpa: dict) -> list[FieldError]:
    spec = hpa.get("spec") or {}
    errs: list[FieldError] = []
    ref = spec.get("scaleTargetRef") or {}
    for k in ("kind", "name"):
        v = ref.get(k) or ""
        if not v:
            errs.append(required(f"spec.scaleTargetRef.{k}", ""))
        else:
            errs += [invalid_value(f"spec.scaleTargetRef.{k}", v, m) for m in meta.name_is_path_segment(v, False)]
    lo, hi = spec.get("minReplicas"), spec.get("maxReplicas")
    if lo is not None and isinstance(lo, int) and lo < 1:
        errs.append(invalid_value("spec.minReplicas", lo, "must be greater than or equal to 1"))
    if not isinstance(hi, int) or hi < 1:
        errs.append(invalid_value("spec.maxReplicas", hi, "must be greater than 0"))
    elif lo is not None and isinstance(lo, int) and hi < lo:
        errs.append(invalid_value("spec.maxReplicas", hi, "must be greater than or equal to `minReplicas`"))
    cpu = spec.get("targetCPUUtilizationPercentage")  # autoscaling/v1 only
    if cpu is not None and (not isinstance(cpu, int) or cpu < 1):
        errs.append(invalid_value("spec.targetCPUUtilizationPercentage", cpu, "must be greater than or equal to 1"))
    for i, m in enumerate(spec.get("metrics") or ()):
        p = f"spec.metrics[{i}]"
        mtype = m.get("type")
        if not mtype:
            errs.append(required(p + ".type", "must specify a metric source type"))
            continue
        if mtype not in METRIC_TYPES:
            errs.append(not_supported(p + ".type", mtype, METRIC_TYPES))
            continue
        key = mtype[0].lower() + mtype[1:]
        src = m.get(key)
        if src is None:
            errs.append(required(f"{p}.{key}", "must populate information for the given metric source"))
            continue
        target = src.get("target") or {}
        if not target.get("type"):
            errs.append(required(f"{p}.{key}.target.type", "must specify a metric target type"))
        elif target["type"] not in TARGET_TYPES:
            errs.append(not_supported(f"{p}.{key}.target.type", target["type"], TARGET_TYPES))
        if mtype in ("Resource", "ContainerResource") and not src.get("name"):
            errs.append(required(f"{p}.{key}.name", "must specify a resource name"))
    return errs


# --- PodDisruptionBudget ----------------------------------------------------------------------------

def validate_pdb(pdb: dict) -> list[FieldError]:
    spec = pdb.get("spec") or {}
    errs: list[FieldError] = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        errs.append(invalid_value("spec", spec, "minAvailable and maxUnavailable cannot be both set"))
    for k in ("minAvailable", "maxUnavailable"):
        errs += validate_int_or_percent(spec.get(k), f"spec.{k}")
        errs += _not_over_100_percent(spec.get(k), f"spec.{k}")
    errs += meta.validate_label_selector(spec.get("selector"), "spec.selector")
    errs += meta.enum(spec.get("unhealthyPodEvictionPolicy"), "spec.unhealthyPodEvictionPolicy",
                      ("AlwaysAllow", "IfHealthyBudget"))
    return errs


# --- Lease, PriorityClass, StorageClass -------------------------------------------------------------

def validate_lease(lease: dict) -> list[FieldError]:
    spec = lease.get("spec") or {}
    errs = meta.positive(spec.get("leaseDurationSeconds"), "spec.leaseDurationSeconds")
    errs += meta.nonneg(spec.get("leaseTransitions"), "spec.leaseTransitions")
    errs += meta.enum(spec.get("strategy"), "spec.strategy", ("OldestEmulationVersion",))
    return errs


def validate_priority_class(pc: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    name = (pc.get("metadata") or {}).get("name") or ""
    value = pc.get("value")
    if not isinstance(value, int) or isinstance(value, bool):
        errs.append(required("value", "") if value is None else invalid_value("value", value, "must be an integer"))
    elif name.startswith("system-"):
        # Only the built-in system classes may use the reserved prefix (and the higher values).
        if name not in ("system-cluster-critical", "system-node-critical"):
            errs.append(forbidden("metadata.name", "priority class names with 'system-' prefix are reserved"))
    elif value > HIGHEST_USER_PRIORITY:
        errs.append(forbidden("value", f"maximum allowed value of a user defined priority is "
                                       f"{HIGHEST_USER_PRIORITY}"))
    errs += meta.enum(pc.get("preemptionPolicy"), "preemptionPolicy", ("Never", "PreemptLowerPriority"))
    return errs


def validate_priority_class_update(new: dict, old: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    if new.get("value") != old.get("value"):
        errs.append(forbidden("value", "may not be changed in an update."))
    if old.get("preemptionPolicy") is not None:
        errs += meta.immutable(new.get("preemptionPolicy"), old["preemptionPolicy"], "preemptionPolicy")
    return errs


def validate_storage_class(sc: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    prov = sc.get("provisioner") or ""
    if not prov:
        errs.append(required("provisioner", ""))
    else:
        errs += meta.qualified_name(prov.lower(), "provisioner")
    params = sc.get("parameters") or {}
    if len(params) > 512:
        errs.append(FieldError("TooMany", "parameters", "must have at most 512 items", len(params)))
    for k in params:
        if not k:
            errs.append(invalid_value("parameters", params, "parameter names must be non-empty"))
    errs += meta.enum(sc.get("reclaimPolicy"), "reclaimPolicy", ("Delete", "Retain"))
    errs += meta.enum(sc.get("volumeBindingMode"), "volumeBindingMode", ("Immediate", "WaitForFirstConsumer"))
    return errs


def validate_storage_class_update(new: dict, old: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    # Provisioned volumes were made with these settings; changing them would leave them inconsistent.
    if (new.get("parameters") or {}) != (old.get("parameters") or {}):
        errs.append(forbidden("parameters", "updates to parameters are forbidden."))
    if new.get("provisioner") != old.get("provisioner"):
        errs.append(forbidden("provisioner", "updates to provisioner are forbidden."))
    if new.get("reclaimPolicy") != old.get("reclaimPolicy") and old.get("reclaimPolicy") is not None:
        errs.append(forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
    if old.get("volumeBindingMode") is not None:
        errs += meta.immutable(new.get("volumeBindingMode"), old["volumeBindingMode"], "volumeBindingMode")
    return errs


KINDS = {
    ("autoscaling", "HorizontalPodAutoscaler"): Kind(validate_hpa, name=meta.name_is_path_segment),
    ("policy", "PodDisruptionBudget"): Kind(validate_pdb),
    ("coordination.k8s.io", "Lease"): Kind(validate_lease),
    ("scheduling.k8s.io", "PriorityClass"): Kind(validate_priority_class, validate_priority_class_update,
                                                 namespaced=False),
    ("storage.k8s.io", "StorageClass"): Kind(validate_storage_class, validate_storage_class_update,
                                             namespaced=False),
}
