"""apps/v1: Deployment, ReplicaSet, DaemonSet, StatefulSet, ControllerRevision.

Every workload has a non-empty selector that selects its own template (else
its controller would fight other controllers for pods), and in apps/v1 that
selector never changes. StatefulSets additionally freeze most of their spec.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.persistentvolume import validate_pvc
from kubeling.api.validation.pod import validate_pod_template

SELECTOR_MISMATCH = "`selector` does not match template `labels`"
STS_UPDATE_MESSAGE = ("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                      "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                      "'minReadySeconds' are forbidden")
STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
               "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def validate_int_or_percent(value: Any, path: str) -> list[FieldError]:
    """A non-negative IntOrString such as maxSurge: an integer or 'N%' (at most 100% where it matters)."""
    if value is None:
        return []
    if isinstance(value, str):
        if not util.is_valid_percent(value):
            return [invalid_value(path, value, "a valid percent string must be a numeric string followed by an "
                                               "ending '%' (e.g. '1%',  or '93%', regex used for validation is "
                                               "'[0-9]+%')")]
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return meta.nonneg(value, path)
    return [invalid_value(path, value, "must be an integer or percentage (e.g '5%')")]


def _int_or_percent_is_zero(value: Any) -> bool:
    if isinstance(value, str) and util.is_valid_percent(value):
        return int(value[:-1]) == 0
    return value == 0


def _not_over_100_percent(value: Any, path: str) -> list[FieldError]:
    if isinstance(value, str) and util.is_valid_percent(value) and int(value[:-1]) > 100:
        return [invalid_value(path, value, "must not be greater than 100%")]
    return []


def validate_surge_unavailable(ru: dict, path: str) -> list[FieldError]:
    unavailable, surge = ru.get("maxUnavailable"), ru.get("maxSurge")
    errs = validate_int_or_percent(unavailable, path + ".maxUnavailable")
    errs += validate_int_or_percent(surge, path + ".maxSurge")
    if unavailable is not None and surge is not None and _int_or_percent_is_zero(unavailable) \
            and _int_or_percent_is_zero(surge):
        # Neither taking pods down nor adding any: a rollout could never make progress.
        errs.append(invalid_value(path + ".maxUnavailable", unavailable, "may not be 0 when `maxSurge` is 0"))
    errs += _not_over_100_percent(unavailable, path + ".maxUnavailable")
    return errs


def validate_selector_and_template(spec: dict, what: str) -> list[FieldError]:
    """Selector required and non-empty, and it must select the pod template's labels."""
    errs: list[FieldError] = []
    selector = spec.get("selector")
    if selector is None:
        errs.append(required("spec.selector", ""))
    else:
        errs += meta.validate_label_selector(selector, "spec.selector")
        if meta.selector_is_empty(selector):
            errs.append(invalid_value("spec.selector", selector, f"empty selector is invalid for {what}"))
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        return errs + [required("spec.template", "")]
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if selector and not meta.selector_is_empty(selector) and not meta.selector_matches(selector, labels):
        errs.append(invalid_value("spec.template.metadata.labels", labels, SELECTOR_MISMATCH))
    errs += validate_pod_template(tmpl, "spec.template")
    pod = tmpl.get("spec") or {}
    errs += meta.enum(pod.get("restartPolicy"), "spec.template.spec.restartPolicy", ("Always",))
    if pod.get("activeDeadlineSeconds") is not None:
        errs.append(forbidden("spec.template.spec.activeDeadlineSeconds",
                              "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return errs


def _common(spec: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for k in ("replicas", "minReadySeconds", "revisionHistoryLimit"):
        errs += meta.nonneg(spec.get(k), f"spec.{k}")
    return errs


def validate_deployment(d: dict) -> list[FieldError]:
    spec = d.get("spec") or {}
    errs = _common(spec) + validate_selector_and_template(spec, "deployment")
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type")
    if stype == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            errs.append(forbidden("spec.strategy.rollingUpdate",
                                  "may not be specified when strategy `type` is 'Recreate'"))
    elif stype in (None, "RollingUpdate"):
        errs += validate_surge_unavailable(strategy.get("rollingUpdate") or {}, "spec.strategy.rollingUpdate")
    else:
        errs.append(not_supported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"]))
    pds = spec.get("progressDeadlineSeconds")
    if pds is not None:
        errs += meta.nonneg(pds, "spec.progressDeadlineSeconds")
        mrs = spec.get("minReadySeconds") or 0
        if isinstance(pds, int) and pds <= mrs:
            errs.append(invalid_value("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))
    return errs


def validate_selector_update(new: dict, old: dict) -> list[FieldError]:
    """apps/v1 froze selectors: changing one would orphan every existing pod.

    The legacy betas (served by conversion) allowed it, so only apps/v1 requests are held to it.
    """
    if new.get("apiVersion") not in (None, "apps/v1"):
        return []
    return meta.immutable((new.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector"),
                          "spec.selector")


def validate_replica_set(rs: dict) -> list[FieldError]:
    spec = rs.get("spec") or {}
    return _common(spec) + validate_selector_and_template(spec, "deployment")


def validate_daemon_set(ds: dict) -> list[FieldError]:
    spec = ds.get("spec") or {}
    errs = _common(spec) + validate_selector_and_template(spec, "daemonset")
    strategy = spec.get("updateStrategy") or {}
    stype = strategy.get("type")
    if stype == "RollingUpdate" or (stype is None and strategy.get("rollingUpdate")):
        errs += validate_surge_unavailable(strategy.get("rollingUpdate") or {}, "spec.updateStrategy.rollingUpdate")
    elif stype not in (None, "OnDelete"):
        errs.append(not_supported("spec.updateStrategy.type", stype, ["OnDelete", "RollingUpdate"]))
    return errs


def validate_stateful_set(sts: dict) -> list[FieldError]:
    spec = sts.get("spec") or {}
    errs = _common(spec) + validate_selector_and_template(spec, "statefulset")
    errs += meta.enum(spec.get("podManagementPolicy"), "spec.podManagementPolicy", ("OrderedReady", "Parallel"))
    strategy = spec.get("updateStrategy") or {}
    stype = strategy.get("type")
    if stype == "OnDelete" and strategy.get("rollingUpdate") is not None:
        errs.append(invalid_value("spec.updateStrategy.rollingUpdate", strategy["rollingUpdate"],
                                  "only allowed for updateStrategy 'RollingUpdate'"))
    elif stype in (None, "RollingUpdate"):
        ru = strategy.get("rollingUpdate") or {}
        errs += meta.nonneg(ru.get("partition"), "spec.updateStrategy.rollingUpdate.partition")
        mu = ru.get("maxUnavailable")
        if mu is not None:
            errs += validate_int_or_percent(mu, "spec.updateStrategy.rollingUpdate.maxUnavailable")
            if _int_or_percent_is_zero(mu):
                errs.append(invalid_value("spec.updateStrategy.rollingUpdate.maxUnavailable", mu,
                                          "must be greater than 0"))
            errs += _not_over_100_percent(mu, "spec.updateStrategy.rollingUpdate.maxUnavailable")
    else:
        errs.append(not_supported("spec.updateStrategy.type", stype, ["OnDelete", "RollingUpdate"]))
    policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    for k in ("whenDeleted", "whenScaled"):
        errs += meta.enum(policy.get(k), f"spec.persistentVolumeClaimRetentionPolicy.{k}", ("Retain", "Delete"))
    errs += meta.nonneg((spec.get("ordinals") or {}).get("start"), "spec.ordinals.start")
    for i, claim in enumerate(spec.get("volumeClaimTemplates") or ()):
        p = f"spec.volumeClaimTemplates[{i}]"
        name = (claim.get("metadata") or {}).get("name") or ""
        if not name:
            errs.append(required(p + ".metadata.name", ""))
        else:
            errs += meta.dns_subdomain(name, p + ".metadata.name")
        # The claim's own rules, re-rooted under the template's path.
        for e in validate_pvc(claim):
            e.field = f"{p}.{e.field}"
            errs.append(e)
    return errs


def validate_stateful_set_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    frozen_new = {k: v for k, v in ns.items() if k not in STS_MUTABLE}
    frozen_old = {k: v for k, v in os_.items() if k not in STS_MUTABLE}
    return [] if frozen_new == frozen_old else [forbidden("spec", STS_UPDATE_MESSAGE)]


def validate_controller_revision(cr: dict) -> list[FieldError]:
    errs = meta.nonneg(cr.get("revision"), "revision")
    if cr.get("data") is None:
        errs.append(required("data", "data is mandatory"))
    return errs


def validate_controller_revision_update(new: dict, old: dict) -> list[FieldError]:
    return meta.immutable(new.get("data"), old.get("data"), "data")


KINDS = {
    ("apps", "Deployment"): Kind(validate_deployment, validate_selector_update),
    ("apps", "ReplicaSet"): Kind(validate_replica_set, validate_selector_update),
    ("apps", "DaemonSet"): Kind(validate_daemon_set, validate_selector_update),
    ("apps", "StatefulSet"): Kind(validate_stateful_set, validate_stateful_set_update, meta.name_is_dns_label),
    ("apps", "ControllerRevision"): Kind(validate_controller_revision, validate_controller_revision_update),
}
