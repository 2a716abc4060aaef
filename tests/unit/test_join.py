"""Node join: the node token, the server's join endpoints and the agent's bootstrap against them,
over real TLS on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import ssl

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from kubeling.apiserver import join
from kubeling.apiserver.app import server_ssl_context
from kubeling.apiserver.certs import PKI
from kubeling.kubelet import bootstrap


@pytest.fixture
def pki(tmp_path) -> PKI:
    p = PKI(tmp_path / "server", hosts=["127.0.0.1"])
    p.ensure()
    return p


def test_token_is_k3s_format_and_kept(pki, tmp_path):
    token = join.ensure_token(tmp_path / "server", pki)
    text = join.token_path(tmp_path / "server").read_text().strip()
    assert text == f"K10{hashlib.sha256(pki.ca_cert.read_bytes()).hexdigest()}::server:{token.secret}"
    assert len(token.secret) == 32
    assert join.token_path(tmp_path / "server").stat().st_mode & 0o077 == 0
    assert join.ensure_token(tmp_path / "server", pki) == token      # a restart keeps it
    assert join.parse_token(text) == token


def test_token_follows_a_new_ca_and_keeps_the_secret(pki, tmp_path):
    first = join.ensure_token(tmp_path / "server", pki)
    (pki.dir / "ca.key").unlink()
    pki.ensure()                                                      # a new CA
    second = join.ensure_token(tmp_path / "server", pki)
    assert second.secret == first.secret and second.ca_hash != first.ca_hash
    assert second.ca_hash == hashlib.sha256(pki.ca_cert.read_bytes()).hexdigest()


@pytest.mark.parametrize("text, why", [
    pytest.param("abc", "not in the form", id="short-token"),
    pytest.param("K10" + "a" * 63 + "::server:x", "64 hexadecimal", id="short-hash"),
    pytest.param("K10" + "g" * 64 + "::server:x", "64 hexadecimal", id="not-hex"),
    pytest.param("K10" + "a" * 64 + "::server", "<user>:<secret>", id="no-secret"),
    pytest.param("K10" + "a" * 64 + "::", "<user>:<secret>", id="empty-creds"),
])
def test_bad_tokens_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        join.parse_token(text)


async def _serve(pki: PKI, token: join.Token):
    """The join middleware in front of a stand-in for the rest of the API server."""
    async def rest(request):
        return web.Response(status=418, text="the normal chain")
    app = web.Application(middlewares=[join.JoinHandler(pki, token).middleware])
    app.router.add_route("*", "/{tail:.*}", rest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(pki))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"https://127.0.0.1:{port}"


def _ca_ctx(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("path, headers, status", [
    pytest.param("/v1-kubeling/client-kubelet.crt", {}, 401, id="no-auth"),
    pytest.param("/v1-kubeling/client-kubelet.crt", {"Authorization": "Bearer x"}, 401, id="bearer"),
    pytest.param("/v1-kubeling/client-kubelet.crt", "wrong-secret", 401, id="wrong-secret"),
    pytest.param("/v1-kubeling/client-kubelet.crt", "wrong-user", 401, id="wrong-user"),
    pytest.param("/v1-kubeling/client-kubelet.crt", {"Kubeling-Node-Name": "Bad_Name"}, 400, id="bad-name"),
    pytest.param("/v1-kubeling/serving-kubelet.crt", {"Kubeling-Node-Name": "n1", "Kubeling-Node-IP": "x"}, 400,
                 id="bad-ip"),
    pytest.param("/v1-kubeling/other", {"Kubeling-Node-Name": "n1"}, 404, id="unknown-path"),
    pytest.param("/api/v1/nodes", {}, 418, id="others-pass-through"),
])
def test_endpoint_refusals(pki, tmp_path, path, headers, status):
    token = join.ensure_token(tmp_path / "server", pki)
    if headers == "wrong-secret":
        headers = _basic("node", "nope")
    elif headers == "wrong-user":
        headers = _basic("server", token.secret)
    elif "Authorization" not in headers and status != 401:
        headers = {**headers, **_basic("node", token.secret)}

    async def main():
        runner, url = await _serve(pki, token)
        try:
            async with aiohttp.ClientSession() as s, s.get(url + path, ssl=_ca_ctx(pki), headers=headers) as r:
                body = await r.read()
                return r.status, body, r.headers
        finally:
            await runner.cleanup()
    got, body, hdrs = asyncio.run(main())
    assert got == status, body
    if status == 401:
        assert b'"reason":"Unauthorized"' in body and "Basic" in hdrs["WWW-Authenticate"]


def test_bootstrap_writes_a_node_identity_and_serving_cert(pki, tmp_path):
    token = join.ensure_token(tmp_path / "server", pki)
    root = tmp_path / "node" / "agent"

    async def main():
        runner, url = await _serve(pki, token)
        try:
            # no authentication and no verification needed for the CA itself
            async with aiohttp.ClientSession() as s, s.get(url + "/cacerts", ssl=False) as r:
                assert r.status == 200 and await r.read() == pki.ca_cert.read_bytes()
            return url, await bootstrap.join(url, str(token), root, "node-7", "10.99.0.7", wait=5)
        finally:
            await runner.cleanup()
    url, kubeconfig = asyncio.run(main())
    cfg = yaml.safe_load(kubeconfig.read_text())
    assert kubeconfig.stat().st_mode & 0o077 == 0
    assert cfg["clusters"][0]["cluster"]["server"] == url
    assert base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]) == pki.ca_cert.read_bytes()
    client = x509.load_pem_x509_certificate(base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"]))
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:node-7"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    client.verify_directly_issued_by(ca)
    serving = x509.load_pem_x509_certificate((root / "pki" / "kubelet.crt").read_bytes())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.99.0.7") in sans.get_values_for_type(x509.IPAddress)
    assert "node-7" in sans.get_values_for_type(x509.DNSName)
    assert (root / "pki" / "kubelet.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("tamper, message", [
    pytest.param(lambda t: join.Token("0" * 64, t.username, t.secret), "has sha256", id="other-cluster-ca"),
    pytest.param(lambda t: join.Token(t.ca_hash, t.username, "wrong"), "401 Unauthorized", id="wrong-secret"),
])
def test_bootstrap_refuses(pki, tmp_path, tamper, message):
    token = join.ensure_token(tmp_path / "server", pki)
    root = tmp_path / "node" / "agent"

    async def main():
        runner, url = await _serve(pki, token)
        try:
            await bootstrap.join(url, str(tamper(token)), root, "node-1", "10.99.0.2", wait=5)
        finally:
            await runner.cleanup()
    with pytest.raises(bootstrap.BootstrapError, match=message):
        asyncio.run(main())
    assert not (root / "kubelet.kubeconfig").exists()


def test_bootstrap_gives_up_on_a_silent_server(tmp_path):
    token = "K10" + "a" * 64 + "::server:secret"

    async def main():
        # a port nothing listens on: refused at once, retried until `wait`
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await bootstrap.join(f"https://127.0.0.1:{port}", token, tmp_path, "n", "127.0.0.1", wait=0.5,
                             interval=0.1)
    with pytest.raises(bootstrap.BootstrapError, match="did not answer within"):
        asyncio.run(main())


def test_split_pem_refuses_garbage():
    with pytest.raises(bootstrap.BootstrapError):
        bootstrap.split_pem(b"hello")
    cert, key = bootstrap.split_pem(b"-----BEGIN CERTIFICATE-----\nA\n-----BEGIN PRIVATE KEY-----\nB\n")
    assert cert.startswith(b"-----BEGIN CERTIFICATE") and key.startswith(b"-----BEGIN PRIVATE KEY")

