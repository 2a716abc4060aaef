"""What node agents may do: the rules of upstream's ``system:node`` ClusterRole.

Upstream authorizes a kubelet with two parts: the ``system:node`` role's rules (which verbs on
which resources) and the Node authorizer, which narrows reads of secrets, configmaps, PVCs and
service account tokens to the pods bound to that node (a graph of pods, nodes and what they
reference). This module is the first part only, for the group ``system:nodes``; the graph
restriction comes with access control (RBAC and the Node authorizer, in a later issue). Until
then, a node identity can read every Secret and ConfigMap, as a node with ``system:node``
bound through RBAC could in Kubernetes before 1.8.
"""

from __future__ import annotations

from kubeling.apiserver.auth import Attributes, Decision

NODES_GROUP = "system:nodes"

READ = ("get", "list", "watch")
# (group, resource incl. "/subresource") -> verbs
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
    # Not system:node's: what the agent's network services need with the node's credentials,
    # kube-proxy (upstream's system:node-proxier) and the NetworkPolicy enforcer (k3s's
    # system:k3s-controller), until access control (issue 9) gives each its own identity.
    ("discovery.k8s.io", "endpointslices"): READ,
    ("networking.k8s.io", "networkpolicies"): READ,
    ("", "namespaces"): READ,
}


class NodeRulesAuthorizer:
    """Allows ``system:nodes`` what the ``system:node`` role allows (see the module docstring)."""

    def authorize(self, attrs: Attributes) -> Decision:
        if NODES_GROUP not in attrs.user.groups or not attrs.resource_request:
            return Decision(False, "")
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        if attrs.verb in RULES.get((attrs.group, resource), ()):
            return Decision(True, "allowed by the system:node rules")
        return Decision(False, "")
