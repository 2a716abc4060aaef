"""Service endpoints and ServiceLB with real kubectl (issue 8: the EndpointSlice and Endpoints
controllers; acceptance 5 and 6, the control-plane half).

In `multinode_cluster` (three nodes in network namespaces): a Deployment behind a Service gets
its EndpointSlices and Endpoints (``kubectl get endpointslices`` / ``endpoints`` columns); a pod
whose readiness probe starts failing leaves the ready endpoints about a second after the
kubelet reports it, and comes back; ``kubectl expose --type=LoadBalancer`` gets the nodes'
addresses as its EXTERNAL-IP. Reaching those addresses is kube-proxy's part, tested with it.

On private loopback servers (no agent, a hand-made Node): ServiceLB is on by default and off
with ``kubeling server --disable servicelb`` or
``--kube-controller-manager-arg=controllers=*,-servicelb``.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import harness
import pytest
from workloads import BUSYBOX, get_json, wait_pods

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && echo ok > /www/ready && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
          successThreshold: 1
          timeoutSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def _slices(cluster, ns: str, svc: str = "web") -> list[dict]:
    return get_json(cluster, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={svc}")["items"]


def _table(cluster, *args) -> list[dict]:
    lines = cluster.kubectl("get", *args).stdout.splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split(None, len(header) - 1))) for line in lines[1:]]


def test_a_deployments_service_gets_slices_and_endpoints(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=WEB.format(image=BUSYBOX))
    pods = wait_pods(c, ns, "app=web", 3, timeout=180)
    ips = {p["status"]["podIP"]: p for p in pods}
    assert len({p["spec"]["nodeName"] for p in pods}) >= 2  # spread: the slice names several nodes

    def settled():
        s = _slices(c, ns)
        return len(s) == 1 and sorted(a for e in s[0].get("endpoints") or () for a in e["addresses"]) == sorted(ips)
    harness.eventually(settled, timeout=30, interval=0.5, what="one slice with the three pod IPs")
    (s,) = _slices(c, ns)
    assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert s["metadata"]["generateName"] == "web-"
    assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    for e in s["endpoints"]:
        pod = ips[e["addresses"][0]]
        assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert e["nodeName"] == pod["spec"]["nodeName"]
        assert e["targetRef"]["name"] == pod["metadata"]["name"]

    (row,) = _table(c, "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web")
    assert row["ADDRESSTYPE"] == "IPv4" and row["PORTS"] == "8080"
    assert sorted(row["ENDPOINTS"].split()[0].split(",")) == sorted(ips)

    (row,) = _table(c, "endpoints", "web", "-n", ns)
    assert sorted(row["ENDPOINTS"].split()[0].split(",")) == sorted(f"{ip}:8080" for ip in ips)
    ep = get_json(c, "endpoints", "web", "-n", ns)
    (subset,) = ep["subsets"]
    assert sorted(a["ip"] for a in subset["addresses"]) == sorted(ips)
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]

    # default/kubernetes: the API server's own slice, so kube-proxy can route 10.43.0.1
    k = get_json(c, "endpointslice", "kubernetes", "-n", "default")
    assert k["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
    assert k["endpoints"][0]["addresses"] == [c.state().server_ip]

    # the Service goes: its slices (owned by it) and its Endpoints go with it
    c.kubectl("delete", "service", "web", "-n", ns)
    harness.eventually(lambda: not _slices(c, ns) and c.kubectl("get", "endpoints", "web", "-n", ns,
                                                                check=False).returncode != 0,
                       timeout=30, interval=0.5, what="web's slices and Endpoints gone")


def _ready_of(cluster, ns: str, pod: str) -> tuple[bool | None, bool | None]:
    """(pod Ready, its endpoint's ready): the pod read first, then the slices."""
    item = get_json(cluster, "pod", pod, "-n", ns)
    pod_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in item["status"].get("conditions") or ())
    slice_ready = None
    for s in _slices(cluster, ns):
        for e in s.get("endpoints") or ():
            if (e.get("targetRef") or {}).get("name") == pod:
                slice_ready = e["conditions"]["ready"]
    return pod_ready, slice_ready


def _measure(cluster, ns: str, pod: str, want: bool, timeout: float = 30) -> tuple[float, float]:
    """Poll until the pod and its endpoint both show ``want``; seconds from the start until the
    pod showed it, and from then until the endpoint did."""
    start = time.monotonic()
    pod_at = slice_at = None
    while time.monotonic() - start < timeout:
        pod_ready, slice_ready = _ready_of(cluster, ns, pod)
        now = time.monotonic()
        if pod_at is None and pod_ready == want:
            pod_at = now
        if slice_at is None and slice_ready == want:
            slice_at = now
        if pod_at is not None and slice_at is not None:
            return pod_at - start, max(0.0, slice_at - pod_at)
        time.sleep(0.05)
    raise AssertionError(f"{pod}: pod ready={pod_ready} endpoint ready={slice_ready}, wanted {want}")


def test_a_pod_failing_readiness_leaves_the_ready_endpoints_and_comes_back(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=WEB.format(image=BUSYBOX))
    pods = wait_pods(c, ns, "app=web", 3, timeout=180)
    victim = pods[0]["metadata"]["name"]
    harness.eventually(lambda: _ready_of(c, ns, victim) == (True, True), timeout=30, interval=0.5,
                       what=f"{victim} ready in its slice")
    # A trigger time is a Ready lastTransitionTime, to the second: a flip within the second of
    # the pod's last transition is not later than it, and (as upstream) carries no annotation.
    became_ready = next(x for x in get_json(c, "pod", victim, "-n", ns)["status"]["conditions"]
                        if x["type"] == "Ready")["lastTransitionTime"]
    since = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(became_ready)
    time.sleep(max(0.0, 1.1 - since.total_seconds()))

    c.kubectl("exec", "-n", ns, victim, "--", "rm", "/www/ready")
    probe, lag = _measure(c, ns, victim, False)
    print(f"readiness lost: kubelet {probe:.2f}s, endpoint {lag:.2f}s after")
    # the kubelet needs a probe period or two; the controllers then have ~1 s (slack for 2 cores)
    assert probe < 10, f"the kubelet took {probe:.1f}s to report the failed probe"
    assert lag < 3, f"the endpoint stayed ready {lag:.2f}s after the pod turned unready"
    (s,) = _slices(c, ns)
    e = next(e for e in s["endpoints"] if e["targetRef"]["name"] == victim)
    assert e["conditions"] == {"ready": False, "serving": False, "terminating": False}
    # the trigger time kube-proxy measures network-programming latency from: the pod's transition
    ready = next(x for x in get_json(c, "pod", victim, "-n", ns)["status"]["conditions"] if x["type"] == "Ready")
    assert s["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == \
        ready["lastTransitionTime"]
    ep = get_json(c, "endpoints", "web", "-n", ns)
    assert [a["targetRef"]["name"] for ss in ep["subsets"] for a in ss.get("notReadyAddresses") or ()] == [victim]
    assert len([a for ss in ep["subsets"] for a in ss.get("addresses") or ()]) == 2

    c.kubectl("exec", "-n", ns, victim, "--", "sh", "-c", "echo ok > /www/ready")
    probe, lag = _measure(c, ns, victim, True)
    print(f"readiness back: kubelet {probe:.2f}s, endpoint {lag:.2f}s after")
    assert lag < 3, f"the endpoint came back {lag:.2f}s after the pod turned ready"
    harness.eventually(lambda: len([a for ss in get_json(c, "endpoints", "web", "-n", ns)["subsets"]
                                    for a in ss.get("addresses") or ()]) == 3,
                       timeout=10, interval=0.3, what="three ready addresses in the Endpoints again")


def test_expose_type_loadbalancer_gets_the_node_addresses(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=WEB.format(image=BUSYBOX))
    wait_pods(c, ns, "app=web", 3, timeout=180)
    c.kubectl("expose", "deployment", "web", "--name", "web-lb", "--type=LoadBalancer", "--port", "80",
              "--target-port", "8080", "-n", ns)
    node_ips = sorted(n.ip for n in c.state().nodes.values())

    def external() -> str:
        (row,) = _table(c, "svc", "web-lb", "-n", ns)
        return row["EXTERNAL-IP"]
    harness.eventually(lambda: external() not in ("<pending>", ""), timeout=30, interval=0.5,
                       what="an EXTERNAL-IP for web-lb")
    assert sorted(external().split(",")) == node_ips
    svc = get_json(c, "svc", "web-lb", "-n", ns)
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": ip, "ipMode": "VIP"} for ip in node_ips]
    assert all(p.get("nodePort") for p in svc["spec"]["ports"])


# -- turning ServiceLB off (private loopback servers: no agent, one hand-made Node) ------------

NODE = """
apiVersion: v1
kind: Node
metadata: {name: lb-node}
"""
NODE_STATUS = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "hand-made", "lastHeartbeatTime": None,
                                           "lastTransitionTime": None}],
                          "addresses": [{"type": "InternalIP", "address": "192.0.2.44"}]}}
LB = """
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  selector: {app: nothing}
  ports: [{port: 8080}]
"""


@pytest.mark.parametrize("args, on", [
    pytest.param((), True, id="default-on"),
    pytest.param(("--disable", "servicelb"), False, id="disable-servicelb"),
    pytest.param(("--kube-controller-manager-arg", "controllers=*,-servicelb"), False, id="kcm-arg"),
])
def test_servicelb_can_be_turned_off(make_cluster, args, on):
    c = make_cluster(extra_args=("--disable-scheduler", *args))
    c.kubectl("create", "-f", "-", input=NODE)
    c.kubectl("patch", "node", "lb-node", "--subresource=status", "--type=merge", "-p", json.dumps(NODE_STATUS))
    c.kubectl("create", "-n", "default", "-f", "-", input=LB)
    # the controller manager is up once the EndpointSlice controller wrote the placeholder slice
    harness.eventually(lambda: _slices(c, "default", "lb"), timeout=60, interval=0.5, what="lb's slice")
    if on:
        harness.eventually(lambda: (get_json(c, "svc", "lb")["status"].get("loadBalancer") or {}).get("ingress"),
                           timeout=15, interval=0.3, what="lb's ingress")
        assert get_json(c, "svc", "lb")["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.44", "ipMode": "VIP"}]
    else:
        time.sleep(3)
        assert not (get_json(c, "svc", "lb")["status"].get("loadBalancer") or {}).get("ingress")
        (row,) = _table(c, "svc", "lb")
        assert row["EXTERNAL-IP"] == "<pending>"


LINGER = """
apiVersion: v1
kind: Pod
metadata: {{name: linger, labels: {{app: linger}}}}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "trap '' TERM; mkdir -p /www && echo ok > /www/ready; httpd -f -p 8080 -h /www & wait; sleep 3600"]
    ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: linger}}
spec:
  selector: {{app: linger}}
  ports: [{{port: 80, targetPort: http}}]
"""


def test_a_terminating_pod_stays_in_the_slice_not_ready_and_leaves_the_endpoints(multinode_cluster,
                                                                                 multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("apply", "-n", ns, "-f", "-", input=LINGER.format(image=BUSYBOX))
    wait_pods(c, ns, "app=linger", 1, timeout=120)
    harness.eventually(lambda: [e["conditions"]["ready"] for s in _slices(c, ns, "linger")
                                for e in s.get("endpoints") or ()] == [True], timeout=30, interval=0.5,
                       what="linger ready in its slice")
    c.kubectl("delete", "pod", "linger", "-n", ns, "--wait=false")
    try:
        def terminating():
            eps = [e for s in _slices(c, ns, "linger") for e in s.get("endpoints") or ()]
            return len(eps) == 1 and eps[0]["conditions"]["terminating"] and eps[0]
        e = harness.eventually(terminating, timeout=15, interval=0.3, what="linger terminating in its slice")
        assert e["conditions"]["ready"] is False  # no new connections; serving is the kubelet's say
        ep = get_json(c, "endpoints", "linger", "-n", ns)
        assert not [a for ss in ep.get("subsets") or () for a in ss.get("addresses") or ()]
    finally:
        c.kubectl("delete", "pod", "linger", "-n", ns, "--grace-period=0", "--force", check=False)
