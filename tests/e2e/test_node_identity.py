"""A real pod's service account identity (issue 6, acceptance 12).

The ServiceAccount admission plugin gives the pod upstream's ``kube-api-access-<suffix>``
projected volume; the agent writes it (the token from its TokenManager, ``ca.crt`` from the
``kube-root-ca.crt`` ConfigMap, ``namespace`` from the downward API). The test reads the three
files with ``kubectl exec cat`` and uses them from the host (the ``kubernetes`` Service is not
routed yet), with kubectl 1.32 and 1.33 and the Python client, holding nothing else:
- ``kubectl auth whoami`` names ``system:serviceaccount:<ns>:default`` with the pod and node the
  token is bound to; a pod list is refused with a 403 naming that user (no RBAC yet);
- once the pod is deleted, the same token is refused (401);
- ``kubectl create token default`` gives a token that works.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

import harness
import nodes

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ISSUER = "https://kubernetes.default.svc.cluster.local"

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.5; done"]
"""


def claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def with_token(cluster: nodes.NodeCluster, version: str, token: str, ca: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl holding only the server URL, the CA file and the bearer token (no kubeconfig)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTPS_PROXY", "https_proxy")}
    env["KUBECACHEDIR"] = str(cluster.cache_dir / "token")
    argv = [harness.kubectl_binary(version), "--kubeconfig=/dev/null", f"--server={cluster.url}",
            f"--certificate-authority={ca}", f"--token={token}", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def forbidden_message(ns: str) -> str:
    return (f'pods is forbidden: User "system:serviceaccount:{ns}:default" cannot list resource "pods" '
            f'in API group "" in the namespace "{ns}"')


def test_pod_token_and_ca_identify_the_pod_service_account(node_cluster, node_namespace, kubectl_version, tmp_path):
    ns, v = node_namespace, kubectl_version
    k = lambda *a, **kw: node_cluster.kubectl("-n", ns, *a, version=v, **kw)
    k("create", "-f", "-", input=POD)
    pod = node_cluster.wait_pod(ns, "reader", lambda p: p["status"].get("phase") == "Running")
    token = k("exec", "reader", "--", "cat", f"{SA_DIR}/token").stdout
    ca_text = k("exec", "reader", "--", "cat", f"{SA_DIR}/ca.crt").stdout
    assert k("exec", "reader", "--", "cat", f"{SA_DIR}/namespace").stdout == ns
    ca = tmp_path / "ca.crt"
    ca.write_text(ca_text)
    root_ca = json.loads(k("get", "configmap", "kube-root-ca.crt", "-o", "json").stdout)["data"]["ca.crt"]
    assert ca_text == root_ca

    # the token the agent asked for: bound to this pod on this node, for the API server's audience
    claims = claims_of(token)
    node = nodes.json_of(node_cluster.kubectl("get", "node", nodes.NODE_NAME, "-o", "json").stdout)
    assert claims["sub"] == f"system:serviceaccount:{ns}:default" and claims["aud"] == [ISSUER]
    assert claims["kubernetes.io"]["pod"] == {"name": "reader", "uid": pod["metadata"]["uid"]}
    assert claims["kubernetes.io"]["node"] == {"name": nodes.NODE_NAME, "uid": node["metadata"]["uid"]}

    who = with_token(node_cluster, v, token, str(ca), "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:default"
    assert set(info["groups"]) == {"system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"}
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["reader"]
    assert info["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    assert info["extra"]["authentication.kubernetes.io/node-name"] == [nodes.NODE_NAME]
    table = with_token(node_cluster, v, token, str(ca), "auth", "whoami").stdout
    assert f"system:serviceaccount:{ns}:default" in table and "pod-name" in table

    listed = with_token(node_cluster, v, token, str(ca), "get", "pods", "-n", ns)
    assert listed.returncode != 0 and forbidden_message(ns) in listed.stderr, listed.stderr

    # the pod goes: its token with it
    k("delete", "pod", "reader", "--wait=true")
    gone = with_token(node_cluster, v, token, str(ca), "auth", "whoami")
    assert gone.returncode != 0 and "Unauthorized" in gone.stderr, gone.stderr
    gone = with_token(node_cluster, v, token, str(ca), "get", "pods", "-n", ns)
    assert gone.returncode != 0 and "Unauthorized" in gone.stderr, gone.stderr

    # `kubectl create token default` still gives one that works
    fresh = k("create", "token", "default").stdout.strip()
    who = with_token(node_cluster, v, fresh, str(ca), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert who.returncode == 0 and who.stdout == f"system:serviceaccount:{ns}:default", who.stderr
    listed = with_token(node_cluster, v, fresh, str(ca), "get", "pods", "-n", ns)
    assert listed.returncode != 0 and forbidden_message(ns) in listed.stderr, listed.stderr


def test_pod_token_with_the_python_client(node_cluster, node_namespace, tmp_path):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=POD)
    node_cluster.wait_pod(ns, "reader", lambda p: p["status"].get("phase") == "Running")
    token = node_cluster.kubectl("exec", "-n", ns, "reader", "--", "cat", f"{SA_DIR}/token").stdout
    ca = tmp_path / "ca.crt"
    ca.write_text(node_cluster.kubectl("exec", "-n", ns, "reader", "--", "cat", f"{SA_DIR}/ca.crt").stdout)

    cfg = client.Configuration()
    cfg.host = node_cluster.url
    cfg.ssl_ca_cert = str(ca)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(cfg)
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:default"
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(api).list_namespaced_pod(ns)
        assert e.value.status == 403 and forbidden_message(ns) in json.loads(e.value.body)["message"]

        node_cluster.kubectl("delete", "pod", "reader", "-n", ns, "--wait=true")
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(api).list_namespaced_pod(ns)
        assert e.value.status == 401 and json.loads(e.value.body)["reason"] == "Unauthorized"
    finally:
        api.close()
