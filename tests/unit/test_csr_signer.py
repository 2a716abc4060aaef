"""The certificates controllers over a FakeClient: csrsigning issues from the CA with upstream's
per-signer checks (Failed/SignerValidationFailure otherwise) and durations, csrapproving approves
node client certificates after a SubjectAccessReview, csrcleaner's deadlines."""

import asyncio
import base64
import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller_testing import ControllerHarness
from kubeling.api import certificates as certs
from kubeling.controllers.certificates import cleaner
from kubeling.controllers.certificates.approver import CSRApprovingController
from kubeling.controllers.certificates.signer import CSRSigningController, duration_for

G = "certificates.k8s.io"
R = "certificatesigningrequests"


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return asyncio.run(fn(*a, **kw))
    return wrapper


@pytest.fixture
def ca_files(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return str(tmp_path / "ca.crt"), str(tmp_path / "ca.key"), cert


def request(cn, orgs=(), dns=(), ips=()) -> str:
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)
                                                         for o in orgs]))
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return base64.b64encode(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)).decode()


def csr(name, req, signer, usages, approved=True, username="admin", groups=("system:masters",), **spec):
    obj = {"apiVersion": f"{G}/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"request": req, "signerName": signer, "usages": list(usages), "username": username,
                    "groups": list(groups), **spec},
           "status": {}}
    if approved:
        obj["status"]["conditions"] = [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}]
    return obj


class Harness(ControllerHarness):
    event_namespace = None

    def csr(self, name):
        return self.client.object(G, "v1", R, name, None)


def issued(obj) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))


@sync
async def test_signs_approved_client_requests_from_the_ca(ca_files):
    cert_file, key_file, ca = ca_files
    objs = [csr("bob", request("bob", ["dev"]), certs.KUBE_APISERVER_CLIENT, ["client auth", "digital signature"],
                expirationSeconds=3600),
            csr("pending", request("p"), certs.KUBE_APISERVER_CLIENT, ["client auth"], approved=False),
            csr("other", request("o"), "example.com/custom", ["client auth"])]
    async with Harness(CSRSigningController, *objs, cluster_signing_cert_file=cert_file,
                       cluster_signing_key_file=key_file) as h:
        bob = h.csr("bob")
        cert = issued(bob)
        assert cert.issuer == ca.subject
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob"
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "dev"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        life = (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds()
        assert 3500 < life <= 3600
        assert "certificate" not in h.csr("pending")["status"]
        assert "certificate" not in h.csr("other")["status"]


@pytest.mark.parametrize("name, req, signer, usages, message", [
    ("kc-org", request("system:node:n1", ["other"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
     ["digital signature", "client auth"], "subject organization is not system:nodes"),
    ("kc-cn", request("bob", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
     ["digital signature", "client auth"], "subject common name does not begin with system:node:"),
    ("kc-san", request("system:node:n1", ["system:nodes"], dns=["n1"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
     ["digital signature", "client auth"], "DNS subjectAltNames are not allowed"),
    ("kc-usage", request("system:node:n1", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
     ["client auth"], "usages did not match [client auth digital signature key encipherment]"),
    ("ks-nosan", request("system:node:n1", ["system:nodes"]), certs.KUBELET_SERVING,
     ["digital signature", "server auth"], "DNS or IP subjectAltName is required"),
    ("ac-usage", request("bob"), certs.KUBE_APISERVER_CLIENT, ["server auth", "client auth"],
     "invalid usage for client certificate: server auth"),
    ("ac-noclient", request("bob"), certs.KUBE_APISERVER_CLIENT, ["digital signature"],
     "missing required usage for client certificate: client auth"),
])
@sync
async def test_refused_requests_get_failed(ca_files, name, req, signer, usages, message):
    cert_file, key_file, _ = ca_files
    async with Harness(CSRSigningController, csr(name, req, signer, usages), cluster_signing_cert_file=cert_file,
                       cluster_signing_key_file=key_file) as h:
        obj = h.csr(name)
        assert "certificate" not in obj["status"]
        failed = [c for c in obj["status"]["conditions"] if c["type"] == "Failed"]
        assert failed == [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                           "message": message}]


@sync
async def test_kubelet_signers_issue_node_certificates(ca_files):
    cert_file, key_file, _ = ca_files
    objs = [csr("client", request("system:node:n1", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
                ["digital signature", "client auth"]),
            csr("serving", request("system:node:n1", ["system:nodes"], dns=["n1"], ips=["10.0.0.5"]),
                certs.KUBELET_SERVING, ["digital signature", "key encipherment", "server auth"])]
    async with Harness(CSRSigningController, *objs, cluster_signing_cert_file=cert_file,
                       cluster_signing_key_file=key_file, cluster_signing_duration=7200.0) as h:
        serving = issued(h.csr("serving"))
        san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["n1"]
        assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
        client = issued(h.csr("client"))
        # a short certificate (under 8h) is backdated 5 minutes but its end is not
        assert (client.not_valid_after_utc - client.not_valid_before_utc).total_seconds() == 7200 + 300


def test_duration_for():
    year = 365 * 24 * 3600.0
    assert duration_for(None, year) == year
    assert duration_for(3600, year) == 3600
    assert duration_for(10 * year, year) == year
    assert duration_for(60, year) == 600


def sar_reactor(allowed_for: dict):
    """SubjectAccessReviews answered from ``allowed_for``: (user, subresource) -> allowed."""
    def react(action):
        spec = action.obj["spec"]
        ra = spec["resourceAttributes"]
        assert ra["group"] == G and ra["resource"] == R and ra["verb"] == "create"
        out = dict(action.obj)
        out["status"] = {"allowed": allowed_for.get((spec["user"], ra["subresource"]), False)}
        return out
    return react


def approval_reactor(client):
    def react(action):
        if action.subresource != "approval":
            return None
        res = client.tracker.resource(G, "v1", R)
        return client.tracker.update(res, action.obj, None, "status")
    return react


@sync
async def test_approver_approves_node_client_certs_after_a_subject_access_review():
    boot = csr("boot", request("system:node:n1", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
               ["digital signature", "client auth"], approved=False, username="system:bootstrap:abcdef",
               groups=["system:bootstrappers"])
    renew = csr("renew", request("system:node:n2", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
                ["digital signature", "key encipherment", "client auth"], approved=False,
                username="system:node:n2", groups=["system:nodes"])
    stranger = csr("stranger", request("system:node:n3", ["system:nodes"]), certs.KUBE_APISERVER_CLIENT_KUBELET,
                   ["digital signature", "client auth"], approved=False, username="eve", groups=[])
    user_cert = csr("user", request("bob"), certs.KUBE_APISERVER_CLIENT, ["client auth"], approved=False)
    h = Harness(CSRApprovingController, boot, renew, stranger, user_cert)
    h.client.prepend_reactor("create", "subjectaccessreviews", sar_reactor({
        ("system:bootstrap:abcdef", "nodeclient"): True, ("system:node:n2", "selfnodeclient"): True}))
    h.client.prepend_reactor("update", R, approval_reactor(h.client))
    async with h:
        got = h.csr("boot")["status"]["conditions"]
        assert got == [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                        "message": "Auto approving kubelet client certificate after SubjectAccessReview."}]
        got = h.csr("renew")["status"]["conditions"]
        assert got[0]["message"] == "Auto approving self kubelet client certificate after SubjectAccessReview."
        assert not h.csr("stranger")["status"].get("conditions")
        assert not h.csr("user")["status"].get("conditions")
        reviewed = {(a.obj["spec"]["user"], a.obj["spec"]["resourceAttributes"]["subresource"])
                    for a in h.client.filter_actions("create", "subjectaccessreviews")}
        assert ("eve", "nodeclient") in reviewed and ("bob", "nodeclient") not in reviewed
        assert ("system:bootstrap:abcdef", "selfnodeclient") not in reviewed  # CN is not the requestor


def test_cleaner_deadlines(ca_files):
    now = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.timezone.utc)
    pending = {"metadata": {"creationTimestamp": "2026-01-01T11:00:00Z"}, "status": {}}
    young = {"metadata": {"creationTimestamp": "2026-01-02T11:00:00Z"}, "status": {}}
    assert cleaner.should_delete(pending, now) and not cleaner.should_delete(young, now)
    approved = {"metadata": {}, "status": {"conditions": [{"type": "Approved", "status": "True",
                                                           "lastUpdateTime": "2026-01-02T10:30:00Z"}]}}
    fresh = {"metadata": {}, "status": {"conditions": [{"type": "Denied", "status": "True",
                                                        "lastUpdateTime": "2026-01-02T11:30:00Z"}]}}
    assert cleaner.should_delete(approved, now) and not cleaner.should_delete(fresh, now)
    cert = ca_files[2]
    expired = {"metadata": {}, "status": {
        "certificate": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
        "conditions": [{"type": "Approved", "status": "True", "lastUpdateTime": "2026-01-02T11:59:00Z"}]}}
    assert not cleaner.should_delete(expired, now)
    assert cleaner.should_delete(expired, now + dt.timedelta(days=3700))
