"""RBAC with real kubectl (issue 9's RBAC slice): users from ``--token-auth-file``.

- ``bob`` holds nothing: ``kubectl auth can-i list pods`` is no and ``get pods`` is 403; after an
  administrator's ``kubectl create rolebinding --clusterrole=view --user=bob`` it is yes in that
  namespace only, and delete is still no; ``auth can-i --list`` shows the view rules.
- ``dana`` is ``admin`` of a namespace (a RoleBinding): she may bind ``view`` and ``edit`` there,
  but not ``cluster-admin`` (escalation prevention: she does not hold its rules), and may not
  create a Role granting what she does not hold; an ``edit`` user may not create RoleBindings at
  all (upstream's ``edit`` has no rolebindings rule).
- The bootstrap ClusterRoles are there with upstream's labels and annotations, and the
  aggregated ``view`` has its rules (clusterrole-aggregation controller).
"""

from __future__ import annotations

import json
import subprocess

import harness
import pytest

TOKENS = ('admintoken,alice,1,"system:masters"\n'
          'bobtoken,bob,2,dev\n'
          'danatoken,dana,3,dev\n'
          'eddietoken,eddie,4,dev\n')


@pytest.fixture(scope="module")
def rbac_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("rbac")
    (d / "tokens.csv").write_text(TOKENS)
    c = harness.started_cluster(d / "cluster", extra_args=("--token-auth-file", str(d / "tokens.csv"),
                                                           "--disable-scheduler"))
    c.tmp = d
    for ns in ("rbac-a", "rbac-b"):
        c.kubectl("create", "namespace", ns)
    # the aggregated roles are filled by the controller manager
    harness.eventually(lambda: '"pods"' in c.kubectl("get", "clusterrole", "view", "-o",
                                                     "jsonpath={.rules[*].resources}").stdout,
                       timeout=60, what="the view ClusterRole aggregated")
    harness.eventually(lambda: '"rolebindings"' in c.kubectl("get", "clusterrole", "admin", "-o",
                                                             "jsonpath={.rules[*].resources}").stdout,
                       timeout=60, what="the admin ClusterRole aggregated")
    yield c
    c.stop()


def as_user(c, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl with a kubeconfig whose only credential is ``token``."""
    return harness.kubectl_with(harness.user_kubeconfig(c, token, token=token), *args, version="1.33")


def can_i(c, token, *args) -> str:
    return as_user(c, token, "auth", "can-i", *args).stdout.strip()


def test_bootstrap_cluster_roles(rbac_cluster):
    c = rbac_cluster
    roles = json.loads(c.kubectl("get", "clusterroles", "-o", "json").stdout)["items"]
    by_name = {r["metadata"]["name"]: r for r in roles}
    for name in ("cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery",
                 "system:public-info-viewer"):
        meta = by_name[name]["metadata"]
        assert meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert meta["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    assert by_name["cluster-admin"]["rules"] == [
        {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    assert by_name["edit"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    crb = json.loads(c.kubectl("get", "clusterrolebinding", "cluster-admin", "-o", "json").stdout)
    assert crb["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]
    # system:masters may do anything, and says so
    listed = as_user(c, "admintoken", "auth", "can-i", "--list").stdout.splitlines()
    assert any(line.split()[:4] == ["*.*", "[]", "[]", "[*]"] for line in listed), listed


def test_rolebinding_to_view_grants_reading_one_namespace(rbac_cluster):
    c = rbac_cluster
    assert can_i(c, "bobtoken", "list", "pods", "-n", "rbac-a") == "no"
    denied = as_user(c, "bobtoken", "get", "pods", "-n", "rbac-a")
    assert denied.returncode != 0
    assert ('pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "rbac-a"'
            in denied.stderr), denied.stderr

    c.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "rbac-a")
    harness.eventually(lambda: can_i(c, "bobtoken", "list", "pods", "-n", "rbac-a") == "yes", timeout=10,
                       what="bob's RoleBinding to take effect")
    got = as_user(c, "bobtoken", "get", "pods", "-n", "rbac-a")
    assert got.returncode == 0, got.stderr
    assert can_i(c, "bobtoken", "get", "deployments.apps", "-n", "rbac-a") == "yes"
    assert can_i(c, "bobtoken", "list", "pods", "-n", "rbac-b") == "no"
    assert can_i(c, "bobtoken", "list", "pods", "--all-namespaces") == "no"
    assert can_i(c, "bobtoken", "delete", "pods", "-n", "rbac-a") == "no"
    assert can_i(c, "bobtoken", "get", "secrets", "-n", "rbac-a") == "no"     # view does not read secrets
    assert as_user(c, "bobtoken", "get", "pods", "-n", "rbac-b").returncode != 0
    listed = as_user(c, "bobtoken", "auth", "can-i", "--list", "-n", "rbac-a")
    assert listed.returncode == 0, listed.stderr
    pods_line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["pods"])
    assert "[get list watch]" in pods_line, listed.stdout
    # a cluster-wide request lists nothing from the RoleBinding
    other = as_user(c, "bobtoken", "auth", "can-i", "--list", "-n", "rbac-b")
    assert not any(line.split()[:1] == ["pods"] for line in other.stdout.splitlines()), other.stdout


def test_namespace_admin_cannot_escalate(rbac_cluster):
    c = rbac_cluster
    c.kubectl("create", "rolebinding", "dana-admin", "--clusterrole=admin", "--user=dana", "-n", "rbac-a")
    harness.eventually(lambda: can_i(c, "danatoken", "create", "rolebindings", "-n", "rbac-a") == "yes",
                       timeout=10, what="dana's admin RoleBinding to take effect")
    bad = as_user(c, "danatoken", "create", "rolebinding", "eve-root", "--clusterrole=cluster-admin", "--user=eve",
                  "-n", "rbac-a")
    assert bad.returncode != 0
    assert ('rolebindings.rbac.authorization.k8s.io "eve-root" is forbidden: user "dana" (groups=["dev" '
            '"system:authenticated"]) is attempting to grant RBAC permissions not currently held') in bad.stderr, \
        bad.stderr
    ok = as_user(c, "danatoken", "create", "rolebinding", "eve-view", "--clusterrole=view", "--user=eve",
                 "-n", "rbac-a")
    assert ok.returncode == 0, ok.stderr
    ok = as_user(c, "danatoken", "create", "rolebinding", "eve-edit", "--clusterrole=edit", "--user=eve",
                 "-n", "rbac-a")
    assert ok.returncode == 0, ok.stderr
    # not in another namespace: there she holds nothing, not even the right to create bindings
    elsewhere = as_user(c, "danatoken", "create", "rolebinding", "eve-view", "--clusterrole=view", "--user=eve",
                        "-n", "rbac-b")
    assert elsewhere.returncode != 0 and "forbidden" in elsewhere.stderr
    # a Role granting what she does not hold (nodes are cluster-scoped; she has nothing there)
    role = as_user(c, "danatoken", "create", "role", "node-reader", "--verb=get", "--resource=nodes", "-n", "rbac-a")
    assert role.returncode != 0 and "attempting to grant RBAC permissions not currently held" in role.stderr
    role = as_user(c, "danatoken", "create", "role", "pod-reader", "--verb=get,list", "--resource=pods",
                   "-n", "rbac-a")
    assert role.returncode == 0, role.stderr


def test_edit_may_not_manage_rolebindings(rbac_cluster):
    c = rbac_cluster
    c.kubectl("create", "rolebinding", "eddie-edit", "--clusterrole=edit", "--user=eddie", "-n", "rbac-b")
    harness.eventually(lambda: can_i(c, "eddietoken", "create", "deployments.apps", "-n", "rbac-b") == "yes",
                       timeout=10, what="eddie's edit RoleBinding to take effect")
    assert can_i(c, "eddietoken", "create", "rolebindings", "-n", "rbac-b") == "no"
    got = as_user(c, "eddietoken", "create", "rolebinding", "x", "--clusterrole=cluster-admin", "--user=eddie",
                  "-n", "rbac-b")
    assert got.returncode != 0
    assert 'User "eddie" cannot create resource "rolebindings"' in got.stderr, got.stderr
    made = as_user(c, "eddietoken", "create", "configmap", "cm1", "--from-literal=a=b", "-n", "rbac-b")
    assert made.returncode == 0, made.stderr
