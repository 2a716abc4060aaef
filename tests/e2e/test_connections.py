"""Connection hygiene and overload protection of a real ``kubeling server`` (issue 10, findings 3
and 4), from raw sockets that behave as the hostile clients of the findings did.

Figures under test are kube-apiserver's defaults: TLS handshake and request headers within 32 s,
keep-alive connections idle for 90 s at most; plus ``--request-timeout`` and the two
``--max-*-requests-inflight`` flags, set low on private servers so that the tests stay short.

The four timer probes run at once (one module fixture, one thread each), so the module waits
about 100 s in all rather than the sum of the timeouts.
"""

from __future__ import annotations

import base64
import json
import resource
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

READ_HEADER_TIMEOUT = 32.0
TLS_HANDSHAKE_TIMEOUT = 32.0
IDLE_TIMEOUT = 90.0
SLACK = 10.0  # a loaded 2-CPU machine; the findings saw these connections live for > 320 s


def _anonymous_tls(cluster) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=_ca_pem(cluster))
    return ctx


def _ca_pem(cluster) -> str:
    _, c = cluster._kubeconfig_parts()
    return base64.b64decode(c["certificate-authority-data"]).decode()


def _connect(cluster, ctx: ssl.SSLContext | None, timeout: float = 10.0, rcvbuf: int | None = None):
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", cluster.port))
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw


def _closed_within(sock, limit: float, send_every: float | None = None, send=b"") -> float | None:
    """Seconds until the server closes ``sock`` (None if still open after ``limit``), sending
    ``send`` every ``send_every`` seconds meanwhile (a slowloris)."""
    start = time.monotonic()
    next_send = start + send_every if send_every else None
    while True:
        now = time.monotonic()
        if now - start >= limit:
            return None
        wait = min(limit - (now - start), (next_send - now) if next_send else limit)
        sock.settimeout(max(wait, 0.01))
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            pass
        except (ConnectionError, ssl.SSLError, OSError):
            return time.monotonic() - start
        if next_send and time.monotonic() >= next_send:
            try:
                sock.sendall(send)
            except (ConnectionError, ssl.SSLError, OSError):
                return time.monotonic() - start
            next_send += send_every


def _read_response(sock) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


class Probe(threading.Thread):
    """Runs one hostile client and records when the server closed it."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self):
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


@pytest.fixture(scope="module")
def probes(cluster):
    def tls_without_request():
        s = _connect(cluster, _anonymous_tls(cluster))
        with s:
            return _closed_within(s, READ_HEADER_TIMEOUT + SLACK)

    def tcp_without_handshake():
        s = _connect(cluster, None)
        with s:
            return _closed_within(s, TLS_HANDSHAKE_TIMEOUT + SLACK)

    def slowloris():  # one header line every 20 s, as in the finding
        s = _connect(cluster, _anonymous_tls(cluster))
        with s:
            s.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            return _closed_within(s, READ_HEADER_TIMEOUT + SLACK, send_every=20, send=b"X-Slow: 1\r\n")

    def idle_keep_alive():
        s = _connect(cluster, cluster.ssl_context())
        with s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = _read_response(s)
            assert head.startswith(b"HTTP/1.1 200"), head
            return _closed_within(s, IDLE_TIMEOUT + SLACK)

    started = {name: Probe(fn) for name, fn in [("tls-without-request", tls_without_request),
                                                ("tcp-without-handshake", tcp_without_handshake),
                                                ("slowloris", slowloris), ("idle-keep-alive", idle_keep_alive)]}
    for p in started.values():
        p.start()
    return started


@pytest.mark.parametrize("name, expected", [
    pytest.param("tls-without-request", READ_HEADER_TIMEOUT, id="tls-without-request"),
    pytest.param("tcp-without-handshake", TLS_HANDSHAKE_TIMEOUT, id="tcp-without-handshake"),
    pytest.param("slowloris", READ_HEADER_TIMEOUT, id="slowloris"),
    pytest.param("idle-keep-alive", IDLE_TIMEOUT, id="idle-keep-alive"),
])
def test_server_closes_idle_and_slow_connections(probes, name, expected):
    probe = probes[name]
    probe.join(expected + SLACK + 30)
    assert probe.error is None, probe.error
    assert probe.result is not None, f"{name}: still open after {expected + SLACK:.0f}s"
    assert expected - 2 <= probe.result <= expected + SLACK, f"{name}: closed after {probe.result:.1f}s"


def test_anonymous_flood_does_not_lock_the_admin_out(make_cluster):
    """Finding 3: at an open-file limit of 1,000, 921 idle anonymous TLS connections made the
    admin's /readyz fail. Here as many as the limit (the server has fewer files of its own open
    without controllers), then the admin (client certificate) asks."""
    c = make_cluster(extra_args=("--controllers", "", "--disable-scheduler"))
    resource.prlimit(c.proc.pid, resource.RLIMIT_NOFILE, (1000, 1000))
    anonymous = _anonymous_tls(c)
    held, failures = [], 0
    try:
        while len(held) < 1000 and failures < 3:
            try:
                held.append(_connect(c, anonymous, timeout=5))
            except (OSError, ssl.SSLError):
                failures += 1  # the server may refuse or stall the handshake: both are its choice
        start = time.monotonic()
        status, body = c.request("GET", "/readyz", timeout=10)
        took = time.monotonic() - start
    finally:
        for s in held:
            s.close()
    assert status == 200 and body == b"ok", (status, body)
    assert took < 5, f"/readyz took {took:.1f}s during the flood"
    assert c.request("GET", "/readyz")[0] == 200


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def test_slow_readers_are_disconnected_and_memory_is_released(make_cluster):
    """Finding 4: 20 clients asking for a 30 MB list and never reading pinned 2.4 GB, and RSS
    stayed 300 MB up after they left. With ``--request-timeout=5s`` the server must cut them
    after about 5 s (the deadline covers writing the response) and give the memory back."""
    c = make_cluster(extra_args=("--controllers", "", "--disable-scheduler", "--request-timeout", "5s"))
    ns = f"slow-{uuid.uuid4().hex[:6]}"
    assert c.request("POST", "/api/v1/namespaces", json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).encode(),
        {"Content-Type": "application/json"})[0] == 201
    for i in range(30):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"},
              "data": {"blob": "x" * 1_000_000}}
        status, body = c.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json.dumps(cm).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 201, body[:300]
    path = f"/api/v1/namespaces/{ns}/configmaps"
    status, body = c.request("GET", path)  # warm up, and learn the full size
    assert status == 200
    full = len(body)
    baseline = _rss_mb(c.proc.pid)

    readers = [_connect(c, c.ssl_context(), rcvbuf=4096) for _ in range(20)]
    for s in readers:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode())
    time.sleep(3)
    stuck = _rss_mb(c.proc.pid)
    time.sleep(5 + SLACK)  # past the request deadline
    received = []
    for s in readers:
        got = 0
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        received.append(got)
        s.close()
    time.sleep(2)
    after = _rss_mb(c.proc.pid)
    assert all(r < full for r in received), f"full {full} bytes, received {received}"
    assert after < baseline + 150, f"RSS {baseline:.0f} MB before, {stuck:.0f} MB stuck, {after:.0f} MB after"
    assert c.request("GET", "/readyz")[0] == 200


def _post_partial(cluster, token: str, body: bytes, sent: int):
    s = _connect(cluster, _anonymous_tls(cluster))
    s.sendall(f"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:sent])
    return s


SSAR = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}).encode()


def test_overload_is_answered_429_with_retry_after(make_cluster, tmp_path):
    """With ``--max-mutating-requests-inflight=2``, two mutations held open by slow bodies spend
    the budget: the next one is refused at once with upstream's 429; ``system:masters`` and
    /readyz are not refused; the held requests then complete, and the budget is back."""
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('bob-token,bob,1001,"e2e-users"\n')
    c = make_cluster(extra_args=("--controllers", "", "--disable-scheduler", "--token-auth-file", str(tokens),
                                 "--max-mutating-requests-inflight", "2"))
    held = [_post_partial(c, "bob-token", SSAR, 10) for _ in range(2)]
    try:
        time.sleep(1)
        bob = {"Authorization": "Bearer bob-token", "Content-Type": "application/json"}
        url = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        start = time.monotonic()
        (status, headers), body = _request_with_headers(c, "POST", url, SSAR, bob)
        refused_in = time.monotonic() - start
        admin_status = c.request("POST", url, SSAR, {"Content-Type": "application/json"})[0]
        ready_status = c.request("GET", "/readyz")[0]
        for s in held:
            s.sendall(SSAR[10:])
        finished = [_read_response(s).split(b"\r\n")[0] for s in held]
        after = _request_with_headers(c, "POST", url, SSAR, bob)[0][0]
    finally:
        for s in held:
            s.close()
    assert status == 429 and headers.get("Retry-After") == "1", (status, headers, body)
    assert refused_in < 2
    st = json.loads(body)
    assert (st["kind"], st["reason"], st["code"], st["message"]) == \
        ("Status", "TooManyRequests", 429, "Too many requests, please try again later.")
    assert (admin_status, ready_status) == (201, 200)
    assert finished == [b"HTTP/1.1 201 Created"] * 2
    assert after == 201


def _request_with_headers(cluster, method, path, body, headers):
    """Like `Cluster.request`, but with the caller's credentials only (no client certificate),
    returning ((status, headers), body)."""
    req = urllib.request.Request(cluster.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=_anonymous_tls(cluster), timeout=30) as r:
            return (r.status, dict(r.headers)), r.read()
    except urllib.error.HTTPError as e:
        return (e.code, dict(e.headers)), e.read()
