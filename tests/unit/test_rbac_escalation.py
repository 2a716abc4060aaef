"""Escalation prevention (covers/breakdown, and the checks in the RBAC registry strategies of an
in-process API server), the bootstrap policy's reconciliation, and ClusterRole aggregation."""

import asyncio
import copy
import functools

import pytest

from inprocess import api_server, ctx
from kubeling.api.errors import StatusError
from kubeling.apiserver.rbac import bootstrap
from kubeling.apiserver.rbac.escalation import breakdown, covers, rule_covers
from kubeling.controllers.clusterroleaggregation import aggregate

G = "rbac.authorization.k8s.io"


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return asyncio.run(fn(*a, **kw))
    return wrapper


def rule(verbs, groups, resources, names=None):
    r = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        r["resourceNames"] = names
    return r


def test_breakdown():
    pieces = breakdown(rule(["get", "list"], ["", "apps"], ["pods"], ["a"]))
    assert len(pieces) == 4
    assert {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"], "resourceNames": ["a"]} in pieces
    assert breakdown({"verbs": ["get"], "nonResourceURLs": ["/a", "/b"]}) == [
        {"verbs": ["get"], "nonResourceURLs": ["/a"]}, {"verbs": ["get"], "nonResourceURLs": ["/b"]}]


@pytest.mark.parametrize("owner, sub, ok", [
    (rule(["*"], ["*"], ["*"]), rule(["delete"], ["apps"], ["deployments"]), True),
    (rule(["get"], [""], ["pods"]), rule(["get"], [""], ["pods"]), True),
    (rule(["get"], [""], ["pods"]), rule(["list"], [""], ["pods"]), False),
    (rule(["get"], [""], ["pods"]), rule(["get"], [""], ["pods/log"]), False),
    (rule(["get"], [""], ["*/log"]), rule(["get"], [""], ["pods/log"]), True),
    (rule(["get"], [""], ["pods"]), rule(["get"], [""], ["pods"], ["a"]), True),
    (rule(["get"], [""], ["pods"], ["a"]), rule(["get"], [""], ["pods"], ["a"]), True),
    (rule(["get"], [""], ["pods"], ["a"]), rule(["get"], [""], ["pods"], ["b"]), False),
    (rule(["get"], [""], ["pods"], ["a"]), rule(["get"], [""], ["pods"]), False),
    ({"verbs": ["get"], "nonResourceURLs": ["/api/*"]}, {"verbs": ["get"], "nonResourceURLs": ["/api/v1"]}, True),
    ({"verbs": ["get"], "nonResourceURLs": ["/api"]}, {"verbs": ["get"], "nonResourceURLs": ["/api/v1"]}, False),
])
def test_rule_covers(owner, sub, ok):
    assert all(rule_covers(owner, p) for p in breakdown(sub)) is ok


def test_covers_reports_what_is_missing():
    ok, missing = covers([rule(["get", "list"], [""], ["pods"])], [rule(["get", "delete"], [""], ["pods"])])
    assert not ok
    assert missing == [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]


# -- in an API server ------------------------------------------------------------------------------

def served(api, resource):
    return api.lookup(G, "v1", resource)


async def aggregate_all(api):
    """What the clusterrole-aggregation controller does, run to a fixed point (no controller here)."""
    s = served(api, "clusterroles")
    for _ in range(4):
        roles, _, _, _ = await api.registry.list(s, None, None)
        changed = False
        for r in roles:
            if r.get("aggregationRule"):
                rules = aggregate(r, roles)
                if rules != (r.get("rules") or []):
                    r = copy.deepcopy(r)
                    r["rules"] = rules
                    await api.registry.update(s, None, r["metadata"]["name"], r, ctx())
                    changed = True
        if not changed:
            return


def rolebinding(name, ns, ref_kind, ref_name, user):
    return {"apiVersion": f"{G}/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": G, "kind": ref_kind, "name": ref_name},
            "subjects": [{"kind": "User", "apiGroup": G, "name": user}]}


def as_user(name, ns=None):
    return ctx(ns, user=name, groups=("system:authenticated",))


async def settle(api):
    await api.scope.cacher.wait_fresh(await api.registry.store.current_revision())


@sync
async def test_bootstrap_roles_and_bindings_exist():
    api = await api_server()
    roles, _, _, _ = await api.registry.list(served(api, "clusterroles"), None, None)
    names = {r["metadata"]["name"] for r in roles}
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
            "system:public-info-viewer", "system:aggregate-to-view"} <= names
    for r in roles:
        assert r["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert r["metadata"]["annotations"][bootstrap.AUTOUPDATE] == "true"
    crb = await api.registry.get_raw(served(api, "clusterrolebindings"), None, "cluster-admin")
    assert crb["subjects"] == [{"apiGroup": G, "kind": "Group", "name": "system:masters"}]


@sync
async def test_aggregation_fills_admin_edit_view():
    api = await api_server()
    await aggregate_all(api)
    get = lambda n: api.registry.get_raw(served(api, "clusterroles"), None, n)  # noqa: E731
    view, edit, admin = await get("view"), await get("edit"), await get("admin")
    pods_read = {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": [
        "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
        "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"]}
    assert pods_read in view["rules"]
    assert all(r in edit["rules"] for r in view["rules"])
    assert all(r in admin["rules"] for r in edit["rules"])
    assert not any("rolebindings" in r.get("resources", []) for r in edit["rules"])
    assert any("rolebindings" in r.get("resources", []) for r in admin["rules"])


@sync
async def test_namespace_admin_cannot_bind_cluster_admin_but_can_bind_view():
    api = await api_server()
    await aggregate_all(api)
    s = served(api, "rolebindings")
    await api.registry.create(s, rolebinding("dana-admin", "default", "ClusterRole", "admin", "dana"), ctx("default"))
    await settle(api)
    with pytest.raises(StatusError) as e:
        await api.registry.create(s, rolebinding("x", "default", "ClusterRole", "cluster-admin", "eve"),
                                  as_user("dana", "default"))
    assert e.value.code == 403
    assert 'rolebindings.rbac.authorization.k8s.io "x" is forbidden: user "dana"' in str(e.value)
    assert "is attempting to grant RBAC permissions not currently held" in str(e.value)
    await api.registry.create(s, rolebinding("y", "default", "ClusterRole", "view", "eve"), as_user("dana", "default"))
    await api.registry.create(s, rolebinding("z", "default", "ClusterRole", "edit", "eve"), as_user("dana", "default"))
    # a Role granting what she holds is fine; one granting more is not
    roles = served(api, "roles")
    ok = {"apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "pods", "namespace": "default"},
          "rules": [rule(["get", "list"], [""], ["pods"])]}
    await api.registry.create(roles, ok, as_user("dana", "default"))
    bad = copy.deepcopy(ok)
    bad["metadata"]["name"] = "nodes"
    bad["rules"] = [rule(["get"], [""], ["nodes"])]
    with pytest.raises(StatusError) as e:
        await api.registry.create(roles, bad, as_user("dana", "default"))
    assert e.value.code == 403
    # a Role she made is bindable (she holds its rules); a missing role is not
    await settle(api)
    await api.registry.create(s, rolebinding("w", "default", "Role", "pods", "eve"), as_user("dana", "default"))
    with pytest.raises(StatusError) as e:
        await api.registry.create(s, rolebinding("v", "default", "Role", "ghost", "eve"), as_user("dana", "default"))
    assert e.value.code == 403


@sync
async def test_escalate_and_bind_verbs_skip_the_check():
    api = await api_server()
    cr = served(api, "clusterroles")
    await api.registry.create(cr, {"apiVersion": f"{G}/v1", "kind": "ClusterRole", "metadata": {"name": "binder"},
                                   "rules": [rule(["bind"], [G], ["clusterroles"], ["cluster-admin"]),
                                             rule(["escalate", "create"], [G], ["roles"])]}, ctx())
    await api.registry.create(served(api, "rolebindings"), rolebinding("b", "default", "ClusterRole", "binder", "bo"),
                              ctx("default"))
    await settle(api)
    await api.registry.create(served(api, "rolebindings"),
                              rolebinding("ok", "default", "ClusterRole", "cluster-admin", "bo"), as_user("bo", "default"))
    await api.registry.create(served(api, "roles"), {
        "apiVersion": f"{G}/v1", "kind": "Role", "metadata": {"name": "all", "namespace": "default"},
        "rules": [rule(["*"], ["*"], ["*"])]}, as_user("bo", "default"))
    # bind is per role name: binding another role still needs its rules held
    with pytest.raises(StatusError) as e:
        await api.registry.create(served(api, "clusterrolebindings"), {
            "apiVersion": f"{G}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "nope"},
            "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": "system:aggregate-to-edit"},
            "subjects": [{"kind": "User", "apiGroup": G, "name": "bo"}]}, as_user("bo"))
    assert e.value.code == 403


@sync
async def test_aggregation_rule_needs_full_authority():
    api = await api_server()
    await api.registry.create(served(api, "rolebindings"), rolebinding("a", "default", "ClusterRole", "admin", "dana"),
                              ctx("default"))
    await settle(api)
    with pytest.raises(StatusError) as e:
        await api.registry.create(served(api, "clusterroles"), {
            "apiVersion": f"{G}/v1", "kind": "ClusterRole", "metadata": {"name": "sneaky"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}, as_user("dana"))
    assert e.value.code == 403


@sync
async def test_reconcile_restores_missing_rules_and_honours_autoupdate_false():
    api = await api_server()
    cr, crb = served(api, "clusterroles"), served(api, "clusterrolebindings")
    basic = await api.registry.get_raw(cr, None, "system:basic-user")
    extra = rule(["get"], [""], ["configmaps"])
    basic["rules"] = [extra]
    await api.registry.update(cr, None, "system:basic-user", basic, ctx())
    disc = await api.registry.get_raw(cr, None, "system:discovery")
    disc["rules"] = []
    disc["metadata"]["annotations"][bootstrap.AUTOUPDATE] = "false"
    await api.registry.update(cr, None, "system:discovery", disc, ctx())
    binding = await api.registry.get_raw(crb, None, "cluster-admin")
    binding["subjects"] = [{"apiGroup": G, "kind": "User", "name": "root"}]
    await api.registry.update(crb, None, "cluster-admin", binding, ctx())
    await api.registry.delete(cr, None, "view", {}, ctx())

    await bootstrap.reconcile(api)
    basic = await api.registry.get_raw(cr, None, "system:basic-user")
    assert basic["rules"][0] == extra           # what the administrator added stays
    assert len(basic["rules"]) == 3             # and the bootstrap rules are back
    assert (await api.registry.get_raw(cr, None, "system:discovery"))["rules"] == []
    subjects = (await api.registry.get_raw(crb, None, "cluster-admin"))["subjects"]
    assert {"apiGroup": G, "kind": "Group", "name": "system:masters"} in subjects and len(subjects) == 2
    view = await api.registry.get_raw(cr, None, "view")
    assert view["aggregationRule"]["clusterRoleSelectors"] == [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]
