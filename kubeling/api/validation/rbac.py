"""rbac.authorization.k8s.io/v1: Role, ClusterRole, RoleBinding, ClusterRoleBinding.

RBAC names end up as URL path segments in authorization decisions, so they
follow the path-segment rule rather than DNS rules.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta
from kubeling.api.validation.kind import Kind

GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def validate_policy_rules(rules: Any, path: str, *, namespaced: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, rule in enumerate(rules or ()):
        p = f"{path}[{i}]"
        if not rule.get("verbs"):
            errs.append(required(p + ".verbs", "verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                errs.append(invalid_value(p + ".nonResourceURLs", urls,
                                          "namespaced rules cannot apply to non-resource URLs"))
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errs.append(invalid_value(p + ".nonResourceURLs", urls,
                                          "rules cannot apply to both regular resources and non-resource URLs"))
            continue
        if not rule.get("apiGroups"):
            errs.append(required(p + ".apiGroups", "resource rules must supply at least one api group"))
        if not rule.get("resources"):
            errs.append(required(p + ".resources", "resource rules must supply at least one resource"))
    return errs


def validate_role(role: dict) -> list[FieldError]:
    return validate_policy_rules(role.get("rules"), "rules", namespaced=True)


def validate_cluster_role(role: dict) -> list[FieldError]:
    errs = validate_policy_rules(role.get("rules"), "rules", namespaced=False)
    agg = role.get("aggregationRule")
    if agg is not None:
        for i, sel in enumerate(agg.get("clusterRoleSelectors") or ()):
            errs += meta.validate_label_selector(sel, f"aggregationRule.clusterRoleSelectors[{i}]")
    return errs


def _role_ref(ref: Any, kinds: tuple[str, ...]) -> list[FieldError]:
    ref = ref or {}
    errs: list[FieldError] = []
    if ref.get("apiGroup") != GROUP:
        errs.append(not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP]))
    if ref.get("kind") not in kinds:
        errs.append(not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    name = ref.get("name") or ""
    if not name:
        errs.append(required("roleRef.name", ""))
    else:
        errs += [invalid_value("roleRef.name", name, m) for m in meta.name_is_path_segment(name, False)]
    return errs


def _subjects(subjects: Any, *, cluster: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, s in enumerate(subjects or ()):
        p = f"subjects[{i}]"
        kind, name = s.get("kind"), s.get("name") or ""
        if not name:
            errs.append(required(p + ".name", ""))
        if kind == "ServiceAccount":
            if s.get("apiGroup"):
                errs.append(not_supported(p + ".apiGroup", s["apiGroup"], [""]))
            if name:
                errs += meta.dns_subdomain(name, p + ".name")
            if cluster and not s.get("namespace"):
                errs.append(required(p + ".namespace", ""))
        elif kind in ("User", "Group"):
            if s.get("apiGroup") != GROUP:
                errs.append(not_supported(p + ".apiGroup", s.get("apiGroup", ""), [GROUP]))
        else:
            errs.append(not_supported(p + ".kind", kind or "", SUBJECT_KINDS))
    return errs


def validate_role_binding(rb: dict) -> list[FieldError]:
    return _role_ref(rb.get("roleRef"), ("Role", "ClusterRole")) + _subjects(rb.get("subjects"), cluster=False)


def validate_cluster_role_binding(crb: dict) -> list[FieldError]:
    return _role_ref(crb.get("roleRef"), ("ClusterRole",)) + _subjects(crb.get("subjects"), cluster=True)


def validate_binding_update(new: dict, old: dict) -> list[FieldError]:
    # A binding's grant is its roleRef: changing it would silently re-purpose the binding.
    if old.get("roleRef") != new.get("roleRef"):
        return [invalid_value("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


_NAME = meta.name_is_path_segment
KINDS = {
    (GROUP, "Role"): Kind(validate_role, name=_NAME),
    (GROUP, "ClusterRole"): Kind(validate_cluster_role, name=_NAME, namespaced=False),
    (GROUP, "RoleBinding"): Kind(validate_role_binding, validate_binding_update, name=_NAME),
    (GROUP, "ClusterRoleBinding"): Kind(validate_cluster_role_binding, validate_binding_update, name=_NAME,
                                        namespaced=False),
}
