"""The controllers' bootstrap roles: upstream's ``bootstrappolicy/controller_policy.go``.

Every controller the controller manager runs with ``--use-service-account-credentials`` writes as
the service account ``kube-system/<account>``; this module holds, for each account, the
ClusterRole ``system:controller:<account>`` (what that controller needs and nothing more) and the
ClusterRoleBinding of the same name to the service account. `bootstrap.reconcile` creates and
reconciles them at every API server start, like the other bootstrap roles.

`SERVICE_ACCOUNTS` maps our controller names (``--controllers``, `Controller.NAME`) to the
account upstream's kube-controller-manager gives the same controller (several share one, e.g.
``nodeipam``, ``nodelifecycle`` and ``taint-eviction-controller`` all use ``node-controller``,
the three certificate controllers ``certificate-controller``). The controllers kubeling has and
upstream does not (``servicelb``, k3s's) get an account and a role of their own. A controller
mapped to ``None`` runs with the controller manager's own credentials, as upstream's token
controller does (it creates the secrets the others would need).

Reads of the shared informers go through the manager's own client (``system:kube-controller-
manager``, which may list and watch everything); these roles cover what each controller sends
itself: writes, and the gets and lists it does outside the informers.
"""

from __future__ import annotations

ROLE_PREFIX = "system:controller:"

READ = ["get", "list", "watch"]


def _rule(verbs, groups, resources, names=None) -> dict:
    rule = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def events_rule() -> dict:
    """Upstream's eventsRule: write Events in both API groups."""
    return _rule(["create", "update", "patch"], ["", "events.k8s.io"], ["events"])


# our controller name -> the service account it writes as (None: the manager's own identity)
SERVICE_ACCOUNTS: dict[str, str | None] = {
    "garbagecollector": "generic-garbage-collector",
    "namespace": "namespace-controller",
    "serviceaccount": "service-account-controller",
    "serviceaccount-token": None,  # upstream's tokens controller uses the root client
    "root-ca-cert-publisher": "root-ca-cert-publisher",
    "nodeipam": "node-controller",
    "nodelifecycle": "node-controller",
    "taint-eviction-controller": "node-controller",
    "disruption": "disruption-controller",
    "resourcequota": "resourcequota-controller",
    "statefulset": "statefulset-controller",
    "daemonset": "daemon-set-controller",
    "replicaset": "replicaset-controller",
    "replicationcontroller": "replication-controller",
    "deployment": "deployment-controller",
    "job": "job-controller",
    "cronjob": "cronjob-controller",
    "ttl-after-finished": "ttl-after-finished-controller",
    "podgc": "pod-garbage-collector",
    "endpoint": "endpoint-controller",
    "endpointslice": "endpointslice-controller",
    "endpointslice-mirroring": "endpointslicemirroring-controller",
    "clusterrole-aggregation": "clusterrole-aggregation-controller",
    "csrsigning": "certificate-controller",
    "csrapproving": "certificate-controller",
    "csrcleaner": "certificate-controller",
    "certificatesigningrequest-signing-controller": "certificate-controller",
    "certificatesigningrequest-approving-controller": "certificate-controller",
    "certificatesigningrequest-cleaner-controller": "certificate-controller",
    "servicelb": "service-lb-controller",
    "tokencleaner": "token-cleaner",  # its role is namespaced (kube-system), as upstream: bootstrap.ROLES
}

_APPS_EXT = ["apps", "extensions"]

# service account name -> the rules of system:controller:<name>
CONTROLLER_RULES: dict[str, list[dict]] = {
    "clusterrole-aggregation-controller": [
        # full powers on clusterroles, so that it may write any aggregated rule
        _rule(["escalate", "get", "list", "watch", "update", "patch"], ["rbac.authorization.k8s.io"],
              ["clusterroles"]),
    ],
    "cronjob-controller": [
        _rule(["get", "list", "watch", "update"], ["batch"], ["cronjobs"]),
        _rule(["get", "list", "watch", "create", "update", "delete", "patch"], ["batch"], ["jobs"]),
        _rule(["update"], ["batch"], ["cronjobs/status"]),
        _rule(["update"], ["batch"], ["cronjobs/finalizers"]),
        _rule(["list", "watch", "delete"], [""], ["pods"]),
        events_rule(),
    ],
    "daemon-set-controller": [
        _rule(READ, _APPS_EXT, ["daemonsets"]),
        _rule(["update"], _APPS_EXT, ["daemonsets/status"]),
        _rule(["update"], _APPS_EXT, ["daemonsets/finalizers"]),
        _rule(["list", "watch"], [""], ["nodes"]),
        _rule(["list", "watch", "create", "delete", "patch"], [""], ["pods"]),
        _rule(["create"], [""], ["pods/binding"]),
        _rule(["get", "list", "watch", "create", "delete", "update", "patch"], ["apps"], ["controllerrevisions"]),
        events_rule(),
    ],
    "deployment-controller": [
        _rule(["get", "list", "watch", "update"], _APPS_EXT, ["deployments"]),
        _rule(["update"], _APPS_EXT, ["deployments/status"]),
        _rule(["update"], _APPS_EXT, ["deployments/finalizers"]),
        _rule(["get", "list", "watch", "create", "update", "patch", "delete"], _APPS_EXT, ["replicasets"]),
        _rule(["get", "list", "watch", "update"], [""], ["pods"]),
        events_rule(),
    ],
    "disruption-controller": [
        _rule(READ, _APPS_EXT, ["deployments"]),
        _rule(READ, _APPS_EXT, ["replicasets"]),
        _rule(READ, [""], ["replicationcontrollers"]),
        _rule(READ, ["policy"], ["poddisruptionbudgets"]),
        _rule(READ, ["apps"], ["statefulsets"]),
        _rule(["update"], ["policy"], ["poddisruptionbudgets/status"]),
        _rule(["patch", "update"], [""], ["pods/status"]),
        _rule(["get"], ["*"], ["*/scale"]),
        events_rule(),
    ],
    "endpoint-controller": [
        _rule(READ, [""], ["services", "pods"]),
        _rule(["get", "list", "watch", "create", "update", "delete"], [""], ["endpoints"]),
        _rule(["create"], [""], ["endpoints/restricted"]),
        events_rule(),
    ],
    "endpointslice-controller": [
        _rule(READ, [""], ["services", "pods", "nodes"]),
        _rule(["update"], [""], ["services/finalizers"]),
        _rule(["get", "list", "watch", "create", "update", "delete"], ["discovery.k8s.io"], ["endpointslices"]),
        events_rule(),
    ],
    "endpointslicemirroring-controller": [
        _rule(READ, [""], ["services", "endpoints"]),
        _rule(["update"], [""], ["services/finalizers"]),
        _rule(["update"], [""], ["endpoints/finalizers"]),
        _rule(["get", "list", "watch", "create", "update", "delete"], ["discovery.k8s.io"], ["endpointslices"]),
        events_rule(),
    ],
    "generic-garbage-collector": [
        # list/watch, selective gets and updates against any resource
        _rule(["get", "list", "watch", "patch", "update", "delete"], ["*"], ["*"]),
        events_rule(),
    ],
    "job-controller": [
        _rule(["get", "list", "watch", "update", "patch"], ["batch"], ["jobs"]),
        _rule(["update"], ["batch"], ["jobs/status"]),
        _rule(["update"], ["batch"], ["jobs/finalizers"]),
        _rule(["list", "watch", "create", "delete", "patch"], [""], ["pods"]),
        events_rule(),
    ],
    "namespace-controller": [
        _rule(["get", "list", "watch", "delete"], [""], ["namespaces"]),
        _rule(["update"], [""], ["namespaces/finalize", "namespaces/status"]),
        _rule(["get", "list", "watch", "delete", "deletecollection"], ["*"], ["*"]),
    ],
    "node-controller": [
        _rule(["get", "list", "watch", "update", "delete", "patch"], [""], ["nodes"]),
        _rule(["patch", "update"], [""], ["nodes/status"]),
        # used for pod deletion
        _rule(["patch", "update"], [""], ["pods/status"]),
        _rule(["list", "watch", "get", "delete"], [""], ["pods"]),
        events_rule(),
    ],
    "pod-garbage-collector": [
        _rule(["list", "watch", "delete"], [""], ["pods"]),
        _rule(READ, [""], ["nodes"]),
        _rule(["patch"], [""], ["pods/status"]),
    ],
    "replicaset-controller": [
        _rule(["get", "list", "watch", "update"], _APPS_EXT, ["replicasets"]),
        _rule(["update"], _APPS_EXT, ["replicasets/status"]),
        _rule(["update"], _APPS_EXT, ["replicasets/finalizers"]),
        _rule(["list", "watch", "patch", "create", "delete"], [""], ["pods"]),
        events_rule(),
    ],
    "replication-controller": [
        _rule(["get", "list", "watch", "update"], [""], ["replicationcontrollers"]),
        _rule(["update"], [""], ["replicationcontrollers/status"]),
        _rule(["update"], [""], ["replicationcontrollers/finalizers"]),
        _rule(["list", "watch", "patch", "create", "delete"], [""], ["pods"]),
        events_rule(),
    ],
    "resourcequota-controller": [
        # quota counts anything, so it needs full viewing powers
        _rule(["list", "watch"], ["*"], ["*"]),
        _rule(["update"], [""], ["resourcequotas/status"]),
        events_rule(),
    ],
    "service-account-controller": [
        _rule(["create"], [""], ["serviceaccounts"]),
        events_rule(),
    ],
    "statefulset-controller": [
        _rule(["list", "watch"], [""], ["pods"]),
        _rule(READ, ["apps"], ["statefulsets"]),
        _rule(["update"], ["apps"], ["statefulsets/status"]),
        _rule(["update"], ["apps"], ["statefulsets/finalizers"]),
        _rule(["get", "create", "delete", "update", "patch"], [""], ["pods"]),
        _rule(["get", "create", "delete", "update", "patch", "list", "watch"], ["apps"], ["controllerrevisions"]),
        _rule(["get", "create", "list", "watch"], [""], ["persistentvolumeclaims"]),
        # upstream: update and delete; ours also patches a claim's ownerReferences (retention policy)
        _rule(["update", "delete", "patch"], [""], ["persistentvolumeclaims"]),
        _rule(["update"], [""], ["pods/finalizers"]),
        events_rule(),
    ],
    "certificate-controller": [
        _rule(["get", "list", "watch", "delete"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
        _rule(["update"], ["certificates.k8s.io"],
              ["certificatesigningrequests/status", "certificatesigningrequests/approval"]),
        _rule(["approve"], ["certificates.k8s.io"], ["signers"], ["kubernetes.io/kube-apiserver-client-kubelet"]),
        _rule(["sign"], ["certificates.k8s.io"], ["signers"],
              ["kubernetes.io/legacy-unknown", "kubernetes.io/kube-apiserver-client",
               "kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"]),
        _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"]),
        events_rule(),
    ],
    "ttl-after-finished-controller": [
        _rule(["get", "list", "watch", "delete"], ["batch"], ["jobs"]),
        events_rule(),
    ],
    "root-ca-cert-publisher": [
        _rule(["create", "update"], [""], ["configmaps"]),
        events_rule(),
    ],
    # kubeling's own (k3s's servicelb): no upstream twin. It reads LoadBalancer Services and the
    # nodes' addresses and writes the Services' status.loadBalancer.
    "service-lb-controller": [
        _rule(READ, [""], ["services", "nodes"]),
        _rule(["patch", "update"], [""], ["services/status"]),
        events_rule(),
    ],
}


def service_account_for(controller: str) -> str | None:
    """The service account ``controller`` writes as; unknown controllers get ``<name>-controller``
    (which has no role unless one is bound: a Forbidden then says so loudly)."""
    if controller in SERVICE_ACCOUNTS:
        return SERVICE_ACCOUNTS[controller]
    return controller if controller.endswith("-controller") else f"{controller}-controller"


def controller_roles() -> list[dict]:
    """Specs for `bootstrap.CLUSTER_ROLES`: ``system:controller:<account>`` for every account."""
    return [{"name": ROLE_PREFIX + sa, "rules": rules} for sa, rules in CONTROLLER_RULES.items()]


def controller_role_bindings() -> list[dict]:
    """Specs for `bootstrap.CLUSTER_ROLE_BINDINGS`: each role bound to ``kube-system/<account>``."""
    return [{"name": ROLE_PREFIX + sa, "service_accounts": [("kube-system", sa)]} for sa in CONTROLLER_RULES]
