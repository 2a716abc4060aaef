"""CertificateSigningRequests in an in-process API server: the requestor comes from the user,
upstream's validation, the approval and status subresources with their signer authorization, and
the system:masters subject restriction."""

import asyncio
import base64
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inprocess import api_server, ctx
from kubeling.api import certificates as certs
from kubeling.api.errors import StatusError
from kubeling.apiserver.registry.certificates.certificatesigningrequest import ApprovalREST, StatusREST, \
    condition_summary, validate_signer_name

G = "certificates.k8s.io"


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return asyncio.run(fn(*a, **kw))
    return wrapper


def make_request(cn="bob", orgs=("dev-team",), key=None, dns=()) -> tuple[bytes, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)
                                                             for o in orgs]
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    csr = b.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key


def csr_obj(name="bob", pem=None, signer=certs.KUBE_APISERVER_CLIENT, usages=("client auth",), **spec):
    pem = pem or make_request()[0]
    body = {"apiVersion": f"{G}/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": signer, "usages": list(usages),
                     **spec}}
    return body


def served(api):
    return api.lookup(G, "v1", "certificatesigningrequests")


def user(name, *groups):
    return ctx(None, user=name, groups=tuple(groups) + ("system:authenticated",))


def causes(e: StatusError) -> list[tuple[str, str]]:
    return [(c.get("field"), c.get("message")) for c in (e.details or {}).get("causes", [])]


@sync
async def test_create_sets_requestor_from_the_user_and_empty_status():
    api = await api_server()
    body = csr_obj(username="admin", groups=["system:masters"])
    body["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
    out = await api.registry.create(served(api), body, user("alice", "team-a"))
    assert out["spec"]["username"] == "alice"
    assert out["spec"]["groups"] == ["team-a", "system:authenticated"]
    assert out["status"] == {}
    assert condition_summary(out) == "Pending"


@pytest.mark.parametrize("change, field, text", [
    (lambda b: b["spec"].update(request=base64.b64encode(b"nope").decode()), "spec.request",
     "PEM block type must be CERTIFICATE REQUEST"),
    (lambda b: b["spec"].update(usages=[]), "spec.usages", "Required value"),
    (lambda b: b["spec"].update(usages=["client auth", "flying"]), "spec.usages[1]", "Unsupported value"),
    (lambda b: b["spec"].update(usages=["client auth", "client auth"]), "spec.usages[1]", "Duplicate value"),
    (lambda b: b["spec"].update(signerName=""), "spec.signerName", "Required value"),
    (lambda b: b["spec"].update(signerName="nodomain"), "spec.signerName", "fully qualified domain"),
    (lambda b: b["spec"].update(signerName=certs.LEGACY_UNKNOWN), "spec.signerName", "legacy signerName"),
    (lambda b: b["spec"].update(expirationSeconds=599), "spec.expirationSeconds", "less than 600 seconds"),
])
@sync
async def test_validation(change, field, text):
    api = await api_server()
    body = csr_obj()
    change(body)
    with pytest.raises(StatusError) as e:
        await api.registry.create(served(api), body, user("alice"))
    assert e.value.code == 422
    assert any(f == field and text in m for f, m in causes(e.value)), causes(e.value)


@sync
async def test_bad_signature_is_refused():
    good, _ = make_request()
    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)) + \
        b"-----END CERTIFICATE REQUEST-----\n"
    api = await api_server()
    with pytest.raises(StatusError) as e:
        await api.registry.create(served(api), csr_obj(pem=pem), user("alice"))
    assert e.value.code == 422 and causes(e.value)[0][0] == "spec.request"


def test_signer_name_rules():
    assert validate_signer_name("example.com/signer") == []
    assert validate_signer_name("example.com/a.b") == []
    assert validate_signer_name("example/signer")
    assert validate_signer_name("Example.com/signer")
    assert validate_signer_name("a.com/b/c")


@sync
async def test_system_masters_through_apiserver_client_is_forbidden():
    api = await api_server()
    pem, _ = make_request(orgs=("system:masters",))
    with pytest.raises(StatusError) as e:
        await api.registry.create(served(api), csr_obj(pem=pem), user("alice"))
    assert e.value.code == 403
    assert "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed" in \
        e.value.message


def approved(obj, reason="KubectlApprove"):
    obj = dict(obj)
    obj["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": reason,
                                     "message": "This CSR was approved by kubectl certificate approve."}]}
    return obj


@sync
async def test_main_update_keeps_status_and_spec():
    api = await api_server()
    out = await api.registry.create(served(api), csr_obj(), ctx())
    out = approved(out)
    out["spec"] = dict(out["spec"], usages=["client auth", "digital signature"])
    out["metadata"]["labels"] = {"a": "b"}
    new, _ = await api.registry.update(served(api), None, "bob", out, ctx())
    assert new["metadata"]["labels"] == {"a": "b"}
    assert new["status"] == {} and new["spec"]["usages"] == ["client auth"]


@sync
async def test_approval_needs_approve_on_the_signer_and_sets_timestamps():
    api = await api_server()
    created = await api.registry.create(served(api), csr_obj(), ctx())
    rest = api.scope.rest(ApprovalREST)
    with pytest.raises(StatusError) as e:
        await rest.put(served(api), None, "bob", approved(created), user("mallory"))
    assert e.value.code == 403
    assert e.value.message == ('certificatesigningrequests.certificates.k8s.io "bob" is forbidden: user not '
                               'permitted to approve requests with signerName "kubernetes.io/kube-apiserver-client"')
    out, _ = await rest.put(served(api), None, "bob", approved(created), ctx(subresource="approval"))
    cond = out["status"]["conditions"][0]
    assert cond["type"] == "Approved" and cond["lastUpdateTime"] and cond["lastTransitionTime"]
    assert certs.is_approved(out) and condition_summary(out) == "Approved"
    # Approved cannot be removed, nor joined by Denied
    out2 = dict(out, status={"conditions": []})
    with pytest.raises(StatusError) as e:
        await rest.put(served(api), None, "bob", out2, ctx())
    assert ("status.conditions", 'Forbidden: updates may not remove a condition of type "Approved"') in causes(e.value)
    out3 = dict(out, status={"conditions": out["status"]["conditions"] + [{"type": "Denied", "status": "True"}]})
    with pytest.raises(StatusError) as e:
        await rest.put(served(api), None, "bob", out3, ctx())
    assert any("mutually exclusive" in m for _, m in causes(e.value))


@sync
async def test_status_sets_the_certificate_once_approved_and_keeps_approval():
    api = await api_server()
    created = await api.registry.create(served(api), csr_obj(), ctx())
    status = api.scope.rest(StatusREST)
    pem = make_self_signed()
    cert = base64.b64encode(pem).decode()
    with pytest.raises(StatusError) as e:
        await status.put(served(api), None, "bob", dict(created, status={"certificate": cert}), ctx())
    assert ("status.certificate", "Forbidden: may only be set on an approved request") in causes(e.value)
    out, _ = await api.scope.rest(ApprovalREST).put(served(api), None, "bob", approved(created), ctx())
    # a status write cannot drop the Approved condition, and needs `sign`
    body = dict(out, status={"certificate": cert})
    with pytest.raises(StatusError) as e:
        await status.put(served(api), None, "bob", body, user("mallory"))
    assert e.value.code == 403 and "user not permitted to sign requests" in e.value.message
    issued, _ = await status.put(served(api), None, "bob", body, ctx())
    assert issued["status"]["certificate"] == cert
    assert [c["type"] for c in issued["status"]["conditions"]] == ["Approved"]
    assert condition_summary(issued) == "Approved,Issued"
    again = dict(issued, status=dict(issued["status"], certificate=base64.b64encode(make_self_signed()).decode()))
    with pytest.raises(StatusError) as e:
        await status.put(served(api), None, "bob", again, ctx())
    assert any("may not modify existing certificate content" in m for _, m in causes(e.value))
    bad = dict(issued, status=dict(issued["status"], certificate=base64.b64encode(b"junk").decode()))
    created2 = await api.registry.create(served(api), csr_obj(name="b2"), ctx())
    await api.scope.rest(ApprovalREST).put(served(api), None, "b2", approved(created2), ctx())
    bad["metadata"] = {"name": "b2"}
    with pytest.raises(StatusError) as e:
        await status.put(served(api), None, "b2", bad, ctx())
    assert ("status.certificate", "Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE "
                                  "PEM block") in causes(e.value)


def make_self_signed() -> bytes:
    import datetime as dt
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@sync
async def test_field_selector_and_table():
    api = await api_server()
    s = served(api)
    from kubeling.api import fields
    sel = s.strategy.field_selector(fields.parse("spec.signerName=kubernetes.io/kube-apiserver-client"))
    assert sel.terms
    out = await api.registry.create(s, csr_obj(expirationSeconds=3600), ctx())
    from datetime import datetime, timezone
    row = s.strategy.printer.row(out, datetime.now(timezone.utc))
    assert row[2:] == ["kubernetes.io/kube-apiserver-client", "system:admin", "60m", "Pending"]
    assert [c.name for c in s.strategy.printer.columns] == ["Name", "Age", "SignerName", "Requestor",
                                                            "RequestedDuration", "Condition"]


@sync
async def test_patch_of_approval_and_status_checks_the_signer_too():
    api = await api_server()
    await api.registry.create(served(api), csr_obj(), ctx())
    approval, status = api.scope.rest(ApprovalREST), api.scope.rest(StatusREST)
    doc = {"status": {"conditions": [{"type": "Denied", "status": "True", "reason": "Nope"}]}}
    with pytest.raises(StatusError) as e:
        await approval.patch(served(api), None, "bob", "merge", doc, user("mallory"), None)
    assert e.value.code == 403
    out, _ = await approval.patch(served(api), None, "bob", "merge", doc, ctx(), None)
    assert [c["type"] for c in out["status"]["conditions"]] == ["Denied"]
    fail = {"status": {"conditions": [{"type": "Denied", "status": "True", "reason": "Nope"},
                                      {"type": "Failed", "status": "True", "reason": "X"}]}}
    with pytest.raises(StatusError) as e:
        await status.patch(served(api), None, "bob", "merge", fail, user("mallory"), None)
    assert e.value.code == 403
    # a status write keeps Denied as stored even if it says otherwise
    out, _ = await status.patch(served(api), None, "bob", "merge", {"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "X"}]}}, ctx(), None)
    assert sorted(c["type"] for c in out["status"]["conditions"]) == ["Denied", "Failed"]
    # and the main resource never changes status
    main = dict(out, status={})
    new, _ = await api.registry.update(served(api), None, "bob", main, ctx())
    assert sorted(c["type"] for c in new["status"]["conditions"]) == ["Denied", "Failed"]
