"""`Cluster`: a server and N agents on one machine, each agent in its own network namespace
(``kubeling cluster ...``, in the spirit of kind and k3s; the e2e harness drives the same code).

Layout of the data directory ``DIR``::

    DIR/cluster.json        the state file (`ClusterState`): subnet, addresses, PIDs, nodes
    DIR/server/             the server's data dir (state.db, pki/, admin.kubeconfig,
                            server/node-token)
    DIR/nodes/<name>/       each agent's data dir (agent/: images, runc root, pods, logs)
    DIR/logs/<proc>.log     server.log, <node>.log (etcd layout: server-<i>.log, etcd-<i>.log,
                            routes-server-<i>.log)
    DIR/server-<i>/, DIR/etcd/etcd-<i>/   the etcd layout's servers and members (see below)
    DIR/token               the etcd layout's servers' --token (0600, kept across down and up)

Lifecycle (every step records itself in the state file before the next one)::

    up ──▶ bridge ─▶ server (caller's netns, --disable-agent) ready ─▶ pod routes (below)
           ─▶ per node: netns + veth, agent started with nsenter --net (--flannel-backend, the
           --agent-arg flags, then the node's own --node-agent-arg flags), joining with the node
           token ─▶ all nodes Ready
    node stop NAME   SIGKILL the agent, its shims and every process in its cgroups (a node
                     failure; disk state stays, as after a power cut)
    node start NAME  the agent again (it re-adopts or restarts the pods)
    node isolate NAME [--undo]   its veth down (up): the link is cut, processes keep running
    node add NAME    one more node, joined to the running cluster
    node remove NAME the node's processes, containers and netns, and its Node object
    down ──▶ agents (SIGTERM, then SIGKILL) ─▶ `kubeling node cleanup` in each node netns (the
             overlay's flannel.1 must be gone after it) ─▶ veths, netns ─▶ pod routes ─▶ server
             ─▶ bridge ─▶ the state file

The etcd layout (``up --datastore etcd [--control-planes N]``): no server in the caller's
namespace; each control plane ``server-<i>`` gets a netns ``<cluster>-server-<i>`` on the bridge
(made as a node's, `ControlPlaneState`) with its own address, where run an etcd member ``etcd-<i>``
(client ``https://<ip>:2379`` and ``127.0.0.1:2379``, peer ``<ip>:2380``, one ``--initial-cluster``
of all N; data in DIR/etcd/etcd-<i>/; TLS with client certificates for clients and peers, from the
layout's own etcd CA in DIR/etcd/pki/, `ensure_etcd_pki`: pods reach the bridge), a ``kubeling
server --bind-address <ip> --datastore-endpoint <every member>`` with the client certificate
(data dir DIR/server-<i>/, its own admin.kubeconfig there) and a routes helper (below). ``up``: namespaces ─▶ every member, healthy together ─▶ server-1 ready ─▶ the others,
sharing server-1's CA and keys through etcd (one ``--token``, k3s's bootstrap data) ─▶ routes ─▶ nodes, joining server-1 (or the first server that runs). ``server stop|start|kill
NAME`` and ``etcd stop|start|kill NAME`` take one down (kill: SIGKILL, a crash; data stays) or
bring it back; ``down`` removes the control planes after the nodes.

Pod routes: the server runs in the caller's namespace without an agent, so it has no pod
network; ``kubeling cluster routes`` (a process beside it, recorded as ``routes_pid``) keeps a
route to every Node's podCIDR via that node's IP on the bridge, from the Node objects
(`kubeling.kubelet.network.overlay`, routes-only mode). The API server so reaches pods
(services/pods proxy, webhooks), and pods' answers to it find their way back. In the etcd layout
it reaches the servers through a load balancer of its own over all of them (an agent's,
`kubeling.kubelet.loadbalancer`; state in DIR/routes/), so it outlives any one server, and one more
such helper runs in each control plane's netns (``routes --control-plane NAME``, on its own
server's kubeconfig), for the same reason.

Processes are detached (their own session) and are only ever signalled by the PID recorded
here, after checking that ``/proc/<pid>/cmdline`` is still theirs (names their data dir), so a
recycled PID is never hit. Each agent has its own cgroup root ``kubeling-<cluster>-<node>`` and
listens on port 10250 of its own namespace. Blocking code: CLI commands and harnesses only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubeling.cluster import netns as net

STATE_FILE = "cluster.json"
CLUSTER_CIDR = "10.42.0.0/16"
SERVICE_CIDR = "10.43.0.0/16"
KUBELET_PORT = 10250
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
DATASTORES = ("sqlite", "etcd")


class ClusterError(RuntimeError):
    """A cluster command cannot go on; ``str()`` says why (with a log tail when a process died)."""


@dataclass
class NodeState:
    name: str
    ip: str                    # eth0's address in the node netns (the node's InternalIP)
    netns: str
    veth: str                  # the bridge-side end
    data_dir: str
    cgroup_root: str
    kubelet_port: int = KUBELET_PORT
    pid: int = 0               # 0: not running (stopped by `node stop`, or never started)
    isolated: bool = False
    agent_args: list[str] = field(default_factory=list)    # this node's own extra `kubeling agent` flags


@dataclass
class ControlPlaneState:
    """One control-plane namespace of the etcd layout: an etcd member and a `kubeling server`."""
    name: str                  # server-<i>
    ip: str                    # eth0's address in its netns: the server's and the member's
    netns: str
    veth: str
    data_dir: str              # the server's data dir, DIR/server-<i>
    etcd_name: str             # etcd-<i>
    etcd_dir: str              # the member's data dir, DIR/etcd/etcd-<i>
    pid: int = 0               # the server; 0: not running
    etcd_pid: int = 0          # the member; 0: not running
    routes_pid: int = 0        # `kubeling cluster routes --control-plane <name>` in its netns

    @property
    def etcd_url(self) -> str:
        return f"https://{self.ip}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_peer_url(self) -> str:
        return f"https://{self.ip}:{ETCD_PEER_PORT}"


@dataclass
class ClusterState:
    name: str
    data_dir: str
    subnet: str
    bridge: str
    server_ip: str
    secure_port: int = 6443
    bind_address: str = ""
    server_pid: int = 0
    registry_config: str = ""
    server_args: list[str] = field(default_factory=list)   # extra `kubeling server` flags
    agent_args: list[str] = field(default_factory=list)    # extra `kubeling agent` flags, every node
    node_agent_args: dict[str, list[str]] = field(default_factory=dict)   # node name -> its extra flags
    flannel_backend: str = "vxlan"                         # every agent's --flannel-backend
    routes_pid: int = 0                                    # `kubeling cluster routes` (pod routes here)
    cluster_cidr: str = CLUSTER_CIDR
    service_cidr: str = SERVICE_CIDR
    nodes: dict[str, NodeState] = field(default_factory=dict)
    datastore: str = "sqlite"                              # "sqlite" (one server) or "etcd"
    token: str = ""                                        # the servers' shared --token (etcd layout)
    control_planes: dict[str, ControlPlaneState] = field(default_factory=dict)   # empty: one server here

    @property
    def server_url(self) -> str:
        return f"https://{self.server_ip}:{self.secure_port}"

    @property
    def ha(self) -> bool:
        """The control-plane namespaces layout (``--datastore etcd``), not one server here."""
        return bool(self.control_planes)

    def etcd_endpoints(self) -> str:
        return ",".join(cp.etcd_url for cp in self.control_planes.values())

    @classmethod
    def from_json(cls, doc: dict) -> ClusterState:
        nodes = {n: NodeState(**v) for n, v in (doc.pop("nodes", None) or {}).items()}
        cps = {n: ControlPlaneState(**v) for n, v in (doc.pop("control_planes", None) or {}).items()}
        return cls(**doc, nodes=nodes, control_planes=cps)


def _kubeling() -> list[str]:
    return [sys.executable, "-m", "kubeling.cli.main"]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
    return "" if state in ("Z", "X") else raw.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and is still the process we started (its argv holds ``marker``)."""
    return pid > 0 and marker in _cmdline(pid)


def _signal(pid: int, marker: str, sig: int) -> bool:
    if not alive(pid, marker):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def stop_process(pid: int, marker: str, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL; only if ``pid`` is still ours (see `alive`)."""
    stop_processes([(pid, marker)], timeout)


def stop_processes(procs: list[tuple[int, str]], timeout: float = 15.0) -> None:
    """`stop_process` for several at once: all get SIGTERM, then the rest SIGKILL after ``timeout``."""
    procs = [(pid, marker) for pid, marker in procs if _signal(pid, marker, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while any(alive(*p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, marker in procs:
        _signal(pid, marker, signal.SIGKILL)
    while any(alive(*p) for p in procs):
        time.sleep(0.05)


def _group(pid: int, marker: str) -> list[tuple[int, str]]:
    """The processes of ``pid``'s process group (it leads one: `Cluster._spawn`), with their argv,
    while ``pid`` is still ours."""
    if not alive(pid, marker):
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[2]) == pid:
            out.append((int(entry), _cmdline(int(entry))))
    return out


def _kill_all(group: list[tuple[int, str]]) -> None:
    """SIGKILL what is left of `_group`'s processes (only those whose argv is unchanged)."""
    for pid, cmd in group:
        if cmd and _cmdline(pid) == cmd:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def ensure_etcd_pki(pki: Path, members: dict[str, list[str]]) -> None:
    """The etcd layout's own CA under ``pki`` (DIR/etcd/pki, as kubeadm's etcd/ca): ``ca.crt``,
    for each member ``<name>.crt``/``.key`` (server and peer: its addresses, 127.0.0.1, localhost)
    and ``client.crt``/``.key`` (CN kube-apiserver-etcd-client), what the API servers and
    etcdctl present. EC P-256; made once, missing pieces issued from the CA that exists."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def write(path: Path, data: bytes, private: bool) -> None:
        fd, tmp = tempfile.mkstemp(dir=pki, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600 if private else 0o644)
            f.write(data)
        os.replace(tmp, path)

    def save(name: str, key, cert) -> None:
        write(pki / f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), True)
        write(pki / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM), False)

    def builder(subject: str, issuer: x509.Name, pub, days: int) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(issuer).public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))

    if not (pki / "ca.crt").exists() or not (pki / "ca.key").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeling-etcd-ca")])
        cert = (builder("kubeling-etcd-ca", name, key.public_key(), 3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                .sign(key, hashes.SHA256()))
        save("ca", key, cert)
        for old in pki.glob("*.crt"):
            if old.name != "ca.crt":
                old.unlink()
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    leaves = {member: (addresses, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
              for member, addresses in members.items()}
    leaves["client"] = ([], [ExtendedKeyUsageOID.CLIENT_AUTH])
    for name, (addresses, usages) in leaves.items():
        if (pki / f"{name}.crt").exists() and (pki / f"{name}.key").exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        b = (builder(name if addresses else "kube-apiserver-etcd-client", ca.subject, key.public_key(), 3650)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if addresses:
            ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in [*addresses, "127.0.0.1"]]
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), *ips]), critical=False)
        save(name, key, b.sign(ca_key, hashes.SHA256()))


class Cluster:
    """See the module docstring. ``out`` receives progress lines (stderr by default)."""

    def __init__(self, data_dir: str | os.PathLike, *, out=None) -> None:
        self.dir = Path(data_dir).resolve()
        self.out = out or sys.stderr
        self.state: ClusterState | None = None
        self._children: dict[int, subprocess.Popen] = {}   # reaped by `_reap`, never left as zombies

    # -- paths and state ------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def server_dir(self) -> Path:
        """The data dir of the server the admin kubeconfig and the node token come from: DIR/server,
        or server-1's in the etcd layout."""
        st = self.state
        if st is None and self.state_path.exists():
            st = self.load()
        if st is not None and st.ha:
            return Path(next(iter(st.control_planes.values())).data_dir)
        return self.dir / "server"

    @property
    def kubeconfig(self) -> Path:
        return self.server_dir / "admin.kubeconfig"

    @property
    def token_file(self) -> Path:
        from kubeling.apiserver.join import token_path
        return token_path(self.server_dir)

    def log_path(self, proc: str) -> Path:
        return self.dir / "logs" / f"{proc}.log"

    def load(self) -> ClusterState:
        if self.state is None:
            if not self.state_path.exists():
                raise ClusterError(f"no cluster in {self.dir} (no {STATE_FILE}): run `kubeling cluster up` first")
            self.state = ClusterState.from_json(json.loads(self.state_path.read_text()))
        return self.state

    def save(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{STATE_FILE}.")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self.state), f, indent=2)
        os.replace(tmp, self.state_path)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, argv: list[str], log_name: str) -> int:
        log = self.log_path(log_name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            f.write(f"\n=== kubeling cluster: starting {' '.join(argv)}\n".encode())
            f.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        self._children[proc.pid] = proc
        return proc.pid

    def _running(self, pid: int, marker: str) -> bool:
        """`alive`, but for a process this object started, its exit status: between fork and
        exec a child's cmdline is still ours, which `alive` would take for a recycled PID."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        return alive(pid, marker)

    def _reap(self) -> None:
        self._children = {pid: p for pid, p in self._children.items() if p.poll() is None}

    def _log_tail(self, proc: str, lines: int = 25) -> str:
        try:
            text = self.log_path(proc).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_path(proc)} ---\n" + "\n".join(text)

    def server_marker(self) -> str:
        return f"--data-dir {self.dir / 'server'} "

    def cp_marker(self, cp: ControlPlaneState) -> str:
        return f"--data-dir {cp.data_dir} "

    def etcd_marker(self, cp: ControlPlaneState) -> str:
        return f"--data-dir {cp.etcd_dir} "

    def node_marker(self, node: NodeState) -> str:
        return f"--data-dir {node.data_dir} "

    # -- up ------------------------------------------------------------------------------------

    def up(self, nodes: int, *, name: str = "kubeling", subnet: str = "", bind_address: str = "",
           secure_port: int = 6443, registry_config: str = "", server_args: list[str] | None = None,
           agent_args: list[str] | None = None, node_agent_args: dict[str, list[str]] | None = None,
           flannel_backend: str = "vxlan", control_planes: int = 1, datastore: str = "sqlite",
           timeout: float = 180.0) -> None:
        if datastore not in DATASTORES:
            raise ClusterError(f"--datastore {datastore!r}: one of {', '.join(DATASTORES)}")
        if control_planes < 1:
            raise ClusterError("--control-planes must be at least 1")
        if control_planes > 1 and datastore != "etcd":
            raise ClusterError("several control planes share one datastore: give --datastore etcd")
        if self.state_path.exists():
            raise ClusterError(f"a cluster already lives in {self.dir}: `kubeling cluster down "
                               f"--data-dir {self.dir}` first")
        if not (0 < len(name) <= 20) or not all(c.isalnum() or c == "-" for c in name) or name != name.lower():
            raise ClusterError(f"cluster name {name!r}: up to 20 lowercase letters, digits and '-'")
        picked = ipaddress.ip_network(subnet) if subnet else net.pick_subnet(
            net.used_networks(), avoid=(CLUSTER_CIDR, SERVICE_CIDR))
        hosts = list(picked.hosts())
        self.state = ClusterState(name=name, data_dir=str(self.dir), subnet=str(picked), bridge=net.bridge_name(name),
                                  server_ip=str(hosts[0]), secure_port=secure_port,
                                  bind_address=bind_address or str(hosts[0]),
                                  registry_config=str(Path(registry_config).resolve()) if registry_config else "",
                                  server_args=list(server_args or []), agent_args=list(agent_args or []),
                                  node_agent_args={k: list(v) for k, v in (node_agent_args or {}).items()},
                                  flannel_backend=flannel_backend)
        if datastore == "etcd":
            self.state.datastore = datastore
            self.state.bind_address = bind_address
            self.state.token = self._cluster_token()
            for i in range(1, control_planes + 1):
                cp = self._new_control_plane(i, str(hosts[i]))
                self.state.control_planes[cp.name] = cp
            self.state.server_ip = next(iter(self.state.control_planes.values())).ip
        self.save()
        net.create_bridge(self.state.bridge, ipaddress.ip_interface(f"{hosts[0]}/{picked.prefixlen}"))
        self.say(f"bridge {self.state.bridge} {hosts[0]}/{picked.prefixlen}")
        if self.state.ha:
            self.start_control_planes(timeout)
        else:
            self.start_server(timeout)
        self.start_routes()
        for i in range(1, nodes + 1):
            self.add_node(f"node-{i}", wait=False)
        self.wait_ready(list(self.state.nodes), timeout)

    def start_server(self, timeout: float) -> None:
        st = self.load()
        if alive(st.server_pid, self.server_marker()):
            return
        argv = [*_kubeling(), "server", "--data-dir", str(self.server_dir), "--disable-agent",
                "--bind-address", st.bind_address, "--advertise-address", st.server_ip,
                "--secure-port", str(st.secure_port), "--cluster-cidr", st.cluster_cidr,
                "--service-cluster-ip-range", st.service_cidr, *st.server_args]
        st.server_pid = self._spawn(argv, "server")
        self.save()
        self.say(f"server pid {st.server_pid} on {st.server_url}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running(st.server_pid, self.server_marker()):
                raise ClusterError("the server exited during start-up" + self._log_tail("server"))
            if self.token_file.exists() and self.kubeconfig.exists():
                try:
                    if self.request("/readyz")[0] == 200:
                        return
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.2)
        raise ClusterError(f"the server was not ready within {timeout:.0f}s" + self._log_tail("server"))

    def routes_marker(self) -> str:
        return f"routes --data-dir {self.dir} "

    def start_routes(self) -> None:
        """``kubeling cluster routes`` beside the server (see the module docstring)."""
        st = self.load()
        if not alive(st.routes_pid, self.routes_marker()):
            st.routes_pid = self._spawn([*_kubeling(), "cluster", "routes", "--data-dir", str(self.dir)], "routes")
            self.save()
            self.say(f"pod routes: pid {st.routes_pid}")
        for cp in st.control_planes.values():
            self.start_cp_routes(cp)

    def stop_routes(self) -> None:
        from kubeling.kubelet.network.overlay import cleanup_routes
        st = self.load()
        stop_process(st.routes_pid, self.routes_marker())
        st.routes_pid = 0
        cleanup_routes(via=st.subnet)

    # -- control planes (the etcd layout) ------------------------------------------------------

    def _new_control_plane(self, i: int, ip: str) -> ControlPlaneState:
        st = self.load()
        name = f"server-{i}"
        return ControlPlaneState(name=name, ip=ip, netns=net.netns_name(st.name, name),
                                 veth=net.ifname("klv", st.name, "control-plane", name), data_dir=str(self.dir / name),
                                 etcd_name=f"etcd-{i}", etcd_dir=str(self.dir / "etcd" / f"etcd-{i}"))

    def _cluster_token(self) -> str:
        """The servers' --token: DIR/token (0600), made once, so that an ``up`` after ``down`` finds
        the bootstrap data it stored in etcd (the members keep their data as the servers do)."""
        path = self.dir / "token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        token = secrets.token_hex(16)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def control_plane(self, name: str) -> ControlPlaneState:
        """A control plane by its server's name (server-<i>) or its member's (etcd-<i>)."""
        st = self.load()
        for cp in st.control_planes.values():
            if name in (cp.name, cp.etcd_name):
                return cp
        names = ", ".join(n for cp in st.control_planes.values() for n in (cp.name, cp.etcd_name))
        raise ClusterError(f"no control plane {name} in this cluster ({names or 'it has one server, no etcd'})")

    @property
    def etcd_pki(self) -> Path:
        return self.dir / "etcd" / "pki"

    def etcd_client_args(self) -> list[str]:
        """How a client (a server: ``--datastore-*``) presents itself to the members."""
        return ["--datastore-cafile", str(self.etcd_pki / "ca.crt"), "--datastore-certfile",
                str(self.etcd_pki / "client.crt"), "--datastore-keyfile", str(self.etcd_pki / "client.key")]

    def _etcd_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.etcd_pki / "ca.crt"))
        ctx.load_cert_chain(str(self.etcd_pki / "client.crt"), str(self.etcd_pki / "client.key"))
        return ctx

    def cp_kubeconfig(self, cp: ControlPlaneState) -> Path:
        """The admin kubeconfig the server ``cp`` writes, pointing at its own address."""
        return Path(cp.data_dir) / "admin.kubeconfig"

    def start_control_planes(self, timeout: float) -> None:
        """Namespaces, every etcd member (they form the cluster together), server-1, then the others
        (with the same --token they read the CA and keys server-1 stored in etcd)."""
        st = self.load()
        prefix = ipaddress.ip_network(st.subnet).prefixlen
        for cp in st.control_planes.values():
            net.create_node_netns(cp.netns, cp.veth, st.bridge, ipaddress.ip_interface(f"{cp.ip}/{prefix}"),
                                  unreachable=(st.cluster_cidr, st.service_cidr))
        ensure_etcd_pki(self.etcd_pki, {cp.etcd_name: [cp.ip] for cp in st.control_planes.values()})
        for cp in st.control_planes.values():
            self.start_etcd(cp.etcd_name, wait=False)
        self.wait_etcd(list(st.control_planes.values()), timeout)
        first, *others = st.control_planes.values()
        self.start_cp_server(first.name, timeout=timeout)
        for cp in others:
            self.start_cp_server(cp.name, wait=False)
        for cp in others:
            self.wait_cp_server(cp, timeout)

    def etcd_argv(self, cp: ControlPlaneState) -> list[str]:
        st = self.load()
        initial = ",".join(f"{o.etcd_name}={o.etcd_peer_url}" for o in st.control_planes.values())
        pki = self.etcd_pki
        return [shutil.which("etcd") or "/usr/bin/etcd", "--name", cp.etcd_name, "--data-dir", cp.etcd_dir,
                "--listen-client-urls", f"{cp.etcd_url},https://127.0.0.1:{ETCD_CLIENT_PORT}",
                "--advertise-client-urls", cp.etcd_url,
                "--listen-peer-urls", cp.etcd_peer_url, "--initial-advertise-peer-urls", cp.etcd_peer_url,
                "--initial-cluster", initial, "--initial-cluster-token", f"kubeling-{st.name}",
                "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr",
                # TLS with client certificates, clients and peers (the bridge is reachable from pods)
                "--cert-file", str(pki / f"{cp.etcd_name}.crt"), "--key-file", str(pki / f"{cp.etcd_name}.key"),
                "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
                "--peer-cert-file", str(pki / f"{cp.etcd_name}.crt"),
                "--peer-key-file", str(pki / f"{cp.etcd_name}.key"),
                "--peer-trusted-ca-file", str(pki / "ca.crt"), "--peer-client-cert-auth"]

    def start_etcd(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        cp = self.control_plane(name)
        if alive(cp.etcd_pid, self.etcd_marker(cp)):
            return
        Path(cp.etcd_dir).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        cp.etcd_pid = self._spawn([*net.nsenter(cp.netns), *self.etcd_argv(cp)], cp.etcd_name)
        self.save()
        self.say(f"{cp.etcd_name}: pid {cp.etcd_pid} on {cp.etcd_url} in netns {cp.netns}")
        if wait:
            self.wait_etcd([cp], timeout)

    def etcd_healthy(self, cp: ControlPlaneState, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(cp.etcd_url + "/health", timeout=timeout, context=self._etcd_ssl()) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_etcd(self, cps: list[ControlPlaneState], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for cp in cps:
                if not self._running(cp.etcd_pid, self.etcd_marker(cp)):
                    raise ClusterError(f"{cp.etcd_name} exited" + self._log_tail(cp.etcd_name))
            pending = [cp.etcd_name for cp in cps if not self.etcd_healthy(cp)]
            if not pending:
                self.say(f"etcd healthy: {', '.join(cp.etcd_name for cp in cps)}")
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"etcd not healthy within {timeout:.0f}s: {', '.join(pending)}"
                                   + "".join(self._log_tail(n, 10) for n in pending))
            time.sleep(0.3)

    def stop_etcd(self, name: str, *, kill: bool = False) -> None:
        """SIGTERM (``kill``: SIGKILL, a crash) the member; its data stays."""
        cp = self.control_plane(name)
        if kill:
            _signal(cp.etcd_pid, self.etcd_marker(cp), signal.SIGKILL)
            while alive(cp.etcd_pid, self.etcd_marker(cp)):
                time.sleep(0.05)
        else:
            stop_process(cp.etcd_pid, self.etcd_marker(cp))
        cp.etcd_pid = 0
        self.save()
        self._reap()
        self.say(f"{cp.etcd_name}: {'killed' if kill else 'stopped'}")

    def cp_server_argv(self, cp: ControlPlaneState) -> list[str]:
        st = self.load()
        argv = [*_kubeling(), "server", "--data-dir", cp.data_dir, "--disable-agent",
                "--bind-address", st.bind_address or cp.ip, "--advertise-address", cp.ip,
                "--secure-port", str(st.secure_port), "--cluster-cidr", st.cluster_cidr,
                "--service-cluster-ip-range", st.service_cidr, "--datastore-endpoint", st.etcd_endpoints(),
                *self.etcd_client_args()]
        return [*argv, "--token", st.token, *st.server_args]

    def start_cp_server(self, name: str, *, wait: bool = True, timeout: float = 180.0) -> None:
        cp = self.control_plane(name)
        if alive(cp.pid, self.cp_marker(cp)):
            return
        cp.pid = self._spawn([*net.nsenter(cp.netns), *self.cp_server_argv(cp)], cp.name)
        self.save()
        self.say(f"{cp.name}: pid {cp.pid} on https://{cp.ip}:{self.load().secure_port} in netns {cp.netns}")
        if wait:
            self.wait_cp_server(cp, timeout)

    def wait_cp_server(self, cp: ControlPlaneState, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running(cp.pid, self.cp_marker(cp)):
                raise ClusterError(f"{cp.name} exited during start-up" + self._log_tail(cp.name))
            if self.cp_kubeconfig(cp).exists():
                try:
                    if self.request("/readyz", server=cp)[0] == 200:
                        return
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.2)
        raise ClusterError(f"{cp.name} was not ready within {timeout:.0f}s" + self._log_tail(cp.name))

    def stop_cp_server(self, name: str, *, kill: bool = False) -> None:
        """SIGTERM the server (it stops its children), or with ``kill`` SIGKILL it and its children
        at once (a crash of the control-plane host); anything of its process group left is killed."""
        cp = self.control_plane(name)
        group = _group(cp.pid, self.cp_marker(cp))
        if kill:
            _signal(cp.pid, self.cp_marker(cp), signal.SIGKILL)
        else:
            stop_process(cp.pid, self.cp_marker(cp))
        _kill_all(group)
        cp.pid = 0
        self.save()
        self._reap()
        self.say(f"{cp.name}: {'killed' if kill else 'stopped'}")

    def cp_routes_marker(self, cp: ControlPlaneState) -> str:
        return f"routes --control-plane {cp.name} --data-dir {self.dir} "

    def start_cp_routes(self, cp: ControlPlaneState) -> None:
        """``kubeling cluster routes`` in the control plane's netns: its server reaches the pods."""
        if alive(cp.routes_pid, self.cp_routes_marker(cp)):
            return
        cp.routes_pid = self._spawn([*net.nsenter(cp.netns), *_kubeling(), "cluster", "routes", "--control-plane",
                                     cp.name, "--data-dir", str(self.dir)], f"routes-{cp.name}")
        self.save()
        self.say(f"pod routes in {cp.netns}: pid {cp.routes_pid}")

    def _remove_control_planes(self) -> None:
        """Every control plane's processes (at once: routes, servers, members), veth and netns."""
        st = self.load()
        cps = list(st.control_planes.values())
        groups = [g for cp in cps for g in _group(cp.pid, self.cp_marker(cp))]
        stop_processes([(cp.routes_pid, self.cp_routes_marker(cp)) for cp in cps])
        stop_processes([(cp.pid, self.cp_marker(cp)) for cp in cps])
        _kill_all(groups)
        stop_processes([(cp.etcd_pid, self.etcd_marker(cp)) for cp in cps])
        for cp in cps:
            cp.routes_pid = cp.pid = cp.etcd_pid = 0
            net.delete_link(cp.veth)
            net.delete_netns(cp.netns)
            self.say(f"{cp.name}, {cp.etcd_name}: removed")
        self._reap()

    # -- nodes ---------------------------------------------------------------------------------

    def _new_node(self, name: str) -> NodeState:
        st = self.load()
        subnet = ipaddress.ip_network(st.subnet)
        taken = {str(next(subnet.hosts())), st.server_ip, *(n.ip for n in st.nodes.values()),   # the bridge's, ...
                 *(cp.ip for cp in st.control_planes.values())}
        ip = next((str(h) for h in subnet.hosts() if str(h) not in taken), None)
        if ip is None:
            raise ClusterError(f"no address left in {subnet} for node {name}")
        return NodeState(name=name, ip=ip, netns=net.netns_name(st.name, name), veth=net.veth_name(st.name, name),
                         data_dir=str(self.dir / "nodes" / name), cgroup_root=f"kubeling-{st.name}-{name}")

    def add_node(self, name: str, *, wait: bool = True, timeout: float = 180.0,
                 agent_args: list[str] | None = None) -> NodeState:
        """One more node; ``agent_args`` are its own extra agent flags (after the cluster's and
        any ``node_agent_args`` given to `up` for this name)."""
        st = self.load()
        if name in st.nodes:
            raise ClusterError(f"node {name} already exists")
        if any(name in (cp.name, cp.etcd_name) for cp in st.control_planes.values()):
            raise ClusterError(f"{name} is a control plane's name")
        node = self._new_node(name)
        node.agent_args = [*st.node_agent_args.get(name, []), *(agent_args or [])]
        st.nodes[name] = node
        self.save()
        prefix = ipaddress.ip_network(st.subnet).prefixlen
        net.create_node_netns(node.netns, node.veth, st.bridge, ipaddress.ip_interface(f"{node.ip}/{prefix}"),
                              unreachable=(st.cluster_cidr, st.service_cidr))
        self.start_node(name, wait=wait, timeout=timeout)
        return node

    def node(self, name: str) -> NodeState:
        st = self.load()
        if name not in st.nodes:
            raise ClusterError(f"no node {name} in this cluster (nodes: {', '.join(st.nodes) or 'none'})")
        return st.nodes[name]

    def start_node(self, name: str, *, wait: bool = True, timeout: float = 180.0) -> None:
        st, node = self.load(), self.node(name)
        if alive(node.pid, self.node_marker(node)):
            return
        argv = [*net.nsenter(node.netns), *_kubeling(), "agent", "--server", self.agent_server(),
                "--token-file", str(self.token_file), "--data-dir", node.data_dir, "--node-name", name,
                "--node-ip", node.ip, "--kubelet-port", str(node.kubelet_port), "--cgroup-root", node.cgroup_root,
                "--cluster-cidr", st.cluster_cidr, "--service-cidr", st.service_cidr]
        if st.registry_config:
            argv += ["--registry-config", st.registry_config]
        argv += ["--flannel-backend", st.flannel_backend]
        node.pid = self._spawn([*argv, *st.agent_args, *node.agent_args], name)
        self.save()
        self.say(f"node {name}: agent pid {node.pid} in netns {node.netns} ({node.ip})")
        if wait and not node.isolated:
            self.wait_ready([name], timeout)

    def stop_node(self, name: str) -> None:
        """A node failure: SIGKILL the agent, its shims and its containers at once."""
        from kubeling.kubelet.runtime import cgroups
        from kubeling.kubelet.runtime.cleanup import shim_pids
        node = self.node(name)
        _signal(node.pid, self.node_marker(node), signal.SIGKILL)
        root = Path(node.data_dir) / "agent"
        for pid in shim_pids(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cgroups.kill_all(cgroups.join(node.cgroup_root), signal.SIGKILL)
        while alive(node.pid, self.node_marker(node)):
            time.sleep(0.05)
        node.pid = 0
        self.save()
        self._reap()
        self.say(f"node {name}: agent and containers killed")

    def isolate(self, name: str, cut: bool = True) -> None:
        node = self.node(name)
        net.set_link(node.veth, up=not cut)
        node.isolated = cut
        self.save()
        self.say(f"node {name}: link {'cut' if cut else 'restored'}")

    # -- readiness and the API -----------------------------------------------------------------

    def agent_server(self) -> str:
        """The ``--server`` an agent joins: the server, or in the etcd layout every server, those
        running first (the agent's load balancer keeps the list current from the ``kubernetes``
        endpoints)."""
        st = self.load()
        if not st.ha:
            return st.server_url
        cps = sorted(st.control_planes.values(), key=lambda cp: not alive(cp.pid, self.cp_marker(cp)))
        return ",".join(f"https://{cp.ip}:{st.secure_port}" for cp in cps)

    def _ssl(self, data_dir: Path | None = None) -> ssl.SSLContext:
        pki = (data_dir or self.server_dir) / "pki"     # the admin's identity, as in admin.kubeconfig
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def request(self, path: str, timeout: float = 5.0, method: str = "GET",
                server: ControlPlaneState | None = None) -> tuple[int, bytes]:
        """One request as the admin: to ``server``, or to the server (etcd layout: to the first
        control plane whose server runs and answers)."""
        st = self.load()
        if server is None and st.ha:
            up = [cp for cp in st.control_planes.values() if alive(cp.pid, self.cp_marker(cp))]
            for cp in up[:-1]:
                try:
                    return self.request(path, timeout, method, server=cp)
                except OSError:
                    continue
            server = up[-1] if up else next(iter(st.control_planes.values()))
        url = f"https://{server.ip}:{st.secure_port}" if server else st.server_url
        req = urllib.request.Request(url + path, method=method)
        try:
            with urllib.request.urlopen(req, context=self._ssl(Path(server.data_dir) if server else None),
                                        timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def node_conditions(self) -> dict[str, str]:
        """Node name -> the status of its Ready condition ("True", "False", "Unknown")."""
        status, body = self.request("/api/v1/nodes")
        if status != 200:
            return {}
        out = {}
        for item in json.loads(body).get("items") or []:
            ready = [c for c in (item.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
            out[item["metadata"]["name"]] = ready[0].get("status", "Unknown") if ready else "Unknown"
        return out

    def wait_ready(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while True:
            for name in names:
                node = self.node(name)
                if not self._running(node.pid, self.node_marker(node)):
                    raise ClusterError(f"the agent of node {name} exited" + self._log_tail(name))
            try:
                ready = self.node_conditions()
            except (OSError, ValueError):
                ready = {}
            pending = [n for n in names if ready.get(n) != "True"]
            if not pending:
                self.say(f"ready: {', '.join(names)}")
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"not Ready within {timeout:.0f}s: {', '.join(pending)}"
                                   + "".join(self._log_tail(n, 10) for n in pending))
            time.sleep(0.5)

    # -- down ----------------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything `up` made; idempotent, and goes on past one failed step."""
        if not self.state_path.exists():
            self.say(f"no cluster in {self.dir}")
            return
        st = self.load()
        errors: list[str] = []
        for node in list(st.nodes.values()):
            try:
                self._remove(node)
            except ClusterError as e:
                errors.append(str(e))
        self.stop_routes()
        stop_process(st.server_pid, self.server_marker())
        st.server_pid = 0
        self._remove_control_planes()
        net.delete_link(st.bridge)
        self._reap()
        if errors:
            self.save()
            raise ClusterError("; ".join(errors))
        self.state_path.unlink()
        self.say(f"cluster {st.name} removed (data kept in {self.dir})")

    def _remove(self, node: NodeState) -> None:
        """The node's agent, containers, mounts, cgroups, veth and netns (`kubeling node cleanup`
        runs in the node's netns, where its pod bridge is)."""
        st = self.load()
        stop_process(node.pid, self.node_marker(node))
        node.pid = 0
        if net.netns_exists(node.netns):
            done = subprocess.run([*net.nsenter(node.netns), *_kubeling(), "node", "cleanup",
                                   "--data-dir", node.data_dir, "--cgroup-root", node.cgroup_root,
                                   "--cluster-cidr", st.cluster_cidr, "--service-cidr", st.service_cidr],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.save()
                raise ClusterError(f"node cleanup of {node.name}: {done.stderr.strip()[-500:]}")
            from kubeling.kubelet.network.overlay import DEVICE as OVERLAY_DEVICE
            left = net.ip("-o", "link", "show", "dev", OVERLAY_DEVICE, netns=node.netns, check=False)
            if left.returncode == 0:
                self.save()
                raise ClusterError(f"node cleanup of {node.name} left {OVERLAY_DEVICE}: {left.stdout.strip()}")
        net.delete_link(node.veth)
        net.delete_netns(node.netns)
        self.say(f"node {node.name}: removed")

    def remove_node(self, name: str) -> None:
        """Take a node out for good: `_remove`, then its Node object (as `kubectl delete node`)."""
        node = self.node(name)
        self._remove(node)
        del self.load().nodes[name]
        self.save()
        status, body = self.request(f"/api/v1/nodes/{name}", method="DELETE")
        if status not in (200, 404):
            raise ClusterError(f"deleting Node {name}: {status} {body[:300].decode(errors='replace')}")

    # -- status --------------------------------------------------------------------------------

    def status_rows(self) -> list[tuple[str, ...]]:
        st = self.load()
        try:
            ready = self.node_conditions()
        except (OSError, ValueError):
            ready = {}
        rows = [] if st.ha else [("server", st.server_url, str(st.server_pid)
                                  if alive(st.server_pid, self.server_marker()) else "-", "", "")]
        for cp in st.control_planes.values():
            link = "up" if net.link_is_up(cp.veth) else "down"
            running = alive(cp.pid, self.cp_marker(cp))
            answer = "-"
            if running:
                try:
                    answer = "True" if self.request("/readyz", timeout=3, server=cp)[0] == 200 else "False"
                except (OSError, ValueError):
                    answer = "False"
            rows.append((cp.name, f"https://{cp.ip}:{st.secure_port}", str(cp.pid) if running else "-", answer, link))
            running = alive(cp.etcd_pid, self.etcd_marker(cp))
            healthy = ("True" if self.etcd_healthy(cp) else "False") if running else "-"
            rows.append((cp.etcd_name, cp.etcd_url, str(cp.etcd_pid) if running else "-", healthy, link))
        rows.append(("routes", st.subnet, str(st.routes_pid) if alive(st.routes_pid, self.routes_marker()) else "-",
                     "", ""))
        for node in st.nodes.values():
            running = alive(node.pid, self.node_marker(node))
            link = "cut" if node.isolated else ("up" if net.link_is_up(node.veth) else "down")
            rows.append((node.name, node.ip, str(node.pid) if running else "-", ready.get(node.name, "-"), link))
        return rows
