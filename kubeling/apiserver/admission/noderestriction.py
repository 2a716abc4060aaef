"""NodeRestriction admission (upstream's ``plugin/pkg/admission/noderestriction``).

A node (``system:node:<name>`` in ``system:nodes``) may, beyond what the Node authorizer lets it
ask for (`kubeling.apiserver.authorizer.node`):

- ``nodes``: create, update, patch and delete only its own Node; at create not set, and at
  update not change, labels under ``kubernetes.io``/``k8s.io`` other than the kubelet's own
  (``kubernetes.io/hostname``, ``/arch``, ``/os``, the topology and instance-type labels,
  anything under ``kubelet.kubernetes.io/`` and ``node.kubernetes.io/``), never
  ``node-restriction.kubernetes.io/`` ones; at update not change its taints;
- ``pods``: create only mirror pods (``kubernetes.io/config.mirror``) bound to itself that use no
  secrets, configmaps, PVCs, service accounts or resource claims, owned by nothing but its Node;
  delete only pods bound to itself; update only the status of pods bound to itself;
- ``leases``: only its own, in ``kube-node-lease``;
- ``csinodes``: only its own.

Refusals are 403 Forbidden with upstream's messages, e.g. ``nodes "b" is forbidden: node "a" is
not allowed to modify node "b"``. Everyone else passes untouched. ``pods/eviction`` and
``serviceaccounts/token`` do not go through the admission chain here: the Node authorizer allows
a node to evict, and to ask tokens for, only pods bound to it (see its module).
"""

from __future__ import annotations

import json

from kubeling.api import errors
from kubeling.apiserver.admission.chain import Attributes

NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
NODE_LEASE_NAMESPACE = "kube-node-lease"

# labels a kubelet may set on its Node (upstream's kubeletapis.KubeletLabels and label namespaces)
KUBELET_LABELS = {"kubernetes.io/hostname", "kubernetes.io/instance-type", "kubernetes.io/os", "kubernetes.io/arch",
                  "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
                  "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
                  "failure-domain.kubernetes.io/zone", "failure-domain.kubernetes.io/region",
                  "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
                  "node.kubernetes.io/instance-type"}
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
RESTRICTED_NAMESPACE = "node-restriction.kubernetes.io"


def node_name(ctx) -> tuple[str, bool]:
    """(node name, is a node) of the request's user (upstream's ``nodeidentifier``)."""
    groups = getattr(ctx, "groups", ()) or ()
    if NODES_GROUP not in groups:
        return "", False
    user = getattr(ctx, "user", "") or ""
    return (user[len(NODE_USER_PREFIX):], True) if user.startswith(NODE_USER_PREFIX) else ("", True)


def q(s) -> str:
    """Go's %q of a string (upstream's messages quote names with it)."""
    return json.dumps(str(s))


def _label_namespace(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def is_kubelet_label(key: str) -> bool:
    if key in KUBELET_LABELS:
        return True
    ns = _label_namespace(key)
    return any(ns == n or ns.endswith("." + n) for n in KUBELET_LABEL_NAMESPACES)


def forbidden_node_label(key: str) -> bool:
    """A label a node may not set (upstream's ``getForbiddenLabels``)."""
    ns = _label_namespace(key)
    if ns == RESTRICTED_NAMESPACE or ns.endswith("." + RESTRICTED_NAMESPACE):
        return True
    k8s = any(ns == n or ns.endswith("." + n) for n in ("kubernetes.io", "k8s.io"))
    return k8s and not is_kubelet_label(key)


def _forbidden(attrs: Attributes, message: str) -> errors.StatusError:
    return errors.forbidden_status(attrs.resource, attrs.group, attrs.name, message)


def _labels(obj: dict | None) -> dict:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class NodeRestriction:
    NAME = "NodeRestriction"

    def handles(self, attrs: Attributes) -> bool:
        return node_name(attrs.ctx)[1] and (attrs.group, attrs.resource) in (
            ("", "nodes"), ("", "pods"), ("coordination.k8s.io", "leases"), ("storage.k8s.io", "csinodes"))

    async def admit(self, attrs: Attributes) -> None:
        """Upstream's plugin is a mutating one (it changes nothing): it runs in the mutating phase,
        after ServiceAccount, in the chain's order."""
        node, _ = node_name(attrs.ctx)
        if not node:
            raise _forbidden(attrs, f"could not determine node from user {q(attrs.ctx.user)}")
        resource = (attrs.group, attrs.resource)
        if resource == ("", "nodes"):
            self._node(node, attrs)
        elif resource == ("", "pods"):
            self._pod(node, attrs)
        elif resource == ("coordination.k8s.io", "leases"):
            if attrs.namespace != NODE_LEASE_NAMESPACE:
                raise _forbidden(attrs, f"can only access leases in the {NODE_LEASE_NAMESPACE} namespace")
            if attrs.name != node:
                raise _forbidden(attrs, "can only access node lease with the same name as the requesting node")
        elif resource == ("storage.k8s.io", "csinodes"):
            if attrs.name != node:
                raise _forbidden(attrs, f"node {q(node)} is not allowed to modify CSINode {q(attrs.name)}")

    # -- nodes -----------------------------------------------------------------------------------

    def _node(self, node: str, attrs: Attributes) -> None:
        if attrs.name != node:
            raise _forbidden(attrs, f"node {q(node)} is not allowed to modify node {q(attrs.name)}")
        if attrs.operation == "CREATE":
            bad = sorted(k for k in _labels(attrs.obj) if forbidden_node_label(k))
            if bad:
                raise _forbidden(attrs, f"node {q(node)} is not allowed to set the following labels: {', '.join(bad)}")
        elif attrs.operation == "UPDATE":
            new, old = _labels(attrs.obj), _labels(attrs.old)
            changed = sorted(k for k in set(new) | set(old)
                             if new.get(k) != old.get(k) and forbidden_node_label(k))
            if changed:
                raise _forbidden(attrs, f"node {q(node)} is not allowed to modify labels: {', '.join(changed)}")
            if ((attrs.obj or {}).get("spec") or {}).get("taints") != ((attrs.old or {}).get("spec") or {}).get("taints"):
                raise _forbidden(attrs, f"node {q(node)} is not allowed to modify taints")

    # -- pods ------------------------------------------------------------------------------------

    def _pod(self, node: str, attrs: Attributes) -> None:
        sub = attrs.subresource
        if sub == "status":
            if attrs.operation != "UPDATE":
                raise _forbidden(attrs, f"unexpected operation {attrs.operation}")
            pod = attrs.old or attrs.obj or {}
            if ((pod.get("spec") or {}).get("nodeName") or "") != node:
                raise _forbidden(attrs, f"node {q(node)} can only update pod status for pods with spec.nodeName "
                                        "set to itself")
            return
        if sub == "eviction":
            pod = attrs.old or {}
            if ((pod.get("spec") or {}).get("nodeName") or "") != node:
                raise _forbidden(attrs, f"node {q(node)} can only evict pods with spec.nodeName set to itself")
            return
        if sub:
            raise _forbidden(attrs, f"unexpected pod subresource {q(sub)}, only 'status' and 'eviction' are allowed")
        if attrs.operation == "CREATE":
            self._pod_create(node, attrs)
        elif attrs.operation == "DELETE":
            if (((attrs.old or {}).get("spec") or {}).get("nodeName") or "") != node:
                raise _forbidden(attrs, f"node {q(node)} can only delete pods with spec.nodeName set to itself")
        else:
            raise _forbidden(attrs, f"unexpected operation {q(attrs.operation)}, node {q(node)} can only create and "
                                    "delete mirror pods")

    def _pod_create(self, node: str, attrs: Attributes) -> None:
        from kubeling.apiserver.authorizer.node import CONFIGMAP, PVC, RESOURCECLAIM, SECRET, pod_references
        pod = attrs.obj or {}
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        if MIRROR_ANNOTATION not in (meta.get("annotations") or {}):
            raise _forbidden(attrs, f'pod does not have "{MIRROR_ANNOTATION}" annotation, node {q(node)} can only '
                                    "create mirror pods")
        if (spec.get("nodeName") or "") != node:
            raise _forbidden(attrs, f"node {q(node)} can only create pods with spec.nodeName set to itself")
        owners = meta.get("ownerReferences") or []
        if len(owners) > 1:
            raise _forbidden(attrs, f"node {q(node)} can only create pods with a single owner reference set to itself")
        if owners:
            o = owners[0]
            if o.get("apiVersion") != "v1" or o.get("kind") != "Node" or o.get("name") != node or \
                    not o.get("controller"):
                raise _forbidden(attrs, f"node {q(node)} can only create pods with an owner reference set to itself")
        refs = pod_references(pod)
        if spec.get("serviceAccountName"):
            raise _forbidden(attrs, f"node {q(node)} can not create pods that reference service accounts")
        for kind, what in ((SECRET, "secrets"), (CONFIGMAP, "configmaps"),
                           (PVC, "persistentvolumeclaims"), (RESOURCECLAIM, "resourceclaims")):
            if any(r[0] == kind for r in refs):
                raise _forbidden(attrs, f"node {q(node)} can not create pods that use {what}")


def admit_token_request(ctx, service_account: str, token_request: dict, pod: dict | None) -> None:
    """A node's TokenRequest must be bound to a pod bound to that node (upstream's
    ``admitServiceAccount``); ``pod`` is the bound pod the TokenRequest REST looked up. The
    TokenRequest REST calls this: ``serviceaccounts/token`` has no admission chain here."""
    node, is_node = node_name(ctx)
    if not is_node:
        return

    def forbidden(message: str) -> errors.StatusError:
        return errors.forbidden_status("serviceaccounts", "", service_account, message)

    if not node:
        raise forbidden(f"could not determine node from user {q(getattr(ctx, 'user', ''))}")
    ref = (token_request.get("spec") or {}).get("boundObjectRef")
    if not ref:
        raise forbidden("node requested token not bound to a pod")
    if not ref.get("uid"):
        raise forbidden("node requested token with a pod binding without a uid")
    if ref.get("kind") != "Pod":
        raise forbidden(f"node requested token bound to a {ref.get('kind')}, only pods are allowed")
    if pod is None or ((pod.get("spec") or {}).get("nodeName") or "") != node:
        raise forbidden("node requested token bound to a pod scheduled on a different node")
