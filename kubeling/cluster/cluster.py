"""`Cluster`: a server and N agents on one machine, each agent in its own network namespace
(``kubeling cluster ...``, in the spirit of kind and k3s; the e2e harness drives the same code).

Layout of the data directory ``DIR``::

    DIR/cluster.json        the state file (`ClusterState`): subnet, addresses, PIDs, nodes
    DIR/server/             the server's data dir (state.db, pki/, admin.kubeconfig,
                            server/node-token)
    DIR/nodes/<name>/       each agent's data dir (agent/: images, runc root, pods, logs)
    DIR/logs/<proc>.log     server.log, <node>.log

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

Pod routes: the server runs in the caller's namespace without an agent, so it has no pod
network; ``kubeling cluster routes`` (a process beside it, recorded as ``routes_pid``) keeps a
route to every Node's podCIDR via that node's IP on the bridge, from the Node objects
(`kubeling.kubelet.network.overlay`, routes-only mode). The API server so reaches pods
(services/pods proxy, webhooks), and pods' answers to it find their way back.

Processes are detached (their own session) and are only ever signalled by the PID recorded
here, after checking that ``/proc/<pid>/cmdline`` is still theirs (names their data dir), so a
recycled PID is never hit. Each agent has its own cgroup root ``kubeling-<cluster>-<node>`` and
listens on port 10250 of its own namespace. Blocking code: CLI commands and harnesses only.
"""

from __future__ import annotations

import ipaddress
import json
import os
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

    @property
    def server_url(self) -> str:
        return f"https://{self.server_ip}:{self.secure_port}"

    @classmethod
    def from_json(cls, doc: dict) -> ClusterState:
        nodes = {n: NodeState(**v) for n, v in (doc.pop("nodes", None) or {}).items()}
        return cls(**doc, nodes=nodes)


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
    if not _signal(pid, marker, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(pid, marker, signal.SIGKILL)
    while alive(pid, marker):
        time.sleep(0.05)


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
        return f"--data-dir {self.server_dir} "

    def node_marker(self, node: NodeState) -> str:
        return f"--data-dir {node.data_dir} "

    # -- up ------------------------------------------------------------------------------------

    def up(self, nodes: int, *, name: str = "kubeling", subnet: str = "", bind_address: str = "",
           secure_port: int = 6443, registry_config: str = "", server_args: list[str] | None = None,
           agent_args: list[str] | None = None, node_agent_args: dict[str, list[str]] | None = None,
           flannel_backend: str = "vxlan", timeout: float = 180.0) -> None:
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
        self.save()
        net.create_bridge(self.state.bridge, ipaddress.ip_interface(f"{hosts[0]}/{picked.prefixlen}"))
        self.say(f"bridge {self.state.bridge} {hosts[0]}/{picked.prefixlen}")
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
        if alive(st.routes_pid, self.routes_marker()):
            return
        st.routes_pid = self._spawn([*_kubeling(), "cluster", "routes", "--data-dir", str(self.dir)], "routes")
        self.save()
        self.say(f"pod routes: pid {st.routes_pid}")

    def stop_routes(self) -> None:
        from kubeling.kubelet.network.overlay import cleanup_routes
        st = self.load()
        stop_process(st.routes_pid, self.routes_marker())
        st.routes_pid = 0
        cleanup_routes(via=st.subnet)

    # -- nodes ---------------------------------------------------------------------------------

    def _new_node(self, name: str) -> NodeState:
        st = self.load()
        subnet = ipaddress.ip_network(st.subnet)
        taken = {st.server_ip, *(n.ip for n in st.nodes.values())}
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
        argv = [*net.nsenter(node.netns), *_kubeling(), "agent", "--server", st.server_url,
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

    def _ssl(self) -> ssl.SSLContext:
        pki = self.server_dir / "pki"     # the admin's identity, as in admin.kubeconfig
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def request(self, path: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
        st = self.load()
        req = urllib.request.Request(st.server_url + path, method=method)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as r:
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
        rows = [("server", st.server_url, str(st.server_pid) if alive(st.server_pid, self.server_marker())
                 else "-", "", "")]
        rows.append(("routes", st.subnet, str(st.routes_pid) if alive(st.routes_pid, self.routes_marker()) else "-",
                     "", ""))
        for node in st.nodes.values():
            running = alive(node.pid, self.node_marker(node))
            link = "cut" if node.isolated else ("up" if net.link_is_up(node.veth) else "down")
            rows.append((node.name, node.ip, str(node.pid) if running else "-", ready.get(node.name, "-"), link))
        return rows
