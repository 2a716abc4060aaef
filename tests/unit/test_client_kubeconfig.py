"""Kubeconfig loading, merging, TLS contexts; and the aiohttp transport over real loopback TLS."""

import asyncio
import base64
import datetime
import ipaddress
import os
import ssl

import orjson
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeling.client import kubeconfig
from kubeling.client.exceptions import ConfigError, TransportError
from kubeling.client.rest import RESTClient


def _cert(cn, issuer_key=None, issuer_name=None, ca=False, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, key_pem, key, name


@pytest.fixture(scope="module")
def pki():
    ca_pem, ca_key_pem, ca_key, ca_name = _cert("test-ca", ca=True)
    srv_pem, srv_key_pem, _, _ = _cert("server", ca_key, ca_name, server=True)
    cli_pem, cli_key_pem, _, _ = _cert("admin", ca_key, ca_name)
    return {"ca": ca_pem, "server": srv_pem, "server_key": srv_key_pem, "client": cli_pem,
            "client_key": cli_key_pem}


def _b64(b):
    return base64.b64encode(b).decode()


def _doc(server="https://127.0.0.1:6443", cluster=None, user=None, ns=None, current="admin"):
    ctx = {"cluster": "c1", "user": "u1"}
    if ns:
        ctx["namespace"] = ns
    return {"apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "c1", "cluster": {"server": server, **(cluster or {})}}],
            "users": [{"name": "u1", "user": user or {}}],
            "contexts": [{"name": "admin", "context": ctx}]}


def test_data_fields(pki):
    cfg = kubeconfig.from_dict(_doc(cluster={"certificate-authority-data": _b64(pki["ca"])},
                                    user={"client-certificate-data": _b64(pki["client"]),
                                          "client-key-data": _b64(pki["client_key"])}, ns="team"))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.certificate_authority_data == pki["ca"]
    assert cfg.client_certificate_data == pki["client"]
    assert cfg.namespace == "team"
    ctx = cfg.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1, "only the kubeconfig's CA is trusted"


def test_relative_file_paths_resolve_against_the_kubeconfig(tmp_path, pki):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(pki["ca"])
    (tmp_path / "pki" / "admin.crt").write_bytes(pki["client"])
    (tmp_path / "pki" / "admin.key").write_bytes(pki["client_key"])
    (tmp_path / "token").write_text("s3cret\n")
    doc = _doc(cluster={"certificate-authority": "pki/ca.crt"},
               user={"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key", "tokenFile": "token"})
    p = tmp_path / "config"
    p.write_text(yaml.safe_dump(doc))
    cfg = kubeconfig.load(str(p))
    assert cfg.certificate_authority_data == pki["ca"]
    assert cfg.client_key_data == pki["client_key"]
    assert cfg.token == "s3cret"
    assert cfg.auth_headers() == {"Authorization": "Bearer s3cret"}
    cfg.ssl_context()  # loads without error


def test_data_wins_over_file(tmp_path, pki):
    doc = _doc(cluster={"certificate-authority": "/nonexistent/ca.crt",
                        "certificate-authority-data": _b64(pki["ca"])})
    assert kubeconfig.from_dict(doc).certificate_authority_data == pki["ca"]


def test_kubeconfig_env_merges_first_wins(tmp_path, monkeypatch):
    a = _doc(server="https://a.invalid", current="admin")
    b = _doc(server="https://b.invalid", current="other")
    b["clusters"].append({"name": "c2", "cluster": {"server": "https://c2.invalid"}})
    b["contexts"].append({"name": "other", "context": {"cluster": "c2", "user": "u1"}})
    (tmp_path / "a").write_text(yaml.safe_dump(a))
    (tmp_path / "b").write_text(yaml.safe_dump(b))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(tmp_path / "a"),
                                                      str(tmp_path / "b")]))
    cfg = kubeconfig.load()
    assert (cfg.context, cfg.server) == ("admin", "https://a.invalid")
    cfg = kubeconfig.load(context="other")
    assert cfg.server == "https://c2.invalid"


@pytest.mark.parametrize("doc,msg", [
    pytest.param(_doc(current=""), "current-context", id="no-current-context"),
    pytest.param(_doc(current="nope"), 'context "nope" does not exist', id="unknown-context"),
    pytest.param({**_doc(), "clusters": []}, 'cluster "c1"', id="unknown-cluster"),
    pytest.param(_doc(server=""), "has no server", id="no-server"),
])
def test_config_errors(doc, msg):
    with pytest.raises(ConfigError, match=msg):
        kubeconfig.from_dict(doc)


def test_missing_explicit_file():
    with pytest.raises(ConfigError, match="does not exist"):
        kubeconfig.load("/nonexistent/kubeconfig")


def test_insecure_and_basic_auth():
    cfg = kubeconfig.from_dict(_doc(cluster={"insecure-skip-tls-verify": True},
                                    user={"username": "u", "password": "p"}))
    assert cfg.ssl_context().verify_mode == ssl.CERT_NONE
    assert cfg.auth_headers() == {"Authorization": "Basic " + _b64(b"u:p")}
    assert kubeconfig.from_dict(_doc(server="http://127.0.0.1:8080")).ssl_context() is None


def test_cert_without_key_is_an_error(pki):
    cfg = kubeconfig.from_dict(_doc(user={"client-certificate-data": _b64(pki["client"])}))
    with pytest.raises(ConfigError):
        cfg.ssl_context()


def test_mismatched_key_is_an_error(pki):
    _, other_key, _, _ = _cert("x")
    cfg = kubeconfig.from_dict(_doc(user={"client-certificate-data": _b64(pki["client"]),
                                          "client-key-data": _b64(other_key)}))
    with pytest.raises(ConfigError):
        cfg.ssl_context()


async def _tls_server(pki, tmp_path, handler_routes):
    (tmp_path / "srv.crt").write_bytes(pki["server"])
    (tmp_path / "srv.key").write_bytes(pki["server_key"])
    (tmp_path / "ca.crt").write_bytes(pki["ca"])
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    sctx.load_verify_locations(tmp_path / "ca.crt")
    sctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.add_routes(handler_routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=sctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port


def test_mutual_tls_over_loopback_and_long_watch_lines(pki, tmp_path):
    big = "x" * 300_000  # longer than aiohttp's readline limit

    async def get_pod(request):
        peer = request.transport.get_extra_info("peercert")
        cn = dict(x[0] for x in peer["subject"])["commonName"]
        return web.json_response({"kind": "Pod", "metadata": {"name": "p", "annotations": {"client": cn}}})

    async def watch(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for i in range(3):
            ev = {"type": "ADDED", "object": {"metadata": {"name": f"p{i}"}, "data": {"v": big}}}
            await resp.write(orjson.dumps(ev) + b"\n")
        return resp

    async def main():
        runner, port = await _tls_server(pki, tmp_path, [web.get("/api/v1/namespaces/ns/pods/p", get_pod),
                                                         web.get("/api/v1/pods", watch)])
        try:
            doc = _doc(server=f"https://127.0.0.1:{port}", cluster={"certificate-authority-data": _b64(pki["ca"])},
                       user={"client-certificate-data": _b64(pki["client"]),
                             "client-key-data": _b64(pki["client_key"])})
            p = tmp_path / "kc"
            p.write_text(yaml.safe_dump(doc))
            async with RESTClient.from_kubeconfig(str(p), component="test") as c:
                pod = await c.get("", "v1", "pods", "p", namespace="ns")
                assert pod["metadata"]["annotations"]["client"] == "admin"
                async with c.watch("", "v1", "pods") as w:
                    names = [(obj["metadata"]["name"], len(obj["data"]["v"])) async for _, obj in w]
                assert names == [("p0", len(big)), ("p1", len(big)), ("p2", len(big))]
            # A client that does not trust the server's CA fails with a TransportError.
            doc["clusters"][0]["cluster"] = {"server": f"https://127.0.0.1:{port}"}
            async with RESTClient.from_config(kubeconfig.from_dict(doc)) as c:
                with pytest.raises(TransportError):
                    await c.get("", "v1", "namespaces", "default")
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_connection_refused_is_transport_error():
    async def main():
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        async with RESTClient.from_config(kubeconfig.from_dict(_doc(server=f"http://127.0.0.1:{port}"))) as c:
            with pytest.raises(TransportError):
                await c.get("", "v1", "namespaces", "default")

    asyncio.run(main())
