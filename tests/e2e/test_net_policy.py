"""NetworkPolicy in a 3-node cluster (issue 8, acceptance 8 and 11), with real kubectl.

Every node's agent enforces the policies of its own pods (`kubeling.kubelet.network.policy`):
ingress where the server runs, egress where the client runs. Clients are busybox pods that
``wget`` the server's pod IP from inside (``kubectl exec``); a refused connection is rejected at
once, so each probe is short. Waits are bounded (`harness.eventually`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import harness
from multinode import running_and_ready

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{command}"]
    ports: [{{name: http, containerPort: 8080}}]
"""
SERVE = "mkdir -p /www && echo $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"
SLEEP = "exec sleep 3600"

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: http}]
"""
DENY_ALL_INGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
ALLOW_CLIENTS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - port: http
"""
ALLOW_NAMESPACE = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-{other}}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {other}}}}}
      podSelector: {{matchLabels: {{app: client}}}}
"""
DENY_CLIENT_EGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.0.2.0/24}
"""


def create(cluster, ns: str, manifest: str) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=manifest)


def pod(cluster, ns: str, name: str, node: str, app: str, command: str = SLEEP) -> None:
    create(cluster, ns, POD.format(name=name, app=app, node=node, command=command))


def fetch(cluster, ns: str, client: str, ip: str) -> str | None:
    """What ``client`` gets from the server at ``ip`` (``ip`` or ``ip:port``; port 8080 by
    default): the server's hostname, or None if refused."""
    # busybox's own `wget -T` crashes in this image; its `timeout` applet bounds the try instead
    done = cluster.kubectl("exec", "-n", ns, client, "--", "timeout", "5", "wget", "-qO-", f"http://{ip if ':' in ip else ip + ':8080'}/",
                           check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def reaches(cluster, ns, client, ip) -> bool:
    return harness.eventually(lambda: fetch(cluster, ns, client, ip) == "server", timeout=30, interval=0.5,
                              what=f"{ns}/{client} reaching the server")


def refused(cluster, ns, client, ip) -> bool:
    return harness.eventually(lambda: fetch(cluster, ns, client, ip) is None, timeout=30, interval=0.5,
                              what=f"{ns}/{client} refused by the policies")


def leaks(cluster, node: str) -> dict:
    """`count_leaks()` inside the node's network namespace."""
    netns = cluster.state().nodes[node].netns
    code = "import json; from kubeling.kubelet.network.policy import count_leaks; print(json.dumps(count_leaks()))"
    done = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def test_default_deny_then_an_allow_rule_reopens_exactly_the_chosen_path(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    other = f"netpol-other-{uuid.uuid4().hex[:5]}"
    n1, n2 = sorted(c.node_names())[:2]
    c.kubectl("create", "namespace", other)
    try:
        pod(c, ns, "server", n1, "server", SERVE)
        pod(c, ns, "client", n1, "client")             # allowed, same node
        pod(c, ns, "client-far", n2, "client")         # allowed, across the overlay
        pod(c, ns, "intruder", n1, "other")            # same namespace, wrong label
        harness.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", other,
                                             check=False).returncode == 0, timeout=30, what="other's default SA")
        pod(c, other, "client", n1, "client")          # right label, wrong namespace
        c.wait_pods(ns, "app", lambda ps: len(ps) == 4 and all(running_and_ready(p) for p in ps), timeout=120)
        c.wait_pods(other, "app", lambda ps: len(ps) == 1 and all(running_and_ready(p) for p in ps), timeout=120)
        ip = json.loads(c.kubectl("get", "pod", "server", "-n", ns, "-o", "json").stdout)["status"]["podIP"]
        create(c, ns, SERVICE)
        vip = json.loads(c.kubectl("get", "service", "server", "-n", ns, "-o", "json").stdout)["spec"]["clusterIP"]
        vip = f"{vip}:80"
        assert reaches(c, ns, "intruder", vip)       # kube-proxy (iptables mode) programmed the Service

        # no policy: everyone gets in
        for where, client in ((ns, "client"), (ns, "client-far"), (ns, "intruder"), (other, "client")):
            assert reaches(c, where, client, ip)

        # default deny for the namespace: nobody does
        create(c, ns, DENY_ALL_INGRESS)
        for where, client in ((ns, "client"), (ns, "client-far"), (ns, "intruder"), (other, "client")):
            assert refused(c, where, client, ip)

        # allow app=client of this namespace, on the named port: exactly those two clients
        create(c, ns, ALLOW_CLIENTS)
        assert reaches(c, ns, "client", ip)
        assert reaches(c, ns, "client-far", ip)
        assert fetch(c, ns, "intruder", ip) is None
        assert fetch(c, other, "client", ip) is None
        # through the Service too: kube-proxy's DNAT comes first, the policy judges the pod behind it
        assert reaches(c, ns, "client-far", vip)
        assert fetch(c, ns, "intruder", vip) is None

        # a namespaceSelector AND podSelector peer lets the other namespace's client in, no one else
        create(c, ns, ALLOW_NAMESPACE.format(other=other))
        assert reaches(c, other, "client", ip)
        assert fetch(c, ns, "intruder", ip) is None

        # egress denied at the client's own node: the allowed client is cut off again
        create(c, ns, DENY_CLIENT_EGRESS)
        assert refused(c, ns, "client", ip)
        assert refused(c, ns, "client-far", ip)
        assert fetch(c, ns, "client", vip) is None
        c.kubectl("delete", "networkpolicy", "client-egress", "-n", ns)
        assert reaches(c, ns, "client", ip)

        # the policies go: the path is open to all again
        c.kubectl("delete", "networkpolicy", "--all", "-n", ns)
        assert reaches(c, ns, "intruder", ip)
        assert reaches(c, other, "client", ip)
    finally:
        c.kubectl("delete", "namespace", other, "--wait=false", check=False)
        c.kubectl("delete", "networkpolicy", "--all", "-n", ns, check=False)

    # acceptance 11: with the policies and the pods gone, no node keeps a chain, map or rule of ours
    c.kubectl("delete", "pods", "--all", "-n", ns, "--wait=true", "--timeout=60s")
    for node in c.node_names():
        assert harness.eventually(lambda node=node: leaks(c, node)["tables"] == 0, timeout=30,
                                  what=f"node {node} dropping its NetworkPolicy table")
        assert leaks(c, node) == {"tables": 0, "chains": 0, "rules": 0, "maps": 0, "sets": 0}, node
