"""apiextensions.k8s.io/v1 CustomResourceDefinition.

A CRD's name is ``<plural>.<group>``; it has versions with unique DNS-1035
names, exactly one of them the storage version and at least one served, and
in v1 every version carries a structural OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from kubeling.api import structural
from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.kind import Kind

SCOPES = ("Cluster", "Namespaced")
CONVERSION_STRATEGIES = ("None", "Webhook")
COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")


def _dns1035(value: Any, path: str) -> list[FieldError]:
    if not isinstance(value, str):
        return [invalid_value(path, value, "must be a string")]
    return [invalid_value(path, value, m) for m in util.is_dns1035_label(value)]


def _names(names: Any, path: str) -> list[FieldError]:
    names = names or {}
    errs: list[FieldError] = []
    plural = names.get("plural") or ""
    if not plural:
        errs.append(required(path + ".plural", ""))
    else:
        errs += _dns1035(plural, path + ".plural")
    if names.get("singular"):
        errs += _dns1035(names["singular"], path + ".singular")
    kind = names.get("kind") or ""
    if not kind:
        errs.append(required(path + ".kind", ""))
    else:
        errs += [invalid_value(path + ".kind", kind, m) for m in util.is_dns1035_label(kind.lower())]
    list_kind = names.get("listKind") or ""
    if not list_kind:
        errs.append(required(path + ".listKind", ""))
    else:
        errs += [invalid_value(path + ".listKind", list_kind, m) for m in util.is_dns1035_label(list_kind.lower())]
        if list_kind == kind:
            errs.append(invalid_value(path + ".listKind", list_kind, "kind and listKind may not be the same"))
    for key in ("shortNames", "categories"):
        for i, v in enumerate(names.get(key) or ()):
            errs += _dns1035(v, f"{path}.{key}[{i}]")
    return errs


def _columns(cols: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, c in enumerate(cols or ()):
        p = f"{path}[{i}]"
        if not c.get("name"):
            errs.append(required(p + ".name", ""))
        if not c.get("type"):
            errs.append(required(p + ".type", ""))
        elif c["type"] not in COLUMN_TYPES:
            errs.append(not_supported(p + ".type", c["type"], COLUMN_TYPES))
        if not c.get("jsonPath"):
            errs.append(required(p + ".jsonPath", ""))
        if c.get("priority") is not None:
            errs += meta.nonneg(c["priority"], p + ".priority")
    return errs


def _scale(scale: Any, path: str) -> list[FieldError]:
    if scale is None:
        return []
    errs: list[FieldError] = []
    spec_path = scale.get("specReplicasPath") or ""
    if not spec_path:
        errs.append(required(path + ".specReplicasPath", ""))
    elif not spec_path.startswith(".spec."):
        errs.append(invalid_value(path + ".specReplicasPath", spec_path, "should be a json path under .spec"))
    status_path = scale.get("statusReplicasPath") or ""
    if not status_path:
        errs.append(required(path + ".statusReplicasPath", ""))
    elif not status_path.startswith(".status."):
        errs.append(invalid_value(path + ".statusReplicasPath", status_path,
                                  "should be a json path under .status"))
    return errs


def _version(v: dict, path: str) -> list[FieldError]:
    errs = _dns1035(v.get("name") or "", path + ".name")
    schema = (v.get("schema") or {}).get("openAPIV3Schema")
    sp = path + ".schema.openAPIV3Schema"
    if schema is None:
        errs.append(required(sp, "schemas are required"))
    else:
        errs += structural.is_structural(schema, sp)
    errs += _columns(v.get("additionalPrinterColumns"), path + ".additionalPrinterColumns")
    errs += _scale((v.get("subresources") or {}).get("scale"), path + ".subresources.scale")
    return errs


def validate_crd(crd: dict) -> list[FieldError]:
    spec = crd.get("spec") or {}
    errs: list[FieldError] = []
    group = spec.get("group") or ""
    if not group:
        errs.append(required("spec.group", ""))
    else:
        errs += meta.dns_subdomain(group, "spec.group")
        if "." not in group:
            errs.append(invalid_value("spec.group", group, "should be a domain with at least one dot"))
    names = spec.get("names") or {}
    name = (crd.get("metadata") or {}).get("name") or ""
    if name and names.get("plural") and group and name != f"{names['plural']}.{group}":
        errs.append(invalid_value("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    errs += meta.enum(spec.get("scope"), "spec.scope", SCOPES, optional=False)
    errs += _names(names, "spec.names")
    versions = spec.get("versions") or []
    if not versions:
        errs.append(invalid_value("spec.versions", versions, "must have exactly one version marked as storage "
                                                             "version"))
    seen: set[str] = set()
    for i, v in enumerate(versions):
        errs += _version(v, f"spec.versions[{i}]")
        if v.get("name") in seen:
            errs.append(invalid_value("spec.versions", [x.get("name") for x in versions],
                                      "must contain unique version names"))
        seen.add(v.get("name"))
    if versions:
        if sum(1 for v in versions if v.get("storage")) != 1:
            errs.append(invalid_value("spec.versions", [v.get("name") for v in versions],
                                      "must have exactly one version marked as storage version"))
        if not any(v.get("served") for v in versions):
            errs.append(invalid_value("spec.versions", [v.get("name") for v in versions],
                                      "must have at least one served version"))
    conv = spec.get("conversion") or {}
    errs += meta.enum(conv.get("strategy"), "spec.conversion.strategy", CONVERSION_STRATEGIES)
    if conv.get("strategy") == "Webhook" and not conv.get("webhook"):
        errs.append(required("spec.conversion.webhook", "required when strategy is set to Webhook"))
    return errs


def validate_crd_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    errs = meta.immutable(ns.get("scope"), os_.get("scope"), "spec.scope")
    errs += meta.immutable(ns.get("group"), os_.get("group"), "spec.group")
    # A version still holding stored objects cannot disappear: they could no longer be read.
    stored = (old.get("status") or {}).get("storedVersions") or []
    names = {v.get("name") for v in ns.get("versions") or ()}
    for i, sv in enumerate(stored):
        if sv not in names:
            errs.append(invalid_value(f"status.storedVersions[{i}]", sv, "must appear in spec.versions"))
    return errs


KINDS = {
    ("apiextensions.k8s.io", "CustomResourceDefinition"): Kind(validate_crd, validate_crd_update, namespaced=False),
}
