"""In-cluster clients (issue 8, acceptance 10): a pod running the project's
``kubeling/python-client`` image (Python and the official ``kubernetes`` package,
scripts/build-images.py) uses ``config.load_incluster_config()``: the projected token and CA
under /var/run/secrets/kubernetes.io/serviceaccount and ``KUBERNETES_SERVICE_HOST/PORT``.

- ``test_incluster_client_direct``: the pod is pointed at the ``default/kubernetes`` endpoint
  (the API server's own address, 10.44.0.1:6443) by its env, which only needs the pod network
  and the control plane's routes back to pods (`kubeling cluster routes`).
- ``test_incluster_client_through_the_kubernetes_service``: the env the kubelet sets
  (10.43.0.1:443), through kube-proxy's DNAT of the Service to that endpoint.

The pod asks who it is (SelfSubjectReview), lists the pods of its namespace and prints both.
Its service account is given the ``view`` ClusterRole in its namespace by a RoleBinding
(``kubectl create rolebinding --clusterrole=view --serviceaccount=<ns>:default``), as a user
would do: RBAC then lets it list pods, and the list holds the client pod itself.
"""

from __future__ import annotations

import json

import harness
import multinode

IMAGE = "docker.io/kubeling/python-client:latest"

CLIENT = """
import json
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_incluster_config()
api = client.ApiClient()
who = client.AuthenticationV1Api(api).create_self_subject_review(
    client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
out = {"host": api.configuration.host, "user": who.status.user_info.username, "namespace": ns}
try:
    out["pods"] = sorted(p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(ns).items)
except ApiException as e:
    out["status"], out["message"] = e.status, json.loads(e.body)["message"]
print("RESULT " + json.dumps(out))
"""


def client_pod(name: str, env: dict[str, str] | None = None) -> str:
    container = {"name": "client", "image": IMAGE, "command": ["python3", "-c", CLIENT]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"restartPolicy": "Never", "containers": [container]}})


def grant_view(c, ns: str) -> None:
    """What a user does so that the pod's service account may read its namespace (RBAC)."""
    c.kubectl("create", "rolebinding", "client-view", "--clusterrole=view", f"--serviceaccount={ns}:default",
              "-n", ns)
    harness.eventually(lambda: '"pods"' in c.kubectl("get", "clusterrole", "view", "-o",
                                                     "jsonpath={.rules[*].resources}").stdout,
                       timeout=30, what="the view ClusterRole aggregated (clusterrole-aggregation)")


def run_client(c, ns: str, name: str, env: dict[str, str] | None = None, timeout: float = 240) -> dict:
    grant_view(c, ns)
    c.kubectl("apply", "-n", ns, "-f", "-", input=client_pod(name, env))

    def finished():
        pod = json.loads(c.kubectl("get", "pod", "-n", ns, name, "-o", "json").stdout)
        return pod["status"].get("phase") in ("Succeeded", "Failed") and pod
    pod = harness.eventually(finished, timeout=timeout, interval=1, what=f"pod {name} to finish")
    logs = c.kubectl("logs", "-n", ns, name).stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    line = next(line for line in logs.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def check(result: dict, ns: str, host: str, name: str) -> None:
    assert result["host"] == host
    assert result["namespace"] == ns
    assert result["user"] == f"system:serviceaccount:{ns}:default"
    assert "status" not in result, result      # no 403: the RoleBinding to view lets it list
    assert name in result["pods"], result


def test_incluster_client_direct(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    port = str(c.state().secure_port)
    result = run_client(c, ns, "client-direct", {"KUBERNETES_SERVICE_HOST": multinode.BRIDGE_IP,
                                                 "KUBERNETES_SERVICE_PORT": port})
    check(result, ns, f"https://{multinode.BRIDGE_IP}:{port}", "client-direct")


def test_incluster_client_through_the_kubernetes_service(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    result = run_client(c, ns, "client-svc", timeout=120)
    check(result, ns, "https://10.43.0.1:443", "client-svc")
