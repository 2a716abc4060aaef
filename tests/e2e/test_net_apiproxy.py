"""The API server's proxies and kubectl's ways through them (issue 8, acceptance 9), with real
kubectl against the shared 3-node cluster:

- ``kubectl get --raw /api/v1/namespaces/NS/services/web:80/proxy/`` (by port number, port
  name and with the ``http:`` scheme) reaches a pod of the Service, on whichever node;
- ``pods/NAME:8080/proxy/`` reaches the pod; upstream's errors for a Service without
  endpoints and for a port the Service does not have;
- ``kubectl proxy`` relays to the service proxy;
- ``kubectl port-forward svc/web :80`` and ``deploy/web :8080``: kubectl resolves them to a pod
  (the Service's selector; the Service port to its targetPort) and uses pods/portforward.

The Service ``web`` selects the Deployment's pods. Its Endpoints are written by the test when no
Endpoints controller has written them yet (the controller would write the same addresses),
so the service proxy is tested whatever else runs."""

from __future__ import annotations

import json
import re
import subprocess

import harness
import multinode
import workloads
from test_net_overlay import SCRIPT, remote_addr

WEB = "web"


def deployment(replicas: int = 2) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": WEB},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": WEB}},
                 "template": {"metadata": {"labels": {"app": WEB}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "web", "image": "docker.io/library/busybox:latest",
                                     "command": ["sh", "-c", SCRIPT],
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}}}})


SERVICE = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": WEB},
                      "spec": {"selector": {"app": WEB},
                               "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
EMPTY = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
                    "spec": {"ports": [{"port": 80}]}})


def endpoints(pods: list[dict]) -> str:
    addrs = [{"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
              "targetRef": {"kind": "Pod", "namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"],
                            "uid": p["metadata"]["uid"]}} for p in pods]
    return json.dumps({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": WEB},
                       "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8080}]}]})


def setup_web(c, ns: str) -> list[dict]:
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment())
    c.kubectl("apply", "-n", ns, "-f", "-", input=SERVICE)
    c.kubectl("apply", "-n", ns, "-f", "-", input=EMPTY)
    pods = workloads.wait_pods(c, ns, f"app={WEB}", 2, timeout=180)
    c.kubectl("create", "-n", ns, "-f", "-", input=endpoints(pods), check=False)   # AlreadyExists is fine
    return pods


def raw(c, path: str, version: str = "1.33", check: bool = True) -> subprocess.CompletedProcess:
    return c.kubectl("get", "--raw", path, version=version, check=check, timeout=60)


def test_service_and_pod_proxy_with_kubectl_get_raw(multinode_cluster, multinode_namespace, kubectl_version):
    c, ns, v = multinode_cluster, multinode_namespace, kubectl_version
    pods = setup_web(c, ns)
    names = {p["metadata"]["name"] for p in pods}
    base = f"/api/v1/namespaces/{ns}/services"
    seen = set()
    for ident in ("web:80", "web:http", "http:web:80") * 3:
        got = raw(c, f"{base}/{ident}/proxy/", v).stdout.strip()
        assert got in names, got
        seen.add(got)
    assert seen, "no answer"
    # the pod saw the API server's address: the control plane reached a pod on another node
    assert remote_addr(raw(c, f"{base}/web:80/proxy/cgi-bin/ip", v).stdout) == multinode.BRIDGE_IP
    for p in pods:
        name = p["metadata"]["name"]
        assert raw(c, f"/api/v1/namespaces/{ns}/pods/{name}:8080/proxy/", v).stdout.strip() == name
        assert raw(c, f"/api/v1/namespaces/{ns}/pods/http:{name}:8080/proxy/", v).stdout.strip() == name
        # no port: the first declared containerPort
        assert raw(c, f"/api/v1/namespaces/{ns}/pods/{name}/proxy/", v).stdout.strip() == name

    bad = raw(c, f"{base}/empty:80/proxy/", v, check=False)
    assert bad.returncode != 0 and "no endpoints available" in bad.stderr, bad.stderr
    status, body = c.request("GET", f"{base}/empty:80/proxy/")
    assert status == 503 and json.loads(body)["message"] == 'no endpoints available for service "empty:80"'
    status, body = c.request("GET", f"{base}/web:81/proxy/")
    assert status == 503 and json.loads(body)["message"] == 'no service port 81 found for service "web"'
    status, body = c.request("GET", f"{base}/missing:80/proxy/")
    assert status == 404 and json.loads(body)["message"] == 'services "missing" not found'


def test_kubectl_proxy_to_a_service(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    pods = setup_web(c, ns)
    names = {p["metadata"]["name"] for p in pods}
    argv = [harness.kubectl_binary("1.33"), f"--kubeconfig={c.kubeconfig}", "proxy", "--port=0"]
    with harness.Stream(argv, c._env(None)) as proxy:
        line = proxy.wait_for(r"Starting to serve on 127\.0\.0\.1:\d+")
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        url = f"http://127.0.0.1:{port}/api/v1/namespaces/{ns}/services/web:80/proxy/"
        got = subprocess.run(["curl", "-sS", "--max-time", "20", url], capture_output=True, text=True, timeout=30)
        assert got.returncode == 0 and got.stdout.strip() in names, got.stdout + got.stderr + proxy.stderr()


def port_forward(c, ns: str, target: str, remote: int, version: str) -> list[str]:
    argv = [harness.kubectl_binary(version), f"--kubeconfig={c.kubeconfig}", "port-forward", "-n", ns, target,
            f":{remote}"]
    with harness.Stream(argv, c._env(None)) as pf:
        line = pf.wait_for(r"^Forwarding from 127\.0\.0\.1:\d+ -> \d+$")
        assert line.endswith("-> 8080"), line      # svc port 80 resolved to the pod's targetPort
        local = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        out = []
        for _ in range(3):
            got = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{local}/"],
                                 capture_output=True, text=True, timeout=30, check=False)
            assert got.returncode == 0, got.stderr + pf.stderr()
            out.append(got.stdout.strip())
        return out


def test_port_forward_svc_and_deploy(multinode_cluster, multinode_namespace, kubectl_version):
    c, ns, v = multinode_cluster, multinode_namespace, kubectl_version
    pods = setup_web(c, ns)
    names = {p["metadata"]["name"] for p in pods}
    via_svc = port_forward(c, ns, "svc/web", 80, v)
    assert len(set(via_svc)) == 1 and via_svc[0] in names, via_svc     # one pod for the whole session
    via_deploy = port_forward(c, ns, "deploy/web", 8080, v)
    assert len(set(via_deploy)) == 1 and via_deploy[0] in names, via_deploy


def test_https_scheme_to_the_kubernetes_service(multinode_cluster):
    """``https:kubernetes:443``: TLS to the API server's own endpoint (unverified, as upstream's
    proxy transport), anonymous there: /healthz answers."""
    got = raw(multinode_cluster, "/api/v1/namespaces/default/services/https:kubernetes:443/proxy/healthz")
    assert got.stdout.strip() == "ok"
