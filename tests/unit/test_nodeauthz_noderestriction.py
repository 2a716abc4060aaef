"""NodeRestriction admission (kubeling.apiserver.admission.noderestriction), with upstream's messages."""

import asyncio
from types import SimpleNamespace

import pytest

from kubeling.api.errors import StatusError
from kubeling.apiserver.admission.chain import Attributes
from kubeling.apiserver.admission.noderestriction import NodeRestriction, forbidden_node_label
from kubeling.apiserver.registry import Context


def served(group, resource):
    return SimpleNamespace(res=SimpleNamespace(group=group, resource=resource))


def node_ctx(name="a", subresource=""):
    return Context(user=f"system:node:{name}", groups=("system:nodes", "system:authenticated"),
                   subresource=subresource)


def admit(op, group, resource, obj, old=None, ctx=None):
    attrs = Attributes(op, served(group, resource), obj, old, ctx or node_ctx())
    plugin = NodeRestriction()
    if not plugin.handles(attrs):
        return
    asyncio.run(plugin.admit(attrs))


def refused(*args, **kwargs) -> str:
    with pytest.raises(StatusError) as e:
        admit(*args, **kwargs)
    assert e.value.code == 403
    return e.value.message


def nodeobj(name, labels=None, taints=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints} if taints else {}}


def podobj(name, node, **extra):
    meta = {"name": name, "namespace": "default", **extra.pop("meta", {})}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}], **extra}}


def test_own_node_only():
    admit("UPDATE", "", "nodes", nodeobj("a"), nodeobj("a"))
    assert refused("UPDATE", "", "nodes", nodeobj("b"), nodeobj("b")) == \
        'nodes "b" is forbidden: node "a" is not allowed to modify node "b"'
    assert "not allowed to modify node" in refused("DELETE", "", "nodes", None, nodeobj("b"))


def test_labels_and_taints():
    admit("CREATE", "", "nodes", nodeobj("a", {"kubernetes.io/hostname": "a", "node.kubernetes.io/x": "1",
                                                "example.com/team": "x"}))
    assert refused("CREATE", "", "nodes", nodeobj("a", {"node-role.kubernetes.io/master": ""})).endswith(
        'node "a" is not allowed to set the following labels: node-role.kubernetes.io/master')
    assert "not allowed to modify labels: node-restriction.kubernetes.io/x" in refused(
        "UPDATE", "", "nodes", nodeobj("a", {"node-restriction.kubernetes.io/x": "1"}), nodeobj("a"))
    assert refused("UPDATE", "", "nodes", nodeobj("a", taints=[{"key": "k", "effect": "NoSchedule"}]),
                   nodeobj("a")).endswith('node "a" is not allowed to modify taints')
    assert forbidden_node_label("k8s.io/x") and not forbidden_node_label("topology.kubernetes.io/zone")


def test_pods():
    admit("UPDATE", "", "pods", podobj("p", "a"), podobj("p", "a"), ctx=node_ctx(subresource="status"))
    assert refused("UPDATE", "", "pods", podobj("p", "b"), podobj("p", "b"), ctx=node_ctx(subresource="status")) == \
        'pods "p" is forbidden: node "a" can only update pod status for pods with spec.nodeName set to itself'
    admit("DELETE", "", "pods", None, podobj("p", "a"))
    assert "can only delete pods with spec.nodeName set to itself" in refused("DELETE", "", "pods", None,
                                                                              podobj("p", "b"))
    assert 'can only create mirror pods' in refused("CREATE", "", "pods", podobj("p", "a"))
    mirror = {"annotations": {"kubernetes.io/config.mirror": "x"}}
    admit("CREATE", "", "pods", podobj("p", "a", meta=mirror))
    assert "can only create pods with spec.nodeName set to itself" in refused(
        "CREATE", "", "pods", podobj("p", "b", meta=mirror))
    assert "can not create pods that use secrets" in refused(
        "CREATE", "", "pods", podobj("p", "a", meta=mirror, volumes=[{"name": "v", "secret": {"secretName": "s"}}]))
    assert "only create and delete mirror pods" in refused("UPDATE", "", "pods", podobj("p", "a"), podobj("p", "a"))


def test_lease_and_csinode():
    lease = {"metadata": {"name": "a", "namespace": "kube-node-lease"}}
    admit("UPDATE", "coordination.k8s.io", "leases", lease, lease)
    other = {"metadata": {"name": "b", "namespace": "kube-node-lease"}}
    assert refused("CREATE", "coordination.k8s.io", "leases", other).endswith(
        "can only access node lease with the same name as the requesting node")
    assert refused("CREATE", "storage.k8s.io", "csinodes", {"metadata": {"name": "b"}}).endswith(
        'node "a" is not allowed to modify CSINode "b"')


def test_others_pass():
    admin = Context(user="admin", groups=("system:masters",))
    admit("UPDATE", "", "nodes", nodeobj("b", taints=[{"key": "k"}]), nodeobj("b"), ctx=admin)


def test_token_request_only_for_own_pods():
    from kubeling.apiserver.admission.noderestriction import admit_token_request

    def tr(**ref):
        return {"spec": {"boundObjectRef": ref} if ref else {}}
    pod_a, pod_b = podobj("p", "a"), podobj("q", "b")
    admit_token_request(node_ctx(), "default", tr(kind="Pod", name="p", uid="u"), pod_a)
    with pytest.raises(StatusError) as e:
        admit_token_request(node_ctx(), "default", tr(kind="Pod", name="q", uid="u"), pod_b)
    assert e.value.message == ('serviceaccounts "default" is forbidden: node requested token bound to a pod '
                               'scheduled on a different node')
    with pytest.raises(StatusError, match="not bound to a pod"):
        admit_token_request(node_ctx(), "default", tr(), None)
    with pytest.raises(StatusError, match="without a uid"):
        admit_token_request(node_ctx(), "default", tr(kind="Pod", name="p"), pod_a)
    admit_token_request(Context(user="bob", groups=()), "default", tr(), None)  # not a node: not its business
