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

The components' roles (upstream's ``policy.go``): ``system:node`` (not bound: the Node
authorizer grants it, and the binding upstream keeps has no subjects), ``system:node-proxier``
(user ``system:kube-proxy``), ``system:kube-scheduler`` and ``system:volume-scheduler`` (user
``system:kube-scheduler``), ``system:kube-controller-manager`` (user
``system:kube-controller-manager``), ``system:kube-dns`` (service account ``kube-system/kube-
dns``), ``system:node-bootstrapper`` and the CSR roles ``system:certificates.k8s.io:*`` (the
node-client ones bound to ``system:bootstrappers`` and, self-renewal, ``system:nodes``),
``system:auth-delegator``, ``system:kubelet-api-admin`` (the API server's kubelet client),
``system:monitoring``, ``system:service-account-issuer-discovery`` (every service account), and
a ``system:controller:<name>`` role per controller (`bootstrap_controllers`). kubeling's own
components have roles named like k3s's: ``system:kubeling-dns`` (the cluster DNS, plus a Role in
``kube-system`` for the ``kube-dns`` Service and endpoints it publishes), ``system:kubeling-
ingress`` (the Ingress controller) and ``system:kubeling-controller`` (the agent's network policy
controller), each bound to the user of the same name.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api import errors
from kubeling.apiserver.rbac import bootstrap_controllers

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


def _events() -> dict:
    return bootstrap_controllers.events_rule()


CERTS = "certificates.k8s.io"
STORAGE = "storage.k8s.io"

# upstream's NodeRules(): what an agent needs; the Node authorizer narrows it to its own objects
_NODE = [
    _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
    _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews", "localsubjectaccessreviews"]),
    _rule(READ, [""], ["services"]),
    _rule(["create", "get", "list", "watch"], [""], ["nodes"]),
    _rule(["update", "patch"], [""], ["nodes/status"]),
    _rule(["update", "patch"], [""], ["nodes"]),
    _rule(["create", "update", "patch"], [""], ["events"]),
    _rule(READ, [""], ["pods"]),
    _rule(["create", "delete"], [""], ["pods"]),
    _rule(["update", "patch"], [""], ["pods/status"]),
    _rule(["create"], [""], ["pods/eviction"]),
    _rule(READ, [""], ["secrets", "configmaps"]),
    _rule(["get"], [""], ["persistentvolumeclaims", "persistentvolumes"]),
    _rule(["get"], [""], ["endpoints"]),
    _rule(["create", "get", "list", "watch"], [CERTS], ["certificatesigningrequests"]),
    _rule(["get", "create", "update", "patch", "delete"], ["coordination.k8s.io"], ["leases"]),
    _rule(["get"], [STORAGE], ["volumeattachments"]),
    _rule(["get", "update", "patch"], [""], ["persistentvolumeclaims/status"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
    _rule(READ, [STORAGE], ["csidrivers"]),
    _rule(["get", "create", "update", "patch", "delete"], [STORAGE], ["csinodes"]),
    _rule(READ, ["node.k8s.io"], ["runtimeclasses"]),
]

_KUBE_SCHEDULER = [
    _events(),
    # leader election
    _rule(["create"], ["coordination.k8s.io"], ["leases"]),
    {**_rule(["get", "update"], ["coordination.k8s.io"], ["leases"]), "resourceNames": ["kube-scheduler"]},
    _rule(["create"], [""], ["endpoints"]),
    {**_rule(["get", "update"], [""], ["endpoints"]), "resourceNames": ["kube-scheduler"]},
    # fundamental resources
    _rule(READ, [""], ["nodes"]),
    _rule(["get", "list", "watch", "delete"], [""], ["pods"]),
    _rule(["create"], [""], ["pods/binding", "bindings"]),
    _rule(["patch", "update"], [""], ["pods/status"]),
    # things that select pods
    _rule(READ, [""], ["services", "replicationcontrollers"]),
    _rule(READ, ["apps", "extensions"], ["replicasets"]),
    _rule(READ, ["apps"], ["statefulsets"]),
    # things that pods use or that apply to them
    _rule(READ, ["policy"], ["poddisruptionbudgets"]),
    _rule(READ, [""], ["persistentvolumeclaims", "persistentvolumes"]),
    # API access checks (non-mutating creates)
    _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
    _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
    _rule(READ, [STORAGE], ["csinodes"]),
    # namespaceSelector of inter-pod affinity and topology spread
    _rule(READ, [""], ["namespaces"]),
    _rule(READ, [STORAGE], ["csidrivers"]),
    _rule(READ, [STORAGE], ["csistoragecapacities"]),
]

_KUBE_CONTROLLER_MANAGER = [
    _events(),
    # leader election
    _rule(["create"], ["coordination.k8s.io"], ["leases"]),
    {**_rule(["get", "update"], ["coordination.k8s.io"], ["leases"]), "resourceNames": ["kube-controller-manager"]},
    _rule(["create"], [""], ["endpoints"]),
    {**_rule(["get", "update"], [""], ["endpoints"]), "resourceNames": ["kube-controller-manager"]},
    # the service accounts and secrets that give every other controller its own identity
    _rule(["create"], [""], ["secrets", "serviceaccounts"]),
    _rule(["delete"], [""], ["secrets"]),
    _rule(["get"], [""], ["namespaces", "secrets", "serviceaccounts", "configmaps"]),
    _rule(["update"], [""], ["secrets", "serviceaccounts"]),
    _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
    _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
    # every shared informer
    _rule(["list", "watch"], ["*"], ["*"]),
    _rule(["create"], [""], ["serviceaccounts/token"]),
]

# kubeling's cluster DNS (upstream's CoreDNS manifests' system:coredns)
_KUBELING_DNS = [
    _rule(["list", "watch"], [""], ["endpoints", "services", "pods", "namespaces"]),
    _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
]
# ... and in kube-system, the kube-dns Service and the endpoints that name this DNS
_KUBELING_DNS_PUBLISH = [
    _rule(["get", "create", "update", "patch"], [""], ["services", "endpoints"]),
    _rule(["get", "create", "update", "patch"], ["discovery.k8s.io"], ["endpointslices"]),
]

# kubeling's Ingress controller (as an ingress-nginx or Traefik deployment's role)
_KUBELING_INGRESS = [
    _rule(READ, [""], ["services", "secrets", "endpoints"]),
    _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
    _rule(READ, ["networking.k8s.io"], ["ingresses", "ingressclasses"]),
    _rule(["create"], ["networking.k8s.io"], ["ingressclasses"]),
    _rule(["update", "patch"], ["networking.k8s.io"], ["ingresses/status"]),
    _events(),
]

# the agent's network policy controller (k3s's system:k3s-controller)
_KUBELING_CONTROLLER = [
    _rule(READ, [""], ["nodes"]),
    _rule(["list", "watch"], [""], ["namespaces", "pods", "services", "endpoints"]),
    _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
    _rule(["list", "watch"], ["networking.k8s.io"], ["networkpolicies"]),
    _events(),
]


def _approver(signer: str) -> dict:
    return {"name": f"system:certificates.k8s.io:{signer.split('/', 1)[1]}-approver",
            "rules": [{**_rule(["approve"], [CERTS], ["signers"]), "resourceNames": [signer]}]}


CLUSTER_ROLES += [
    {"name": "system:node", "rules": _NODE},
    {"name": "system:node-proxier", "rules": [
        _rule(["list", "watch"], [""], ["services", "endpoints"]),
        _rule(READ, [""], ["nodes"]),
        _events(),
        _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"])]},
    {"name": "system:node-problem-detector", "rules": [
        _rule(["get"], [""], ["nodes"]), _rule(["patch"], [""], ["nodes/status"]), _events()]},
    {"name": "system:kubelet-api-admin", "rules": [
        _rule(READ, [""], ["nodes"]),
        _rule(["proxy"], [""], ["nodes"]),
        _rule(["*"], [""], ["nodes/proxy", "nodes/metrics", "nodes/spec", "nodes/stats", "nodes/log"])]},
    {"name": "system:node-bootstrapper", "rules": [
        _rule(["create", "get", "list", "watch"], [CERTS], ["certificatesigningrequests"])]},
    {"name": "system:auth-delegator", "rules": [
        _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
        _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"])]},
    {"name": "system:kube-aggregator", "rules": [_rule(READ, [""], ["services", "endpoints"])]},
    {"name": "system:kube-controller-manager", "rules": _KUBE_CONTROLLER_MANAGER},
    {"name": "system:kube-dns", "rules": [_rule(["list", "watch"], [""], ["endpoints", "services"])]},
    {"name": "system:persistent-volume-provisioner", "rules": [
        _rule(["get", "list", "watch", "create", "delete"], [""], ["persistentvolumes"]),
        _rule(["get", "list", "watch", "update"], [""], ["persistentvolumeclaims"]),
        _rule(READ, [STORAGE], ["storageclasses"]),
        _rule(["watch"], [""], ["events"]),
        _events()]},
    {"name": "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "rules": [
        _rule(["create"], [CERTS], ["certificatesigningrequests/nodeclient"])]},
    {"name": "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "rules": [
        _rule(["create"], [CERTS], ["certificatesigningrequests/selfnodeclient"])]},
    {"name": "system:volume-scheduler", "rules": [
        _rule(READ + ["update"], [""], ["persistentvolumes"]),
        _rule(READ, [STORAGE], ["storageclasses"]),
        _rule(READ + ["update"], [""], ["persistentvolumeclaims"])]},
    {"name": "system:certificates.k8s.io:legacy-unknown-approver", "rules": [
        {**_rule(["approve"], [CERTS], ["signers"]), "resourceNames": ["kubernetes.io/legacy-unknown"]}]},
    _approver("kubernetes.io/kubelet-serving"),
    _approver("kubernetes.io/kube-apiserver-client"),
    _approver("kubernetes.io/kube-apiserver-client-kubelet"),
    {"name": "system:service-account-issuer-discovery", "rules": [
        _urls(["get"], ["/.well-known/openid-configuration", "/openid/v1/jwks"])]},
    {"name": "system:monitoring", "rules": [
        _urls(["get"], ["/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz", "/livez/*", "/readyz/*",
                        "/healthz/*"])]},
    {"name": "system:kube-scheduler", "rules": _KUBE_SCHEDULER},
    {"name": "system:kubeling-dns", "rules": _KUBELING_DNS},
    {"name": "system:kubeling-ingress", "rules": _KUBELING_INGRESS},
    {"name": "system:kubeling-controller", "rules": _KUBELING_CONTROLLER},
    *bootstrap_controllers.controller_roles(),
]

# name (and roleRef, unless "role" says otherwise) -> subjects: groups, users, service accounts
CLUSTER_ROLE_BINDINGS: list[dict] = [
    {"name": "cluster-admin", "groups": ["system:masters"]},
    {"name": "system:discovery", "groups": ["system:authenticated"]},
    {"name": "system:basic-user", "groups": ["system:authenticated"]},
    {"name": "system:public-info-viewer", "groups": ["system:authenticated", "system:unauthenticated"]},
    {"name": "system:node-proxier", "users": ["system:kube-proxy"]},
    {"name": "system:kube-controller-manager", "users": ["system:kube-controller-manager"]},
    {"name": "system:kube-dns", "service_accounts": [("kube-system", "kube-dns")]},
    {"name": "system:kube-scheduler", "users": ["system:kube-scheduler"]},
    {"name": "system:volume-scheduler", "users": ["system:kube-scheduler"]},
    # upstream keeps this binding with no subjects: the Node authorizer grants system:node
    {"name": "system:node"},
    {"name": "system:monitoring", "groups": ["system:monitoring"]},
    {"name": "system:service-account-issuer-discovery", "groups": ["system:serviceaccounts"]},
    # the join flow (kubeadm's kubelet-bootstrap, node-autoapprove-bootstrap and
    # node-autoapprove-certificate-rotation bindings, under upstream's role names)
    {"name": "system:node-bootstrapper", "groups": ["system:bootstrappers"]},
    {"name": "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "groups": ["system:bootstrappers"]},
    {"name": "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "groups": ["system:nodes"]},
    # the API server's client certificate to node agents (kubeadm/k3s bind it the same way)
    {"name": "system:kubelet-api-admin", "users": ["kube-apiserver-kubelet-client"]},
    {"name": "system:kubeling-dns", "users": ["system:kubeling-dns"]},
    {"name": "system:kubeling-ingress", "users": ["system:kubeling-ingress"]},
    {"name": "system:kubeling-controller", "users": ["system:kubeling-controller"]},
    *bootstrap_controllers.controller_role_bindings(),
]

# namespaced Roles and RoleBindings (upstream's NamespaceRoles/NamespaceRoleBindings)
ROLES: list[dict] = [
    {"namespace": "kube-system", "name": "system:kubeling-dns", "rules": _KUBELING_DNS_PUBLISH},
    # upstream's token cleaner: expired bootstrap token Secrets, in kube-system only
    {"namespace": "kube-system", "name": "system:controller:token-cleaner",
     "rules": [_rule(["delete", "get", "list", "watch"], [""], ["secrets"]), _events()]},
]
ROLE_BINDINGS: list[dict] = [
    {"namespace": "kube-system", "name": "system:kubeling-dns", "users": ["system:kubeling-dns"]},
    {"namespace": "kube-system", "name": "system:controller:token-cleaner",
     "service_accounts": [("kube-system", "token-cleaner")]},
]


def _meta(name: str, labels: dict | None = None) -> dict:
    return {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})}, "annotations": {AUTOUPDATE: "true"}}


def _role(kind: str, spec: dict) -> dict:
    obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": _meta(spec["name"], spec.get("labels")),
           "rules": copy.deepcopy(spec["rules"])}
    if spec.get("namespace"):
        obj["metadata"]["namespace"] = spec["namespace"]
    if "aggregationRule" in spec:
        obj["aggregationRule"] = copy.deepcopy(spec["aggregationRule"])
    return obj


def _subjects(spec: dict) -> list[dict]:
    return ([{"apiGroup": GROUP, "kind": "Group", "name": g} for g in spec.get("groups", ())]
            + [{"apiGroup": GROUP, "kind": "User", "name": u} for u in spec.get("users", ())]
            + [{"kind": "ServiceAccount", "namespace": ns, "name": n} for ns, n in spec.get("service_accounts", ())])


def _binding(kind: str, role_kind: str, spec: dict) -> dict:
    obj = {"apiVersion": API_VERSION, "kind": kind, "metadata": _meta(spec["name"]),
           "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": spec.get("role", spec["name"])},
           "subjects": _subjects(spec)}
    if spec.get("namespace"):
        obj["metadata"]["namespace"] = spec["namespace"]
    return obj


def cluster_roles() -> list[dict]:
    return [_role("ClusterRole", spec) for spec in CLUSTER_ROLES]


def cluster_role_bindings() -> list[dict]:
    return [_binding("ClusterRoleBinding", "ClusterRole", spec) for spec in CLUSTER_ROLE_BINDINGS]


def roles() -> list[dict]:
    return [_role("Role", spec) for spec in ROLES]


def role_bindings() -> list[dict]:
    return [_binding("RoleBinding", "Role", spec) for spec in ROLE_BINDINGS]


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
        if not any(h.get("kind") == s["kind"] and h.get("name") == s["name"]
                   and h.get("namespace", "") == s.get("namespace", "") for h in have):
            have.append(s)
            changed = True
    return out if changed else None


async def reconcile(api) -> None:
    """Create or reconcile every bootstrap ClusterRole and ClusterRoleBinding (see the module
    docstring). One failing object is logged, not fatal."""
    from kubeling.apiserver.registry import Context

    ctx = Context(user="system:apiserver", groups=("system:masters",), field_manager="kube-apiserver")
    for resource, objects, fix in (("clusterroles", cluster_roles(), reconcile_role),
                                   ("clusterrolebindings", cluster_role_bindings(), reconcile_binding),
                                   ("roles", roles(), reconcile_role),
                                   ("rolebindings", role_bindings(), reconcile_binding)):
        served = api.lookup(GROUP, "v1", resource)
        for wanted in objects:
            name = wanted["metadata"]["name"]
            try:
                await _reconcile_one(api, served, wanted, fix, ctx)
            except errors.StatusError as e:
                log.warning("RBAC bootstrap: %s %s: %s", resource, name, e)


async def _reconcile_one(api, served, wanted: dict, fix, ctx) -> None:
    from kubeling.apiserver.registry import Context

    name = wanted["metadata"]["name"]
    namespace = wanted["metadata"].get("namespace")
    if namespace:
        ctx = Context(user=ctx.user, groups=ctx.groups, field_manager=ctx.field_manager, namespace=namespace)
    try:
        existing = await api.registry.get_raw(served, namespace, name)
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
    if served.res.kind in ("ClusterRoleBinding", "RoleBinding") and existing.get("roleRef") != wanted["roleRef"]:
        # roleRef is immutable: recreate with the subjects it had plus ours
        await api.registry.delete(served, namespace, name, {}, ctx)
        merged = copy.deepcopy(wanted)
        merged["subjects"] = (reconcile_binding(existing, wanted) or existing).get("subjects", [])
        await api.registry.create(served, merged, ctx)
        return
    updated = fix(existing, wanted)
    if updated is not None:
        await api.registry.update(served, namespace, name, updated, ctx)
        log.info("RBAC bootstrap: reconciled %s %s", served.res.kind, name)
