"""A one-node network lab for kube-proxy modes: a node netns with a pod bridge, pod netns with
echo servers, and a "host" netns outside the node. Nothing here touches the caller's netns.

::

    host netns  eth0 10.44.9.1/24 ── veth ── node netns  eth0 10.44.9.2/24 (the node IP)
                                              br0 10.42.0.1/24 (the pod gateway), ip_forward=1
                                              unreachable 10.43.0.0/16 (services), 10.42.0.0/16
                                              ├── veth ── pod netns p0  eth0 10.42.0.10/24
                                              ├── veth ── pod netns p1  eth0 10.42.0.11/24
                                              └── ...

Every pod runs an echo server (`ECHO`): TCP ``TCP_PORT`` and UDP ``UDP_PORT`` answer
``"<pod name> <client ip>"``. Pods can also be clients (`connect_many`, `udp_many`).

`ProxyProcess(lab, mode)` runs ``python -m tests.support.netlab_proxy --mode MODE`` inside the
node netns: it builds ``kubeling.proxy.<mode>.Proxier(NodeContext(...))``, calls ``start()``, and
then, for each JSON line it is sent, ``sync`` (`ProxyProcess.sync`), ``cleanup`` or
``count_leaks``. Using a process keeps the mode's sockets, listeners and netlink in the node
netns, as a real kube-proxy runs there.

    with NetLab(pods=3) as lab, ProxyProcess(lab, "iptables") as proxy:
        spn = ServicePortName("default", "web", "", "TCP")
        proxy.sync({spn: ServicePort("10.43.0.20", 80)}, {spn: [Endpoint(ip, 8080) for ip in lab.pod_ips]})
        answers = lab.connect_many("p0", "10.43.0.20", 80, 30)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName

REPO = Path(__file__).resolve().parents[2]
NODE_IP, HOST_IP, GATEWAY = "10.44.9.2", "10.44.9.1", "10.42.0.1"
CLUSTER_CIDR, SERVICE_CIDR = "10.42.0.0/16", "10.43.0.0/16"
TCP_PORT, UDP_PORT = 8080, 8081
_counter = [0]

ECHO = textwrap.dedent("""
    import socket, sys, threading
    name, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", udp_port))
        while True:
            data, addr = s.recvfrom(2048)
            s.sendto(f"{name} {addr[0]}".encode(), addr)
    threading.Thread(target=udp, daemon=True).start()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", tcp_port))
    srv.listen(512)
    print("ready", flush=True)
    while True:
        c, addr = srv.accept()
        try:
            c.sendall(f"{name} {addr[0]}".encode())
        finally:
            c.close()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys, time
    proto, ip, port, n, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    src_port = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    out = []
    for i in range(n):
        try:
            if proto == "tcp":
                s = socket.create_connection((ip, port), timeout=timeout)
                s.settimeout(timeout)
                data = b""
                while True:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                s.close()
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(timeout)
                if src_port:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("0.0.0.0", src_port))
                s.sendto(b"hi", (ip, port))
                data, _ = s.recvfrom(2048)
                s.close()
            out.append(data.decode())
        except OSError as e:
            out.append(None)
    print(json.dumps(out))
""")


def _run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, **kw)


class NetLab:
    """See the module docstring. A context manager; `close()` removes every namespace it made."""

    def __init__(self, pods: int = 3) -> None:
        _counter[0] += 1
        self.prefix = f"nl{os.getpid() % 100000}x{_counter[0]}"
        self.node, self.host = f"{self.prefix}-node", f"{self.prefix}-host"
        self.pods = [f"p{i}" for i in range(pods)]
        self.pod_ips = [f"10.42.0.{10 + i}" for i in range(pods)]
        self._servers: list[subprocess.Popen] = []
        self._made: list[str] = []

    def ns(self, pod: str) -> str:
        """The netns name of a pod ("p0"), or of "node"/"host"."""
        return {"node": self.node, "host": self.host}.get(pod, f"{self.prefix}-{pod}")

    def ip(self, pod: str) -> str:
        return {"node": NODE_IP, "host": HOST_IP}.get(pod) or self.pod_ips[self.pods.index(pod)]

    def exec(self, where: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", self.ns(where), *argv, check=check, timeout=timeout)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def start(self) -> None:
        self._netns(self.node)
        self._netns(self.host)
        n, h = self.node, self.host
        _run("ip", "link", "add", "eth0", "netns", n, "type", "veth", "peer", "name", "eth0", "netns", h)
        for ns, addr in ((n, NODE_IP), (h, HOST_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", n, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", n, "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        _run("ip", "-n", n, "link", "set", "br0", "up")
        _run("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for cidr in (CLUSTER_CIDR, SERVICE_CIDR):
            _run("ip", "-n", n, "route", "add", "unreachable", cidr)
        # the host reaches pods and services only through the node (as a router would)
        for cidr in (CLUSTER_CIDR, SERVICE_CIDR):
            _run("ip", "-n", h, "route", "add", cidr, "via", NODE_IP)
        for i, pod in enumerate(self.pods):
            ns, veth = self.ns(pod), f"veth{i}"
            self._netns(ns)
            _run("ip", "link", "add", veth, "netns", n, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "-n", n, "link", "set", veth, "master", "br0")
            _run("ip", "-n", n, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            _run("ip", "-n", n, "link", "set", veth, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.pod_ips[i]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "route", "add", "default", "via", GATEWAY)
            proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, pod, str(TCP_PORT),
                                     str(UDP_PORT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._servers.append(proc)
        for proc in self._servers:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("netlab: an echo server did not start")

    def close(self) -> None:
        for proc in self._servers:
            proc.kill()
            proc.wait()
        self._servers.clear()
        for ns in reversed(self._made):
            _run("ip", "netns", "del", ns, check=False)
        self._made.clear()

    # -- traffic -------------------------------------------------------------------------------

    def _client(self, where: str, proto: str, ip: str, port: int, n: int, timeout: float,
                src_port: int = 0) -> list[str | None]:
        argv = [sys.executable, "-c", CLIENT, proto, ip, str(port), str(n), str(timeout)]
        if src_port:
            argv.append(str(src_port))
        out = self.exec(where, *argv, timeout=30 + n * timeout).stdout
        return json.loads(out)

    def connect_many(self, where: str, ip: str, port: int, n: int, timeout: float = 2.0) -> list[str | None]:
        """``n`` new TCP connections from ``where`` (a pod, "node" or "host"): each answer
        ("<pod> <client ip as the pod saw it>") or None for a failed one."""
        return self._client(where, "tcp", ip, port, n, timeout)

    def udp_many(self, where: str, ip: str, port: int, n: int, timeout: float = 2.0,
                 src_port: int = 0) -> list[str | None]:
        """``n`` UDP request/answer exchanges, each from a new socket (a fixed source port when
        ``src_port`` is given)."""
        return self._client(where, "udp", ip, port, n, timeout, src_port)


def _encode(services, endpoints, changed) -> str:
    return json.dumps({
        "services": [[dataclasses.asdict(k), dataclasses.asdict(v)] for k, v in services.items()],
        "endpoints": [[dataclasses.asdict(k), [dataclasses.asdict(e) for e in eps]] for k, eps in endpoints.items()],
        "changed": None if changed is None else [dataclasses.asdict(k) for k in changed],
    })


def decode(line: str):
    """The inverse of `ProxyProcess.sync`'s encoding: (services, endpoints, changed)."""
    doc = json.loads(line)

    def tup(d: dict, cls):
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})

    services = {tup(k, ServicePortName): tup(v, ServicePort) for k, v in doc["services"]}
    endpoints = {tup(k, ServicePortName): [tup(e, Endpoint) for e in eps] for k, eps in doc["endpoints"]}
    changed = None if doc["changed"] is None else {tup(k, ServicePortName) for k in doc["changed"]}
    return services, endpoints, changed


class ProxyProcess:
    """A proxy mode running in the lab's node netns (see the module docstring)."""

    def __init__(self, lab: NetLab, mode: str, *, node_name: str = "node-1") -> None:
        self.lab, self.mode, self.node_name = lab, mode, node_name
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ProxyProcess:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.node, sys.executable, "-m", "tests.support.netlab_proxy",
             "--mode", self.mode, "--node-name", self.node_name, "--node-ip", NODE_IP],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        answer = self._read()
        if answer.get("error"):
            self.close()
            raise RuntimeError(f"netlab proxy ({self.mode}) did not start: {answer['error']}")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"netlab proxy ({self.mode}) exited with {self.proc.wait()}")
        return json.loads(line)

    def _call(self, doc: dict) -> dict:
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if answer.get("error"):
            raise RuntimeError(f"netlab proxy ({self.mode}): {answer['error']}")
        return answer

    def sync(self, services, endpoints, changed=None) -> dict:
        """``Proxier.sync`` in the node netns; returns {"seconds": how long it took}."""
        return self._call({"op": "sync", "state": _encode(services, endpoints, changed)})

    def count_leaks(self) -> dict[str, int]:
        return self._call({"op": "count_leaks"})["leaks"]

    def cleanup(self) -> dict[str, int]:
        """``Proxier.cleanup``; returns ``count_leaks`` afterwards."""
        return self._call({"op": "cleanup"})["leaks"]

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
