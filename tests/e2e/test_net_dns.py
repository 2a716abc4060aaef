"""Cluster DNS from pods (issue 8, acceptance 3), in `multinode_cluster`.

The server runs ``kubeling dns`` on the bridge address (10.44.0.1:53) and writes the
``kube-system/kube-dns`` Service (10.43.0.10) with an EndpointSlice naming it; kube-proxy on
every node DNATs 10.43.0.10:53 there. A busybox pod, whose resolv.conf the kubelet writes
(``nameserver 10.43.0.10``, the namespace's search list, ``ndots:5``), then resolves:

- ``my-service.<ns>.svc.cluster.local`` and the short name ``my-service`` to the ClusterIP;
- a StatefulSet's headless Service ``nginx`` to its pods' IPs, and ``web-0.nginx`` to web-0's;
- SRV records for the named ports of both Services.

And the answers follow the cluster: a pod of the StatefulSet gone, its record is gone.
"""

from __future__ import annotations

import json

import harness
from workloads import BUSYBOX, get_json, wait_pods

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {{name: my-service}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, labels: {{app: nginx}}}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: web, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: nginx
  replicas: 2
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: web, containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {client}
    command: ["sleep", "3600"]
"""
# Python (glibc's resolver: the search list and ndots:5) over the busybox base (nslookup)
CLIENT = "docker.io/kubeling/python-client:latest"


def _exec(c, ns: str, *argv: str, check: bool = False):
    return c.kubectl("exec", "-n", ns, "client", "--", *argv, check=check, timeout=60)


def _lookup(c, ns: str, *args: str) -> str:
    """busybox nslookup (it applies the search list only to names without a dot)."""
    done = _exec(c, ns, "nslookup", *args)
    return done.stdout + done.stderr


def _resolve(c, ns: str, name: str) -> list[str]:
    """The IPv4 addresses glibc's getaddrinfo finds for ``name`` in the pod ([] if none)."""
    code = (f"import socket\ntry:\n    print(' '.join(sorted({{a[4][0] for a in socket.getaddrinfo({name!r}, 80, "
            f"socket.AF_INET)}})))\nexcept socket.gaierror as e:\n    print('')")
    return _exec(c, ns, "python3", "-c", code).stdout.split()


def test_dns_from_a_pod(multinode_cluster, multinode_namespace):
    c, ns = multinode_cluster, multinode_namespace
    dns = get_json(c, "service", "kube-dns", "-n", "kube-system")
    assert dns["spec"]["clusterIP"] == "10.43.0.10"
    c.kubectl("apply", "-n", ns, "-f", "-", input=MANIFESTS.format(image=BUSYBOX, client=CLIENT))
    wait_pods(c, ns, "app=nginx", 2, timeout=180)
    wait_pods(c, ns, "app=web", 1, timeout=180)
    harness.eventually(lambda: get_json(c, "pod", "client", "-n", ns)["status"].get("phase") == "Running",
                       timeout=120, what="the client pod running")
    resolv = _exec(c, ns, "cat", "/etc/resolv.conf", check=True).stdout
    assert "nameserver 10.43.0.10" in resolv
    assert f"search {ns}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    cluster_ip = get_json(c, "service", "my-service", "-n", ns)["spec"]["clusterIP"]

    # the FQDN, through kube-proxy's DNAT of 10.43.0.10 to the DNS server
    out = harness.eventually(lambda: (lambda o: o if f"Address: {cluster_ip}" in o else None)(
        _lookup(c, ns, f"my-service.{ns}.svc.cluster.local")), timeout=60, interval=1,
        what="my-service's FQDN resolving from the pod")
    assert "10.43.0.10" in out   # busybox names the server it asked
    # the short name: the search list from the pod's resolv.conf
    assert f"Address: {cluster_ip}" in _lookup(c, ns, "my-service")
    # and with glibc's resolver: the short name, and <service>.<namespace>
    assert _resolve(c, ns, "my-service") == [cluster_ip]
    assert _resolve(c, ns, f"my-service.{ns}") == [cluster_ip]

    # the headless service: one A per ready pod; web-0.nginx: that pod
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in wait_pods(c, ns, "app=nginx", 2)}

    def headless():
        o = _lookup(c, ns, f"nginx.{ns}.svc.cluster.local")
        return o if all(f"Address: {ip}" in o for ip in pods.values()) else None
    harness.eventually(headless, timeout=60, interval=1, what="the headless service resolving to both pods")
    assert _resolve(c, ns, "web-0.nginx") == [pods["web-0"]]
    assert _resolve(c, ns, "nginx") == sorted(pods.values())
    out = _lookup(c, ns, f"web-0.nginx.{ns}.svc.cluster.local")
    assert f"Address: {pods['web-0']}" in out and pods["web-1"] not in out, out

    # SRV: the ClusterIP service's named port, and one record per pod of the headless one
    out = _lookup(c, ns, "-type=srv", f"_http._tcp.my-service.{ns}.svc.cluster.local")
    assert f"80 my-service.{ns}.svc.cluster.local" in out, out
    out = _lookup(c, ns, "-type=srv", f"_web._tcp.nginx.{ns}.svc.cluster.local")
    assert f"8080 web-0.nginx.{ns}.svc.cluster.local" in out and f"8080 web-1.nginx.{ns}.svc.cluster.local" in out, out

    # a name that does not exist
    out = _lookup(c, ns, f"nope.{ns}.svc.cluster.local")
    assert "NXDOMAIN" in out, out

    # scaled down, web-1 is gone from the answers
    c.kubectl("scale", "statefulset", "web", "-n", ns, "--replicas=1")
    harness.eventually(lambda: _resolve(c, ns, "web-1.nginx") == [], timeout=60, interval=1,
                       what="web-1.nginx gone after the scale-down")
    assert "NXDOMAIN" in _lookup(c, ns, f"web-1.nginx.{ns}.svc.cluster.local")
    assert pods["web-1"] not in _lookup(c, ns, f"nginx.{ns}.svc.cluster.local")


def test_kube_dns_metrics_through_the_service(multinode_cluster, multinode_namespace):
    """The kube-dns Service's metrics port answers from a pod, by name: the DNAT leads to kubeling dns."""
    c, ns = multinode_cluster, multinode_namespace
    c.kubectl("run", "client", "-n", ns, f"--image={CLIENT}", "--restart=Never", "--", "sleep", "3600")
    harness.eventually(lambda: get_json(c, "pod", "client", "-n", ns)["status"].get("phase") == "Running",
                       timeout=120, what="the client pod running")
    slices = get_json(c, "endpointslices", "-n", "kube-system", "-l", "kubernetes.io/service-name=kube-dns")["items"]
    assert [e["addresses"] for s in slices for e in s["endpoints"]] == [["10.44.0.1"]], json.dumps(slices)
    code = "import urllib.request\nprint(urllib.request.urlopen('http://kube-dns.kube-system:9153/metrics', " \
           "timeout=5).read().decode())"

    def scrape():
        done = _exec(c, ns, "python3", "-c", code)
        assert "coredns_dns_requests_total" in done.stdout, (done.returncode, done.stdout[-300:], done.stderr[-300:])
        return done.stdout
    text = harness.eventually(scrape, timeout=60, interval=1, what="kube-dns metrics through the Service")
    assert 'server="dns://10.44.0.1:53"' in text
