"""CertificateSigningRequests with real kubectl (issue 9, acceptance 1 and 3).

- ``bob`` makes a key and a CSR with `cryptography`; an administrator creates the CSR object and
  ``kubectl certificate approve`` issues it (the csrsigning controller, from the cluster CA).
  With that certificate bob is ``bob`` in his O group; a RoleBinding to ``view`` in ``dev``
  lets him list pods there, not in ``default``, and not delete; ``kubectl auth can-i --list``
  agrees. ``kubectl get csr`` / ``describe csr`` show upstream's columns and fields.
- Escalation: bob, holding ``edit`` on ``dev``, cannot create a RoleBinding to ``cluster-admin``
  (edit has no rolebindings rule: the authorizer's 403), and as ``admin`` of ``dev`` still
  cannot (the escalation check's 403).
- ``kubectl certificate deny`` denies; a user who may update ``/approval`` but has no
  ``approve`` on the signer gets upstream's 403; a request the signer refuses is ``Failed``.
- A node client certificate requested by a ``system:bootstrappers`` user is auto-approved
  (csrapproving, after a SubjectAccessReview) and issued.
"""

from __future__ import annotations

import base64
import json
import subprocess

import harness
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKENS = ('carotoken,carol,11,approvers\n'
          'boottoken,system:bootstrap:abcdef,12,system:bootstrappers\n')


@pytest.fixture(scope="module")
def csr_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("csr")
    (d / "tokens.csv").write_text(TOKENS)
    c = harness.started_cluster(d / "cluster", extra_args=("--token-auth-file", str(d / "tokens.csv"),
                                                           "--disable-scheduler"))
    c.tmp = d
    c.kubectl("create", "namespace", "dev")
    harness.eventually(lambda: '"pods"' in c.kubectl("get", "clusterrole", "view", "-o",
                                                     "jsonpath={.rules[*].resources}").stdout,
                       timeout=60, what="the view ClusterRole aggregated")
    yield c
    c.stop()


def make_key_and_request(cn: str, orgs: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM), as a user would with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] +
                        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def csr_manifest(name: str, request_pem: bytes, signer: str, usages: list[str], seconds: int | None = None) -> str:
    spec = {"request": base64.b64encode(request_pem).decode(), "signerName": signer, "usages": usages}
    if seconds:
        spec["expirationSeconds"] = seconds
    return json.dumps({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                       "metadata": {"name": name}, "spec": spec})


def issued_certificate(c, name: str) -> bytes:
    got = harness.eventually(lambda: c.kubectl("get", "csr", name, "-o", "jsonpath={.status.certificate}").stdout,
                             timeout=30, what=f"CSR {name} issued")
    return base64.b64decode(got)


def kubeconfig_for(c, name: str, *, cert_pem: bytes | None = None, key_pem: bytes | None = None,
                   token: str | None = None):
    return harness.user_kubeconfig(c, name, token=token, cert_pem=cert_pem, key_pem=key_pem)


def run_as(cfg, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return harness.kubectl_with(cfg, *args, input=input)


@pytest.fixture(scope="module")
def bob(csr_cluster):
    """bob's kubeconfig, with the certificate issued through his CSR (test_bob_gets_a_certificate)."""
    c = csr_cluster
    key_pem, req_pem = make_key_and_request("bob", ("devs",))
    c.kubectl("apply", "-f", "-", input=csr_manifest("bob", req_pem, "kubernetes.io/kube-apiserver-client",
                                                     ["client auth"], 86400))
    table = c.kubectl("get", "csr", "bob").stdout.splitlines()
    assert table[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
    assert table[1].split()[2:] == ["kubernetes.io/kube-apiserver-client", "kubernetes-admin", "24h", "Pending"]
    out = c.kubectl("certificate", "approve", "bob", version="1.32")
    assert out.stdout.strip() == "certificatesigningrequest.certificates.k8s.io/bob approved"
    cert_pem = issued_certificate(c, "bob")
    c.bob_cert = x509.load_pem_x509_certificate(cert_pem)
    return kubeconfig_for(c, "bob", cert_pem=cert_pem, key_pem=key_pem)


def test_bob_gets_a_client_certificate(csr_cluster, bob):
    c = csr_cluster
    cert = c.bob_cert
    ca = x509.load_pem_x509_certificate((c.data_dir / "pki" / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
    life = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    assert life == 86400  # expirationSeconds (a long certificate is backdated five minutes, its end too)
    obj = json.loads(c.kubectl("get", "csr", "bob", "-o", "json").stdout)
    assert obj["spec"]["username"] == "kubernetes-admin"
    assert "system:masters" in obj["spec"]["groups"]
    approved = obj["status"]["conditions"][0]
    assert (approved["type"], approved["status"], approved["reason"]) == ("Approved", "True", "KubectlApprove")
    assert approved["message"] == "This CSR was approved by kubectl certificate approve."
    assert approved["lastUpdateTime"] and approved["lastTransitionTime"]
    assert c.kubectl("get", "csr", "bob", "--no-headers").stdout.split()[-1] == "Approved,Issued"
    described = c.kubectl("describe", "csr", "bob").stdout
    for line in ("Requesting User:     kubernetes-admin", "Signer:              kubernetes.io/kube-apiserver-client",
                 "Requested Duration:  24h", "Status:              Approved,Issued", "Common Name:    bob",
                 "Organization:   devs"):
        assert line in described, described
    who = run_as(bob, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == "bob" and info["groups"] == ["devs", "system:authenticated"]


def test_bob_with_view_in_dev(csr_cluster, bob):
    c = csr_cluster
    denied = run_as(bob, "get", "pods", "-n", "dev")
    assert denied.returncode != 0
    assert 'pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "dev"' \
        in denied.stderr, denied.stderr
    c.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "dev")
    harness.eventually(lambda: run_as(bob, "auth", "can-i", "list", "pods", "-n", "dev").stdout.strip() == "yes",
                       timeout=10, what="bob's RoleBinding to take effect")
    listed = run_as(bob, "get", "pods", "-n", "dev")
    assert listed.returncode == 0, listed.stderr
    other = run_as(bob, "get", "pods", "-n", "default")
    assert other.returncode != 0
    assert ('pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"'
            in other.stderr), other.stderr
    c.kubectl("run", "web", "--image=busybox", "-n", "dev", "--restart=Never")
    gone = run_as(bob, "delete", "pod", "web", "-n", "dev")
    assert gone.returncode != 0
    assert ('pods "web" is forbidden: User "bob" cannot delete resource "pods" in API group "" in the namespace '
            '"dev"') in gone.stderr, gone.stderr
    assert run_as(bob, "auth", "can-i", "delete", "pods", "-n", "dev").stdout.strip() == "no"
    assert run_as(bob, "auth", "can-i", "list", "pods", "-n", "default").stdout.strip() == "no"
    rules = run_as(bob, "auth", "can-i", "--list", "-n", "dev")
    assert rules.returncode == 0, rules.stderr
    pods = next(line for line in rules.stdout.splitlines() if line.split()[:1] == ["pods"])
    assert pods.split()[1:] == ["[]", "[]", "[get", "list", "watch]"], rules.stdout
    assert not any(line.split()[:1] == ["secrets"] for line in rules.stdout.splitlines())
    elsewhere = run_as(bob, "auth", "can-i", "--list", "-n", "default")
    assert not any(line.split()[:1] == ["pods"] for line in elsewhere.stdout.splitlines()), elsewhere.stdout


def test_bob_cannot_escalate_to_cluster_admin(csr_cluster, bob):
    c = csr_cluster
    c.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob", "-n", "dev")
    harness.eventually(lambda: run_as(bob, "auth", "can-i", "create", "deployments.apps", "-n", "dev").stdout.strip()
                       == "yes", timeout=10, what="bob's edit RoleBinding to take effect")
    bad = run_as(bob, "create", "rolebinding", "bob-root", "--clusterrole=cluster-admin", "--user=bob", "-n", "dev")
    assert bad.returncode != 0
    assert ('rolebindings.rbac.authorization.k8s.io is forbidden: User "bob" cannot create resource "rolebindings" '
            'in API group "rbac.authorization.k8s.io" in the namespace "dev"') in bad.stderr, bad.stderr
    # even as admin of dev (which may manage RoleBindings) he cannot grant what he does not hold
    c.kubectl("create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob", "-n", "dev")
    harness.eventually(lambda: run_as(bob, "auth", "can-i", "create", "rolebindings", "-n", "dev").stdout.strip()
                       == "yes", timeout=10, what="bob's admin RoleBinding to take effect")
    bad = run_as(bob, "create", "rolebinding", "bob-root", "--clusterrole=cluster-admin", "--user=bob", "-n", "dev")
    assert bad.returncode != 0
    assert ('rolebindings.rbac.authorization.k8s.io "bob-root" is forbidden: user "bob" (groups=["devs" '
            '"system:authenticated"]) is attempting to grant RBAC permissions not currently held') in bad.stderr, \
        bad.stderr
    assert c.kubectl("get", "rolebinding", "bob-root", "-n", "dev", check=False).returncode != 0


def test_deny_approval_rights_and_signer_refusal(csr_cluster):
    c = csr_cluster
    _, req = make_key_and_request("dave")
    c.kubectl("create", "-f", "-", input=csr_manifest("dave", req, "kubernetes.io/kube-apiserver-client",
                                                      ["client auth"]))
    # carol may update the approval subresource but has no `approve` on the signer
    c.kubectl("create", "clusterrole", "csr-approval", "--verb=get,list,update",
              "--resource=certificatesigningrequests,certificatesigningrequests/approval")
    c.kubectl("create", "clusterrolebinding", "carol-approval", "--clusterrole=csr-approval", "--user=carol")
    carol = kubeconfig_for(c, "carol", token="carotoken")
    harness.eventually(lambda: run_as(carol, "auth", "can-i", "update", "certificatesigningrequests/approval")
                       .stdout.strip() == "yes", timeout=10, what="carol's ClusterRoleBinding to take effect")
    refused = run_as(carol, "certificate", "approve", "dave")
    assert refused.returncode != 0
    assert ('certificatesigningrequests.certificates.k8s.io "dave" is forbidden: user not permitted to approve '
            'requests with signerName "kubernetes.io/kube-apiserver-client"') in refused.stderr, refused.stderr
    # with approve on that signer she may
    # (signers are no real resource: kubectl create clusterrole refuses them, as upstream's does)
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "client-signer-approver"},
        "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["approve"],
                   "resourceNames": ["kubernetes.io/kube-apiserver-client"]}]}))
    c.kubectl("create", "clusterrolebinding", "carol-signer", "--clusterrole=client-signer-approver", "--user=carol")
    harness.eventually(lambda: run_as(carol, "certificate", "deny", "dave").returncode == 0, timeout=10,
                       what="carol's approve permission to take effect")
    obj = json.loads(c.kubectl("get", "csr", "dave", "-o", "json").stdout)
    assert [(x["type"], x["reason"]) for x in obj["status"]["conditions"]] == [("Denied", "KubectlDeny")]
    assert c.kubectl("get", "csr", "dave", "--no-headers").stdout.split()[-1] == "Denied"
    # an approval cannot be added once denied (kubectl says so itself; a raw PUT hears it from the server)
    again = c.kubectl("certificate", "approve", "dave", check=False)
    assert again.returncode != 0 and 'certificate signing request "dave" is already Denied' in again.stderr
    obj["status"]["conditions"].append({"type": "Approved", "status": "True", "reason": "Sneaky"})
    again = c.kubectl("replace", "--raw", "/apis/certificates.k8s.io/v1/certificatesigningrequests/dave/approval",
                      "-f", "-", input=json.dumps(obj), check=False)
    assert again.returncode != 0 and "Approved and Denied conditions are mutually exclusive" in again.stderr, \
        again.stderr
    # the client signer refuses server usages: Failed with upstream's reason, no certificate
    _, req = make_key_and_request("erin")
    c.kubectl("create", "-f", "-", input=csr_manifest("erin", req, "kubernetes.io/kube-apiserver-client",
                                                      ["client auth", "server auth"]))
    c.kubectl("certificate", "approve", "erin")
    failed = harness.eventually(lambda: [x for x in json.loads(c.kubectl("get", "csr", "erin", "-o", "json").stdout)
                                         ["status"].get("conditions", []) if x["type"] == "Failed"],
                                timeout=30, what="erin's CSR Failed")
    assert (failed[0]["reason"], failed[0]["message"]) == ("SignerValidationFailure",
                                                           "invalid usage for client certificate: server auth")
    assert c.kubectl("get", "csr", "erin", "--no-headers").stdout.split()[-1] == "Approved,Failed"
    # system:masters through the client signer is refused at creation
    _, req = make_key_and_request("root", ("system:masters",))
    masters = c.kubectl("create", "-f", "-", input=csr_manifest("root", req, "kubernetes.io/kube-apiserver-client",
                                                                ["client auth"]), check=False)
    assert masters.returncode != 0
    assert "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed" in \
        masters.stderr, masters.stderr


def test_node_client_certificate_is_auto_approved(csr_cluster):
    c = csr_cluster
    boot = kubeconfig_for(c, "boot", token="boottoken")
    key_pem, req = make_key_and_request("system:node:worker-9", ("system:nodes",))
    made = run_as(boot, "create", "-f", "-", input=csr_manifest(
        "node-csr-worker-9", req, "kubernetes.io/kube-apiserver-client-kubelet", ["digital signature", "client auth"]))
    assert made.returncode == 0, made.stderr
    cert_pem = issued_certificate(c, "node-csr-worker-9")
    obj = json.loads(c.kubectl("get", "csr", "node-csr-worker-9", "-o", "json").stdout)
    assert obj["spec"]["username"] == "system:bootstrap:abcdef"
    approved = obj["status"]["conditions"][0]
    assert (approved["type"], approved["reason"], approved["message"]) == (
        "Approved", "AutoApproved", "Auto approving kubelet client certificate after SubjectAccessReview.")
    node = kubeconfig_for(c, "worker-9", cert_pem=cert_pem, key_pem=key_pem)
    who = json.loads(run_as(node, "auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert who["username"] == "system:node:worker-9"
    assert who["groups"] == ["system:nodes", "system:authenticated"]
    # a bootstrap user's request for any other identity is left for a human
    _, req = make_key_and_request("mallory", ("devs",))
    made = run_as(boot, "create", "-f", "-", input=csr_manifest(
        "not-a-node", req, "kubernetes.io/kube-apiserver-client", ["client auth"]))
    assert made.returncode == 0, made.stderr
    assert c.kubectl("get", "csr", "not-a-node", "--no-headers").stdout.split()[-1] == "Pending"


def test_python_client_reads_and_approves(csr_cluster):
    """The official client's CertificatesV1Api: create, approval subresource, read status."""
    from kubernetes import client as k8s

    c = csr_cluster
    api = k8s.CertificatesV1Api(c.python_client())
    _, req = make_key_and_request("frank", ("devs",))
    body = k8s.V1CertificateSigningRequest(
        metadata=k8s.V1ObjectMeta(name="frank"),
        spec=k8s.V1CertificateSigningRequestSpec(request=base64.b64encode(req).decode(),
                                                 signer_name="kubernetes.io/kube-apiserver-client",
                                                 usages=["client auth"], expiration_seconds=3600))
    made = api.create_certificate_signing_request(body)
    assert made.spec.username == "kubernetes-admin" and made.status.conditions is None
    made.status.conditions = [k8s.V1CertificateSigningRequestCondition(
        type="Approved", status="True", reason="PythonApprove", message="approved from Python")]
    approved = api.replace_certificate_signing_request_approval("frank", made)
    assert [(x.type, x.reason) for x in approved.status.conditions] == [("Approved", "PythonApprove")]
    assert approved.status.conditions[0].last_update_time is not None
    got = harness.eventually(lambda: api.read_certificate_signing_request_status("frank").status.certificate,
                             timeout=30, what="frank's certificate")
    cert = x509.load_pem_x509_certificate(base64.b64decode(got))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "frank"
    names = [x.metadata.name for x in api.list_certificate_signing_request(
        field_selector="spec.signerName=kubernetes.io/kube-apiserver-client").items]
    assert "frank" in names and "node-csr-worker-9" not in names
