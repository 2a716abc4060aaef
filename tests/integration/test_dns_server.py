"""``kubeling dns`` against a real API server, both inside a network namespace of the test's.

``kubeling server`` runs in a `Netns` (tests/e2e/nodes.py) with its advertise address on the
namespace's veth, so it starts its DNS child there, on ``<ns_ip>:53``, and the child writes the
``kube-system/kube-dns`` Service. Services and hand-written EndpointSlices are made with real
kubectl; ``busybox nslookup`` (inside the namespace) and dnslib (from the host, over the veth)
ask the DNS. A second ``kubeling dns`` forwards other names to a resolver the test runs on the
namespace's loopback: nothing is ever sent outside the namespace.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import harness  # noqa: E402
from nodes import Netns  # noqa: E402

NS = "dnstest"
UPSTREAM = textwrap.dedent('''
    import socket, struct, threading
    from dnslib import DNSRecord, RR, QTYPE

    def answer(data):
        q = DNSRecord.parse(data)
        r = q.reply()
        if str(q.q.qname).endswith("example.test.") and q.q.qtype == QTYPE.A:
            r.add_answer(*RR.fromZone(f"{q.q.qname} 60 A 192.0.2.10"))
        else:
            r.header.rcode = 3
        return r.pack()

    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", 5300))
    t.listen()

    def tcp():
        while True:
            c, _ = t.accept()
            n = struct.unpack("!H", c.recv(2))[0]
            data = b""
            while len(data) < n:
                data += c.recv(n - len(data))
            out = answer(data)
            c.sendall(struct.pack("!H", len(out)) + out)
            c.close()

    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 5300))
    threading.Thread(target=tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, addr = u.recvfrom(4096)
        u.sendto(answer(data), addr)
''')


class NetnsControlPlane(harness.Cluster):
    """An API server (no agent, no controllers) inside ``netns``: its DNS child serves there."""

    def __init__(self, data_dir, netns: Netns, *extra: str) -> None:
        self.netns = netns
        super().__init__(data_dir, extra_args=("--controllers=", "--disable-scheduler", "--disable", "ingress", *extra))

    @property
    def url(self) -> str:
        return f"https://{self.netns.ns_ip}:{self.port}"

    def _server_argv(self) -> list[str]:
        return self.netns.prefix() + harness._server_command() + [
            "server", "--data-dir", str(self.data_dir), "--bind-address", "0.0.0.0",
            "--advertise-address", self.netns.ns_ip, "--secure-port", str(self.port), "--disable-agent",
            *self.extra_args]


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    netns = Netns().create()
    c = NetnsControlPlane(tmp_path_factory.mktemp("dns-plane"), netns)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        netns.delete()


def dns_children(c) -> list[str]:
    """The server's ``kubeling dns`` children (found by the kubeconfig path they are given)."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dns" in argv and str(c.data_dir / "dns.kubeconfig").encode() in argv:
                out.append(pid)
    return out


def nslookup(c, *args: str) -> subprocess.CompletedProcess:
    return c.netns.exec("busybox", "nslookup", *args, c.netns.ns_ip, check=False)


def ask(host: str, port: int, name: str, qtype: str, tcp: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    return DNSRecord.parse(q.send(host, port, tcp=tcp, timeout=5))


MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: my-service, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: web, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nginx-1
  namespace: {NS}
  labels: {{kubernetes.io/service-name: nginx, endpointslice.kubernetes.io/managed-by: test}}
addressType: IPv4
ports: [{{name: web, port: 80, protocol: TCP}}]
endpoints:
- {{addresses: [10.42.1.5], hostname: web-0, conditions: {{ready: true}}}}
- {{addresses: [10.42.2.6], hostname: web-1, conditions: {{ready: true}}}}
- {{addresses: [10.42.3.7], conditions: {{ready: false}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: {NS}}}
spec: {{type: ExternalName, externalName: db.example.test}}
"""


def test_kube_dns_service_points_at_the_server(plane):
    ip = plane.netns.ns_ip

    def slice_ok():
        out = plane.kubectl("get", "endpointslice", "kube-dns", "-n", "kube-system", "-o", "json", check=False)
        if out.returncode:
            return False
        s = json.loads(out.stdout)
        return s["endpoints"][0]["addresses"] == [ip] and {p["name"]: p["port"] for p in s["ports"]} == {
            "dns": 53, "dns-tcp": 53, "metrics": 9153}
    harness.eventually(slice_ok, timeout=30, what="the kube-dns EndpointSlice naming the server's address")
    svc = json.loads(plane.kubectl("get", "service", "kube-dns", "-n", "kube-system", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.43.0.10" and "selector" not in svc["spec"]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert sorted((p["name"], p["protocol"], p["port"]) for p in svc["spec"]["ports"]) == [
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)]
    ep = json.loads(plane.kubectl("get", "endpoints", "kube-dns", "-n", "kube-system", "-o", "json").stdout)
    assert ep["subsets"][0]["addresses"] == [{"ip": ip}]
    # the DNS answers for itself
    r = ask(ip, 53, "kube-dns.kube-system.svc.cluster.local", "A")
    assert [str(a.rdata) for a in r.rr] == ["10.43.0.10"] and r.rr[0].ttl == 5 and r.header.aa


def test_records_with_busybox_nslookup(plane):
    plane.kubectl("apply", "-f", "-", input=MANIFESTS)
    cluster_ip = json.loads(plane.kubectl("get", "service", "my-service", "-n", NS, "-o", "json").stdout
                            )["spec"]["clusterIP"]
    harness.eventually(lambda: nslookup(plane, f"my-service.{NS}.svc.cluster.local").returncode == 0,
                       timeout=20, what="my-service resolves")
    out = nslookup(plane, f"my-service.{NS}.svc.cluster.local").stdout
    assert f"Address: {cluster_ip}" in out, out

    harness.eventually(lambda: "10.42.2.6" in nslookup(plane, f"nginx.{NS}.svc.cluster.local").stdout,
                       timeout=20, what="the headless service resolves to its endpoints")
    out = nslookup(plane, f"nginx.{NS}.svc.cluster.local").stdout
    assert "Address: 10.42.1.5" in out and "Address: 10.42.2.6" in out and "10.42.3.7" not in out, out

    out = nslookup(plane, f"web-0.nginx.{NS}.svc.cluster.local").stdout
    assert "Address: 10.42.1.5" in out and "10.42.2.6" not in out, out

    out = nslookup(plane, "-type=srv", f"_web._tcp.nginx.{NS}.svc.cluster.local").stdout
    assert f"web-0.nginx.{NS}.svc.cluster.local" in out and f"web-1.nginx.{NS}.svc.cluster.local" in out, out
    out = nslookup(plane, "-type=srv", f"_http._tcp.my-service.{NS}.svc.cluster.local").stdout
    assert f"80 my-service.{NS}.svc.cluster.local" in out, out

    out = nslookup(plane, "10.42.1.5").stdout   # PTR
    assert f"web-0.nginx.{NS}.svc.cluster.local" in out, out
    octets = cluster_ip.split(".")
    out = nslookup(plane, "-type=ptr", ".".join(reversed(octets)) + ".in-addr.arpa").stdout
    assert f"my-service.{NS}.svc.cluster.local" in out, out

    out = nslookup(plane, "-type=cname", f"ext.{NS}.svc.cluster.local").stdout
    assert "canonical name = db.example.test" in out, out

    bad = nslookup(plane, f"nope.{NS}.svc.cluster.local")
    assert bad.returncode != 0 and "NXDOMAIN" in bad.stdout + bad.stderr, bad


def test_wire_details_and_updates(plane):
    ip = plane.netns.ns_ip
    plane.kubectl("apply", "-f", "-", input=MANIFESTS)
    harness.eventually(lambda: ask(ip, 53, f"nginx.{NS}.svc.cluster.local", "A").rr, timeout=20,
                       what="the headless service known")
    txt = ask(ip, 53, "dns-version.cluster.local", "TXT")
    assert [str(a.rdata) for a in txt.rr] == ['"1.1.0"']
    nx = ask(ip, 53, f"nope.{NS}.svc.cluster.local", "A", tcp=True)
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.auth[0].rtype == QTYPE.SOA
    nodata = ask(ip, 53, f"my-service.{NS}.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr and nodata.auth[0].rtype == QTYPE.SOA
    pod = ask(ip, 53, f"10-42-1-5.{NS}.pod.cluster.local", "A")
    assert [str(a.rdata) for a in pod.rr] == ["10.42.1.5"]

    # an endpoint turning not ready leaves the answers; a new Service appears; a deleted one goes
    plane.kubectl("patch", "endpointslice", "nginx-1", "-n", NS, "--type=json", "-p",
                  '[{"op": "replace", "path": "/endpoints/1/conditions/ready", "value": false}]')
    plane.kubectl("create", "service", "clusterip", "late", "-n", NS, "--tcp=8080:8080")
    t0 = time.monotonic()
    harness.eventually(lambda: [str(a.rdata) for a in ask(ip, 53, f"nginx.{NS}.svc.cluster.local", "A").rr]
                       == ["10.42.1.5"], timeout=10, interval=0.05, what="web-1 gone from the answers")
    harness.eventually(lambda: ask(ip, 53, f"late.{NS}.svc.cluster.local", "A").rr, timeout=10, interval=0.05,
                       what="a new Service resolves")
    assert time.monotonic() - t0 < 5
    plane.kubectl("delete", "service", "late", "-n", NS)
    harness.eventually(lambda: ask(ip, 53, f"late.{NS}.svc.cluster.local", "A").header.rcode == RCODE.NXDOMAIN,
                       timeout=10, interval=0.05, what="a deleted Service is NXDOMAIN")


def test_health_ready_and_metrics(plane):
    ip = plane.netns.ns_ip
    ask(ip, 53, "kubernetes.default.svc.cluster.local", "A")
    for port, path in ((8080, "/health"), (8181, "/ready")):
        with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=5) as r:
            assert r.status == 200 and r.read() == b"OK"
    with urllib.request.urlopen(f"http://{ip}:9153/metrics", timeout=5) as r:
        text = r.read().decode()
    assert f'coredns_dns_requests_total{{family="1",proto="udp",server="dns://{ip}:53",type="A"' in text
    assert "coredns_dns_request_duration_seconds_bucket" in text and 'rcode="NOERROR"' in text
    assert "coredns_build_info" in text


def test_forwarding_to_an_upstream_in_the_namespace(plane):
    """Other names go to the upstream; an upstream that does not answer gives SERVFAIL."""
    ip = plane.netns.ns_ip
    upstream = subprocess.Popen([*plane.netns.prefix(), sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE,
                                text=True)
    dns = None
    try:
        assert upstream.stdout.readline().strip() == "ready"
        dns = subprocess.Popen([*plane.netns.prefix(), *harness._server_command(), "dns", "--kubeconfig",
                                str(plane.data_dir / "admin.kubeconfig"), "--bind-address", ip, "--port", "5353",
                                "--upstream", "127.0.0.1:5300", "--upstream", "127.0.0.1:5301", "--skip-service",
                                "--health-port", "0", "--ready-port", "0", "--metrics-port", "0",
                                "--forward-timeout", "0.5"], stderr=subprocess.PIPE, text=True)

        def answers():
            try:
                return ask(ip, 5353, "www.example.test", "A")
            except (socket.timeout, OSError):
                return None
        r = harness.eventually(answers, timeout=30, what="the second DNS answering")
        assert [str(a.rdata) for a in r.rr] == ["192.0.2.10"]
        tcp = ask(ip, 5353, "api.example.test", "A", tcp=True)
        assert [str(a.rdata) for a in tcp.rr] == ["192.0.2.10"]
        assert ask(ip, 5353, "missing.other.test", "A").header.rcode == RCODE.NXDOMAIN   # upstream's answer
        # the ExternalName's target is chased through the upstream
        plane.kubectl("apply", "-f", "-", input=MANIFESTS)
        ext = harness.eventually(lambda: ask(ip, 5353, f"ext.{NS}.svc.cluster.local", "A").rr, timeout=20,
                                 what="the ExternalName answered")
        assert [a.rtype for a in ext] == [QTYPE.CNAME, QTYPE.A] and str(ext[1].rdata) == "192.0.2.10"
        upstream.terminate()
        upstream.wait(5)
        t0 = time.monotonic()
        sf = ask(ip, 5353, "gone.example.test", "A")
        assert sf.header.rcode == RCODE.SERVFAIL and time.monotonic() - t0 < 3
    finally:
        for p in (dns, upstream):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_disable_coredns(tmp_path, plane):
    """``kubeling server --disable coredns`` (k3s's flag) runs no DNS and makes no kube-dns Service."""
    assert len(dns_children(plane)) == 1       # the shared server has its child
    netns = Netns().create()
    c = NetnsControlPlane(tmp_path / "plane", netns, "--disable", "coredns")
    try:
        c.start()
        time.sleep(3)   # the DNS child would have written its Service by now
        assert dns_children(c) == []
        assert c.kubectl("get", "service", "kube-dns", "-n", "kube-system", check=False).returncode != 0
        with pytest.raises((socket.timeout, OSError)):
            ask(netns.ns_ip, 53, "kubernetes.default.svc.cluster.local", "A")
    finally:
        c.stop()
        netns.delete()
