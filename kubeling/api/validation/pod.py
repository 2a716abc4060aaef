"""PodSpec, pod templates, and the narrow set of changes a pod update may make.

`validate_pod_spec` serves Pods and every workload's pod template;
`validate_pod_template` adds the template's own metadata. A running pod's
spec is immutable except for images, a shorter activeDeadlineSeconds, added
tolerations, removed scheduling gates and the negative-grace-period fix-up;
anything else is reported once, at ``spec``, with upstream's message and a
short diff of what changed.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.affinity import validate_affinity, validate_topology_spread_constraints
from kubeling.api.validation.container import validate_app_probes, validate_container
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.volumes import validate_volumes

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_ACTIVE_DEADLINE = 2 ** 32 - 1

POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")


def validate_tolerations(tols: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, t in enumerate(tols or ()):
        p = f"{path}[{i}]"
        key, op, value, effect = t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "", \
            t.get("effect") or ""
        if key:
            errs += meta.qualified_name(key, p + ".key")
        elif op != "Exists":
            errs.append(invalid_value(p + ".operator", op, "operator must be Exists when `key` is empty, which "
                                                           "means \"match all values and all keys\""))
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.append(invalid_value(p + ".effect", effect, "effect must be 'NoExecute' when "
                                                             "`tolerationSeconds` is set"))
        if op == "Equal":
            errs += [invalid_value(p + ".operator", value, m) for m in util.is_label_value(value)]
        elif op == "Exists":
            if value:
                errs.append(invalid_value(p + ".operator", t, "value must be empty when `operator` is 'Exists'"))
        else:
            errs.append(not_supported(p + ".operator", op, TOLERATION_OPERATORS))
        if effect:
            errs += meta.enum(effect, p + ".effect", TAINT_EFFECTS)
    return errs


def _validate_dns(spec: dict, path: str) -> list[FieldError]:
    errs = meta.enum(spec.get("dnsPolicy"), path + ".dnsPolicy", DNS_POLICIES)
    cfg = spec.get("dnsConfig")
    if spec.get("dnsPolicy") == "None" and cfg is None:
        errs.append(required(path + ".dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
    if cfg:
        ns = cfg.get("nameservers") or []
        if spec.get("dnsPolicy") == "None" and not ns:
            errs.append(required(path + ".dnsConfig.nameservers",
                                 "must provide at least one DNS nameserver when `dnsPolicy` is None"))
        if len(ns) > 3:
            errs.append(invalid_value(path + ".dnsConfig.nameservers", ns, "must not have more than 3 nameservers"))
        for i, n in enumerate(ns):
            errs += [invalid_value(f"{path}.dnsConfig.nameservers[{i}]", n, m) for m in util.is_valid_ip(n)]
        if len(cfg.get("searches") or []) > 32:
            errs.append(invalid_value(path + ".dnsConfig.searches", cfg["searches"], "must not have more than 32 "
                                                                                     "search paths"))
    return errs


def _validate_init_containers(containers: Any, path: str, volumes: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, c in enumerate(containers or ()):
        p = f"{path}[{i}]"
        errs += validate_container(c, p, volumes)
        if not isinstance(c, dict):
            continue
        policy = c.get("restartPolicy")
        if policy == "Always":  # a sidecar: runs alongside the app, so app-container rules apply
            errs += validate_app_probes(c, p)
            continue
        if policy is not None:
            errs.append(not_supported(p + ".restartPolicy", policy, ["Always"]))
        for k in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
            if c.get(k) is not None:
                errs.append(forbidden(f"{p}.{k}", "may not be set for init containers without restartPolicy=Always"))
    return errs


def _validate_app_containers(containers: Any, path: str, volumes: set[str]) -> list[FieldError]:
    if not containers:
        return [required(path, "")]
    errs: list[FieldError] = []
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        errs += validate_container(c, p, volumes)
        if isinstance(c, dict):
            errs += validate_app_probes(c, p)
            if c.get("restartPolicy") is not None:
                errs.append(forbidden(p + ".restartPolicy", "may not be set for non-init containers"))
    return errs


def _unique_container_names(spec: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(key) or ()):
            name = c.get("name") if isinstance(c, dict) else None
            if not name:
                continue
            if name in seen:
                errs.append(duplicate(f"{path}.{key}[{i}].name", name))
            seen.add(name)
    return errs


def validate_pod_spec(spec: Any, path: str = "spec") -> list[FieldError]:
    if not isinstance(spec, dict):
        return [required(path, "")]
    volumes, errs = validate_volumes(spec.get("volumes"), path + ".volumes")
    errs += _validate_init_containers(spec.get("initContainers"), path + ".initContainers", volumes)
    errs += _validate_app_containers(spec.get("containers"), path + ".containers", volumes)
    errs += _unique_container_names(spec, path)
    errs += meta.enum(spec.get("restartPolicy"), path + ".restartPolicy", RESTART_POLICIES)
    errs += _validate_dns(spec, path)
    errs += meta.validate_labels(spec.get("nodeSelector"), path + ".nodeSelector")
    errs += validate_tolerations(spec.get("tolerations"), path + ".tolerations")
    errs += validate_affinity(spec.get("affinity"), path + ".affinity")
    errs += validate_topology_spread_constraints(spec.get("topologySpreadConstraints"),
                                                 path + ".topologySpreadConstraints")
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not (isinstance(ads, int) and 1 <= ads <= MAX_ACTIVE_DEADLINE):
        errs.append(invalid_value(path + ".activeDeadlineSeconds", ads,
                                  f"must be between 1 and {MAX_ACTIVE_DEADLINE}, inclusive"))
    for key in ("serviceAccountName", "nodeName"):
        if spec.get(key):
            errs += meta.dns_subdomain(spec[key], f"{path}.{key}")
    for key in ("hostname", "subdomain"):
        if spec.get(key):
            errs += meta.dns_label(spec[key], f"{path}.{key}")
    for i, s in enumerate(spec.get("imagePullSecrets") or ()):
        if not s.get("name"):
            errs.append(required(f"{path}.imagePullSecrets[{i}].name", ""))
    if spec.get("hostUsers") is False and spec.get("hostNetwork"):
        errs.append(forbidden(path + ".hostNetwork", "when `hostUsers` is false"))
    return errs


def validate_pod_template(tmpl: Any, path: str) -> list[FieldError]:
    """A PodTemplateSpec inside a workload: template labels/annotations and the pod spec."""
    if not isinstance(tmpl, dict):
        return [required(path, "")]
    return meta.validate_template_meta(tmpl.get("metadata"), path + ".metadata") + \
        validate_pod_spec(tmpl.get("spec"), path + ".spec")


def validate_pod(pod: dict) -> list[FieldError]:
    return validate_pod_spec(pod.get("spec"), "spec")


# --- update ----------------------------------------------------------------------------------------

def _diff(old: Any, new: Any, path: str, out: list[str], limit: int = 8) -> None:
    """Leaf-level differences as ``- path: old`` / ``+ path: new`` lines (a few, for the message)."""
    if len(out) >= 2 * limit:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            _diff(old.get(k), new.get(k), f"{path}.{k}", out, limit)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (o, n) in enumerate(zip(old, new)):
            _diff(o, n, f"{path}[{i}]", out, limit)
        return
    if old != new:
        out.append(f"- {path}: {orjson.dumps(old).decode()}")
        out.append(f"+ {path}: {orjson.dumps(new).decode()}")


def _tolerations_only_added(new: list, old: list) -> bool:
    return all(t in new for t in old)


def validate_pod_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    errs: list[FieldError] = []
    new_ads, old_ads = ns.get("activeDeadlineSeconds"), os_.get("activeDeadlineSeconds")
    if old_ads is not None:
        if new_ads is None:
            errs.append(invalid_value("spec.activeDeadlineSeconds", None,
                                      "must not update from a positive integer to nil value"))
        elif isinstance(new_ads, int) and new_ads > old_ads:
            errs.append(invalid_value("spec.activeDeadlineSeconds", new_ads,
                                      "must be less than or equal to previous value"))
    # Put back every field that may change; whatever still differs is forbidden.
    munged = copy.deepcopy(ns)
    for key in ("containers", "initContainers"):
        nl, ol = munged.get(key) or [], os_.get(key) or []
        if len(nl) == len(ol):
            for nc, oc in zip(nl, ol):
                if isinstance(nc, dict) and isinstance(oc, dict) and nc.get("image"):
                    nc["image"] = oc.get("image")
    munged["activeDeadlineSeconds"] = old_ads
    if _tolerations_only_added(ns.get("tolerations") or [], os_.get("tolerations") or []):
        munged["tolerations"] = os_.get("tolerations")
    ngp, ogp = ns.get("terminationGracePeriodSeconds"), os_.get("terminationGracePeriodSeconds")
    if isinstance(ogp, int) and ogp < 0 and ngp == 1:
        munged["terminationGracePeriodSeconds"] = ogp
    if all(g in (os_.get("schedulingGates") or []) for g in ns.get("schedulingGates") or []):
        munged["schedulingGates"] = os_.get("schedulingGates")
    # Ephemeral containers change through their own subresource, never through update.
    munged["ephemeralContainers"] = os_.get("ephemeralContainers")
    if "activeDeadlineSeconds" not in os_:
        munged.pop("activeDeadlineSeconds", None)
    for k in ("tolerations", "schedulingGates", "ephemeralContainers"):
        if k not in os_ and munged.get(k) is None:
            munged.pop(k, None)
    if munged != os_:
        lines: list[str] = []
        _diff(os_, munged, "spec", lines)
        errs.append(forbidden("spec", POD_UPDATE_MESSAGE + "\n" + "\n".join(lines)))
    return errs
