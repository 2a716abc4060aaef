"""Least privilege for kubeling's own components, and the bootstrap policy they rely on (issue 9).

One server (scheduler and every controller, no agent), real kubectl 1.33 and Helm:

- Only ``admin.kubeconfig`` is ``system:masters``: the scheduler's, controller manager's, DNS's
  and ingress's kubeconfigs (0600) carry certificates for ``system:kube-scheduler``,
  ``system:kube-controller-manager``, ``system:kubeling-dns``, ``system:kubeling-ingress`` with no
  group, and ``kubectl auth can-i`` with each answers as upstream's roles say.
- Upstream's bootstrap ClusterRoles and bindings are there (``system:node``, ``system:kube-
  scheduler``, ``system:controller:<name>`` bound to ``kube-system/<name>``, ...).
- The audit log shows who wrote: each controller as ``system:serviceaccount:kube-system:<name>``,
  the scheduler as ``system:kube-scheduler``, leader election as the manager and scheduler users,
  and nobody but the admin in ``system:masters``.
- Controllers write as their own service accounts: a Deployment's ReplicaSet and Pods appear,
  the scheduler (as ``system:kube-scheduler``) reports FailedScheduling, and taking ``create
  replicasets`` away from ``system:controller:deployment-controller`` stops the deployment
  controller with a Warning Event ``Forbidden`` naming its service account; giving it back lets
  it finish.
- Acceptance 4: a service account token bound to ``edit`` in one namespace installs a Helm chart
  there and nowhere else.
- Acceptance 5: a CRD's ClusterRole labelled ``aggregate-to-view`` shows up in ``view`` (and one
  labelled ``aggregate-to-edit`` in ``edit`` and ``admin``), and a ``view`` user may read the
  custom resources.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import harness
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

COMPONENT_USERS = {
    "scheduler": "system:kube-scheduler",
    "controller-manager": "system:kube-controller-manager",
    "dns": "system:kubeling-dns",
    "ingress": "system:kubeling-ingress",
}


# every write, with its user: who the components' requests come as
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"""


@pytest.fixture(scope="module")
def ident_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("ident")
    (d / "audit-policy.yaml").write_text(AUDIT_POLICY)
    c = harness.Cluster(d / "cluster", extra_args=("--audit-policy-file", str(d / "audit-policy.yaml"),
                                                   "--audit-log-path", str(d / "audit.log")))
    c.audit_log = d / "audit.log"
    try:
        c.start()
    except harness.ServerNotReady as e:
        c.stop()
        pytest.fail(str(e), pytrace=False)
    c.tmp = d
    harness.eventually(lambda: '"pods"' in c.kubectl("get", "clusterrole", "edit", "-o",
                                                     "jsonpath={.rules[*].resources}").stdout,
                       timeout=60, what="the edit ClusterRole aggregated")
    yield c
    c.stop()


def subject_of(kubeconfig_path) -> tuple[str, list[str]]:
    cfg = yaml.safe_load(open(kubeconfig_path))
    pem = base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"])
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return cn, [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def kubectl_as(c, kubeconfig, *args, check=False) -> subprocess.CompletedProcess:
    return subprocess.run([harness.kubectl_binary("1.33"), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, check=check)


def can_i(c, kubeconfig, *args) -> str:
    return kubectl_as(c, kubeconfig, "auth", "can-i", *args).stdout.strip()


def test_ident_only_admin_is_system_masters(ident_cluster):
    c = ident_cluster
    data = c.data_dir
    assert subject_of(data / "admin.kubeconfig") == ("kubernetes-admin", ["system:masters"])
    for name, user in COMPONENT_USERS.items():
        path = data / f"{name}.kubeconfig"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert subject_of(path) == (user, []), name
        who = json.loads(kubectl_as(c, path, "auth", "whoami", "-o", "json", check=True).stdout)
        assert who["status"]["userInfo"]["username"] == user
        assert "system:masters" not in who["status"]["userInfo"].get("groups", [])
    # every kubeconfig in the data dir, and every client certificate in pki/: only admin is a master
    masters = sorted(p.name for p in data.glob("*.kubeconfig") if "system:masters" in subject_of(p)[1])
    assert masters == ["admin.kubeconfig"]
    for crt in (data / "pki").glob("*.crt"):
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert "system:masters" not in orgs or crt.name == "admin.crt", crt.name
    # and no binding but cluster-admin's names system:masters
    crbs = json.loads(c.kubectl("get", "clusterrolebindings", "-o", "json").stdout)["items"]
    holders = [b["metadata"]["name"] for b in crbs
               if any(s.get("kind") == "Group" and s.get("name") == "system:masters" for s in b.get("subjects") or [])]
    assert holders == ["cluster-admin"]


def test_ident_scheduler_can_i_as_upstream_role(ident_cluster):
    c = ident_cluster
    sched = c.data_dir / "scheduler.kubeconfig"
    yes = [("create", "pods", "--subresource=binding"), ("patch", "pods", "--subresource=status"),
           ("list", "nodes"), ("watch", "pods", "-A"), ("delete", "pods"), ("list", "persistentvolumes"),
           ("list", "storageclasses.storage.k8s.io"), ("update", "persistentvolumeclaims"),
           ("create", "events"), ("create", "leases.coordination.k8s.io", "-n", "kube-system"),
           ("update", "leases.coordination.k8s.io/kube-scheduler", "-n", "kube-system"),
           ("list", "poddisruptionbudgets.policy"), ("list", "namespaces")]
    no = [("create", "pods"), ("update", "pods"), ("list", "secrets"), ("get", "configmaps"),
          ("update", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system"),
          ("create", "deployments.apps"), ("delete", "nodes"), ("*", "*")]
    for args in yes:
        assert can_i(c, sched, *args) == "yes", args
    for args in no:
        assert can_i(c, sched, *args) == "no", args
    # the admin asking about the user (impersonation) gets the same answers
    admin_as = lambda *a: c.kubectl("auth", "can-i", *a, "--as=system:kube-scheduler",  # noqa: E731
                                    check=False).stdout.strip()
    assert admin_as("create", "pods", "--subresource=binding") == "yes"
    assert admin_as("create", "pods") == "no"
    assert admin_as("list", "secrets") == "no"
    sa_as = lambda *a: c.kubectl("auth", "can-i", *a,  # noqa: E731
                                 "--as=system:serviceaccount:kube-system:replicaset-controller",
                                 check=False).stdout.strip()
    assert sa_as("create", "pods", "-n", "any") == "yes"
    assert sa_as("update", "replicasets.apps", "--subresource=status", "-n", "any") == "yes"
    assert sa_as("create", "replicasets.apps", "-n", "any") == "no"
    assert sa_as("get", "secrets", "-n", "any") == "no"
    cm = c.data_dir / "controller-manager.kubeconfig"
    assert can_i(c, cm, "list", "secrets", "-A") == "yes"       # shared informers
    assert can_i(c, cm, "create", "serviceaccounts", "--subresource=token", "-n", "kube-system") == "yes"
    assert can_i(c, cm, "create", "deployments.apps") == "no"
    assert can_i(c, cm, "delete", "pods") == "no"
    dns = c.data_dir / "dns.kubeconfig"
    assert can_i(c, dns, "watch", "endpointslices.discovery.k8s.io", "-A") == "yes"
    assert can_i(c, dns, "create", "services", "-n", "kube-system") == "yes"
    assert can_i(c, dns, "create", "services", "-n", "default") == "no"
    assert can_i(c, dns, "list", "secrets", "-A") == "no"
    ing = c.data_dir / "ingress.kubeconfig"
    assert can_i(c, ing, "list", "ingresses.networking.k8s.io", "-A") == "yes"
    assert can_i(c, ing, "update", "ingresses.networking.k8s.io", "--subresource=status", "-n", "x") == "yes"
    assert can_i(c, ing, "update", "ingresses.networking.k8s.io", "-n", "x") == "no"
    assert can_i(c, ing, "create", "pods") == "no"


def test_bootstrap_policy_component_roles(ident_cluster):
    c = ident_cluster
    roles = {r["metadata"]["name"]: r for r in json.loads(c.kubectl("get", "clusterroles", "-o", "json").stdout)["items"]}
    bindings = {b["metadata"]["name"]: b
                for b in json.loads(c.kubectl("get", "clusterrolebindings", "-o", "json").stdout)["items"]}
    for name in ("system:node", "system:node-proxier", "system:kube-scheduler", "system:volume-scheduler",
                 "system:kube-controller-manager", "system:kube-dns", "system:node-bootstrapper",
                 "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                 "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                 "system:certificates.k8s.io:kube-apiserver-client-approver",
                 "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
                 "system:auth-delegator", "system:monitoring", "system:service-account-issuer-discovery",
                 "system:kubelet-api-admin", "system:kubeling-controller"):
        meta = roles[name]["metadata"]
        assert meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults", name
        assert meta["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true", name

    def subjects(name):
        return sorted((s["kind"], s.get("namespace", ""), s["name"]) for s in bindings[name].get("subjects") or [])

    assert subjects("system:node") == []   # granted by the Node authorizer, not RBAC
    assert subjects("system:node-proxier") == [("User", "", "system:kube-proxy")]
    assert subjects("system:kube-scheduler") == [("User", "", "system:kube-scheduler")]
    assert subjects("system:volume-scheduler") == [("User", "", "system:kube-scheduler")]
    assert subjects("system:kube-controller-manager") == [("User", "", "system:kube-controller-manager")]
    assert subjects("system:kube-dns") == [("ServiceAccount", "kube-system", "kube-dns")]
    assert subjects("system:certificates.k8s.io:certificatesigningrequests:nodeclient") == [
        ("Group", "", "system:bootstrappers")]
    assert subjects("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient") == [
        ("Group", "", "system:nodes")]
    # a system:controller:<name> role and binding to kube-system/<name> for every controller we run
    for sa in ("deployment-controller", "replicaset-controller", "job-controller", "cronjob-controller",
               "daemon-set-controller", "statefulset-controller", "namespace-controller",
               "generic-garbage-collector", "node-controller", "pod-garbage-collector", "endpoint-controller",
               "endpointslice-controller", "endpointslicemirroring-controller", "service-account-controller",
               "root-ca-cert-publisher", "resourcequota-controller", "disruption-controller",
               "ttl-after-finished-controller", "clusterrole-aggregation-controller", "replication-controller",
               "certificate-controller", "service-lb-controller"):
        name = f"system:controller:{sa}"
        assert name in roles, name
        assert subjects(name) == [("ServiceAccount", "kube-system", sa)], name
    dep = roles["system:controller:deployment-controller"]["rules"]
    assert {"verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            "apiGroups": ["apps", "extensions"], "resources": ["replicasets"]} in dep


def audit_events(c) -> list[dict]:
    if not c.audit_log.exists():
        return []
    return [json.loads(line) for line in c.audit_log.read_text().splitlines() if line.strip()]


def test_ident_requests_come_as_the_components_users(ident_cluster):
    """The audit log names who wrote: the scheduler, the manager and each controller as themselves,
    and nothing but the admin as a system:masters member."""
    c = ident_cluster
    c.kubectl("create", "namespace", "ident-audit")
    c.kubectl("create", "deployment", "aud", "--image=nginx", "-n", "ident-audit")

    def writers():
        return {(e["user"]["username"], e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("subresource"))
                for e in audit_events(c) if e.get("stage") == "ResponseComplete" and e.get("objectRef")
                and e["objectRef"].get("namespace") in ("ident-audit", "kube-system")}

    want = {("system:serviceaccount:kube-system:deployment-controller", "create", "replicasets", None),
            ("system:serviceaccount:kube-system:replicaset-controller", "create", "pods", None),
            ("system:kube-scheduler", "patch", "pods", "status"),
            ("system:kube-controller-manager", "update", "leases", None),
            ("system:kube-scheduler", "update", "leases", None)}
    harness.eventually(lambda: want <= writers(), timeout=60,
                       what=f"writes by {sorted(want - writers())}")
    events = audit_events(c)
    masters = {e["user"]["username"] for e in events if "system:masters" in (e["user"].get("groups") or [])}
    assert masters <= {"kubernetes-admin"}, masters
    users = {e["user"]["username"] for e in events}
    assert "system:admin" not in users


def _patch_rules(c, role: str, rules: list[dict]) -> None:
    c.kubectl("patch", "clusterrole", role, "--type=json", "-p",
              json.dumps([{"op": "replace", "path": "/rules", "value": rules}]))


def test_ident_controllers_write_as_their_service_accounts(ident_cluster):
    c = ident_cluster
    c.kubectl("create", "namespace", "ident-work")
    c.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "-n", "ident-work")
    harness.eventually(lambda: len(json.loads(c.kubectl("get", "pods", "-n", "ident-work", "-o", "json").stdout)
                                   ["items"]) == 2, timeout=60, what="the deployment's two pods")
    # no node: the scheduler, running as system:kube-scheduler, says so on the pods
    harness.eventually(lambda: "FailedScheduling" in c.kubectl("get", "events", "-n", "ident-work").stdout,
                       timeout=60, what="the scheduler's FailedScheduling events")
    accounts = c.kubectl("get", "serviceaccounts", "-n", "kube-system", "-o", "name").stdout.split()
    for sa in ("deployment-controller", "replicaset-controller", "generic-garbage-collector",
               "service-account-controller", "root-ca-cert-publisher"):
        assert f"serviceaccount/{sa}" in accounts, accounts

    role = "system:controller:deployment-controller"
    saved = json.loads(c.kubectl("get", "clusterrole", role, "-o", "json").stdout)["rules"]
    trimmed = [r for r in saved if "replicasets" not in r.get("resources", [])]
    _patch_rules(c, role, trimmed)
    try:
        c.kubectl("create", "deployment", "blocked", "--image=nginx", "-n", "ident-work")

        def forbidden_event():
            evs = json.loads(c.kubectl("get", "events", "-n", "kube-system", "-o", "json").stdout)["items"]
            return [e for e in evs if e["reason"] == "Forbidden"
                    and e["involvedObject"]["kind"] == "ServiceAccount"
                    and e["involvedObject"]["name"] == "deployment-controller"]

        evs = harness.eventually(forbidden_event, timeout=60, what="a Forbidden Event on the controller's account")
        assert evs[0]["type"] == "Warning"
        assert ('User "system:serviceaccount:kube-system:deployment-controller" cannot create resource '
                '"replicasets" in API group "apps" in the namespace "ident-work"') in evs[0]["message"]
        assert ("controller deployment (service account kube-system/deployment-controller) is forbidden"
                in c.log())
        rs = c.kubectl("get", "rs", "-n", "ident-work", "-l", "app=blocked", "-o", "name").stdout.split()
        assert rs == []
    finally:
        _patch_rules(c, role, saved)
    # given back its rule, the controller finishes the job (a change to the Deployment requeues it at once)
    c.kubectl("annotate", "deployment", "blocked", "-n", "ident-work", "retry=1")
    harness.eventually(lambda: c.kubectl("get", "rs", "-n", "ident-work", "-l", "app=blocked", "-o",
                                         "name").stdout.strip(), timeout=60, what="the ReplicaSet after the fix")


def _token_kubeconfig(c, path, token: str, namespace: str):
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": c.url,
                                               "certificate-authority": str(c.data_dir / "pki" / "ca.crt")}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}))
    os.chmod(path, 0o600)
    return path


def test_ident_service_account_edit_deploys_helm_chart_in_its_namespace_only(ident_cluster):
    """Acceptance 4."""
    c = ident_cluster
    try:
        harness.helm_binary()
    except harness.ClientMissing as e:
        pytest.fail(str(e), pytrace=False)
    for ns in ("team-a", "team-b"):
        c.kubectl("create", "namespace", ns)
    c.kubectl("create", "serviceaccount", "deployer", "-n", "team-a")
    c.kubectl("create", "rolebinding", "deployer-edit", "--clusterrole=edit",
              "--serviceaccount=team-a:deployer", "-n", "team-a")
    token = c.kubectl("create", "token", "deployer", "-n", "team-a", "--duration=1h").stdout.strip()
    cfg = _token_kubeconfig(c, c.tmp / "deployer.kubeconfig", token, "team-a")
    chart_dir = c.tmp / "charts"
    chart_dir.mkdir(exist_ok=True)
    c.helm("create", "demo", cwd=chart_dir)
    chart = chart_dir / "demo"

    def helm_sa(*args):  # Cluster.helm would pass the admin kubeconfig
        env = c._env({"KUBECONFIG": str(cfg)})
        return subprocess.run([harness.helm_binary(), f"--kubeconfig={cfg}", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    out = helm_sa("install", "demo", str(chart), "-n", "team-a")
    assert out.returncode == 0, out.stderr
    assert "STATUS: deployed" in out.stdout
    dep = json.loads(c.kubectl("get", "deployment", "demo", "-n", "team-a", "-o", "json").stdout)
    assert dep["metadata"]["annotations"]["meta.helm.sh/release-name"] == "demo"
    c.kubectl("get", "service", "demo", "-n", "team-a")
    c.kubectl("get", "serviceaccount", "demo", "-n", "team-a")
    out = helm_sa("upgrade", "demo", str(chart), "-n", "team-a", "--set", "replicaCount=2")
    assert out.returncode == 0, out.stderr
    assert json.loads(c.kubectl("get", "deployment", "demo", "-n", "team-a", "-o", "json").stdout)[
        "spec"]["replicas"] == 2

    out = helm_sa("install", "demo", str(chart), "-n", "team-b")
    assert out.returncode != 0
    assert "forbidden" in out.stderr.lower()
    assert 'User "system:serviceaccount:team-a:deployer" cannot' in out.stderr
    assert c.kubectl("get", "all", "-n", "team-b", "-o", "name").stdout.strip() == ""
    # nor cluster-scoped objects, nor the namespace's RBAC
    assert can_i(c, cfg, "create", "clusterroles.rbac.authorization.k8s.io") == "no"
    assert can_i(c, cfg, "create", "rolebindings.rbac.authorization.k8s.io", "-n", "team-a") == "no"
    out = helm_sa("uninstall", "demo", "-n", "team-a")
    assert out.returncode == 0, out.stderr


CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.ident.example.com
spec:
  group: ident.example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: gizmos-view
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: [ident.example.com]
  resources: [gizmos]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: gizmos-edit
  labels:
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
rules:
- apiGroups: [ident.example.com]
  resources: [gizmos]
  verbs: [create, update, patch, delete]
"""


def test_ident_crd_clusterrole_aggregates_into_view(ident_cluster):
    """Acceptance 5."""
    c = ident_cluster
    c.kubectl("apply", "-f", "-", input=CRD)
    harness.eventually(lambda: c.kubectl("get", "crd", "gizmos.ident.example.com", "-o",
                                         "jsonpath={.status.conditions[?(@.type=='Established')].status}"
                                         ).stdout == "True", timeout=30, what="the CRD established")

    def has_rule(role, verbs):
        rules = json.loads(c.kubectl("get", "clusterrole", role, "-o", "json").stdout).get("rules") or []
        return any(r.get("apiGroups") == ["ident.example.com"] and r.get("resources") == ["gizmos"]
                   and r.get("verbs") == verbs for r in rules)

    harness.eventually(lambda: has_rule("view", ["get", "list", "watch"]), timeout=60, what="gizmos in view")
    harness.eventually(lambda: has_rule("edit", ["create", "update", "patch", "delete"]), timeout=60,
                       what="gizmos in edit")
    harness.eventually(lambda: has_rule("admin", ["get", "list", "watch"]), timeout=60, what="gizmos in admin")
    assert not has_rule("view", ["create", "update", "patch", "delete"])

    c.kubectl("create", "namespace", "gizmo-land")
    c.kubectl("create", "serviceaccount", "viewer", "-n", "gizmo-land")
    c.kubectl("create", "rolebinding", "viewer", "--clusterrole=view", "--serviceaccount=gizmo-land:viewer",
              "-n", "gizmo-land")
    c.kubectl("apply", "-n", "gizmo-land", "-f", "-",
              input="apiVersion: ident.example.com/v1\nkind: Gizmo\nmetadata:\n  name: g1\n")
    token = c.kubectl("create", "token", "viewer", "-n", "gizmo-land").stdout.strip()
    cfg = _token_kubeconfig(c, c.tmp / "viewer.kubeconfig", token, "gizmo-land")
    out = kubectl_as(c, cfg, "get", "gizmos", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gizmo.ident.example.com/g1"]
    assert can_i(c, cfg, "delete", "gizmos.ident.example.com/g1") == "no"
    out = kubectl_as(c, cfg, "delete", "gizmo", "g1")
    assert out.returncode != 0 and "forbidden" in out.stderr.lower()
