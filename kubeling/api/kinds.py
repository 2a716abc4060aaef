"""The table of built-in API resources: group, version, kind, scope, names, subresources.

This is the single source for discovery, OpenAPI paths, storage keys and kubectl's
short names. Custom resources (CRDs) are added at runtime as `Resource` values
with ``crd=True`` by the apiserver's CRD registry; nothing here knows about them.

A `Resource` names the REST *resource* (lower-case plural, as in URLs), not the
Go type: ``Resource("apps", "v1", "deployments", "Deployment", ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
NO_COLLECTION_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    resource: str  # plural, lower-case: "deployments"
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", "eviction", "log", ...
    verbs: tuple[str, ...] = ALL_VERBS
    # For a legacy version served by conversion: the storage version it converts to.
    storage_version: str | None = None
    crd: bool = False
    singular: str = ""
    list_kind: str = ""
    # Served in discovery. Legacy (beyond-upstream) versions are discoverable, so that kubectl can
    # map their kinds, but have no OpenAPI documents (upstream has no schemas for them).
    discoverable: bool = True
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.singular:
            object.__setattr__(self, "singular", self.kind.lower())
        if not self.list_kind:
            object.__setattr__(self, "list_kind", self.kind + "List")

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def gvk(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.kind)

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` / ``pods``: the name used in error messages."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps`` / ``Pod``: the name used in Invalid error messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind



def _r(group, version, resource, kind, namespaced=True, short=(), cat=(), sub=(), verbs=ALL_VERBS, **kw):
    return Resource(group, version, resource, kind, namespaced, tuple(short), tuple(cat), tuple(sub), tuple(verbs), **kw)


ALL = ("all",)
CREATE_ONLY = ("create",)

BUILTIN: list[Resource] = [
    # core/v1
    _r("", "v1", "namespaces", "Namespace", False, ["ns"], sub=["status", "finalize"],
       verbs=NO_COLLECTION_VERBS),
    _r("", "v1", "pods", "Pod", True, ["po"], ALL,
       ["status", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy", "ephemeralcontainers"]),
    _r("", "v1", "nodes", "Node", False, ["no"], sub=["status", "proxy"]),
    _r("", "v1", "services", "Service", True, ["svc"], ALL, ["status", "proxy"], verbs=NO_COLLECTION_VERBS),
    _r("", "v1", "endpoints", "Endpoints", True, ["ep"], singular="endpoints"),
    _r("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, ["pv"], sub=["status"]),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], sub=["status"]),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], sub=["token"]),
    _r("", "v1", "events", "Event", True, ["ev"]),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, ["quota"], sub=["status"]),
    _r("", "v1", "limitranges", "LimitRange", True, ["limits"]),
    _r("", "v1", "replicationcontrollers", "ReplicationController", True, ["rc"], ALL, ["status", "scale"]),
    _r("", "v1", "podtemplates", "PodTemplate", True),
    _r("", "v1", "bindings", "Binding", True, verbs=CREATE_ONLY),  # the older form of pods/binding
    # apps/v1
    _r("apps", "v1", "deployments", "Deployment", True, ["deploy"], ALL, ["status", "scale"]),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, ["rs"], ALL, ["status", "scale"]),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, ["ds"], ALL, ["status"]),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, ["sts"], ALL, ["status", "scale"]),
    _r("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    # batch/v1
    _r("batch", "v1", "jobs", "Job", True, [], ALL, ["status"]),
    _r("batch", "v1", "cronjobs", "CronJob", True, ["cj"], ALL, ["status"]),
    # autoscaling
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"], ALL, ["status"]),
    _r("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"], ALL, ["status"]),
    # networking.k8s.io/v1
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, ["ing"], sub=["status"]),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ["netpol"]),
    # storage.k8s.io/v1
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ["sc"]),
    # policy/v1
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"], sub=["status"]),
    # rbac
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # coordination
    _r("coordination.k8s.io", "v1", "leases", "Lease", True),
    # discovery
    _r("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    # events.k8s.io
    _r("events.k8s.io", "v1", "events", "Event", True, ["ev"]),
    # scheduling
    _r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ["pc"]),
    # authorization (create-only virtual resources)
    _r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
       verbs=CREATE_ONLY),
    _r("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
       verbs=CREATE_ONLY),
    _r("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, verbs=CREATE_ONLY),
    _r("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", True,
       verbs=CREATE_ONLY),
    _r("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, verbs=CREATE_ONLY),
    _r("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, verbs=CREATE_ONLY),
    # certificates.k8s.io/v1
    _r("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False, ["csr"],
       sub=["approval", "status"]),
    # apiextensions
    _r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
       ["crd", "crds"], ("api-extensions",), ["status"]),
    # admissionregistration.k8s.io/v1: webhook configurations
    _r("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
       False, cat=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
       False, cat=("api-extensions",)),
    # admissionregistration.k8s.io: CEL admission policies (MutatingAdmissionPolicy is v1alpha1 upstream in 1.32,
    # behind a feature gate; served here always)
    _r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False,
       cat=("api-extensions",), sub=["status"]),
    _r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding",
       False, cat=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1alpha1", "mutatingadmissionpolicies", "MutatingAdmissionPolicy", False,
       cat=("api-extensions",)),
    _r("admissionregistration.k8s.io", "v1alpha1", "mutatingadmissionpolicybindings", "MutatingAdmissionPolicyBinding",
       False, cat=("api-extensions",)),
    # apiregistration (the aggregator's APIServices)
    _r("apiregistration.k8s.io", "v1", "apiservices", "APIService", False, cat=("api-extensions",), sub=["status"]),
    # Legacy versions (beyond upstream): served by conversion to apps/v1.
    # No short names or categories, so that `kubectl get deploy` and `get all` find apps/v1 only.
    _r("extensions", "v1beta1", "deployments", "Deployment", True, sub=["status", "scale"],
       storage_version="apps/v1"),
    _r("apps", "v1beta1", "deployments", "Deployment", True, sub=["status", "scale"], storage_version="apps/v1"),
    _r("apps", "v1beta2", "deployments", "Deployment", True, sub=["status", "scale"], storage_version="apps/v1"),
]

# The version each group prefers (first listed in discovery).
PREFERRED_VERSION = {
    "": "v1",
    "apps": "v1",
    "batch": "v1",
    "autoscaling": "v2",
    "networking.k8s.io": "v1",
    "storage.k8s.io": "v1",
    "policy": "v1",
    "rbac.authorization.k8s.io": "v1",
    "coordination.k8s.io": "v1",
    "discovery.k8s.io": "v1",
    "events.k8s.io": "v1",
    "scheduling.k8s.io": "v1",
    "authorization.k8s.io": "v1",
    "authentication.k8s.io": "v1",
    "certificates.k8s.io": "v1",
    "apiextensions.k8s.io": "v1",
    "apiregistration.k8s.io": "v1",
    "admissionregistration.k8s.io": "v1",
    "extensions": "v1beta1",
}

# Group order in /apis, as upstream lists them.
GROUP_ORDER = [
    "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch",
    "certificates.k8s.io",
    "networking.k8s.io", "policy", "rbac.authorization.k8s.io", "storage.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
    # Upstream lists apiregistration.k8s.io first; here it follows the groups clients rely on.
    "apiregistration.k8s.io",
]

# Resources whose storage is shared between two API groups: (group, resource) -> storage owner.
SHARED_STORAGE = {
    ("events.k8s.io", "events"): ("", "events"),
}


def storage_resource(res: Resource) -> tuple[str, str]:
    """The (group, resource) a served resource is stored as (shared storage, legacy versions)."""
    group, resource = SHARED_STORAGE.get((res.group, res.resource), (res.group, res.resource))
    if res.storage_version:
        group = res.storage_version.rpartition("/")[0]
    return group, resource


def storage_prefix(res: Resource) -> str:
    group, resource = storage_resource(res)
    return f"/registry/{group or 'core'}/{resource}/"


def by_gvk() -> dict[tuple[str, str, str], Resource]:
    return {(r.group, r.version, r.kind): r for r in BUILTIN}
