"""The core (``v1``) kinds other than Service/Endpoints and volumes: Pod, PodTemplate,
ReplicationController, ConfigMap, Secret, Namespace, Node, ServiceAccount,
ResourceQuota and LimitRange.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from kubeling.api.errors import FieldError, duplicate, invalid_value, required, too_long
from kubeling.api.validation import meta, util
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import forbidden
from kubeling.api.validation.pod import TAINT_EFFECTS, validate_pod, validate_pod_template, validate_pod_update
from kubeling.api.validation.resources import quantity, validate_resource_list, validate_resource_name

MAX_CONFIG_SIZE = 1024 * 1024  # ConfigMaps and Secrets alike: they are stored in one etcd value
IMMUTABLE_WHEN_SET = "field is immutable when `immutable` is set"
SELECTOR_MISMATCH = "`selector` does not match template `labels`"
REDACTED = "<secret contents redacted>"

# Secret type -> the data keys it needs (any one of them for basic-auth).
SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
QUOTA_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
                "CrossNamespacePodAffinity", "VolumeAttributesClass")
LIMIT_TYPES = ("Pod", "Container", "PersistentVolumeClaim")


# --- Pod, PodTemplate, ReplicationController --------------------------------------------------------

def validate_pod_template_kind(obj: dict) -> list[FieldError]:
    return validate_pod_template(obj.get("template"), "template")


def validate_replication_controller(rc: dict) -> list[FieldError]:
    spec = rc.get("spec") or {}
    errs = meta.nonneg(spec.get("replicas"), "spec.replicas") + meta.nonneg(spec.get("minReadySeconds"),
                                                                              "spec.minReadySeconds")
    selector = spec.get("selector") or {}
    if not selector:
        errs.append(required("spec.selector", ""))
    errs += meta.validate_labels(selector, "spec.selector")
    tmpl = spec.get("template")
    if tmpl is None:
        return errs + [required("spec.template", "")]
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if selector and any(labels.get(k) != v for k, v in selector.items()):
        errs.append(invalid_value("spec.template.metadata.labels", labels, SELECTOR_MISMATCH))
    errs += validate_pod_template(tmpl, "spec.template")
    errs += meta.enum((tmpl.get("spec") or {}).get("restartPolicy"), "spec.template.spec.restartPolicy", ("Always",))
    return errs


# --- ConfigMap and Secret ---------------------------------------------------------------------------

def _keys(data: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for k in data or {}:
        errs += [invalid_value(f"{path}[{k}]", k, m) for m in util.is_config_map_key(k)]
    return errs


def validate_config_map(cm: dict) -> list[FieldError]:
    data, binary = cm.get("data") or {}, cm.get("binaryData") or {}
    errs = _keys(data, "data") + _keys(binary, "binaryData")
    for k in binary:
        if k in data:
            errs.append(invalid_value(f"binaryData[{k}]", k, "duplicate of key present in data"))
    size = sum(len(v.encode() if isinstance(v, str) else b"") for v in data.values()) + \
        sum(len(_decoded(v) or b"") for v in binary.values())
    if size > MAX_CONFIG_SIZE:
        errs.append(too_long("", "", MAX_CONFIG_SIZE))
    return errs


def _immutable_data(new: dict, old: dict, keys: tuple[str, ...]) -> list[FieldError]:
    """Once ``immutable: true`` is stored, neither the flag nor the data may change."""
    if not old.get("immutable"):
        return []
    errs: list[FieldError] = []
    if not new.get("immutable"):
        errs.append(forbidden("immutable", IMMUTABLE_WHEN_SET))
    for k in keys:
        if (new.get(k) or {}) != (old.get(k) or {}):
            errs.append(forbidden(k, IMMUTABLE_WHEN_SET))
    return errs


def validate_config_map_update(new: dict, old: dict) -> list[FieldError]:
    return _immutable_data(new, old, ("data", "binaryData"))


def _decoded(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def validate_secret(secret: dict) -> list[FieldError]:
    data = secret.get("data") or {}
    errs = _keys(data, "data") + _keys(secret.get("stringData"), "stringData")
    total = 0
    for k, v in data.items():
        raw = _decoded(v)
        if raw is None:
            errs.append(invalid_value(f"data[{k}]", REDACTED, "illegal base64 data"))
            continue
        total += len(raw)
    if total > MAX_CONFIG_SIZE:
        errs.append(too_long("data", "", MAX_CONFIG_SIZE))
    stype = secret.get("type") or "Opaque"
    if stype == "kubernetes.io/service-account-token":
        ann = (secret.get("metadata") or {}).get("annotations") or {}
        if not ann.get(SA_NAME_ANNOTATION):
            errs.append(required(f"metadata.annotations[{SA_NAME_ANNOTATION}]", ""))
    elif stype == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            errs.append(required("data[username]", ""))
            errs.append(required("data[password]", ""))
    for key in SECRET_REQUIRED_KEYS.get(stype, ()):
        if key not in data:
            errs.append(required(f"data[{key}]", ""))
    if stype in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
        key = SECRET_REQUIRED_KEYS[stype][0]
        raw = _decoded(data.get(key))
        if raw is not None:
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                errs.append(invalid_value(f"data[{key}]", REDACTED, str(e)))
    return errs


def validate_secret_update(new: dict, old: dict) -> list[FieldError]:
    errs = meta.immutable(new.get("type") or "Opaque", old.get("type") or "Opaque", "type")
    return errs + _immutable_data(new, old, ("data",))


# --- Namespace, Node, ServiceAccount ----------------------------------------------------------------

def validate_namespace(ns: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for f in (ns.get("spec") or {}).get("finalizers") or ():
        # "kubernetes" is the one standard finalizer; anything else must be fully qualified.
        if f == "kubernetes":
            continue
        if "/" not in f:
            errs.append(invalid_value("spec.finalizers", f, "name is neither a standard finalizer name nor is "
                                                             "it fully qualified"))
        else:
            errs += meta.qualified_name(f, "spec.finalizers")
    return errs


def validate_node(node: dict) -> list[FieldError]:
    spec = node.get("spec") or {}
    errs: list[FieldError] = []
    for key in ("podCIDR",):
        if spec.get(key):
            errs += [invalid_value(f"spec.{key}", spec[key], m) for m in util.is_valid_cidr(spec[key])]
    for i, cidr in enumerate(spec.get("podCIDRs") or ()):
        errs += [invalid_value(f"spec.podCIDRs[{i}]", cidr, m) for m in util.is_valid_cidr(cidr)]
    seen: set[tuple] = set()
    for i, t in enumerate(spec.get("taints") or ()):
        p = f"spec.taints[{i}]"
        if not t.get("key"):
            errs.append(required(p + ".key", ""))
        else:
            errs += meta.qualified_name(t["key"], p + ".key")
        if t.get("value"):
            errs += [invalid_value(p + ".value", t["value"], m) for m in util.is_label_value(t["value"])]
        errs += meta.enum(t.get("effect"), p + ".effect", TAINT_EFFECTS, optional=False)
        key = (t.get("key"), t.get("effect"))
        if key in seen:
            errs.append(duplicate(p, t))
        seen.add(key)
    return errs


def validate_service_account(sa: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, s in enumerate(sa.get("secrets") or ()):
        if s.get("name"):
            errs += meta.dns_subdomain(s["name"], f"secrets[{i}].name")
    for i, s in enumerate(sa.get("imagePullSecrets") or ()):
        if not s.get("name"):
            errs.append(required(f"imagePullSecrets[{i}].name", ""))
    return errs


# --- ResourceQuota and LimitRange -------------------------------------------------------------------

def validate_resource_quota(rq: dict) -> list[FieldError]:
    spec = rq.get("spec") or {}
    _, errs = validate_resource_list(spec.get("hard"), "spec.hard")
    for i, scope in enumerate(spec.get("scopes") or ()):
        errs += meta.enum(scope, f"spec.scopes[{i}]", QUOTA_SCOPES, optional=False)
    for i, sel in enumerate((spec.get("scopeSelector") or {}).get("matchExpressions") or ()):
        p = f"spec.scopeSelector.matchExpressions[{i}]"
        errs += meta.enum(sel.get("scopeName"), p + ".scopeName", QUOTA_SCOPES, optional=False)
        errs += meta.enum(sel.get("operator"), p + ".operator", meta.SELECTOR_OPERATORS, optional=False)
    status = rq.get("status") or {}
    for key in ("hard", "used"):
        errs += validate_resource_list(status.get(key), f"status.{key}")[1]
    return errs


def validate_limit_range(lr: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, item in enumerate((lr.get("spec") or {}).get("limits") or ()):
        p = f"spec.limits[{i}]"
        errs += meta.enum(item.get("type"), p + ".type", LIMIT_TYPES, optional=False)
        parsed: dict[str, dict] = {}
        for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            for name in item.get(key) or {}:
                errs += validate_resource_name(name, f"{p}.{key}[{name}]")
            q, qerrs = {}, []
            for name, value in (item.get(key) or {}).items():
                v, e = quantity(value, f"{p}.{key}[{name}]")
                qerrs += e
                if v is not None:
                    q[name] = v
            errs += qerrs
            parsed[key] = q
        mins, maxs = parsed["min"], parsed["max"]
        for name, lo in mins.items():
            hi = maxs.get(name)
            if hi is not None and lo > hi:
                errs.append(invalid_value(f"{p}.min[{name}]", item["min"][name],
                                          f"min value {item['min'][name]} is greater than max value "
                                          f"{item['max'][name]}"))
        for key in ("default", "defaultRequest"):
            for name, v in parsed[key].items():
                if name in maxs and v > maxs[name]:
                    errs.append(invalid_value(f"{p}.{key}[{name}]", item[key][name],
                                              f"{key} value {item[key][name]} is greater than max value "
                                              f"{item['max'][name]}"))
                if name in mins and v < mins[name]:
                    errs.append(invalid_value(f"{p}.{key}[{name}]", item[key][name],
                                              f"min value {item['min'][name]} is greater than {key} value "
                                              f"{item[key][name]}"))
        for name, v in parsed["maxLimitRequestRatio"].items():
            if v < 1:
                raw = item["maxLimitRequestRatio"][name]
                errs.append(invalid_value(f"{p}.maxLimitRequestRatio[{name}]", raw, f"ratio {raw} is less than 1"))
        if item.get("type") == "PersistentVolumeClaim" and not (mins.get("storage") or maxs.get("storage")):
            errs.append(required(f"{p}.min", "either minimum or maximum storage value is required, but neither "
                                             "was provided"))
    return errs


KINDS = {
    ("", "Pod"): Kind(validate_pod, validate_pod_update),
    ("", "PodTemplate"): Kind(validate_pod_template_kind),
    ("", "ReplicationController"): Kind(validate_replication_controller),
    ("", "ConfigMap"): Kind(validate_config_map, validate_config_map_update),
    ("", "Secret"): Kind(validate_secret, validate_secret_update),
    ("", "Namespace"): Kind(validate_namespace, name=meta.name_is_dns_label, namespaced=False),
    ("", "Node"): Kind(validate_node, namespaced=False),
    ("", "ServiceAccount"): Kind(validate_service_account),
    ("", "ResourceQuota"): Kind(validate_resource_quota),
    ("", "LimitRange"): Kind(validate_limit_range),
}
