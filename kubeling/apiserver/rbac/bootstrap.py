"""The bootstrap RBAC policy (upstream's ``plugin/pkg/auth/authorizer/rbac/bootstrappolicy`` and
the API server's ``rbac/bootstrap-roles`` post-start hook), reconciled at every start.

Roles: ``cluster-admin``; the user-facing ``admin``, ``edit`` and ``view``, which carry no rules
of their own but an ``aggregationRule`` (the ``clusterrole-aggregation`` controller fills their
rules from the ClusterRoles labelled ``rbac.authorization.k8s.io/aggregate-to-<role>: "true"``,
starting with ``system:aggregate-to-admin``/``-edit``/``-view``; ``edit`` aggregates into
``admin`` and ``view`` into ``edit``); ``system:basic-user`` (self access reviews),
``system:discovery`` (discovery and OpenAPI) and ``system:public-info-viewer`` (health and
version). ClusterRoleBindings: ``cluster-admin`` to ``system:masters``; ``system:basic-user`` and
``system:discovery`` to ``system:authenticated``; ``system:public-info-viewer`` to
``system:authenticated`` and ``system:unauthenticated``.

Every object carries the label ``kubernetes.io/bootstrapping: rbac-defaults`` and the annotation
``rbac.authorization.kubernetes.io/autoupdate: "true"``. At start (`reconcile`), as upstream's
reconciliation without removal of extras: a missing object is created; an existing one whose
annotation is not ``"false"`` gets back any missing rule (or aggregation selector, for an
aggregated role), subject, label and annotation, keeping what was added; a binding whose
``roleRef`` differs is recreated (roleRef is immutable). ``autoupdate: "false"`` leaves the
object as the administrator made it.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api import errors

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAP_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = READ + WRITE


def _rule(verbs, groups, resources) -> dict:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _urls(verbs, urls) -> dict:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _aggregated(name: str, extra_labels: dict | None = None) -> dict:
    return {"name": name, "labels": extra_labels or {}, "rules": [],
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + name: "true"}}]}}


# The read-only resources a namespace user may see (the aggregate-to-view set).
_VIEW = [
    _rule(READ, [""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                       "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                       "services/status"]),
    _rule(READ, [""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                       "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]),
    _rule(READ, [""], ["namespaces"]),
    _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _rule(READ, ["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                           "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                           "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"]),
    _rule(READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    _rule(READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    _rule(READ, ["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                                 "deployments/status", "ingresses", "ingresses/status", "networkpolicies",
                                 "replicasets", "replicasets/scale", "replicasets/status",
                                 "replicationcontrollers/scale"]),
    _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    _rule(READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
]

# What edit adds: writes to the workload resources, secrets, and acting as service accounts.
_EDIT = [
    _rule(READ, [""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
    _rule(["impersonate"], [""], ["serviceaccounts"]),
    _rule(WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(WRITE, [""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                        "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(WRITE, ["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                            "replicasets/scale", "statefulsets", "statefulsets/scale"]),
    _rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
    _rule(WRITE, ["batch"], ["cronjobs", "jobs"]),
    _rule(WRITE, ["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                                  "ingresses", "networkpolicies", "replicasets", "replicasets/scale",
                                  "replicationcontrollers/scale"]),
    _rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
    _rule(WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
]

# What admin adds: managing access within the namespace.
_ADMIN = [
    _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    _rule(READ_WRITE, [GROUP], ["rolebindings", "roles"]),
]

CLUSTER_ROLES: list[dict] = [
    {"name": "cluster-admin", "rules": [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]},
    {"name": "system:discovery", "rules": [_urls(["get"], [
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
        "/version", "/version/"])]},
    {"name": "system:basic-user", "rules": [
        _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])]},
    {"name": "system:public-info-viewer", "rules": [_urls(["get"], [
        "/healthz", "/livez", "/readyz", "/version", "/version/"])]},
    _aggregated("admin"),
    _aggregated("edit", {AGGREGATE_TO + "admin": "true"}),
    _aggregated("view", {AGGREGATE_TO + "edit": "true"}),
    {"name": "system:aggregate-to-admin", "labels": {AGGREGATE_TO + "admin": "true"}, "rules": _ADMIN},
    {"name": "system:aggregate-to-edit", "labels": {AGGREGATE_TO + "edit": "true"}, "rules": _EDIT},
    {"name": "system:aggregate-to-view", "labels": {AGGREGATE_TO + "view": "true"}, "rules": _VIEW},
]

CLUSTER_ROLE_BINDINGS: list[dict] = [
    {"name": "cluster-admin", "groups": ["system:masters"]},
    {"name": "system:discovery", "groups": ["system:authenticated"]},
    {"name": "system:basic-user", "groups": ["system:authenticated"]},
    {"name": "system:public-info-viewer", "groups": ["system:authenticated", "system:unauthenticated"]},
]


def _meta(name: str, labels: dict | None = None) -> dict:
    return {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})}, "annotations": {AUTOUPDATE: "true"}}


def cluster_roles() -> list[dict]:
    out = []
    for spec in CLUSTER_ROLES:
        obj = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": _meta(spec["name"], spec.get("labels")),
               "rules": copy.deepcopy(spec["rules"])}
        if "aggregationRule" in spec:
            obj["aggregationRule"] = copy.deepcopy(spec["aggregationRule"])
        out.append(obj)
    return out


def cluster_role_bindings() -> list[dict]:
    return [{"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": _meta(spec["name"]),
             "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": spec["name"]},
             "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in spec["groups"]]}
            for spec in CLUSTER_ROLE_BINDINGS]


def _merge_meta(existing: dict, wanted: dict) -> bool:
    changed = False
    meta = existing.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        have = meta.get(key) or {}
        for k, v in (wanted["metadata"].get(key) or {}).items():
            if k not in have:
                have[k] = v
                changed = True
        if have:
            meta[key] = have
    return changed


def reconcile_role(existing: dict, wanted: dict) -> dict | None:
    """The updated ClusterRole, or None when nothing is missing (extras are kept)."""
    out = copy.deepcopy(existing)
    changed = _merge_meta(out, wanted)
    if wanted.get("aggregationRule"):
        have = out.setdefault("aggregationRule", {}).setdefault("clusterRoleSelectors", [])
        for sel in wanted["aggregationRule"]["clusterRoleSelectors"]:
            if sel not in have:
                have.append(sel)
                changed = True
    else:
        have = out.setdefault("rules", [])
        for rule in wanted["rules"]:
            if rule not in have:
                have.append(rule)
                changed = True
    return out if changed else None


def reconcile_binding(existing: dict, wanted: dict) -> dict | None:
    out = copy.deepcopy(existing)
    changed = _merge_meta(out, wanted)
    have = out.setdefault("subjects", [])
    for s in wanted["subjects"]:
        if not any(h.get("kind") == s["kind"] and h.get("name") == s["name"] for h in have):
            have.append(s)
            changed = True
    return out if changed else None


async def reconcile(api) -> None:
    """Create or reconcile every bootstrap ClusterRole and ClusterRoleBinding (see the module
    docstring). One failing object is logged, not fatal."""
    from kubeling.apiserver.registry import Context

    ctx = Context(user="system:apiserver", groups=("system:masters",), field_manager="kube-apiserver")
    for resource, objects, fix in (("clusterroles", cluster_roles(), reconcile_role),
                                   ("clusterrolebindings", cluster_role_bindings(), reconcile_binding)):
        served = api.lookup(GROUP, "v1", resource)
        for wanted in objects:
            name = wanted["metadata"]["name"]
            try:
                await _reconcile_one(api, served, wanted, fix, ctx)
            except errors.StatusError as e:
                log.warning("RBAC bootstrap: %s %s: %s", resource, name, e)


async def _reconcile_one(api, served, wanted: dict, fix, ctx) -> None:
    name = wanted["metadata"]["name"]
    try:
        existing = await api.registry.get_raw(served, None, name)
    except errors.StatusError as e:
        if e.code != 404:
            raise
        try:
            await api.registry.create(served, copy.deepcopy(wanted), ctx)
            log.info("RBAC bootstrap: created %s %s", served.res.kind, name)
        except errors.StatusError as e2:
            if e2.reason != "AlreadyExists":
                raise
        return
    if ((existing.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE) == "false":
        return
    if served.res.kind == "ClusterRoleBinding" and existing.get("roleRef") != wanted["roleRef"]:
        # roleRef is immutable: recreate with the subjects it had plus ours
        await api.registry.delete(served, None, name, {}, ctx)
        merged = copy.deepcopy(wanted)
        merged["subjects"] = (reconcile_binding(existing, wanted) or existing).get("subjects", [])
        await api.registry.create(served, merged, ctx)
        return
    updated = fix(existing, wanted)
    if updated is not None:
        await api.registry.update(served, None, name, updated, ctx)
        log.info("RBAC bootstrap: reconciled %s %s", served.res.kind, name)
