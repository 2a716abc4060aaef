"""Service account identity end to end (issue 6, acceptance 12, the part that needs no agent):
real kubectl ``create token`` (1.32 and 1.33), the token used from the host with the cluster CA
a pod would read (the ``kube-root-ca.crt`` ConfigMap), and refused once its bound pod is gone.

Authorization has no RBAC yet (issue 9): a service account may ask who it is
(SelfSubjectReview, ``kubectl auth whoami``) and is refused a pod list with a 403 that names it —
which is what shows that the request was authenticated as the account.
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

ISSUER = "https://kubernetes.default.svc.cluster.local"


def claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def wait_for_default_account(cluster, ns: str) -> None:
    harness.eventually(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False)
                       .returncode == 0, what=f"the default ServiceAccount of {ns}")


def root_ca(cluster, ns: str, tmp_path) -> str:
    """The CA a pod reads as ca.crt: the kube-root-ca.crt ConfigMap of its namespace."""
    cm = harness.eventually(lambda: json.loads(cluster.kubectl(
        "get", "configmap", "kube-root-ca.crt", "-n", ns, "-o", "json", check=False).stdout or "null"),
        what="kube-root-ca.crt")
    path = tmp_path / "ca.crt"
    path.write_text(cm["data"]["ca.crt"])
    return str(path)


def kubectl_with_token(cluster, version: str, token: str, ca: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl with nothing but the server, the CA and the bearer token (no admin kubeconfig)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTPS_PROXY", "https_proxy")}
    env["KUBECACHEDIR"] = str(cluster.cache_dir / "token")
    argv = [harness.kubectl_binary(version), "--kubeconfig=/dev/null", f"--server={cluster.url}",
            f"--certificate-authority={ca}", f"--token={token}", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def python_client(cluster, token: str, ca: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = cluster.url
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_kubectl_create_token_default_works(cluster, kubectl, namespace, tmp_path):
    wait_for_default_account(cluster, namespace)
    token = kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    claims = claims_of(token)
    assert claims["iss"] == ISSUER and claims["aud"] == [ISSUER]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert claims["exp"] - claims["iat"] == 3600
    sa_uid = kubectl.json("get", "serviceaccount", "default", "-n", namespace)["metadata"]["uid"]
    assert claims["kubernetes.io"]["serviceaccount"] == {"name": "default", "uid": sa_uid}
    ca = root_ca(cluster, namespace, tmp_path)

    who = kubectl_with_token(cluster, kubectl.version, token, ca, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{namespace}:default" and info["uid"] == sa_uid
    assert set(info["groups"]) == {"system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                   "system:authenticated"}

    pods = kubectl_with_token(cluster, kubectl.version, token, ca, "get", "pods", "-n", namespace)
    assert pods.returncode != 0
    assert (f'pods is forbidden: User "system:serviceaccount:{namespace}:default" cannot list resource "pods" '
            f'in API group "" in the namespace "{namespace}"') in pods.stderr

    bad = kubectl_with_token(cluster, kubectl.version, token[:-6] + "AAAAAA", ca, "get", "pods", "-n", namespace)
    assert bad.returncode != 0 and "Unauthorized" in bad.stderr


@pytest.mark.parametrize("args, message", [
    pytest.param(["--duration", "5m"], "may not specify a duration less than 10 minutes", id="too-short"),
    pytest.param(["--bound-object-kind", "Pod", "--bound-object-name", "missing"], 'pods "missing" not found',
                 id="missing-pod"),
])
def test_kubectl_create_token_refusals(cluster, kubectl, namespace, args, message):
    wait_for_default_account(cluster, namespace)
    out = kubectl("create", "token", "default", "-n", namespace, *args, check=False)
    assert out.returncode != 0 and message in out.stderr


def test_pod_bound_token_is_refused_once_the_pod_is_deleted(cluster, kubectl, namespace, tmp_path):
    wait_for_default_account(cluster, namespace)
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    pod_uid = kubectl.json("get", "pod", "holder", "-n", namespace)["metadata"]["uid"]
    token = kubectl("create", "token", "default", "-n", namespace, "--duration", "20m",
                    "--audience", ISSUER, "--audience", "vault",
                    "--bound-object-kind", "Pod", "--bound-object-name", "holder").stdout.strip()
    claims = claims_of(token)
    assert claims["aud"] == [ISSUER, "vault"] and claims["exp"] - claims["iat"] == 1200
    assert claims["kubernetes.io"]["pod"] == {"name": "holder", "uid": pod_uid}

    api = python_client(cluster, token, root_ca(cluster, namespace, tmp_path))
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:default"
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(api).list_namespaced_pod(namespace)
        assert e.value.status == 403 and f"system:serviceaccount:{namespace}:default" in e.value.body

        kubectl("delete", "pod", "holder", "-n", namespace, "--wait=true")
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(api).list_namespaced_pod(namespace)
        assert e.value.status == 401 and json.loads(e.value.body)["reason"] == "Unauthorized"
    finally:
        api.close()


def test_legacy_token_secret_is_filled_in_by_the_tokens_controller(cluster, namespace, tmp_path):
    wait_for_default_account(cluster, namespace)
    cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "default-token", "namespace": namespace,
                     "annotations": {"kubernetes.io/service-account.name": "default"}}}))

    def filled():
        s = json.loads(cluster.kubectl("get", "secret", "default-token", "-n", namespace, "-o", "json").stdout)
        return s if (s.get("data") or {}).get("token") else None
    secret = harness.eventually(filled, what="the token Secret filled in")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["namespace"] == namespace
    ca = tmp_path / "secret-ca.crt"
    ca.write_text(data["ca.crt"])
    who = kubectl_with_token(cluster, "1.33", data["token"], str(ca), "auth", "whoami", "-o",
                             "jsonpath={.status.userInfo.username}")
    assert who.returncode == 0 and who.stdout == f"system:serviceaccount:{namespace}:default", who.stderr
    cluster.kubectl("delete", "secret", "default-token", "-n", namespace)
    gone = kubectl_with_token(cluster, "1.33", data["token"], str(ca), "auth", "whoami")
    assert gone.returncode != 0 and "Unauthorized" in gone.stderr
