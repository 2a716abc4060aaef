"""The RBAC authorizer: rule matching, subjects, the rule resolver, and the chain's rules_for."""

import pytest

from kubeling.apiserver.auth import Attributes, UserInfo, default_authorizer
from kubeling.apiserver.rbac.authorizer import (
    RBACAuthorizer,
    StaticSource,
    applies_to,
    non_resource_url_matches,
    resource_matches,
    rule_allows,
    split_rules,
)

G = "rbac.authorization.k8s.io"
BOB = UserInfo("bob", groups=("devs", "system:authenticated"))
SA = UserInfo("system:serviceaccount:team:builder", groups=("system:serviceaccounts", "system:serviceaccounts:team",
                                                            "system:authenticated"))


def res(verb, resource, namespace="default", group="", sub="", name="", user=BOB):
    return Attributes(user, verb, True, "", group, "v1", resource, sub, namespace, name)


def url(verb, path, user=BOB):
    return Attributes(user, verb, False, path)


def rule(verbs, groups, resources, names=None):
    r = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        r["resourceNames"] = names
    return r


def cluster_role(name, *rules):
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def role(name, ns, *rules):
    return {"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": list(rules)}


def binding(name, ref_kind, ref_name, *subjects, ns=None):
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": "RoleBinding" if ns else "ClusterRoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": G, "kind": ref_kind, "name": ref_name}, "subjects": list(subjects)}


def user(name):
    return {"kind": "User", "apiGroup": G, "name": name}


def group(name):
    return {"kind": "Group", "apiGroup": G, "name": name}


def sa(name, ns=None):
    return {"kind": "ServiceAccount", "name": name, **({"namespace": ns} if ns else {})}


@pytest.mark.parametrize("r, attrs, allowed", [
    (rule(["get"], [""], ["pods"]), res("get", "pods"), True),
    (rule(["get"], [""], ["pods"]), res("list", "pods"), False),
    (rule(["*"], [""], ["pods"]), res("deletecollection", "pods"), True),
    (rule(["get"], ["apps"], ["pods"]), res("get", "pods"), False),
    (rule(["get"], ["*"], ["deployments"]), res("get", "deployments", group="apps"), True),
    (rule(["get"], [""], ["*"]), res("get", "secrets"), True),
    (rule(["get"], [""], ["*"]), res("get", "pods", sub="log"), True),
    # a resource does not cover its subresources; a subresource rule covers only that one
    (rule(["get"], [""], ["pods"]), res("get", "pods", sub="log"), False),
    (rule(["get"], [""], ["pods/log"]), res("get", "pods", sub="log"), True),
    (rule(["get"], [""], ["pods/log"]), res("get", "pods"), False),
    (rule(["get"], [""], ["pods/log"]), res("get", "pods", sub="exec"), False),
    # */subresource: that subresource of any resource
    (rule(["update"], ["apps"], ["*/scale"]), res("update", "deployments", group="apps", sub="scale"), True),
    (rule(["update"], ["apps"], ["*/scale"]), res("update", "deployments", group="apps", sub="status"), False),
    (rule(["update"], ["apps"], ["*/scale"]), res("update", "deployments", group="apps"), False),
    # upstream has no "resource/*": it is a literal that matches nothing real
    (rule(["get"], [""], ["pods/*"]), res("get", "pods", sub="log"), False),
    # resourceNames
    (rule(["get"], [""], ["configmaps"], ["a"]), res("get", "configmaps", name="a"), True),
    (rule(["get"], [""], ["configmaps"], ["a"]), res("get", "configmaps", name="b"), False),
    (rule(["list"], [""], ["configmaps"], ["a"]), res("list", "configmaps"), False),
    (rule(["create"], [""], ["configmaps"], ["a"]), res("create", "configmaps"), False),
    # a resource rule never matches a path, a URL rule never a resource
    (rule(["get"], ["*"], ["*"]), url("get", "/healthz"), False),
    ({"verbs": ["get"], "nonResourceURLs": ["*"]}, res("get", "pods"), False),
])
def test_rule_allows(r, attrs, allowed):
    assert rule_allows(attrs, r) is allowed


@pytest.mark.parametrize("urls, path, ok", [
    (["/healthz"], "/healthz", True),
    (["/healthz"], "/healthz/etcd", False),
    (["/healthz/*"], "/healthz/etcd", True),
    (["/healthz/*"], "/healthz", False),
    (["/apis*"], "/apis/apps/v1", True),
    (["*"], "/anything", True),
    (["/api"], "/apis", False),
])
def test_non_resource_urls(urls, path, ok):
    assert non_resource_url_matches({"nonResourceURLs": urls}, path) is ok


def test_resource_matches_star_subresource_length_exact():
    assert resource_matches({"resources": ["*/status"]}, "pods/status", "status")
    assert not resource_matches({"resources": ["*/status"]}, "pods/tatus", "tatus")


@pytest.mark.parametrize("subject, binding_ns, u, ok", [
    (user("bob"), "", BOB, True),
    (user("alice"), "", BOB, False),
    (group("devs"), "", BOB, True),
    (group("ops"), "", BOB, False),
    (sa("builder", "team"), "", SA, True),
    (sa("builder"), "team", SA, True),      # a RoleBinding's SA without namespace: the binding's
    (sa("builder"), "other", SA, False),
    (sa("builder"), "", SA, False),         # a ClusterRoleBinding's SA must name its namespace
    (group("system:serviceaccounts:team"), "", SA, True),
    ({"kind": "Robot", "name": "bob"}, "", BOB, False),
])
def test_subjects(subject, binding_ns, u, ok):
    assert applies_to(subject, u, binding_ns) is ok


def authorizer(*objs):
    data = {"clusterroles": [], "roles": [], "clusterrolebindings": [], "rolebindings": []}
    for o in objs:
        data[{"ClusterRole": "clusterroles", "Role": "roles", "ClusterRoleBinding": "clusterrolebindings",
              "RoleBinding": "rolebindings"}[o["kind"]]].append(o)
    return RBACAuthorizer(StaticSource(data))


READ_PODS = rule(["get", "list", "watch"], [""], ["pods"])


def test_rolebinding_grants_in_its_namespace_only():
    a = authorizer(cluster_role("reader", READ_PODS), binding("rb", "ClusterRole", "reader", user("bob"), ns="dev"))
    d = a.authorize(res("list", "pods", "dev"))
    assert d.allowed
    assert d.reason == 'RBAC: allowed by RoleBinding "rb/dev" of ClusterRole "reader" to User "bob"'
    assert not a.authorize(res("list", "pods", "prod")).allowed
    assert not a.authorize(res("list", "pods", "")).allowed       # all namespaces: cluster scope
    assert not a.authorize(res("delete", "pods", "dev")).allowed


def test_clusterrolebinding_grants_everywhere():
    a = authorizer(cluster_role("reader", READ_PODS), binding("crb", "ClusterRole", "reader", group("devs")))
    for ns in ("dev", "prod", ""):
        assert a.authorize(res("list", "pods", ns)).allowed
    assert a.authorize(res("list", "pods", "x")).reason == \
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "reader" to Group "devs"'


def test_role_is_read_from_the_bindings_namespace():
    a = authorizer(role("r", "dev", READ_PODS), role("r", "prod", rule(["*"], ["*"], ["*"])),
                   binding("rb", "Role", "r", sa("builder", "team"), ns="dev"))
    assert a.authorize(res("get", "pods", "dev", user=SA)).allowed
    assert not a.authorize(res("delete", "pods", "dev", user=SA)).allowed
    assert not a.authorize(res("get", "pods", "prod", user=SA)).allowed


def test_missing_role_grants_nothing_and_is_reported():
    a = authorizer(binding("rb", "Role", "nope", user("bob"), ns="dev"),
                   cluster_role("reader", READ_PODS), binding("rb2", "ClusterRole", "reader", user("bob"), ns="dev"))
    assert a.authorize(res("get", "pods", "dev")).allowed      # the other binding still works
    rules, errs = a.rules_for(BOB, "dev")
    assert rules == [READ_PODS]
    assert errs == ['RoleBinding "rb" in namespace "dev": roles.rbac.authorization.k8s.io "nope" not found']


def test_non_resource_urls_need_a_clusterrolebinding():
    r = cluster_role("metrics", {"verbs": ["get"], "nonResourceURLs": ["/metrics"]})
    a = authorizer(r, binding("rb", "ClusterRole", "metrics", user("bob"), ns="dev"))
    assert not a.authorize(url("get", "/metrics")).allowed
    a = authorizer(r, binding("crb", "ClusterRole", "metrics", user("bob")))
    assert a.authorize(url("get", "/metrics")).allowed
    assert not a.authorize(url("get", "/metrics/x")).allowed


def test_malformed_objects_do_not_break_authorization():
    a = authorizer(cluster_role("reader", READ_PODS),
                   {"kind": "ClusterRoleBinding", "metadata": {"name": "bad"}, "subjects": [user("bob")]},
                   binding("crb", "ClusterRole", "reader", user("bob")))
    assert a.authorize(res("get", "pods")).allowed


def test_chain_keeps_masters_and_adds_rbac():
    rbac = authorizer(cluster_role("reader", READ_PODS), binding("crb", "ClusterRole", "reader", user("bob")))
    chain = default_authorizer(rbac)
    admin = UserInfo("admin", groups=("system:masters", "system:authenticated"))
    assert chain.authorize(res("delete", "nodes", "", user=admin)).allowed
    assert chain.authorize(res("get", "pods")).allowed
    assert not chain.authorize(res("get", "secrets")).allowed
    rules, _ = chain.rules_for(admin, "default")
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in rules
    assert chain.rules_for(BOB, "default")[0] == [READ_PODS]


def test_split_rules_for_rules_review():
    resource_rules, non = split_rules([rule(["get"], [""], ["cm"], ["a"]), {"verbs": ["get"], "nonResourceURLs": ["/x"]}])
    assert resource_rules == [{"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a"]}]
    assert non == [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]
