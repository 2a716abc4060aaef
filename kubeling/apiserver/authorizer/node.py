"""The Node authorizer (upstream's ``plugin/pkg/auth/authorizer/node``).

A node agent authenticates as ``system:node:<name>`` in the group ``system:nodes``. It may do
what upstream's ``system:node`` role allows (`RULES`, checked last), but reads of the objects
that hold a workload's data are narrowed to the ones its own pods use:

- ``get`` (and a ``list``/``watch`` naming one object with ``fieldSelector=metadata.name=<n>``,
  which is what the agent's object cache does) of secrets and configmaps, ``get`` of
  persistentvolumeclaims, persistentvolumes, resourceclaims and volumeattachments, and
  ``create`` of ``serviceaccounts/token``, only for an object related to the node;
- leases in ``kube-node-lease`` and csinodes only under the node's own name.

"Related" is upstream's graph, derived here on demand from the API server's watch cache
(`Graph`): a pod whose ``spec.nodeName`` is the node relates it to the secrets and configmaps
the pod names (volumes, projected sources, env, envFrom, imagePullSecrets, in every kind of
container), its service account, its PVCs (``persistentVolumeClaim`` and ``ephemeral``
volumes), their bound PVs and the secrets those name, and its ResourceClaims; a VolumeAttachment
whose ``spec.nodeName`` is the node relates to it. The derived sets are memoized per node and
recomputed when the pods, PVCs, PVs or VolumeAttachments caches move on.

Every refusal here is "no opinion" with upstream's reason (``no relationship found between
node 'a' and this object``): the next authorizer of the chain (RBAC) may still allow, as
upstream's. Without a watch cache (before it is attached) nothing is related: fail closed.

NodeRestriction admission (`kubeling.apiserver.admission.noderestriction`) narrows the writes
(own Node, own pods' status, mirror pods, evictions, own Lease and CSINode).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from kubeling.apiserver.auth import Attributes, Decision, UserInfo

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"

READ = ("get", "list", "watch")
# upstream's system:node ClusterRole: (group, resource incl. "/subresource") -> verbs
RULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("authentication.k8s.io", "tokenreviews"): ("create",),
    ("authorization.k8s.io", "subjectaccessreviews"): ("create",),
    ("authorization.k8s.io", "localsubjectaccessreviews"): ("create",),
    ("", "services"): READ,
    ("", "endpoints"): READ,
    ("", "nodes"): ("create", "get", "list", "watch", "update", "patch", "delete"),
    ("", "nodes/status"): ("patch", "update"),
    ("", "events"): ("create", "patch", "update"),
    ("events.k8s.io", "events"): ("create", "patch", "update"),
    ("", "pods"): READ + ("create", "delete"),
    ("", "pods/status"): ("patch", "update"),
    ("", "pods/eviction"): ("create",),
    ("", "configmaps"): READ,
    ("", "secrets"): READ,
    ("", "persistentvolumeclaims"): ("get",),
    ("", "persistentvolumeclaims/status"): ("get", "update", "patch"),
    ("", "persistentvolumes"): ("get",),
    ("", "serviceaccounts/token"): ("create",),
    ("certificates.k8s.io", "certificatesigningrequests"): ("create", "get", "list", "watch"),
    ("coordination.k8s.io", "leases"): ("get", "create", "update", "patch", "delete"),
    ("storage.k8s.io", "volumeattachments"): ("get",),
    ("storage.k8s.io", "csidrivers"): READ,
    ("storage.k8s.io", "csinodes"): READ + ("create", "update", "patch", "delete"),
    ("node.k8s.io", "runtimeclasses"): READ,
    ("resource.k8s.io", "resourceclaims"): ("get",),
    # kube-proxy and the agent's NetworkPolicy enforcer are not the node: they run as
    # system:kube-proxy and system:kubeling-controller, with roles of their own.
}


def node_identity(user: UserInfo) -> tuple[str, bool]:
    """(node name, is a node) as upstream's ``nodeidentifier``: a node is in ``system:nodes``;
    its name is what follows ``system:node:`` in the user name ("" when it does not)."""
    if NODES_GROUP not in user.groups:
        return "", False
    if not user.name.startswith(NODE_USER_PREFIX):
        return "", True
    return user.name[len(NODE_USER_PREFIX):], True


def rules_allow(attrs: Attributes) -> bool:
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    return attrs.verb in RULES.get((attrs.group, resource), ())


# -- the graph -------------------------------------------------------------------------------------

SECRET, CONFIGMAP, PVC, PV, SERVICEACCOUNT, RESOURCECLAIM, VOLUMEATTACHMENT = (
    "secret", "configmap", "pvc", "pv", "serviceaccount", "resourceclaim", "volumeattachment")

# (group, resource) of what the graph reads from the cache
_SOURCES = {"pods": ("", "pods"), "pvcs": ("", "persistentvolumeclaims"), "pvs": ("", "persistentvolumes"),
            "volumeattachments": ("storage.k8s.io", "volumeattachments")}


def _containers(spec: dict):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or ():
            if isinstance(c, dict):
                yield c


def _name(ref) -> str:
    return ref.get("name") or "" if isinstance(ref, dict) else ""


def pod_references(pod: dict) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of what a pod uses, as upstream's ``VisitPodSecretNames``,
    ``VisitPodConfigmapNames`` and the graph populator's PVC/ResourceClaim/ServiceAccount edges."""
    meta = pod.get("metadata") or {}
    ns, pod_name = meta.get("namespace") or "", meta.get("name") or ""
    spec = pod.get("spec") or {}
    out: set[tuple[str, str, str]] = set()

    def add(kind: str, name, namespace: str = ns) -> None:
        if isinstance(name, str) and name:
            out.add((kind, namespace, name))

    if spec.get("serviceAccountName"):
        add(SERVICEACCOUNT, spec.get("serviceAccountName"))
    for ref in spec.get("imagePullSecrets") or ():
        add(SECRET, _name(ref))
    for c in _containers(spec):
        for env in c.get("env") or ():
            vf = (env or {}).get("valueFrom") or {}
            add(SECRET, _name(vf.get("secretKeyRef")))
            add(CONFIGMAP, _name(vf.get("configMapKeyRef")))
        for ef in c.get("envFrom") or ():
            add(SECRET, _name((ef or {}).get("secretRef")))
            add(CONFIGMAP, _name((ef or {}).get("configMapRef")))
    for v in spec.get("volumes") or ():
        if not isinstance(v, dict):
            continue
        add(SECRET, (v.get("secret") or {}).get("secretName"))
        add(CONFIGMAP, _name(v.get("configMap")))
        for src in (v.get("projected") or {}).get("sources") or ():
            add(SECRET, _name((src or {}).get("secret")))
            add(CONFIGMAP, _name((src or {}).get("configMap")))
        add(PVC, (v.get("persistentVolumeClaim") or {}).get("claimName"))
        if v.get("ephemeral") and v.get("name"):
            add(PVC, f"{pod_name}-{v['name']}")  # the generic ephemeral volume's claim
        add(SECRET, (v.get("azureFile") or {}).get("secretName"))
        for plugin in ("cephfs", "cinder", "flexVolume", "rbd", "scaleIO", "iscsi", "storageos"):
            add(SECRET, _name((v.get(plugin) or {}).get("secretRef")))
        add(SECRET, _name((v.get("csi") or {}).get("nodePublishSecretRef")))
    for claim in spec.get("resourceClaims") or ():
        add(RESOURCECLAIM, (claim or {}).get("resourceClaimName"))
    for st in (pod.get("status") or {}).get("resourceClaimStatuses") or ():
        add(RESOURCECLAIM, (st or {}).get("resourceClaimName"))
    return out


def pv_secrets(pv: dict) -> set[tuple[str, str, str]]:
    """Secrets a PersistentVolume names (``*SecretRef``/``secretRef`` objects with a namespace,
    upstream's ``VisitPVSecretNames``)."""
    out: set[tuple[str, str, str]] = set()

    def walk(node, depth: int) -> None:
        if depth > 4 or not isinstance(node, dict):
            return
        for k, v in node.items():
            if isinstance(v, dict):
                if k.endswith(("SecretRef", "secretRef")) and v.get("name"):
                    out.add((SECRET, v.get("namespace") or "", v["name"]))
                else:
                    walk(v, depth + 1)
    walk(pv.get("spec") or {}, 0)
    return out


class Graph:
    """What each node may reach, derived from the watch cache (see the module docstring).

    ``cacher`` returns the API server's `Cacher` (or None); ``prefix(group, resource)`` the store
    prefix of a resource."""

    def __init__(self, cacher: Callable[[], object], prefix: Callable[[str, str], str]) -> None:
        self._cacher = cacher
        self._prefix = prefix
        self._prefixes: dict[str, str] = {}
        self._memo: dict[str, tuple[tuple, frozenset]] = {}

    def _caches(self) -> dict | None:
        cacher = self._cacher()
        if cacher is None:
            return None
        ready = getattr(cacher, "ready", True)  # a property of the Cacher
        if not (ready() if callable(ready) else ready):
            return None
        if not self._prefixes:
            for k, (g, r) in _SOURCES.items():
                self._prefixes[k] = self._prefix(g, r)
        caches = getattr(cacher, "_caches", {})
        return {k: caches.get(p) for k, p in self._prefixes.items()}

    @staticmethod
    def _version(cache) -> tuple:
        if cache is None:
            return (None,)
        last = cache.history[-1].revision if cache.history else 0
        return (id(cache), cache.list_revision, last, len(cache.objects))

    def related(self, node: str) -> frozenset:
        """(kind, namespace, name) of every object related to ``node`` (empty without a cache)."""
        caches = self._caches()
        if caches is None:
            return frozenset()
        version = tuple(self._version(c) for c in caches.values())
        memo = self._memo.get(node)
        if memo is not None and memo[0] == version:
            return memo[1]
        related = frozenset(self._compute(node, caches))
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[node] = (version, related)
        return related

    @staticmethod
    def _on_node(cache, node: str) -> list[dict]:
        """Objects of ``cache`` whose ``spec.nodeName`` is ``node``; the cached JSON is searched
        for the node's name before an object is decoded."""
        if cache is None:
            return []
        needle = b'"nodeName":' + orjson.dumps(node)
        out = []
        for e in list(cache.objects.values()):
            raw = getattr(e, "raw", None)
            if raw is not None and needle not in raw:
                continue
            obj = e.obj
            if ((obj.get("spec") or {}).get("nodeName") or "") == node:
                out.append(obj)
        return out

    def _compute(self, node: str, caches: dict) -> set:
        out: set[tuple[str, str, str]] = set()
        for pod in self._on_node(caches["pods"], node):
            out |= pod_references(pod)
        claims = {(ns, n) for kind, ns, n in out if kind == PVC}
        if claims:
            pvc_cache = caches["pvcs"]
            for ns, name in claims:
                entry = pvc_cache.objects.get(f"{self._prefixes['pvcs']}{ns}/{name}") if pvc_cache else None
                volume = ((entry.obj.get("spec") or {}).get("volumeName") or "") if entry else ""
                if volume:
                    out.add((PV, "", volume))
            pv_cache = caches["pvs"]
            for kind, _, name in list(out):
                if kind == PV and pv_cache is not None:
                    entry = pv_cache.objects.get(f"{self._prefixes['pvs']}{name}")
                    if entry is not None:
                        out |= pv_secrets(entry.obj)
        for va in self._on_node(caches["volumeattachments"], node):
            out.add((VOLUMEATTACHMENT, "", (va.get("metadata") or {}).get("name") or ""))
        return out


class EmptyGraph:
    def related(self, node: str) -> frozenset:
        return frozenset()


# -- the authorizer --------------------------------------------------------------------------------

def _no_opinion(reason: str) -> Decision:
    return Decision(False, reason)


class NodeAuthorizer:
    """See the module docstring. ``graph`` is a `Graph` (an empty one when None: fail closed)."""

    def __init__(self, graph=None) -> None:
        self.graph = graph if graph is not None else EmptyGraph()

    def authorize(self, attrs: Attributes) -> Decision:
        node, is_node = node_identity(attrs.user)
        if not is_node:
            return _no_opinion("")
        if not node:
            return _no_opinion(f"unknown node for user {attrs.user.name!r}")
        if attrs.resource_request:
            gr = (attrs.group, attrs.resource)
            if gr == ("", "secrets"):
                return self._read_namespaced(node, SECRET, attrs)
            if gr == ("", "configmaps"):
                return self._read_namespaced(node, CONFIGMAP, attrs)
            if gr == ("", "persistentvolumeclaims"):
                if attrs.subresource == "status":
                    return self._status_update(node, PVC, attrs)
                return self._get(node, PVC, attrs)
            if gr == ("", "persistentvolumes"):
                return self._get(node, PV, attrs)
            if gr == ("resource.k8s.io", "resourceclaims"):
                return self._get(node, RESOURCECLAIM, attrs)
            if gr == ("storage.k8s.io", "volumeattachments"):
                return self._get(node, VOLUMEATTACHMENT, attrs)
            if gr == ("", "serviceaccounts"):
                return self._create_token(node, attrs)
            if gr == ("coordination.k8s.io", "leases"):
                return self._lease(node, attrs)
            if gr == ("storage.k8s.io", "csinodes"):
                return self._csinode(node, attrs)
        if attrs.resource_request and rules_allow(attrs):
            return Decision(True, "")
        return _no_opinion("")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """The static node rules (the graph narrows them per object; upstream lists none)."""
        return [], []

    # -- per resource, as upstream's ------------------------------------------------------------

    def _related(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if not attrs.name:
            return _no_opinion("No Object name found")
        if (kind, attrs.namespace, attrs.name) in self.graph.related(node):
            return Decision(True, "")
        return _no_opinion(f"no relationship found between node '{node}' and this object")

    def _get(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if attrs.verb != "get":
            return _no_opinion("can only get individual resources of this type")
        if attrs.subresource:
            return _no_opinion("cannot get subresource")
        return self._related(node, kind, attrs)

    def _read_namespaced(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if attrs.verb not in READ:
            return _no_opinion("can only read resources of this type")
        if attrs.subresource:
            return _no_opinion("cannot read subresource")
        if not attrs.namespace:
            return _no_opinion("can only read namespaced object of this type")
        return self._related(node, kind, attrs)

    def _status_update(self, node: str, kind: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "update", "patch"):
            return _no_opinion("can only get/update/patch this type")
        if attrs.subresource != "status":
            return _no_opinion("can only update status subresource")
        return self._related(node, kind, attrs)

    def _create_token(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb != "create" or not attrs.name:
            return _no_opinion("can only create tokens for individual service accounts")
        if attrs.subresource != "token":
            return _no_opinion("can only create token subresource of serviceaccount")
        return self._related(node, SERVICEACCOUNT, attrs)

    def _lease(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "create", "update", "patch", "delete"):
            return _no_opinion("can only get, create, update, patch, or delete a node lease")
        if attrs.namespace != NODE_LEASE_NAMESPACE:
            return _no_opinion(f"can only access leases in the {NODE_LEASE_NAMESPACE} namespace")
        if attrs.subresource:
            return _no_opinion("cannot access subresource")
        if attrs.verb != "create" and attrs.name != node:
            return _no_opinion("can only access node lease with the same name as the requesting node")
        return Decision(True, "")

    def _csinode(self, node: str, attrs: Attributes) -> Decision:
        if attrs.verb not in ("get", "create", "update", "patch", "delete"):
            return _no_opinion("can only get, create, update, patch, or delete a CSINode")
        if attrs.subresource:
            return _no_opinion("cannot authorize CSINode subresources")
        if attrs.verb != "create" and attrs.name != node:
            return _no_opinion("can only access CSINode with the same name as the requesting node")
        return Decision(True, "")


def graph_for(api) -> Graph:
    """The graph over ``api``'s watch cache (``api.scope.cacher``, read when asked)."""
    def prefix(group: str, resource: str) -> str:
        served = api.lookup(group, "v1", resource)
        return served.prefix if served is not None else f"/registry/{group or 'core'}/{resource}/"

    return Graph(lambda: getattr(api.scope, "cacher", None), prefix)
