"""kubectl's protobuf request bodies (``application/vnd.kubernetes.protobuf``), both kubectl versions.

Two views:
- *the wire*: kubectl is pointed at a local capture server (plain HTTP on 127.0.0.1 that records
  each body and answers 404), and the decoded body must equal what the same kubectl prints for
  ``--dry-run=client -o json``: Go's JSON of the very object it sent;
- *the server*: the typed-client commands that send protobuf (create configmap/secret/namespace/
  deployment/service/job, auth can-i, scale via the Scale subresource, drain's evictions)
  succeed against ``kubeling server`` and store what upstream would.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

from kubeling.api.protobuf.decode import decode_object  # noqa: E402

pytestmark = pytest.mark.e2e

PROTOBUF = "application/vnd.kubernetes.protobuf"


class CaptureServer:
    """Records (method, path, content type, body) of every request with a body; answers 404."""

    def __init__(self):
        self.requests: list[tuple[str, str, str, bytes]] = []
        captured = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                if body:
                    captured.append((self.command, self.path, self.headers.get("Content-Type", ""), body))
                payload = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": "NotFound", "code": 404, "message": "captured"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def capture():
    server = CaptureServer()
    yield server
    server.close()


def _kubectl_offline(version: str, url: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"),
           "KUBECACHEDIR": str(tmp_path / "cache")}
    return subprocess.run([harness.kubectl_binary(version), f"--server={url}", *args],
                          capture_output=True, text=True, env=env, timeout=60)


WIRE_COMMANDS = [
    pytest.param(["create", "configmap", "c", "--from-literal=a=b", "--from-file=k={file}",
                  "--from-file=bin={binary}"], id="configmap"),
    pytest.param(["create", "secret", "generic", "s", "--from-literal=k=v", "--type=Opaque"], id="secret"),
    pytest.param(["create", "secret", "docker-registry", "reg", "--docker-server=r", "--docker-username=u",
                  "--docker-password=p"], id="secret-docker-registry"),
    pytest.param(["create", "namespace", "x"], id="namespace"),
    pytest.param(["create", "deployment", "d", "--image=nginx", "--replicas=0", "--port=80"],
                 id="deployment-zero-replicas"),
    pytest.param(["create", "service", "clusterip", "s", "--tcp=80:8080"], id="service-clusterip"),
    pytest.param(["create", "service", "nodeport", "np", "--tcp=80:http", "--node-port=30080"],
                 id="service-nodeport-named-port"),
    pytest.param(["create", "job", "j", "--image=busybox"], id="job"),
    pytest.param(["create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"], id="cronjob"),
    pytest.param(["create", "serviceaccount", "sa"], id="serviceaccount"),
    pytest.param(["create", "quota", "q", "--hard=cpu=1,memory=1Gi,pods=2"], id="quota-quantities"),
    pytest.param(["create", "priorityclass", "pc", "--value=1000", "--preemption-policy=Never"],
                 id="priorityclass"),
    pytest.param(["create", "poddisruptionbudget", "p", "--selector=app=a", "--min-available=50%"],
                 id="pdb-intorstring"),
    pytest.param(["create", "ingress", "ing", "--rule=foo.com/bar=svc1:8080"], id="ingress"),
    pytest.param(["create", "clusterrole", "cr", "--verb=get", "--non-resource-url=/logs"], id="clusterrole"),
    pytest.param(["create", "rolebinding", "rb", "--clusterrole=view", "--user=u"], id="rolebinding"),
]


@pytest.mark.parametrize("args", WIRE_COMMANDS)
def test_decoded_body_is_the_json_kubectl_would_send(kubectl_version, capture, tmp_path, args):
    (tmp_path / "f.txt").write_text("hello\n")
    (tmp_path / "b.bin").write_bytes(bytes([0, 159, 255]))
    args = [a.format(file=tmp_path / "f.txt", binary=tmp_path / "b.bin") for a in args]
    before = len(capture.requests)
    sent = _kubectl_offline(kubectl_version, capture.url, args, tmp_path)
    assert sent.returncode != 0 and "captured" in sent.stderr, sent.stderr
    posts = [r for r in capture.requests[before:] if r[0] == "POST"]
    assert len(posts) == 1, capture.requests[before:]
    _, path, content_type, body = posts[0]
    assert content_type == PROTOBUF, (path, content_type)
    printed = _kubectl_offline(kubectl_version, capture.url, [*args, "--dry-run=client", "-o", "json"],
                               tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert decode_object(body) == json.loads(printed.stdout)


def test_selfsubjectaccessreview_body(kubectl_version, capture, tmp_path):
    before = len(capture.requests)
    _kubectl_offline(kubectl_version, capture.url, ["auth", "can-i", "create", "pods", "-n", "ns1"], tmp_path)
    (_, path, content_type, body), = [r for r in capture.requests[before:] if r[0] == "POST"]
    assert path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert content_type == PROTOBUF
    assert decode_object(body) == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {"namespace": "ns1", "verb": "create", "resource": "pods"}},
        "status": {"allowed": False}}


# -- against kubeling server ---------------------------------------------------------------------

def test_create_configmap_literal_and_files(kubectl, namespace, tmp_path):
    (tmp_path / "f.txt").write_text("hello\n")
    (tmp_path / "b.bin").write_bytes(bytes([0, 159, 255]))
    out = kubectl("create", "configmap", "c", "-n", namespace, "--from-literal=a=b",
                  f"--from-file={tmp_path / 'f.txt'}", f"--from-file={tmp_path / 'b.bin'}")
    assert out.stdout.strip() == "configmap/c created"
    cm = kubectl.json("get", "configmap", "c", "-n", namespace)
    assert cm["data"] == {"a": "b", "f.txt": "hello\n"}
    assert base64.b64decode(cm["binaryData"]["b.bin"]) == bytes([0, 159, 255])
    assert cm["metadata"]["creationTimestamp"]  # set by the server, not the client's null


def test_create_secret_generic(kubectl, namespace):
    kubectl("create", "secret", "generic", "s", "-n", namespace, "--from-literal=k=v")
    secret = kubectl.json("get", "secret", "s", "-n", namespace)
    assert secret["data"] == {"k": base64.b64encode(b"v").decode()}
    assert secret["type"] == "Opaque"


def test_create_namespace(kubectl, namespace):
    name = f"{namespace[:50]}-x{kubectl.version.replace('.', '')}"
    kubectl("create", "namespace", name)
    try:
        ns = kubectl.json("get", "namespace", name)
        assert ns["status"]["phase"] == "Active"
        assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_create_deployment(kubectl, namespace):
    kubectl("create", "deployment", "d", "-n", namespace, "--image=nginx", "--replicas=2")
    spec = kubectl.json("get", "deployment", "d", "-n", namespace)["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"app": "d"}}
    assert spec["strategy"]["type"] == "RollingUpdate"  # defaulted from the empty strategy {}
    (container,) = spec["template"]["spec"]["containers"]
    assert (container["name"], container["image"], container["resources"]) == ("nginx", "nginx", {})


def test_create_deployment_with_zero_replicas_keeps_zero(kubectl, namespace):
    # replicas is a pointer: the protobuf body carries an explicit 0 that must not become 1.
    kubectl("create", "deployment", "zero", "-n", namespace, "--image=nginx", "--replicas=0")
    assert kubectl.json("get", "deployment", "zero", "-n", namespace)["spec"]["replicas"] == 0


def test_create_service_clusterip(kubectl, namespace):
    kubectl("create", "service", "clusterip", "s", "-n", namespace, "--tcp=80:8080")
    spec = kubectl.json("get", "service", "s", "-n", namespace)["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert spec["clusterIP"]


def test_create_job(kubectl, namespace):
    kubectl("create", "job", "j", "-n", namespace, "--image=busybox")
    spec = kubectl.json("get", "job", "j", "-n", namespace)["spec"]
    assert spec["template"]["spec"]["containers"][0]["image"] == "busybox"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_auth_can_i(kubectl, namespace):
    out = kubectl("auth", "can-i", "create", "pods", "-n", namespace)
    assert out.stdout.strip() == "yes"


def test_scale_to_zero(kubectl, namespace):
    kubectl("create", "deployment", "sc", "-n", namespace, "--image=nginx", "--replicas=2")
    kubectl("scale", "deployment", "sc", "-n", namespace, "--replicas=0")
    assert kubectl.json("get", "deployment", "sc", "-n", namespace)["spec"]["replicas"] == 0


def test_garbage_protobuf_is_a_400_status(cluster, namespace):
    status, body = cluster.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                   body=b"k8s\x00\x0a\x7f", headers={"Content-Type": PROTOBUF})
    assert status == 400, body
    assert json.loads(body)["reason"] == "BadRequest"


def test_drain_evicts_with_protobuf_evictions(kubectl, namespace):
    node = f"{namespace[:40]}-n{kubectl.version.replace('.', '')}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}))
        out = kubectl("drain", node, "--force", "--grace-period=0", "--timeout=30s")
        assert "pod/victim evicted" in out.stdout + out.stderr
        assert kubectl("get", "pod", "victim", "-n", namespace, check=False).returncode != 0
        assert kubectl.json("get", "node", node)["spec"]["unschedulable"] is True
    finally:
        kubectl("delete", "node", node, "--wait=false", check=False)
