"""Identity material in the data dir: the service account signing key, node client certificates
and kubeconfigs, and the API server's client certificate to agents (``certs.PKI``)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import stat

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeling.apiserver import serviceaccount as sat
from kubeling.apiserver.app import server_ssl_context
from kubeling.apiserver.auth import user_from_cert
from kubeling.apiserver.certs import PKI


def subject(path) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    return cn, orgs


def test_ensure_makes_the_signing_key_and_keeps_it(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    key = serialization.load_pem_private_key(pki.service_account_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert stat.S_IMODE(os.stat(pki.service_account_key).st_mode) == 0o600
    pub = serialization.load_pem_public_key(pki.service_account_pub.read_bytes())
    assert sat.key_id(pub) == sat.key_id(key.public_key())
    before = {p.name: p.read_bytes() for p in pki.dir.iterdir()}
    pki.ensure()  # a second start changes nothing
    assert {p.name: p.read_bytes() for p in pki.dir.iterdir()} == before
    pki.service_account_pub.unlink()  # a lost .pub is rebuilt from the key, the key kept
    pki.ensure()
    assert pki.service_account_key.read_bytes() == before["service-account.key"]
    assert pki.service_account_pub.read_bytes() == before["service-account.pub"]


def test_tokens_signed_with_the_file_verify_with_the_file(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    sa = {"metadata": {"name": "default", "namespace": "ns", "uid": "u"}}
    token = sat.sign(sat.Keys(pki.service_account_key), sat.bound_claims(sa, [sat.ISSUER], 600))
    assert sat.verify(sat.Keys(pki.service_account_key), token)["sub"] == "system:serviceaccount:ns:default"


def test_kubelet_client_certificate_is_not_a_master(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    cert, key = pki.kubelet_client()
    assert cert.exists() and key.exists()
    # no group: the RBAC bootstrap binds the user to system:kubelet-api-admin
    assert subject(cert) == ("kube-apiserver-kubelet-client", [])
    # one from an older release (O=system:masters) is reissued at the next start
    pki.issue_client(cert, key, "kube-apiserver-kubelet-client", ["system:masters"])
    pki.ensure()
    assert subject(cert) == ("kube-apiserver-kubelet-client", [])


def test_node_identity_and_kubeconfig(tmp_path):
    pki = PKI(tmp_path)
    pki.ensure()
    cert, key = pki.issue_node("n1")
    assert subject(cert) == ("system:node:n1", ["system:nodes"])
    assert pki.issue_node("n1") == (cert, key) and cert.read_bytes() == pki.issue_node("n1")[0].read_bytes()
    path = pki.write_node_kubeconfig("n1", "https://127.0.0.1:6443")
    assert path == tmp_path / "agent" / "kubelet.kubeconfig"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    cfg = yaml.safe_load(path.read_text())
    user = cfg["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == cert.read_bytes()
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    # Over a real TLS handshake with the API server's context, the x509 authenticator reads the
    # node's identity out of the verified certificate.
    assert asyncio.run(peer_user(pki, cert, key)) == ("system:node:n1", ("system:nodes",))


async def peer_user(pki, cert, key):
    seen = asyncio.get_running_loop().create_future()

    async def on_connect(reader, writer):
        seen.set_result(user_from_cert(writer.get_extra_info("peercert")))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_ssl_context(pki))
    try:
        client = ssl.create_default_context(cafile=str(pki.ca_cert))
        client.load_cert_chain(str(cert), str(key))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        user = await asyncio.wait_for(seen, 5)
        writer.close()
        return user.name, user.groups
    finally:
        server.close()
        await server.wait_closed()
