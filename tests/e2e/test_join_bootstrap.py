"""Agents join with bootstrap tokens, through a CSR, and rotate their certificate (issue 9,
acceptance 7), with ``kubeling token`` and real kubectl against ``kubeling cluster`` (one node
joined with the server's node token, as before, then ``node-bt`` with a bootstrap token):

- ``kubeling token create`` prints ``K10<sha256 of the CA>::<id>.<secret>``; ``list`` shows it
  with kubeadm's columns; an expired one is deleted by the token cleaner;
- ``node-bt`` joins with it: ``kubectl get csr`` shows its ``node-csr-...`` request by
  ``system:bootstrap:<id>`` for ``kubernetes.io/kube-apiserver-client-kubelet``, Approved and
  Issued; ``kubectl get nodes`` shows it Ready; kube-proxy and the network-policy controller run
  with identities of their own;
- with ``--rotate-certificates-after`` (the test seam) the agent renews its certificate through a
  ``csr-...`` request by ``system:node:node-bt``, rewrites its kubeconfig and keeps heartbeating;
- a token with another CA's hash is refused by the agent, which exits 1 saying why;
- a deleted token is refused by the server (401) — to kubectl and to a joining agent — while
  the node that joined with it keeps working on its certificate, also after its agent restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

import harness
from multinode import BRIDGE_IP, MultiNodeCluster, running

NODE = "node-bt"
ROTATE_AFTER = 25


@pytest.fixture(scope="module")
def join_cluster(tmp_path_factory, images_dir):
    with running(tmp_path_factory.mktemp("join-bootstrap"), images_dir=images_dir, nodes=1) as c:
        yield c


@pytest.fixture(scope="module")
def join_token(join_cluster) -> str:
    out = join_cluster.kubeling("token", "create", "--ttl", "2h", "--description", "e2e join",
                                "--data-dir", str(join_cluster.cluster_dir / "server")).stdout.strip()
    return out


def server_dir(c: MultiNodeCluster):
    return c.cluster_dir / "server"


def kubeconfig_cert(path) -> x509.Certificate:
    doc = yaml.safe_load(path.read_text())
    return x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))


def cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def with_token(c: MultiNodeCluster, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl holding only the server URL, the CA and a bearer token."""
    ca = c.data_dir / "ca.crt"
    ca.write_bytes((server_dir(c) / "pki" / "ca.crt").read_bytes() if (server_dir(c) / "pki" / "ca.crt").exists()
                   else base64.b64decode(yaml.safe_load(c.kubeconfig.read_text())["clusters"][0]["cluster"]
                                         ["certificate-authority-data"]))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTPS_PROXY", "https_proxy")}
    env["KUBECACHEDIR"] = str(c.cache_dir / "token")
    argv = [harness.kubectl_binary("1.33"), "--kubeconfig=/dev/null", f"--server={c.url}",
            f"--certificate-authority={ca}", f"--tls-server-name={BRIDGE_IP}", f"--token={token}", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def csrs(c: MultiNodeCluster) -> list[dict]:
    return json.loads(c.kubectl("get", "csr", "-o", "json").stdout)["items"]


def test_token_create_and_list(join_cluster, join_token):
    ca = base64.b64decode(yaml.safe_load(join_cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
                          ["certificate-authority-data"])
    prefix, _, bootstrap = join_token.partition("::")
    assert prefix == "K10" + hashlib.sha256(ca).hexdigest()
    token_id, _, secret = bootstrap.partition(".")
    assert len(token_id) == 6 and len(secret) == 16
    listed = join_cluster.kubeling("token", "list", "--data-dir", str(server_dir(join_cluster))).stdout.splitlines()
    assert listed[0].split() == ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA", "GROUPS"]
    row = next(line for line in listed[1:] if line.startswith(bootstrap))
    assert "authentication,signing" in row and "e2e join" in row and row.split()[1] in ("1h", "119m", "2h")
    assert "system:bootstrappers:kubeling:default-node-token" in row
    secret_obj = json.loads(join_cluster.kubectl("get", "secret", "-n", "kube-system", f"bootstrap-token-{token_id}",
                                                 "-o", "json").stdout)
    assert secret_obj["type"] == "bootstrap.kubernetes.io/token"
    # the bearer token is system:bootstrap:<id>
    who = with_token(join_cluster, bootstrap, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:bootstrap:{token_id}"
    assert "system:bootstrappers" in info["groups"]


def test_expired_token_is_deleted_by_the_tokencleaner(join_cluster):
    c = join_cluster
    short = c.kubeling("token", "create", "--ttl", "3s", "--data-dir", str(server_dir(c))).stdout.strip()
    token_id = short.partition("::")[2].partition(".")[0]
    # the controller manager's tokencleaner (as kube-system/token-cleaner) deletes it once expired
    harness.eventually(lambda: c.kubectl("get", "secret", "-n", "kube-system", f"bootstrap-token-{token_id}",
                                         check=False).returncode != 0, timeout=60, interval=1,
                       what="the expired token deleted")
    assert token_id not in c.kubeling("token", "list", "--data-dir", str(server_dir(c))).stdout
    refused = with_token(c, short.partition("::")[2], "get", "--raw", "/api")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr


def test_agent_joins_through_a_csr_and_rotates(join_cluster, join_token):
    c = join_cluster
    token_file = c.data_dir / "bootstrap-token"
    token_file.write_text(join_token + "\n")
    token_file.chmod(0o600)
    token_id = join_token.partition("::")[2].partition(".")[0]
    c.cluster("node", "add", NODE, "--token-file", str(token_file),
              f"--agent-arg=--rotate-certificates-after={ROTATE_AFTER}", timeout=300)

    # kubectl get nodes: Ready
    harness.eventually(lambda: c.node_ready().get(NODE) == "True", timeout=120, what=f"{NODE} Ready")
    nodes = c.kubectl("get", "nodes").stdout
    assert any(line.split()[:2] == [NODE, "Ready"] for line in nodes.splitlines()), nodes

    # kubectl get csr: the bootstrap request, by the token's user, approved and issued
    [first] = [x for x in csrs(c) if x["spec"]["username"] == f"system:bootstrap:{token_id}"]
    name = first["metadata"]["name"]
    assert name.startswith("node-csr-")
    assert first["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert {x["type"] for x in first["status"]["conditions"]} >= {"Approved"}
    assert first["status"].get("certificate")
    table = c.kubectl("get", "csr", name).stdout.splitlines()
    assert "Approved,Issued" in table[1] and f"system:bootstrap:{token_id}" in table[1], table

    agent_dir = c.cluster_dir / "nodes" / NODE / "agent"
    kubeconfig = agent_dir / "kubelet.kubeconfig"
    assert kubeconfig.stat().st_mode & 0o077 == 0
    cert = kubeconfig_cert(kubeconfig)
    assert cn(cert) == f"system:node:{NODE}"
    issued = x509.load_pem_x509_certificate(base64.b64decode(first["status"]["certificate"]))
    assert issued.serial_number == cert.serial_number
    # kube-proxy and the network-policy controller have identities of their own
    assert cn(kubeconfig_cert(agent_dir / "kubeproxy.kubeconfig")) == "system:kube-proxy"
    assert cn(kubeconfig_cert(agent_dir / "kubeling-controller.kubeconfig")) == "system:kubeling-controller"

    # rotation: a renewal by the node itself, issued, and the kubeconfig holds the new certificate
    def renewed():
        mine = [x for x in csrs(c) if x["spec"]["username"] == f"system:node:{NODE}"
                and (x.get("status") or {}).get("certificate")]
        return mine if mine and kubeconfig_cert(kubeconfig).serial_number != cert.serial_number else None
    renewal = harness.eventually(renewed, timeout=ROTATE_AFTER + 90, interval=2, what="a rotated certificate")
    assert renewal[0]["metadata"]["name"].startswith("csr-")
    assert renewal[0]["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert any(x["type"] == "Approved" and x.get("reason") == "AutoApproved"
               for x in renewal[0]["status"]["conditions"])
    rotated = kubeconfig_cert(kubeconfig)
    assert cn(rotated) == f"system:node:{NODE}" and rotated.serial_number != cert.serial_number
    table = c.kubectl("get", "csr").stdout
    assert f"system:node:{NODE}" in table

    # the agent keeps working on its new certificate: its lease is renewed after the rotation
    def lease_renewed_after(t0: float) -> bool:
        lease = json.loads(c.kubectl("get", "lease", "-n", "kube-node-lease", NODE, "-o", "json").stdout)
        from datetime import datetime
        renew = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()
        return renew > t0
    t0 = rotated.not_valid_before_utc.timestamp() + 300 + 1   # the signer backdates by 5 minutes
    harness.eventually(lambda: lease_renewed_after(t0), timeout=60, interval=2, what="a lease renewal after rotation")
    assert c.node_ready()[NODE] == "True"


def test_wrong_ca_hash_is_refused_by_the_agent(join_cluster, join_token, tmp_path):
    c = join_cluster
    wrong = "K10" + "0" * 64 + "::" + join_token.partition("::")[2]
    st = c.state()
    done = c.kubeling("agent", "--server", st.server_url, "--token", wrong, "--data-dir", str(tmp_path / "x"),
                      "--node-name", "node-wrong", check=False, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "has sha256" in done.stderr and "0" * 64 in done.stderr, done.stderr
    assert not (tmp_path / "x" / "agent" / "kubelet.kubeconfig").exists()


def test_deleted_token_is_refused_by_the_server(join_cluster, join_token, tmp_path):
    c = join_cluster
    bootstrap = join_token.partition("::")[2]
    token_id = bootstrap.partition(".")[0]
    assert with_token(c, bootstrap, "get", "--raw", "/api").returncode == 0
    out = c.kubeling("token", "delete", token_id, "--data-dir", str(server_dir(c))).stdout
    assert out.strip() == f'bootstrap token "{token_id}" deleted'
    refused = with_token(c, bootstrap, "get", "--raw", "/api")
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr
    listed = c.kubeling("token", "list", "--data-dir", str(server_dir(c)))
    assert bootstrap not in listed.stdout
    # a new agent with the deleted token is refused too, and says so
    st = c.state()
    done = c.kubeling("agent", "--server", st.server_url, "--token", join_token, "--data-dir", str(tmp_path / "y"),
                      "--node-name", "node-late", check=False, timeout=60)
    assert done.returncode == 1 and "401" in done.stderr, done.stderr
    # the node that joined with it keeps its certificate and stays Ready, even across a restart of
    # its agent with the deleted token (it then authenticates with its own certificate)
    assert c.node_ready().get(NODE) == "True"
    serial = kubeconfig_cert(c.cluster_dir / "nodes" / NODE / "agent" / "kubelet.kubeconfig").serial_number
    c.cluster("node", "stop", NODE)
    c.cluster("node", "start", NODE, timeout=180)
    harness.eventually(lambda: c.node_ready().get(NODE) == "True", timeout=120, what=f"{NODE} Ready again")
    assert c.state().nodes[NODE].pid
    assert kubeconfig_cert(c.cluster_dir / "nodes" / NODE / "agent" / "kubelet.kubeconfig").serial_number in (
        serial, *(x509.load_pem_x509_certificate(base64.b64decode(x["status"]["certificate"])).serial_number
                  for x in csrs(c) if x["spec"]["username"] == f"system:node:{NODE}"
                  and (x.get("status") or {}).get("certificate")))
