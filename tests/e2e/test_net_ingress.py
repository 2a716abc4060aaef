"""Ingress through a real nginx (issue 8, acceptance 7): ``kubeling server`` runs ``kubeling
ingress`` as its child; two hosts and two paths route to two services, TLS included; changing an
Ingress while a stream of requests runs drops none of them; stopping the server leaves no nginx.

The lab, all inside one network namespace the test makes (`nodes.Netns`, reached from the host
only over its veth, no other route anywhere)::

    netns: kubeling server (--disable-agent, API on 0.0.0.0) ── child: kubeling ingress ── nginx :80/:443
           lo also holds the "pod" addresses 10.42.200.11 (alpha) and .12 (beta):
           one small HTTP server each on :8080, answering "<name> <path>"
           clients: curl and a Python request loop run there with nsenter

Services are selectorless and their EndpointSlices are written by the test (real API objects),
so the endpoints are exactly the backend servers. kubectl runs on the host, as a user's would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402
from nodes import Netns  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.ingress_tls import make_cert  # noqa: E402

BACKENDS = {"alpha": "10.42.200.11", "beta": "10.42.200.12"}
NS = "default"

BACKEND = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    name, ip = sys.argv[1], sys.argv[2]
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            if self.path.startswith("/slow"):
                __import__("time").sleep(3)
            body = f"{name} {self.path} {self.headers.get('Host')} {self.headers.get('X-Forwarded-Proto')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = f"{name} got {len(data)} bytes".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 512
    ThreadingHTTPServer((ip, 8080), H).serve_forever()
""")

# Requests in a loop, a new connection each, until the file `stop` exists (at most 90 s): counts
# answers by body, and failures.
LOAD = textwrap.dedent("""
    import http.client, json, os, ssl, sys, time
    ip, stop, cafile = sys.argv[1], sys.argv[2], sys.argv[3]
    targets = json.loads(sys.argv[4])          # [[scheme, host, path], ...]
    ctx = ssl.create_default_context(cafile=cafile)
    counts, failures, n = {}, [], 0
    end = time.monotonic() + 90
    while time.monotonic() < end and not os.path.exists(stop):
        scheme, host, path = targets[n % len(targets)]
        n += 1
        try:
            if scheme == "https":
                c = http.client.HTTPSConnection(ip, 443, timeout=5, context=ctx)
                c.sock = ctx.wrap_socket(__import__("socket").create_connection((ip, 443), timeout=5),
                                         server_hostname=host)
            else:
                c = http.client.HTTPConnection(ip, 80, timeout=5)
            c.request("GET", path, headers={"Host": host, "Connection": "close"})
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            if r.status != 200:
                failures.append(f"{scheme}://{host}{path}: {r.status}")
            else:
                key = f"{scheme}://{host}{path} -> {body.split()[0]}"
                counts[key] = counts.get(key, 0) + 1
        except Exception as e:
            failures.append(f"{scheme}://{host}{path}: {type(e).__name__}: {e}")
    print(json.dumps({"requests": n, "counts": counts, "failures": failures}))
""")


class IngressLab(harness.Cluster):
    """A server with its ingress child in a `Netns` of the test's, plus the backend servers."""

    def __init__(self, data_dir: Path) -> None:
        self.netns = Netns()
        self.backend_procs: list[subprocess.Popen] = []
        super().__init__(data_dir, extra_args=("--controllers", "", "--disable-scheduler", "--disable", "coredns"))

    @property
    def url(self) -> str:
        return f"https://{self.netns.ns_ip}:{self.port}"

    def start(self) -> "IngressLab":
        if not self.netns.created:
            self.netns.create()
            for ip in BACKENDS.values():
                self.netns.exec("ip", "addr", "add", f"{ip}/32", "dev", "lo")
            for name, ip in BACKENDS.items():
                self.backend_procs.append(subprocess.Popen([*self.netns.prefix(), sys.executable, "-c", BACKEND,
                                                            name, ip], stdin=subprocess.DEVNULL))
        return super().start()

    def _server_argv(self) -> list[str]:
        return self.netns.prefix() + harness._server_command() + [
            "server", "--data-dir", str(self.data_dir), "--bind-address", "0.0.0.0",
            "--advertise-address", self.netns.ns_ip, "--secure-port", str(self.port), "--disable-agent",
            *self.extra_args]

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            for p in self.backend_procs:
                p.kill()
                p.wait()
            self.netns.delete()

    def sh(self, *argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.netns.prefix(), *argv], capture_output=True, text=True, timeout=timeout,
                              check=check)

    def curl(self, url: str, *extra: str) -> subprocess.CompletedProcess:
        """curl ``url`` (http://host/path or https://...) with ``host`` resolved to the ingress."""
        scheme, _, rest = url.partition("://")
        host, _, port = rest.split("/")[0].partition(":")
        port = port or ("443" if scheme == "https" else "80")
        return self.sh("curl", "-sS", "--max-time", "5", "--resolve", f"{host}:{port}:{self.netns.ns_ip}",
                       *extra, url)

    def get(self, url: str, *extra: str) -> tuple[int, str]:
        """(status, body) of a GET through the ingress; status 0 when curl failed (body: its error)."""
        done = self.curl(url, "-w", "\n%{http_code}", *extra)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), body or done.stderr

    def apply(self, manifest: dict | list) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def nginx_processes(prefix: Path) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "nginx" in cmd and str(prefix) in cmd:
                out.append(f"{entry.name}: {cmd}")
    return out


def service(name: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
             "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": f"{name}-lab", "namespace": NS,
                          "labels": {"kubernetes.io/service-name": name,
                                     "endpointslice.kubernetes.io/managed-by": "test.kubeling.io"}},
             "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
             "endpoints": [{"addresses": [BACKENDS[name]], "conditions": {"ready": True}}]}]


def path(p: str, svc: str, kind: str = "Prefix", port: str | int = "http") -> dict:
    return {"path": p, "pathType": kind,
            "backend": {"service": {"name": svc, "port": {"name": port} if isinstance(port, str) else {"number": port}}}}


def ingress(name: str, rules: list[dict], tls: list[dict] | None = None, cls: str | None = "nginx") -> dict:
    spec: dict = {"rules": rules}
    if cls:
        spec["ingressClassName"] = cls
    if tls:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    c = IngressLab(tmp_path_factory.mktemp("ingress-lab"))
    try:
        c.start()
    except Exception as e:  # noqa: BLE001 - whatever failed, take the lab down
        c.destroy()
        pytest.fail(str(e), pytrace=False)
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def tls_material(lab, tmp_path_factory):
    """A self-signed certificate for secure.example as a kubernetes.io/tls Secret; the CA file."""
    crt, key = make_cert("secure.example")
    d = tmp_path_factory.mktemp("tls")
    (d / "tls.crt").write_bytes(crt)
    (d / "tls.key").write_bytes(key)
    lab.kubectl("create", "secret", "tls", "secure-tls", "-n", NS, f"--cert={d / 'tls.crt'}",
                f"--key={d / 'tls.key'}")
    return d / "tls.crt"


def test_default_ingress_class_is_created(lab):
    ic = harness.eventually(lambda: json.loads(lab.kubectl("get", "ingressclass", "nginx", "-o", "json",
                                                           check=False).stdout or "null"),
                            timeout=30, what="IngressClass nginx")
    assert ic["spec"]["controller"] == "kubeling.io/ingress-nginx"
    assert ic["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"


def test_two_hosts_two_paths_tls_and_status(lab, tls_material):
    lab.apply(service("alpha") + service("beta"))
    lab.apply(ingress("web", [
        {"host": "one.example", "http": {"paths": [path("/", "alpha"), path("/b", "beta")]}},
        {"host": "secure.example", "http": {"paths": [path("/api", "beta", port=80), path("/", "alpha")]}},
    ], tls=[{"hosts": ["secure.example"], "secretName": "secure-tls"}]))

    harness.eventually(lambda: lab.get("http://one.example/b")[1].startswith("beta"), timeout=30,
                       what="one.example/b routed to beta")
    assert lab.get("http://one.example/") == (200, "alpha / one.example http")
    assert lab.get("http://one.example/b/c") == (200, "beta /b/c one.example http")
    assert lab.get("http://one.example/bc")[1].startswith("alpha")            # Prefix is element-wise
    assert lab.get("http://unknown.example/")[0] == 404                          # no rule, no default backend

    ca = ("--cacert", str(tls_material))
    assert lab.get("https://secure.example/api/x", *ca) == (200, "beta /api/x secure.example https")
    assert lab.get("https://secure.example/", *ca) == (200, "alpha / secure.example https")
    headers = lab.curl("https://secure.example/", *ca, "-o", "/dev/null", "-D", "-").stdout.lower()
    assert "strict-transport-security: max-age=31536000; includesubdomains" in headers, headers
    assert "strict-transport-security" not in lab.curl("http://one.example/", "-o", "/dev/null", "-D", "-").stdout.lower()
    code, _ = lab.get("http://secure.example/api?q=1")
    assert code == 308
    redirect = lab.curl("http://secure.example/api?q=1", "-o", "/dev/null", "-w", "%{redirect_url}").stdout
    assert redirect.startswith("https://secure.example/api?q=1")
    body = lab.data_dir / "body.bin"
    body.write_bytes(b"x" * 900_000)                 # under client_max_body_size (1m), past any buffer
    assert lab.get("https://secure.example/upload", *ca, "--data-binary", f"@{body}") == \
        (200, "alpha got 900000 bytes")
    # SNI: a host without a certificate of its own gets the default one, which curl refuses
    assert lab.get("https://one.example/", *ca)[0] == 0

    status = harness.eventually(
        lambda: json.loads(lab.kubectl("get", "ingress", "web", "-n", NS, "-o", "json").stdout)
        .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=30, what="Ingress status")
    assert status == [{"ip": lab.netns.ns_ip}]
    wide = lab.kubectl("get", "ingress", "web", "-n", NS).stdout
    assert "one.example,secure.example" in wide and lab.netns.ns_ip in wide


def test_no_ready_endpoint_answers_503_and_an_event_says_why(lab):
    lab.apply(ingress("broken", [{"host": "broken.example", "http": {"paths": [path("/", "nothere")]}}]))
    harness.eventually(lambda: lab.get("http://broken.example/")[0] == 503, timeout=30, what="503 from nginx")
    events = harness.eventually(lambda: [e for e in json.loads(lab.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=broken", "-o", "json").stdout)["items"]
        if e["reason"] == "ServiceUnavailable"], timeout=30, what="a ServiceUnavailable Event")
    assert "default/nothere:http not found" in events[0]["message"]
    assert events[0]["source"]["component"] == "nginx-ingress-controller"


def test_changing_an_ingress_under_load_drops_nothing(lab, tls_material):
    before = lab.get("http://one.example/b")
    assert before[0] == 200, before
    lab.sh("cp", str(tls_material), str(lab.data_dir / "ca.crt"))
    targets = [["http", "one.example", "/b"], ["http", "one.example", "/"], ["https", "secure.example", "/api"]]
    stop = lab.data_dir / "load.stop"
    load = subprocess.Popen([*lab.netns.prefix(), sys.executable, "-c", LOAD, lab.netns.ns_ip, str(stop),
                             str(tls_material), json.dumps(targets)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        # 1. switch /b from beta to alpha
        lab.apply(ingress("web", [
            {"host": "one.example", "http": {"paths": [path("/", "alpha"), path("/b", "alpha")]}},
            {"host": "secure.example", "http": {"paths": [path("/api", "beta", port=80), path("/", "alpha")]}},
        ], tls=[{"hosts": ["secure.example"], "secretName": "secure-tls"}]))
        harness.eventually(lambda: lab.get("http://one.example/b")[1].startswith("alpha"), timeout=30,
                           what="/b switched to alpha")
        time.sleep(1)
        # 2. add a path, and switch it back
        lab.apply(ingress("web", [
            {"host": "one.example", "http": {"paths": [path("/", "alpha"), path("/b", "beta"),
                                                       path("/new", "beta", "Exact")]}},
            {"host": "secure.example", "http": {"paths": [path("/api", "alpha", port=80), path("/", "alpha")]}},
        ], tls=[{"hosts": ["secure.example"], "secretName": "secure-tls"}]))
        harness.eventually(lambda: lab.get("http://one.example/new")[1].startswith("beta"), timeout=30,
                           what="/new added")
        time.sleep(1)
        stop.touch()
        out, _ = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    result = json.loads(out)
    assert result["failures"] == [], result
    assert result["requests"] >= 50, result
    counts = result["counts"]
    # the stream saw both backends on /b and /api: the changes happened while it ran
    assert counts.get("http://one.example/b -> beta") and counts.get("http://one.example/b -> alpha"), counts
    assert counts.get("https://secure.example/api -> beta") and counts.get("https://secure.example/api -> alpha")
    assert lab.get("http://one.example/new/x")[1].startswith("alpha /new/x")   # Exact: /new only; / has the rest
    assert lab.get("http://one.example/b") == (200, "beta /b one.example http")


def test_ingress_nginx_annotations(lab, tls_material):
    ing = ingress("tuned", [{"host": "tuned.example", "http": {"paths": [path("/", "alpha")]}}])
    ing["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
                                      "nginx.ingress.kubernetes.io/proxy-body-size": "4m"}
    lab.apply(ing)
    harness.eventually(lambda: lab.get("http://tuned.example/")[0] == 308, timeout=30,
                       what="force-ssl-redirect on a host without TLS")
    body = lab.data_dir / "big.bin"
    body.write_bytes(b"y" * 2_000_000)
    # the default certificate: -k; the body is over the default 1m but under this Ingress's 4m
    assert lab.get("https://tuned.example/", "-k", "--data-binary", f"@{body}") == (200, "alpha got 2000000 bytes")
    assert lab.get("https://secure.example/", "--cacert", str(tls_material), "--data-binary", f"@{body}")[0] == 413
    lab.kubectl("delete", "ingress", "tuned", "-n", NS)

    rw = ingress("rewrite", [{"host": "rw.example", "http": {"paths": [path("/api(/|$)(.*)", "alpha",
                                                                            "ImplementationSpecific")]}}])
    rw["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    broken = ingress("bad-regex", [{"host": "rx.example", "http": {"paths": [path("/bad(", "beta",
                                                                                 "ImplementationSpecific")]}}])
    broken["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/use-regex": "true"}
    lab.apply([rw, broken])
    harness.eventually(lambda: lab.get("http://rw.example/api/hello") == (200, "alpha /hello rw.example http"),
                       timeout=30, what="rewrite-target /$2")
    assert lab.get("http://rw.example/API")[1].startswith("alpha / ")            # case-insensitive, like upstream
    events = harness.eventually(lambda: [e for e in json.loads(lab.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=bad-regex", "-o", "json").stdout)["items"]
        if e["reason"] == "RELOAD"], timeout=30, what="a RELOAD Warning for the bad regular expression")
    assert "pcre" in events[0]["message"].lower(), events[0]["message"]
    lab.kubectl("delete", "ingress", "rewrite", "bad-regex", "-n", NS)


def test_a_request_in_flight_during_a_reload_completes(lab):
    """nginx's graceful reload: the old worker keeps the connection it serves until it is done."""
    assert lab.get("http://one.example/b")[0] == 200
    slow = subprocess.Popen([*lab.netns.prefix(), "curl", "-sS", "--max-time", "20", "--resolve",
                             f"one.example:80:{lab.netns.ns_ip}", "-w", "\n%{http_code}", "http://one.example/slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    lab.apply(ingress("reload", [{"host": "reload.example", "http": {"paths": [path("/", "beta")]}}]))
    harness.eventually(lambda: lab.get("http://reload.example/")[1].startswith("beta"), timeout=10,
                       what="the reload done while the slow request runs")
    assert slow.poll() is None, "the slow request ended before the reload"
    out, err = slow.communicate(timeout=30)
    assert out.rsplit("\n", 1) == ["alpha /slow one.example http", "200"], (out, err)
    lab.kubectl("delete", "ingress", "reload", "-n", NS)


def test_an_invalid_tls_secret_never_breaks_nginx(lab, tls_material):
    lab.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "garbage", "namespace": NS},
               "stringData": {"tls.crt": "not a certificate", "tls.key": "nor a key"}})
    lab.apply(ingress("bad-tls", [{"host": "bad.example", "http": {"paths": [path("/", "beta")]}}],
                      tls=[{"hosts": ["bad.example"], "secretName": "garbage"}]))
    harness.eventually(lambda: lab.get("http://bad.example/")[1].startswith("beta"), timeout=30,
                       what="bad.example served over HTTP without redirect")
    assert lab.get("https://secure.example/", "--cacert", str(tls_material))[0] == 200
    events = harness.eventually(lambda: [e for e in json.loads(lab.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=bad-tls", "-o", "json").stdout)["items"]
        if e["reason"] == "InvalidCertificate"], timeout=30, what="an InvalidCertificate Event")
    assert "default/garbage" in events[0]["message"]


def test_a_config_nginx_refuses_is_never_applied_and_the_culprit_gets_an_event(lab):
    """A 1024-bit RSA certificate passes every check in Python but Debian's OpenSSL refuses it
    (``ee key too small``): ``nginx -t`` fails, the controller finds the Ingress that causes it,
    records a RELOAD Warning on it and serves everything else, changes included."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    crt, key = make_cert("weak.example", rsa.generate_private_key(65537, 1024))
    import base64
    lab.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "weak", "namespace": NS},
               "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}})
    lab.apply(ingress("weak", [{"host": "weak.example", "http": {"paths": [path("/", "alpha")]}}],
                      tls=[{"hosts": ["weak.example"], "secretName": "weak"}]))
    events = harness.eventually(lambda: [e for e in json.loads(lab.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=weak", "-o", "json").stdout)["items"]
        if e["reason"] == "RELOAD"], timeout=30, what="a RELOAD Warning on the Ingress")
    assert events[0]["type"] == "Warning" and "ee key too small" in events[0]["message"], events[0]
    assert lab.get("http://weak.example/")[0] == 404          # not served: nginx never saw it
    # the rest still changes: a new Ingress next to the bad one goes live
    lab.apply(ingress("fine", [{"host": "fine.example", "http": {"paths": [path("/", "beta")]}}]))
    harness.eventually(lambda: lab.get("http://fine.example/")[1].startswith("beta"), timeout=30,
                       what="a good Ingress served beside a bad one")
    assert lab.get("http://one.example/b")[0] == 200
    lab.kubectl("delete", "ingress", "weak", "fine", "-n", NS)


def test_metrics_and_healthz(lab):
    def scrape() -> dict[str, str]:
        out = lab.sh("curl", "-sS", "--max-time", "5", f"http://{lab.netns.ns_ip}:10254/metrics").stdout
        return {line.split("{")[0] + ("{" + line.split("{")[1].split("}")[0] + "}" if "host=" in line else ""):
                line.rsplit(" ", 1)[1] for line in out.splitlines() if line and not line.startswith("#")}
    m = scrape()
    assert float(m["nginx_ingress_controller_success"]) >= 3, m
    assert float(m["nginx_ingress_controller_errors"]) >= 1, m          # the weak certificate's refusal
    assert m["nginx_ingress_controller_config_last_reload_successful"] == "1.0"
    expiry = [k for k in m if k.startswith("nginx_ingress_controller_ssl_expire_time_seconds")]
    assert any('host="secure.example"' in k and 'secret_name="secure-tls"' in k for k in expiry), expiry
    health = lab.sh("curl", "-sS", "-w", " %{http_code}", f"http://{lab.netns.ns_ip}:10254/healthz").stdout
    assert health == "ok 200"


def test_an_ingress_that_stops_being_ours_loses_its_status(lab):
    harness.eventually(lambda: json.loads(lab.kubectl("get", "ingress", "broken", "-n", NS, "-o", "json").stdout)
                       .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=30, what="status set")
    lab.kubectl("patch", "ingress", "broken", "-n", NS, "--type=merge", "-p",
                json.dumps({"spec": {"ingressClassName": "someone-else"}}))
    harness.eventually(lambda: not json.loads(lab.kubectl("get", "ingress", "broken", "-n", NS, "-o", "json").stdout)
                       .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=30, what="status cleared")
    harness.eventually(lambda: lab.get("http://broken.example/")[0] == 404, timeout=30, what="no longer served")


def controller_pids(lab) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"ingress" in argv and b"--kubeconfig" in argv and str(lab.data_dir).encode() in argv:
                out.append(int(entry.name))
    return out


def test_a_killed_controller_takes_its_nginx_along_and_comes_back(lab):
    import os
    import signal
    prefix = lab.data_dir / "ingress"
    [pid] = controller_pids(lab)
    masters = [p for p in nginx_processes(prefix) if "master" in p]
    assert len(masters) == 1, masters
    os.kill(pid, signal.SIGKILL)
    harness.eventually(lambda: not any(p.split(":")[0] == masters[0].split(":")[0] for p in nginx_processes(prefix)),
                       timeout=15, what="the old nginx master gone with its controller")
    harness.eventually(lambda: controller_pids(lab) and controller_pids(lab) != [pid], timeout=30,
                       what="the server restarting its ingress child")
    harness.eventually(lambda: lab.get("http://one.example/b")[0] == 200, timeout=30, what="serving again")
    assert len([p for p in nginx_processes(prefix) if "master" in p]) == 1


def test_a_taken_port_is_retried_and_never_crashes_the_server(lab):
    lab.stop()
    squatter = subprocess.Popen([*lab.netns.prefix(), sys.executable, "-c",
                                 "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, "
                                 "socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 80))\ns.listen()\n"
                                 "print('ready', flush=True)\ntime.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "ready"
        offset = len(lab.log())
        lab.start()
        harness.eventually(lambda: "cannot start nginx" in lab.log()[offset:], timeout=30,
                           what="the controller saying nginx cannot start")
        assert "Address already in use" in lab.log()[offset:]
        time.sleep(3)
        assert lab.running and lab.request("GET", "/readyz")[0] == 200
    finally:
        squatter.kill()
        squatter.wait()
    harness.eventually(lambda: lab.get("http://one.example/")[0] == 200, timeout=90, interval=1,
                       what="nginx serving once the port is free")


def test_the_server_flags_move_the_ports_or_turn_the_ingress_off(lab):
    base = lab.extra_args
    prefix = lab.data_dir / "ingress"
    try:
        lab.extra_args = base + ("--ingress-http-port", "8081", "--ingress-https-port", "8443")
        lab.restart()
        harness.eventually(lambda: lab.get("http://one.example:8081/b")[1].startswith("beta /b one.example http"),
                           timeout=30, what="nginx on the flagged HTTP port")
        assert lab.curl("http://secure.example:8081/x", "--resolve", f"secure.example:8081:{lab.netns.ns_ip}",
                        "-o", "/dev/null", "-w", "%{redirect_url}").stdout == "https://secure.example:8443/x"
        listening = lab.sh("ss", "-Hltn").stdout
        assert ":8443 " in listening and ":80 " not in listening and ":443 " not in listening, listening

        lab.extra_args = base + ("--disable", "ingress")
        lab.restart()
        time.sleep(3)
        assert controller_pids(lab) == [] and nginx_processes(prefix) == []
        listening = lab.sh("ss", "-Hltn").stdout
        assert not any(f":{port} " in listening for port in (80, 443, 8081, 8443)), listening
    finally:
        lab.extra_args = base
        lab.restart()


def test_stopping_the_server_stops_nginx_and_frees_its_ports(lab):
    prefix = lab.data_dir / "ingress"
    harness.eventually(lambda: nginx_processes(prefix) and ":80 " in lab.sh("ss", "-Hltn").stdout, timeout=30,
                       what="nginx listening")
    lab.stop()
    harness.eventually(lambda: not nginx_processes(prefix), timeout=15, what="no nginx left")
    listening = lab.sh("ss", "-Hltn").stdout
    assert not any(f":{port} " in listening for port in (80, 443, 10254)), listening
    assert not (prefix / "nginx.pid").exists()


# -- on a real 3-node cluster: pods behind Services, the ingress in the server's namespace --------

def _web(name: str) -> list[str]:
    """busybox httpd on :8080 answering "<name> <pod hostname>" at / and at /b."""
    return ["sh", "-c", f"mkdir -p /www && echo {name} $(hostname) > /www/index.html && "
                        "cp /www/index.html /www/b && trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]


def test_ingress_routes_to_pods_across_nodes_without_dropping_requests(multinode_cluster, multinode_namespace,
                                                                       tmp_path):
    import workloads
    c, ns = multinode_cluster, multinode_namespace
    for name in ("alpha", "beta"):
        c.kubectl("apply", "-n", ns, "-f", "-", input=workloads.deployment(name, replicas=2, command=_web(name)))
        c.kubectl("expose", "deployment", name, "-n", ns, "--port", "80", "--target-port", "8080")
    pods = workloads.wait_pods(c, ns, "app in (alpha,beta)", 4, timeout=180)
    assert len({p["spec"]["nodeName"] for p in pods}) >= 2, [p["spec"]["nodeName"] for p in pods]
    crt, key = make_cert("secure.example")
    (tmp_path / "tls.crt").write_bytes(crt)
    (tmp_path / "tls.key").write_bytes(key)
    c.kubectl("create", "secret", "tls", "secure-tls", "-n", ns, f"--cert={tmp_path / 'tls.crt'}",
              f"--key={tmp_path / 'tls.key'}")

    def web(b_backend: str) -> dict:
        ing = ingress("web", [
            {"host": "one.example", "http": {"paths": [path("/", "alpha", port=80), path("/b", b_backend, port=80)]}},
            {"host": "secure.example", "http": {"paths": [path("/", "beta", port=80)]}},
        ], tls=[{"hosts": ["secure.example"], "secretName": "secure-tls"}], cls=None)   # the default class
        ing["metadata"]["namespace"] = ns
        return ing
    c.kubectl("apply", "-f", "-", input=json.dumps(web("beta")))
    status = harness.eventually(
        lambda: json.loads(c.kubectl("get", "ingress", "web", "-n", ns, "-o", "json").stdout)
        .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=60, what="Ingress status")
    ip = status[0]["ip"]

    def get(url: str, *extra: str) -> tuple[int, str]:
        scheme, _, rest = url.partition("://")
        host = rest.split("/")[0]
        done = subprocess.run([*c.netns.prefix(), "curl", "-sS", "--max-time", "5", "--resolve",
                               f"{host}:{443 if scheme == 'https' else 80}:{ip}", "-w", "\n%{http_code}", *extra, url],
                              capture_output=True, text=True, timeout=30)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), body or done.stderr

    harness.eventually(lambda: get("http://one.example/b")[1].startswith("beta"), timeout=60,
                       what="one.example/b routed to a beta pod")
    hosts = {get("http://one.example/")[1] for _ in range(12)}
    assert {h.split()[0] for h in hosts} == {"alpha"} and len(hosts) == 2, hosts    # both alpha pods answer
    assert get("https://secure.example/", "--cacert", str(tmp_path / "tls.crt"))[1].startswith("beta")
    assert get("http://secure.example/")[0] == 308

    targets = [["http", "one.example", "/b"], ["https", "secure.example", "/"]]
    stop = tmp_path / "load.stop"
    load = subprocess.Popen([*c.netns.prefix(), sys.executable, "-c", LOAD, ip, str(stop), str(tmp_path / "tls.crt"),
                             json.dumps(targets)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        c.kubectl("apply", "-f", "-", input=json.dumps(web("alpha")))
        harness.eventually(lambda: get("http://one.example/b")[1].startswith("alpha"), timeout=30,
                           what="/b switched to alpha")
        time.sleep(1)
        stop.touch()
        out, _ = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    result = json.loads(out)
    assert result["failures"] == [], result
    assert result["counts"].get("http://one.example/b -> beta") and result["counts"].get("http://one.example/b -> alpha")
