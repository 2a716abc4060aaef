"""Services through kube-proxy's iptables mode (the default) in the shared 3-node cluster
(issue 8, acceptance 2, 4 and 5; 11 for the rules a deleted Service leaves).

Every node's agent runs ``kubeling proxy`` (iptables mode). Pods are busybox httpd answering
their hostname; clients are a busybox pod (``kubectl exec``), the "test host" (the namespace
outside the cluster's bridge, where the API server lives) and a node's own netns.

- ClusterIP: 30 new connections from a pod hit every one of 3 pods; with
  ``sessionAffinity: ClientIP`` one client sticks to one pod.
- The seed's ``service.yml`` (type NodePort) answers on every node's IP at its nodePort, even on
  a node that runs none of the pods, from the test host and from such a node itself.
- ``kubectl expose deployment web --type=LoadBalancer --port 80`` gets an EXTERNAL-IP (ServiceLB:
  the nodes' addresses) that answers from the test host.
- A deleted Service's chains leave every node.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import harness
import multinode
import yaml
from workloads import BUSYBOX, SLEEP, get_json, wait_pods

from kubeling.proxy.iptables import service_chain
from kubeling.proxy.types import ServicePortName

SEED = Path(__file__).parent / "fixtures" / "seed" / "service.yml"

HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]


def deployment(name: str, replicas: int, *, node: str = "") -> str:
    spec = {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": BUSYBOX, "command": HTTPD,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    else:
        # one pod per node, so that every pod is on a different node than some client
        spec["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                              "whenUnsatisfiable": "DoNotSchedule",
                                              "labelSelector": {"matchLabels": {"app": name}}}]
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                       "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})


def client_pod(name: str = "client") -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                       "spec": {"terminationGracePeriodSeconds": 1,
                                "containers": [{"name": "c", "image": BUSYBOX, "command": SLEEP}]}})


def service(name: str, app: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}], **spec}})


def from_pod(c, ns: str, pod: str, url: str, n: int) -> list[str]:
    """``n`` new connections from a pod (busybox wget, each bounded by `timeout`): the answers,
    "" for a failure."""
    script = f'for i in $(seq {n}); do timeout 5 wget -q -O - {url} 2>/dev/null || echo FAIL; done'
    out = c.kubectl("exec", "-n", ns, pod, "--", "sh", "-c", script, timeout=60 + 6 * n).stdout
    return ["" if line == "FAIL" else line for line in out.split()]


CLIENT = """
import sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    try:
        print(urllib.request.urlopen(url, timeout=5).read().decode().strip())
    except OSError as e:
        print("")
"""


def from_netns(prefix: list[str], url: str, n: int) -> list[str]:
    """``n`` new connections from a network namespace (``nsenter`` prefix), each its own urlopen."""
    out = subprocess.run([*prefix, sys.executable, "-c", CLIENT, url, str(n)], capture_output=True, text=True,
                         timeout=30 + 6 * n, check=True).stdout
    return out.split("\n")[:n]


def pod_names(c, ns: str, app: str) -> set[str]:
    return {p["metadata"]["name"] for p in get_json(c, "pods", "-n", ns, "-l", f"app={app}")["items"]}


def balanced_endpoints(c, ns: str, name: str) -> dict[str, set[str]]:
    """Per node, the endpoints (ip:port) its kube-proxy (iptables mode) balances ``ns/name``'s
    ClusterIP to: the ``-> <endpoint>`` comments of the service chains' jump rules."""
    out = {}
    marker = f'"{ns}/{name}'
    for node_name, node in c.state().nodes.items():
        saved = subprocess.run(["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"], capture_output=True,
                               text=True, check=True, timeout=30).stdout
        out[node_name] = {line.split(" -> ", 1)[1].split('"', 1)[0] for line in saved.splitlines()
                          if line.startswith("-A KUBE-SVC-") and marker in line and " -> " in line}
    return out


def wait_balanced(c, ns: str, name: str, n: int, timeout: float = 30) -> None:
    """Until every node's kube-proxy balances ``ns/name`` over exactly ``n`` endpoints: waiting on
    answers instead would pass by chance while a node's rules still lag behind the EndpointSlice."""
    harness.eventually(lambda: all(len(eps) == n for eps in balanced_endpoints(c, ns, name).values()),
                       timeout=timeout, interval=0.5, what=f"every node balancing {ns}/{name} over {n} endpoints")


def cluster_ip(c, ns: str, name: str) -> str:
    return get_json(c, "svc", name, "-n", ns)["spec"]["clusterIP"]


def test_cluster_ip_reaches_every_pod_and_client_ip_affinity_sticks(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment("web", 3))
    c.kubectl("apply", "-n", ns, "-f", "-", input=client_pod())
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("web", "web"))
    c.kubectl("apply", "-n", ns, "-f", "-", input=service(
        "sticky", "web", sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}}))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    wait_pods(c, ns, "app=client", 1, timeout=120)
    pods = pod_names(c, ns, "web")
    wait_balanced(c, ns, "web", 3)
    wait_balanced(c, ns, "sticky", 3)
    url = f"http://{cluster_ip(c, ns, 'web')}/"
    harness.eventually(lambda: set(from_pod(c, ns, "client", url, 6)) <= pods, timeout=30, interval=1,
                       what="the ClusterIP answering from a pod")
    answers = from_pod(c, ns, "client", url, 30)
    hits = collections.Counter(answers)
    assert "" not in hits, hits
    assert set(hits) == pods, f"30 connections hit {dict(hits)}, not every one of {sorted(pods)}"

    sticky = f"http://{cluster_ip(c, ns, 'sticky')}/"
    harness.eventually(lambda: set(from_pod(c, ns, "client", sticky, 2)) <= pods, timeout=30, interval=1,
                       what="the sticky ClusterIP answering")
    answers = from_pod(c, ns, "client", sticky, 15)
    assert len(set(answers)) == 1 and answers[0] in pods, answers

    # the node's own processes (hostNetwork pods, tools) reach the ClusterIP too: their packets
    # are routed before the DNAT, past the node's unreachable route for the service CIDR
    for name, node in c.state().nodes.items():
        prefix = ["nsenter", f"--net=/run/netns/{node.netns}"]
        got = from_netns(prefix, url, 6)
        assert "" not in got and set(got) <= pods, f"{name} -> {url}: {got}"


def _node_ips(c) -> dict[str, str]:
    return {name: node.ip for name, node in c.state().nodes.items()}


def test_seed_node_port_service_answers_on_every_node(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    nodes = _node_ips(c)
    first, *others = sorted(nodes)
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment("nodeapp", 1, node=first))
    c.kubectl("apply", "-n", ns, "-f", str(SEED))
    (pod,) = wait_pods(c, ns, "app=nodeapp", 1, timeout=180)
    assert pod["spec"]["nodeName"] == first
    svc = get_json(c, "svc", "my-service", "-n", ns)
    assert svc["spec"]["type"] == yaml.safe_load(SEED.read_text())["spec"]["type"] == "NodePort"
    node_port = svc["spec"]["ports"][0]["nodePort"]
    name = pod["metadata"]["name"]

    for node, ip in sorted(nodes.items()):
        url = f"http://{ip}:{node_port}/"
        got = harness.eventually(lambda: from_netns(c.netns.prefix(), url, 1) == [name], timeout=30, interval=1,
                                 what=f"{url} from the test host (node {node})")
        assert got
        assert from_netns(c.netns.prefix(), url, 3) == [name] * 3
    # from a node that runs none of the pods: its own address, and another node's
    node = others[-1]
    prefix = ["nsenter", f"--net=/run/netns/{c.state().nodes[node].netns}"]
    for ip in (nodes[node], nodes[others[0]]):
        assert from_netns(prefix, f"http://{ip}:{node_port}/", 3) == [name] * 3, f"{node} -> {ip}:{node_port}"


def test_expose_load_balancer_answers_from_the_test_host(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment("web", 3))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    pods = pod_names(c, ns, "web")
    c.kubectl("expose", "deployment", "web", "--type=LoadBalancer", "--port", "80", "--target-port", "8080",
              "-n", ns)

    def external() -> list[str]:
        ingress = (get_json(c, "svc", "web", "-n", ns).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return [i["ip"] for i in ingress if i.get("ip")]
    ips = harness.eventually(external, timeout=60, interval=0.5, what="an EXTERNAL-IP for web")
    table = c.kubectl("get", "svc", "web", "-n", ns).stdout
    assert ips[0] in table
    hits = collections.Counter()
    for ip in ips:
        url = f"http://{ip}/"
        harness.eventually(lambda: from_netns(c.netns.prefix(), url, 1)[0] in pods, timeout=30, interval=1,
                           what=f"{url} from the test host")
        answers = from_netns(c.netns.prefix(), url, 10)
        assert "" not in answers and set(answers) <= pods, answers
        hits.update(answers)
    assert set(hits) == pods, f"the EXTERNAL-IPs reached {dict(hits)}"


def _chains(c, node: str) -> str:
    prefix = ["nsenter", f"--net=/run/netns/{c.state().nodes[node].netns}"]
    return subprocess.run([*prefix, "iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout


def test_a_deleted_service_leaves_no_chains(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment("web", 3))
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("gone", "web", type="NodePort"))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    chain = service_chain(ServicePortName(ns, "gone", "", "TCP"), "tcp")
    nodes = sorted(_node_ips(c))

    def seps(node: str) -> set[str]:
        return {line.split()[-1] for line in _chains(c, node).splitlines()
                if line.startswith(f"-A {chain} ") and "KUBE-SEP-" in line}
    for node in nodes:
        harness.eventually(lambda: len(seps(node)) == 3, timeout=30, interval=0.5,
                           what=f"{chain} and its 3 endpoint chains on {node}")
    endpoint_chains = seps(nodes[0])
    c.kubectl("delete", "svc", "gone", "-n", ns)
    for node in nodes:
        harness.eventually(lambda: not any(x in _chains(c, node) for x in (chain, *endpoint_chains, f"{ns}/gone")),
                           timeout=30, interval=0.5, what=f"{chain} gone from {node}")


FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def _get(prefix: list[str], url: str) -> tuple[int, str]:
    out = subprocess.run([*prefix, sys.executable, "-c", FETCH, url], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    code, _, body = out.partition("\n")
    return int(code), body


def _try_get(prefix: list[str], url: str) -> tuple[int, str] | None:
    try:
        return _get(prefix, url)
    except subprocess.CalledProcessError:
        return None


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def test_kube_proxy_metrics_and_healthz_on_every_node(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=deployment("web", 3))
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("web", "web"))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    for node, state in sorted(c.state().nodes.items()):
        prefix = ["nsenter", f"--net=/run/netns/{state.netns}"]

        def programmed():
            code, text = _get(prefix, "http://127.0.0.1:10249/metrics")
            return code == 200 and _metric(text, "kubeproxy_network_programming_duration_seconds_count") > 0 and text
        text = harness.eventually(programmed, timeout=30, interval=1, what=f"network programming latency on {node}")
        assert _metric(text, "kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1
        assert _metric(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") > 0
        assert _metric(text, 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"}') > 0
        # healthz answers on the node's address (0.0.0.0:10256), from the test host
        code, body = _get(c.netns.prefix(), f"http://{state.ip}:10256/healthz")
        assert code == 200, body
        doc = json.loads(body)
        assert doc["nodeEligible"] is True and doc["lastUpdated"] and doc["currentTime"]
        # metrics stay on the node (127.0.0.1:10249, upstream's default)
        done = subprocess.run([*c.netns.prefix(), sys.executable, "-c", FETCH, f"http://{state.ip}:10249/metrics"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode != 0
    # each kube-proxy said it started, on its Node (upstream's Normal/Starting Event)
    events = get_json(c, "events", "-n", "default")["items"]
    started = {e["involvedObject"]["name"] for e in events if e["reason"] == "Starting"
               and (e.get("source") or {}).get("component") == "kube-proxy" and e["involvedObject"]["kind"] == "Node"}
    assert started >= set(c.state().nodes), started


READY_WEB = ["sh", "-c", "mkdir -p /www && echo ok > /www/ready && hostname > /www/index.html && "
                         "exec httpd -f -p 8080 -h /www"]


def test_an_unready_pod_stops_getting_connections_and_comes_back(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    doc = json.loads(deployment("web", 3))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["command"] = READY_WEB
    container["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1,
                                   "failureThreshold": 1, "successThreshold": 1, "timeoutSeconds": 1}
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    c.kubectl("apply", "-n", ns, "-f", "-", input=client_pod())
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("web", "web"))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    wait_pods(c, ns, "app=client", 1, timeout=120)
    pods = sorted(pod_names(c, ns, "web"))
    victim = pods[0]
    url = f"http://{cluster_ip(c, ns, 'web')}/"
    harness.eventually(lambda: set(from_pod(c, ns, "client", url, 30)) == set(pods), timeout=60, interval=1,
                       what="every pod answering through the ClusterIP")

    c.kubectl("exec", "-n", ns, victim, "--", "rm", "/www/ready")
    # the probe (1 s), the endpoint slice controller and kube-proxy (min-sync-period 1 s)
    harness.eventually(lambda: victim not in from_pod(c, ns, "client", url, 10), timeout=20, interval=0.5,
                       what=f"{victim} out of the rotation")
    answers = from_pod(c, ns, "client", url, 30)
    assert "" not in answers and set(answers) == set(pods[1:]), collections.Counter(answers)

    c.kubectl("exec", "-n", ns, victim, "--", "sh", "-c", "echo ok > /www/ready")
    harness.eventually(lambda: victim in from_pod(c, ns, "client", url, 30), timeout=20, interval=0.5,
                       what=f"{victim} back in the rotation")


CGI_WEB = ["sh", "-c", """mkdir -p /www/cgi-bin
hostname > /www/index.html
printf '#!/bin/sh\\necho "Content-Type: text/plain"\\necho\\necho "$(hostname) $REMOTE_ADDR"\\n' > /www/cgi-bin/who
chmod +x /www/cgi-bin/who
exec httpd -f -p 8080 -h /www"""]


def _who(answer: str) -> tuple[str, str]:
    """"<pod> <client address>" from the CGI (busybox httpd writes IPv4 as [::ffff:a.b.c.d])."""
    who, src = answer.split()
    return who, src.strip("[]").removeprefix("::ffff:")


def test_external_traffic_policy_local_keeps_the_client_address(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    nodes = _node_ips(c)
    first, *others = sorted(nodes)
    doc = json.loads(deployment("local", 1, node=first))
    doc["spec"]["template"]["spec"]["containers"][0]["command"] = CGI_WEB
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("local", "local", type="NodePort",
                                                          externalTrafficPolicy="Local"))
    c.kubectl("apply", "-n", ns, "-f", "-", input=service("cluster", "local", type="NodePort"))
    (pod,) = wait_pods(c, ns, "app=local", 1, timeout=180)
    name = pod["metadata"]["name"]
    local_port = get_json(c, "svc", "local", "-n", ns)["spec"]["ports"][0]["nodePort"]
    cluster_port = get_json(c, "svc", "cluster", "-n", ns)["spec"]["ports"][0]["nodePort"]
    host = c.netns.prefix()
    client_ip = multinode.BRIDGE_IP          # the test host's address on the nodes' bridge

    url = f"http://{nodes[first]}:{local_port}/cgi-bin/who"
    got = harness.eventually(lambda: from_netns(host, url, 1)[0], timeout=30, interval=1, what=url)
    assert _who(got) == (name, client_ip)                      # Local: no masquerade
    # a node without the pod drops Local traffic (no REJECT either: the client times out)
    assert from_netns(host, f"http://{nodes[others[0]]}:{local_port}/", 1) == [""]
    # a LoadBalancer under the Local policy: its healthCheckNodePort (allocated by the API server,
    # served by kube-proxy) says which nodes have a local endpoint
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "local-lb"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "local"},
                 "ports": [{"port": 8089, "targetPort": 8080}]}}))
    hc = get_json(c, "svc", "local-lb", "-n", ns)["spec"]["healthCheckNodePort"]
    for node, ip in nodes.items():
        want = 200 if node == first else 503
        # (the first answers may come before the Service's slice reached that node's proxy)
        code, body = harness.eventually(
            lambda: (r := _try_get(host, f"http://{ip}:{hc}/healthz")) and r[0] == want and r, timeout=30,
            interval=1, what=f"health check node port {hc} answering {want} on {node}")
        doc = json.loads(body)
        assert doc["service"] == {"namespace": ns, "name": "local-lb"}
        assert doc["localEndpoints"] == (1 if node == first else 0)
    # Cluster policy on the same pod: any node answers, masqueraded to a node's address
    for ip in (nodes[first], nodes[others[0]]):
        url = f"http://{ip}:{cluster_port}/cgi-bin/who"
        answer = harness.eventually(lambda: from_netns(host, url, 1)[0], timeout=30, interval=1, what=url)
        who, src = _who(answer)
        assert who == name and src != client_ip, answer
