"""Agent join with a bootstrap token, through a CertificateSigningRequest, against a real API
server over TLS (in-process, memory store) with the real CSR approver and signer controllers;
then the client certificate's rotation, and the refusals (wrong CA hash, deleted token)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from inprocess import api_server, ctx

from kubeling.apiserver import join
from kubeling.apiserver.app import server_ssl_context
from kubeling.apiserver.certs import PKI
from kubeling.client import kubeconfig as kc
from kubeling.client.rest import RESTClient
from kubeling.clusterbootstrap import token as bt
from kubeling.controllers.manager import run_controllers
from kubeling.kubelet import bootstrap

TOKEN = "abcdef.0123456789abcdef"


def cn_of(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def kubeconfig_cert(path: Path) -> x509.Certificate:
    doc = yaml.safe_load(path.read_text())
    return x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))


class Cluster:
    """The API server on loopback TLS, the node token, and csrapproving + csrsigning running."""

    def __init__(self, tmp: Path) -> None:
        self.pki = PKI(tmp / "server", hosts=["127.0.0.1"])
        self.pki.ensure()
        self.node_token = join.ensure_token(tmp / "server", self.pki)
        self.ca_hash = hashlib.sha256(self.pki.ca_cert.read_bytes()).hexdigest()

    async def __aenter__(self):
        self.api = await api_server()
        self.api.join = join.JoinHandler(self.pki, self.node_token, self.api.bootstrap_tokens)
        self.runner = web.AppRunner(self.api.build_app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=server_ssl_context(self.pki))
        await site.start()
        self.url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        admin = kc.Config(server=self.url, certificate_authority_data=self.pki.ca_cert.read_bytes(),
                          client_certificate_data=self.pki.admin_cert.read_bytes(),
                          client_key_data=self.pki.admin_key.read_bytes())
        self.admin = RESTClient.from_config(admin)
        self.stop = asyncio.Event()
        self.controllers = asyncio.create_task(run_controllers(
            self.admin, ["csrapproving", "csrsigning"], self.stop,
            settings={"cluster_signing_cert_file": str(self.pki.ca_cert),
                      "cluster_signing_key_file": str(self.pki.dir / "ca.key")}))
        await self.api.registry.create(self.api.lookup("", "v1", "secrets"), bt.secret_for(TOKEN, ttl=600),
                                       ctx("kube-system"))
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        await asyncio.gather(self.controllers, return_exceptions=True)
        await self.admin.close()
        await self.runner.cleanup()

    async def csrs(self) -> list[dict]:
        return (await self.admin.list("certificates.k8s.io", "v1", "certificatesigningrequests"))["items"]


def test_join_with_a_bootstrap_token_through_a_csr_then_rotate(tmp_path):
    root = tmp_path / "node" / "agent"

    async def main():
        async with Cluster(tmp_path) as c:
            kubeconfig = await bootstrap.join(c.url, f"K10{c.ca_hash}::{TOKEN}", root, "node-9", "127.0.0.9",
                                              wait=10, csr_wait=30)
            assert kubeconfig.stat().st_mode & 0o077 == 0
            cert = kubeconfig_cert(kubeconfig)
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(c.pki.ca_cert.read_bytes()))
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:node-9"
            assert [o.value for o in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
            [csr] = await c.csrs()
            assert csr["metadata"]["name"].startswith("node-csr-")
            assert csr["spec"]["username"] == "system:bootstrap:abcdef"
            assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
            assert sorted(csr["spec"]["usages"]) == ["client auth", "digital signature"]
            approved = [x for x in csr["status"]["conditions"] if x["type"] == "Approved"]
            assert approved and approved[0]["reason"] == "AutoApproved"
            assert not (root / "pki" / "kubelet-client.key.tmp").exists()
            # the node components' own identities, got with the same token
            proxy = yaml.safe_load((root / "kubeproxy.kubeconfig").read_text())
            assert cn_of(base64.b64decode(proxy["users"][0]["user"]["client-certificate-data"])) == "system:kube-proxy"
            ctl = yaml.safe_load((root / "kubeling-controller.kubeconfig").read_text())
            assert cn_of(base64.b64decode(ctl["users"][0]["user"]["client-certificate-data"])) == \
                "system:kubeling-controller"
            assert (root / "kubeproxy.kubeconfig").stat().st_mode & 0o077 == 0

            # the node's credentials work, as the node
            node = RESTClient.from_config(kc.load(str(kubeconfig)))
            who = await node.create("authentication.k8s.io", "v1", "selfsubjectreviews",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            assert who["status"]["userInfo"]["username"] == "system:node:node-9"

            # rotation: a CSR as the node itself (selfnodeclient), the kubeconfig and the live client swapped
            manager = bootstrap.CertificateManager(kubeconfig, "node-9", clients=[node], csr_wait=30)
            new = await manager.rotate()
            assert new.serial_number != cert.serial_number
            assert kubeconfig_cert(kubeconfig).serial_number == new.serial_number
            renewal = [x for x in await c.csrs() if x["metadata"]["name"] != csr["metadata"]["name"]]
            assert [r["spec"]["username"] for r in renewal] == ["system:node:node-9"]
            assert renewal[0]["metadata"]["name"].startswith("csr-")
            who = await node.create("authentication.k8s.io", "v1", "selfsubjectreviews",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            assert who["status"]["userInfo"]["username"] == "system:node:node-9"
            await node.close()

            # a restart after the token is gone keeps the certificate it has, and authenticates with it
            await c.api.registry.delete(c.api.lookup("", "v1", "secrets"), "kube-system", "bootstrap-token-abcdef", {},
                                        ctx("kube-system"))
            (root / "pki" / "kubelet.crt").unlink()
            again = await bootstrap.join(c.url, f"K10{c.ca_hash}::{TOKEN}", root, "node-9", "127.0.0.10", wait=5)
            assert kubeconfig_cert(again).serial_number == new.serial_number
            assert (root / "pki" / "kubelet.crt").exists() and len(await c.csrs()) == 2
    asyncio.run(main())


def test_wrong_ca_hash_and_deleted_token_are_refused(tmp_path):
    async def main():
        async with Cluster(tmp_path) as c:
            with pytest.raises(bootstrap.BootstrapError, match="has sha256"):
                await bootstrap.join(c.url, f"K10{'0' * 64}::{TOKEN}", tmp_path / "a", "node-1", "127.0.0.2", wait=5)
            assert not (tmp_path / "a" / "kubelet.kubeconfig").exists()
            with pytest.raises(bootstrap.BootstrapError, match="--ca-file"):
                await bootstrap.join(c.url, TOKEN, tmp_path / "b", "node-1", "127.0.0.2", wait=5)
            await c.api.registry.delete(c.api.lookup("", "v1", "secrets"), "kube-system", "bootstrap-token-abcdef", {},
                                        ctx("kube-system"))
            with pytest.raises(bootstrap.BootstrapError, match="401"):
                await bootstrap.join(c.url, f"K10{c.ca_hash}::{TOKEN}", tmp_path / "c", "node-1", "127.0.0.2", wait=5)
            assert not (tmp_path / "c" / "kubelet.kubeconfig").exists()
    asyncio.run(main())


def test_short_token_with_a_ca_file_and_no_client_cert_endpoint_for_bootstrap_tokens(tmp_path):
    import aiohttp
    import ssl

    async def main():
        async with Cluster(tmp_path) as c:
            ctx_ = ssl.create_default_context(cafile=str(c.pki.ca_cert))
            async with aiohttp.ClientSession() as s:
                async with s.get(c.url + join.CLIENT_CERT_PATH, ssl=ctx_,
                                 headers={"Authorization": f"Bearer {TOKEN}", join.NODE_NAME_HEADER: "n1"}) as r:
                    assert r.status == 403 and "CertificateSigningRequest" in await r.text()
                async with s.get(c.url + join.KUBE_PROXY_CERT_PATH, ssl=ctx_,
                                 headers={"Authorization": "Bearer abcdef.ffffffffffffffff"}) as r:
                    assert r.status == 401
                # another node's certificate is not this node's
                c.pki.issue_node("node-3")
                other = ssl.create_default_context(cafile=str(c.pki.ca_cert))
                other.load_cert_chain(str(c.pki.dir / "node-node-3.crt"), str(c.pki.dir / "node-node-3.key"))
                async with s.get(c.url + join.SERVING_CERT_PATH, ssl=other,
                                 headers={join.NODE_NAME_HEADER: "node-4", join.NODE_IP_HEADER: "127.0.0.4"}) as r:
                    assert r.status == 401
                async with s.get(c.url + join.SERVING_CERT_PATH, ssl=other,
                                 headers={join.NODE_NAME_HEADER: "node-3", join.NODE_IP_HEADER: "127.0.0.4"}) as r:
                    assert r.status == 200
            kubeconfig = await bootstrap.join(c.url, TOKEN, tmp_path / "n", "node-2", "127.0.0.3", wait=10,
                                              csr_wait=30, ca_file=str(c.pki.ca_cert), expiration_seconds=600)
            cert = kubeconfig_cert(kubeconfig)
            assert cert.subject.rfc4514_string() == "CN=system:node:node-2,O=system:nodes"
            # --client-cert-duration: the CSR's expirationSeconds
            assert abs(cert.not_valid_after_utc.timestamp() - time.time() - 600) < 60
            [csr] = await c.csrs()
            assert csr["spec"]["expirationSeconds"] == 600
    asyncio.run(main())


def test_parse_join_tokens():
    h = "a" * 64
    assert join.parse_token(f"K10{h}::{TOKEN}") == join.Token(h, "", TOKEN)
    assert join.parse_token(TOKEN) == join.Token("", "", TOKEN)
    assert str(join.Token(h, "", TOKEN)) == f"K10{h}::{TOKEN}" and str(join.Token("", "", TOKEN)) == TOKEN
    assert join.parse_token(f"K10{h}::server:s3cret").bootstrap is False
    with pytest.raises(ValueError, match="<id>.<secret>"):
        join.parse_token(f"K10{h}::abc.def")


def test_rotation_deadline_is_upstreams_jitter(tmp_path):
    import random
    pki = PKI(tmp_path / "server", hosts=["127.0.0.1"])
    pki.ensure()
    cert = x509.load_pem_x509_certificate(pki.issue_node("n1")[0].read_bytes())
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    for seed in range(50):
        frac = (bootstrap.rotation_deadline(cert, random.Random(seed)) - start) / (end - start)
        assert 0.7 <= frac <= 0.9
    manager = bootstrap.CertificateManager(tmp_path / "k", "n1", rotate_after=30)
    assert manager.next_deadline(cert, since=1000.0) == 1030.0


def test_only_the_nodes_own_certificate_is_rotated(tmp_path):
    """An admin (or another node's) kubeconfig is never replaced by a node certificate."""
    pki = PKI(tmp_path / "server", hosts=["127.0.0.1"])
    pki.ensure()
    admin = tmp_path / "admin.kubeconfig"
    from kubeling.apiserver.certs import write_kubeconfig
    write_kubeconfig(admin, "https://127.0.0.1:1", pki)
    before = admin.read_bytes()
    manager = bootstrap.CertificateManager(admin, "n1", rotate_after=0.01)
    asyncio.run(asyncio.wait_for(manager.run(asyncio.Event()), 5))   # returns at once: not system:node:n1
    assert admin.read_bytes() == before and manager.rotations == 0


def test_kube_proxy_on_the_node_kubeconfig_restarts_after_a_rotation(tmp_path, monkeypatch):
    from kubeling.cli import _run
    from kubeling.kubelet.agent import Agent, AgentOptions
    starts = []

    async def fake_supervise_child(argv, stop):
        starts.append(argv)
        await stop.wait()
    monkeypatch.setattr(_run, "supervise_child", fake_supervise_child)

    async def main(own_kubeconfig: str):
        agent = Agent(AgentOptions(kubeconfig="node.kubeconfig", root=tmp_path, kube_proxy_kubeconfig=own_kubeconfig),
                      client=object())
        stop = asyncio.Event()
        task = asyncio.create_task(agent._kube_proxy(["proxy", "--kubeconfig", "x"], stop))
        await asyncio.sleep(0.05)
        agent.credentials_rotated()
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
    asyncio.run(main(""))
    assert len(starts) == 2          # the node's own kubeconfig: restarted once
    starts.clear()
    asyncio.run(main("kubeproxy.kubeconfig"))
    assert len(starts) == 1          # its own identity: left alone
