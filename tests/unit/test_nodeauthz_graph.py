"""The Node authorizer (kubeling.apiserver.authorizer.node): a node reads only what its pods use."""

from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.authorizer import build, name_from_field_selector, parse_modes
from kubeling.apiserver.authorizer.node import Graph, NodeAuthorizer
from kubeling.apiserver.watch_cache import CachedObject, WatchCache

import pytest

PREFIX = {("", "pods"): "/registry/core/pods/", ("", "persistentvolumeclaims"): "/registry/core/persistentvolumeclaims/",
          ("", "persistentvolumes"): "/registry/core/persistentvolumes/",
          ("storage.k8s.io", "volumeattachments"): "/registry/storage.k8s.io/volumeattachments/"}


class FakeCacher:
    def __init__(self) -> None:
        self._caches = {p: WatchCache(p, 1) for p in PREFIX.values()}
        self.rev = 1

    @property
    def ready(self) -> bool:
        return True

    def put(self, resource: tuple[str, str], obj: dict) -> None:
        prefix = PREFIX[resource]
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        key = f"{prefix}{ns}/{meta['name']}" if ns else f"{prefix}{meta['name']}"
        self.rev += 1
        cache = self._caches[prefix]
        cache.load(CachedObject(key, ns, meta["name"], self.rev, obj))
        cache.list_revision = self.rev  # a new version for the memo


def node(name: str) -> UserInfo:
    return UserInfo(f"system:node:{name}", groups=("system:nodes", "system:authenticated"))


def res(user, verb, resource, name="", namespace="default", group="", subresource=""):
    return Attributes(user, verb, True, "", group, "v1", resource, subresource, namespace, name)


def pod(name, node_name, **spec):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node_name, "serviceAccountName": "default", "containers": [{"name": "c"}], **spec}}


@pytest.fixture()
def setup():
    cacher = FakeCacher()
    graph = Graph(lambda: cacher, lambda g, r: PREFIX[(g, r)])
    return cacher, NodeAuthorizer(graph)


def test_secret_of_a_pod_on_the_node_only(setup):
    cacher, a = setup
    cacher.put(("", "pods"), pod("p1", "a", volumes=[{"name": "v", "secret": {"secretName": "s-a"}}]))
    cacher.put(("", "pods"), pod("p2", "b", volumes=[{"name": "v", "secret": {"secretName": "s-b"}}]))
    assert a.authorize(res(node("a"), "get", "secrets", "s-a")).allowed
    d = a.authorize(res(node("a"), "get", "secrets", "s-b"))
    assert not d.allowed and not d.denied
    assert d.reason == "no relationship found between node 'a' and this object"
    assert a.authorize(res(node("b"), "get", "secrets", "s-b")).allowed
    # list/watch only with a name (from fieldSelector=metadata.name=...)
    assert a.authorize(res(node("a"), "watch", "secrets", "s-a")).allowed
    d = a.authorize(res(node("a"), "list", "secrets"))
    assert not d.allowed and d.reason == "No Object name found"
    d = a.authorize(res(node("a"), "delete", "secrets", "s-a"))
    assert not d.allowed and d.reason == "can only read resources of this type"


def test_every_reference_kind(setup):
    cacher, a = setup
    cacher.put(("", "pods"), pod(
        "p", "a", imagePullSecrets=[{"name": "pull"}],
        containers=[{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}},
                                          {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                     "envFrom": [{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-s"}}]}],
        initContainers=[{"name": "i", "envFrom": [{"secretRef": {"name": "init-s"}}]}],
        volumes=[{"name": "proj", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}},
                                                            {"secret": {"name": "proj-s"}},
                                                            {"serviceAccountToken": {"path": "token"}}]}},
                 {"name": "cm", "configMap": {"name": "vol-cm"}},
                 {"name": "data", "persistentVolumeClaim": {"claimName": "claim"}},
                 {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]))
    cacher.put(("", "persistentvolumeclaims"), {"metadata": {"name": "claim", "namespace": "default"},
                                                "spec": {"volumeName": "pv-1"}})
    cacher.put(("", "persistentvolumes"), {"metadata": {"name": "pv-1"}, "spec": {
        "csi": {"driver": "d", "volumeHandle": "h", "nodePublishSecretRef": {"name": "csi-s", "namespace": "kube-system"}}}})
    for name in ("pull", "env-s", "from-s", "init-s", "proj-s"):
        assert a.authorize(res(node("a"), "get", "secrets", name)).allowed, name
    for name in ("env-cm", "from-cm", "kube-root-ca.crt", "vol-cm"):
        assert a.authorize(res(node("a"), "get", "configmaps", name)).allowed, name
    assert a.authorize(res(node("a"), "get", "persistentvolumeclaims", "claim")).allowed
    assert a.authorize(res(node("a"), "get", "persistentvolumeclaims", "p-scratch")).allowed
    assert a.authorize(res(node("a"), "get", "persistentvolumes", "pv-1", namespace="")).allowed
    assert a.authorize(res(node("a"), "get", "secrets", "csi-s", namespace="kube-system")).allowed
    assert not a.authorize(res(node("a"), "get", "persistentvolumes", "pv-2", namespace="")).allowed
    assert a.authorize(res(node("a"), "create", "serviceaccounts", "default", subresource="token")).allowed
    assert not a.authorize(res(node("a"), "create", "serviceaccounts", "other", subresource="token")).allowed
    assert not a.authorize(res(node("b"), "get", "configmaps", "vol-cm")).allowed


def test_graph_follows_pod_changes(setup):
    cacher, a = setup
    assert not a.authorize(res(node("a"), "get", "secrets", "s")).allowed
    cacher.put(("", "pods"), pod("p", "a", volumes=[{"name": "v", "secret": {"secretName": "s"}}]))
    assert a.authorize(res(node("a"), "get", "secrets", "s")).allowed
    cacher.put(("", "pods"), pod("p", "b", volumes=[{"name": "v", "secret": {"secretName": "s"}}]))
    assert not a.authorize(res(node("a"), "get", "secrets", "s")).allowed


def test_lease_and_csinode_own_name_only(setup):
    _, a = setup
    lease = dict(group="coordination.k8s.io", namespace="kube-node-lease")
    assert a.authorize(res(node("a"), "update", "leases", "a", **lease)).allowed
    assert a.authorize(res(node("a"), "create", "leases", "", **lease)).allowed
    d = a.authorize(res(node("a"), "update", "leases", "b", **lease))
    assert d.reason == "can only access node lease with the same name as the requesting node"
    d = a.authorize(res(node("a"), "get", "leases", "a", group="coordination.k8s.io", namespace="default"))
    assert d.reason == "can only access leases in the kube-node-lease namespace"
    assert a.authorize(res(node("a"), "patch", "csinodes", "a", group="storage.k8s.io", namespace="")).allowed
    assert not a.authorize(res(node("a"), "patch", "csinodes", "b", group="storage.k8s.io", namespace="")).allowed


def test_static_rules_and_non_nodes(setup):
    _, a = setup
    assert a.authorize(res(node("a"), "list", "services")).allowed
    assert a.authorize(res(node("a"), "patch", "nodes", "b", namespace="")).allowed  # NodeRestriction narrows it
    assert not a.authorize(res(node("a"), "create", "deployments", group="apps")).allowed
    bob = UserInfo("bob", groups=("system:authenticated",))
    assert not a.authorize(res(bob, "list", "services")).allowed
    not_named = UserInfo("someone", groups=("system:nodes",))
    assert a.authorize(res(not_named, "list", "services")).reason == "unknown node for user 'someone'"


def test_no_cache_fails_closed():
    a = NodeAuthorizer(Graph(lambda: None, lambda g, r: "/x/"))
    assert not a.authorize(res(node("a"), "get", "secrets", "s")).allowed


def test_modes():
    assert parse_modes("Node,RBAC") == ("Node", "RBAC")
    with pytest.raises(ValueError):
        parse_modes("Node,Nope")
    with pytest.raises(ValueError):
        parse_modes("RBAC,RBAC")
    bob = UserInfo("bob", groups=("system:authenticated",))
    admin = UserInfo("admin", groups=("system:masters",))
    assert build(("AlwaysAllow",)).authorize(res(bob, "delete", "nodes", "x", namespace="")).allowed
    deny = build(("AlwaysDeny",))
    d = deny.authorize(res(bob, "get", "pods", "x"))
    assert not d.allowed and d.reason == "Everything is forbidden."
    assert deny.authorize(res(admin, "get", "pods", "x")).allowed  # the privileged group comes first


def test_name_from_field_selector():
    assert name_from_field_selector("list", {"fieldSelector": "metadata.name=s"}) == "s"
    assert name_from_field_selector("watch", {"fieldSelector": "metadata.name==s"}) == "s"
    assert name_from_field_selector("list", {"fieldSelector": "metadata.name!=s"}) == ""
    assert name_from_field_selector("list", {"fieldSelector": "metadata.name=s,x=y"}) == ""
    assert name_from_field_selector("get", {"fieldSelector": "metadata.name=s"}) == ""
    assert name_from_field_selector("list", {}) == ""
