"""Impersonation, anonymous requests and ``kubectl auth`` with real kubectl 1.32 (issue 9,
acceptance 2 and "kubectl auth can-i/whoami/reconcile are correct").

Users come from ``--token-auth-file``: ``alice`` (system:masters), ``bob`` (no rights but what
the tests bind), ``carol`` (may impersonate ``bob`` and nobody else, through a ClusterRole with
the ``impersonate`` verb on ``users`` named bob). The admin kubeconfig is the cluster admin.

- ``kubectl --as=bob`` acts as bob: whoami, can-i, get and delete are bob's, with bob's 403;
  ``--as-group`` adds groups; a service account is impersonated with its groups.
- a user without the ``impersonate`` verb gets upstream's 403 naming the resource (users,
  groups), and carol may impersonate bob only.
- the Python client impersonates through ``Impersonate-User`` default headers.
- ``kubectl auth can-i`` with ``--list``, ``-n``, ``--subresource`` and non-resource URLs, and
  ``kubectl auth reconcile`` (create, update, ``--remove-extra-permissions``).
- an anonymous request may read /healthz, /livez, /readyz and /version only.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import harness
import pytest

TOKENS = ('alicetoken,alice,1,"system:masters"\n'
          'bobtoken,bob,2,dev\n'
          'caroltoken,carol,3,dev\n')

K = "1.32"


@pytest.fixture(scope="module")
def imp_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("imp")
    (d / "tokens.csv").write_text(TOKENS)
    c = harness.started_cluster(d / "cluster", extra_args=("--token-auth-file", str(d / "tokens.csv"),
                                                           "--disable-scheduler"))
    c.tmp = d
    for ns in ("imp-dev", "imp-other"):
        c.kubectl("create", "namespace", ns, version=K)
    harness.eventually(lambda: '"pods"' in c.kubectl("get", "clusterrole", "view", "-o",
                                                     "jsonpath={.rules[*].resources}", version=K).stdout,
                       timeout=60, what="the view ClusterRole aggregated")
    c.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "imp-dev", version=K)
    c.kubectl("create", "clusterrole", "impersonate-bob", "--verb=impersonate", "--resource=users",
              "--resource-name=bob", version=K)
    c.kubectl("create", "clusterrolebinding", "carol-impersonates-bob", "--clusterrole=impersonate-bob",
              "--user=carol", version=K)
    yield c
    c.stop()


def as_user(c, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl with a kubeconfig whose only credential is ``token``."""
    return harness.kubectl_with(harness.user_kubeconfig(c, token, token=token), *args, version=K)


def admin(c, *args, check=False):
    return c.kubectl(*args, version=K, check=check)


def whoami(c, *args) -> dict:
    got = admin(c, "auth", "whoami", "-o", "json", *args)
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)["status"]["userInfo"]


def test_whoami_with_and_without_as(imp_cluster):
    c = imp_cluster
    me = whoami(c)
    assert me["username"] != "bob" and "system:masters" in me["groups"]
    assert whoami(c, "--as=bob") == {"username": "bob", "groups": ["system:authenticated"]}
    got = whoami(c, "--as=bob", "--as-group=dev", "--as-group=qa", "--as-uid=77")
    assert got == {"username": "bob", "uid": "77", "groups": ["dev", "qa", "system:authenticated"]}
    sa = whoami(c, "--as=system:serviceaccount:imp-dev:default")
    assert sa["username"] == "system:serviceaccount:imp-dev:default"
    assert sa["groups"] == ["system:serviceaccounts", "system:serviceaccounts:imp-dev", "system:authenticated"]
    # the table form kubectl prints by default
    table = admin(c, "auth", "whoami", "--as=bob")
    assert table.returncode == 0 and "bob" in table.stdout and "system:authenticated" in table.stdout


def test_as_bob_acts_as_bob(imp_cluster):
    c = imp_cluster
    admin(c, "create", "configmap", "x", "--from-literal=a=b", "-n", "imp-dev", check=True)
    assert admin(c, "auth", "can-i", "delete", "nodes").stdout.strip() == "yes"
    assert admin(c, "auth", "can-i", "delete", "nodes", "--as=bob").stdout.strip() == "no"
    gone = admin(c, "delete", "cm", "x", "-n", "imp-dev", "--as=bob")
    assert gone.returncode != 0
    assert ('configmaps "x" is forbidden: User "bob" cannot delete resource "configmaps" in API group "" in the '
            'namespace "imp-dev"') in gone.stderr, gone.stderr
    assert admin(c, "get", "cm", "x", "-n", "imp-dev").returncode == 0      # still there
    # bob's view binding: read in imp-dev, not in imp-other
    assert admin(c, "get", "cm", "-n", "imp-dev", "--as=bob").returncode == 0
    other = admin(c, "get", "cm", "-n", "imp-other", "--as=bob")
    assert other.returncode != 0 and 'User "bob" cannot list resource "configmaps"' in other.stderr
    # --as-group is honoured: bob in system:masters may do anything
    assert admin(c, "auth", "can-i", "delete", "nodes", "--as=bob", "--as-group=system:masters").stdout.strip() \
        == "yes"
    # who made it: the managedFields manager is kubectl's, the object was made by the impersonated user
    made = admin(c, "create", "configmap", "by-bob", "--from-literal=a=b", "-n", "imp-other", "--as=bob",
                 "--as-group=system:masters")
    assert made.returncode == 0, made.stderr


def test_impersonate_verb_is_required(imp_cluster):
    c = imp_cluster
    # (`get pods` fails at discovery first, where kubectl prints "unknown" for any 403, as with
    # upstream; `get --raw` shows the server's message)
    assert as_user(c, "bobtoken", "get", "pods", "-n", "imp-dev", "--as=alice").returncode != 0
    bad = as_user(c, "bobtoken", "get", "--raw", "/api/v1/namespaces/imp-dev/pods", "--as=alice")
    assert bad.returncode != 0
    assert ('users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the '
            'cluster scope') in bad.stderr, bad.stderr
    # carol may impersonate bob ...
    ok = as_user(c, "caroltoken", "auth", "whoami", "-o", "json", "--as=bob")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"]["userInfo"]["username"] == "bob"
    assert as_user(c, "caroltoken", "get", "pods", "-n", "imp-dev", "--as=bob").returncode == 0
    # ... and nobody else, and may not add groups
    bad = as_user(c, "caroltoken", "get", "--raw", "/api/v1/namespaces/imp-dev/pods", "--as=alice")
    assert 'users "alice" is forbidden: User "carol" cannot impersonate resource "users"' in bad.stderr, bad.stderr
    bad = as_user(c, "caroltoken", "get", "--raw", "/api/v1/namespaces/imp-dev/pods", "--as=bob",
                  "--as-group=system:masters")
    assert ('groups "system:masters" is forbidden: User "carol" cannot impersonate resource "groups" in API group '
            '"" at the cluster scope') in bad.stderr, bad.stderr
    bad = as_user(c, "caroltoken", "get", "--raw", "/api/v1/namespaces/imp-dev/pods",
                  "--as=system:serviceaccount:imp-dev:default")
    assert ('serviceaccounts "default" is forbidden: User "carol" cannot impersonate resource "serviceaccounts" in '
            'API group "" in the namespace "imp-dev"') in bad.stderr, bad.stderr
    # carol herself can-i impersonate bob: yes; alice: no
    assert as_user(c, "caroltoken", "auth", "can-i", "impersonate", "users/bob").stdout.strip() == "yes"
    assert as_user(c, "caroltoken", "auth", "can-i", "impersonate", "users/alice").stdout.strip() == "no"


def test_python_client_impersonation(imp_cluster):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = imp_cluster.python_client()
    api.set_default_header("Impersonate-User", "bob")
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
    assert review.status.user_info.username == "bob"
    core = client.CoreV1Api(api)
    assert isinstance(core.list_namespaced_config_map("imp-dev").items, list)
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map("imp-other")
    assert e.value.status == 403
    assert 'User "bob" cannot list resource "configmaps"' in json.loads(e.value.body)["message"]
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map("x", "imp-dev")
    assert e.value.status == 403


def test_can_i_list_namespaces_subresources_and_urls(imp_cluster):
    c = imp_cluster

    def can(*args):
        return admin(c, "auth", "can-i", *args, "--as=bob").stdout.strip()

    assert can("list", "pods", "-n", "imp-dev") == "yes"
    assert can("list", "pods", "-n", "imp-other") == "no"
    assert can("list", "pods", "-A") == "no"
    assert can("get", "pods", "--subresource=log", "-n", "imp-dev") == "yes"
    assert can("create", "pods", "--subresource=exec", "-n", "imp-dev") == "no"
    assert can("get", "/healthz") == "yes"
    assert can("get", "/api") == "yes"
    assert can("get", "/metrics") == "no"
    assert can("create", "selfsubjectaccessreviews.authorization.k8s.io") == "yes"
    listed = admin(c, "auth", "can-i", "--list", "-n", "imp-dev", "--as=bob")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.split()}
    assert "[get list watch]" in rows["pods"], listed.stdout
    assert "[create]" in rows["selfsubjectaccessreviews.authorization.k8s.io"], listed.stdout
    assert "[/healthz]" in listed.stdout or "/healthz" in listed.stdout
    other = admin(c, "auth", "can-i", "--list", "-n", "imp-other", "--as=bob")
    assert "pods" not in [line.split()[0] for line in other.stdout.splitlines()[1:] if line.split()]


RBAC_V1 = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reconciled, namespace: imp-other}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [%s]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reconciled, namespace: imp-other}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reconciled}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: %s}
"""


def test_auth_reconcile(imp_cluster, tmp_path):
    c = imp_cluster
    f = tmp_path / "rbac.yaml"
    f.write_text(RBAC_V1 % ("get, list, delete", "bob"))
    got = admin(c, "auth", "reconcile", "-f", str(f))
    assert got.returncode == 0, got.stderr
    assert 'role.rbac.authorization.k8s.io/reconciled reconciled' in got.stdout, got.stdout
    harness.eventually(lambda: admin(c, "auth", "can-i", "delete", "configmaps", "-n", "imp-other",
                                     "--as=bob").stdout.strip() == "yes", timeout=10, what="the reconciled role")
    # reconcile without the extra verb keeps it (a union) ...
    f.write_text(RBAC_V1 % ("get, list", "dana"))
    assert admin(c, "auth", "reconcile", "-f", str(f)).returncode == 0
    role = json.loads(admin(c, "get", "role", "reconciled", "-n", "imp-other", "-o", "json").stdout)
    assert sorted(role["rules"][0]["verbs"]) == ["delete", "get", "list"]
    rb = json.loads(admin(c, "get", "rolebinding", "reconciled", "-n", "imp-other", "-o", "json").stdout)
    assert sorted(s["name"] for s in rb["subjects"]) == ["bob", "dana"]
    # ... --remove-extra-permissions and --remove-extra-subjects make it exact
    got = admin(c, "auth", "reconcile", "-f", str(f), "--remove-extra-permissions", "--remove-extra-subjects")
    assert got.returncode == 0, got.stderr
    role = json.loads(admin(c, "get", "role", "reconciled", "-n", "imp-other", "-o", "json").stdout)
    assert sorted(role["rules"][0]["verbs"]) == ["get", "list"]
    rb = json.loads(admin(c, "get", "rolebinding", "reconciled", "-n", "imp-other", "-o", "json").stdout)
    assert [s["name"] for s in rb["subjects"]] == ["dana"]
    harness.eventually(lambda: admin(c, "auth", "can-i", "delete", "configmaps", "-n", "imp-other",
                                     "--as=dana").stdout.strip() == "no", timeout=10, what="the narrowed role")
    assert admin(c, "auth", "can-i", "list", "configmaps", "-n", "imp-other", "--as=dana").stdout.strip() == "yes"


def test_anonymous_reads_public_info_only(imp_cluster):
    c = imp_cluster
    ctx = ssl.create_default_context(cafile=str(c.data_dir / "pki" / "ca.crt"))

    def get(path):
        try:
            with urllib.request.urlopen(c.url + path, context=ctx, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    for path in ("/healthz", "/livez", "/readyz", "/version"):
        assert get(path)[0] == 200, path
    for path in ("/api", "/apis", "/metrics", "/openapi/v2", "/api/v1/namespaces"):
        code, body = get(path)
        assert code == 403, path
        assert 'User "system:anonymous"' in json.loads(body)["message"]


def test_reviews_through_kubectl_create(imp_cluster, tmp_path):
    """TokenReview, SubjectAccessReview and LocalSubjectAccessReview created by kubectl."""
    c = imp_cluster

    def create(doc: dict) -> dict:
        f = tmp_path / "review.json"
        f.write_text(json.dumps(doc))
        got = admin(c, "create", "-f", str(f), "-o", "json")
        assert got.returncode == 0, got.stderr
        return json.loads(got.stdout)["status"]

    st = create({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "bobtoken"}})
    assert st["authenticated"] is True
    assert st["user"] == {"username": "bob", "uid": "2", "groups": ["dev", "system:authenticated"]}
    st = create({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "nobody"}})
    assert st["authenticated"] is False
    ra = {"verb": "list", "resource": "pods", "namespace": "imp-dev"}
    st = create({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                 "spec": {"user": "bob", "groups": ["dev"], "resourceAttributes": ra}})
    assert st["allowed"] is True
    st = create({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                 "spec": {"user": "bob", "nonResourceAttributes": {"verb": "get", "path": "/metrics"}}})
    assert st["allowed"] is False
    st = create({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                 "metadata": {"namespace": "imp-dev"}, "spec": {"user": "bob", "resourceAttributes": ra}})
    assert st["allowed"] is True
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                             "metadata": {"namespace": "imp-dev"},
                             "spec": {"user": "bob", "resourceAttributes": {**ra, "namespace": "imp-other"}}}))
    bad = admin(c, "create", "-f", str(f))
    assert bad.returncode != 0 and "must match metadata.namespace" in bad.stderr, bad.stderr
