"""Multi-node clusters for e2e tests: ``kubeling cluster up`` run inside a namespace of the test's.

`MultiNodeCluster` is a `harness.Cluster` whose server and agents are made by the product's own
``kubeling cluster`` command (`kubeling.cluster`), run with ``nsenter --net`` inside an outer
`nodes.Netns`. So the bridge, the node namespaces and every pod live in namespaces the test
made, and the host reaches the API server over the outer namespace's veth::

    host ── veth (10.201.x.x/30) ── outer netns: bridge 10.44.0.1/24, API server, registry
                                         ├── veth ── node-1 netns (agent, pods)
                                         ├── veth ── node-2 netns
                                         └── veth ── node-3 netns

The seeded registry (`tests.support.registry`) listens in the outer namespace, on every address
there, so each node pulls from ``http://10.44.0.1:<port>`` (``docker.io``, ``k8s.gcr.io`` and
``registry.k8s.io`` mirrors). The server's certificate names the bridge address, not the outer
veth's, so the host's kubeconfig sets ``tls-server-name`` to the bridge address.

With ``datastore="etcd"`` (``control_planes=N``) the cluster is ``kubeling cluster up
--control-planes N --datastore etcd``: each server and its etcd member live in a control-plane
namespace on the bridge (10.44.0.2, .3, ...), reachable from the outer namespace only. So clients
run there: `kubectl`, `helm` and `request` enter the outer namespace, with server-1's own admin
kubeconfig; `server_kubectl` talks to one server, `etcdctl` runs inside a control plane's
namespace, `in_netns` runs any command in a namespace of the cluster. `python_client` is not
available in this mode (the host does not reach the bridge).

`destroy()` runs ``kubeling cluster down``, stops the registry, deletes the outer namespace and
then checks that nothing leaked (node and control-plane namespaces, mounts, processes — agents,
servers, etcd members, routes helpers —, cgroups, links), raising `AssertionError` naming what is
left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import harness
from nodes import Netns

from kubeling.cluster import Cluster as ClusterDir
from kubeling.cluster import netns as cluster_net
from tests.support.registry import Registry, build_images

SUBNET = "10.44.0.0/24"      # the outer namespace is new and empty: the first /24 of the pool is free
BRIDGE_IP = "10.44.0.1"
_counter = [0]


class _BridgeRegistry(Registry):
    """The seeded registry, listening on every address of the outer namespace (the bridge's too)."""

    @property
    def host(self) -> str:
        return f"0.0.0.0:{self.port}"

    @property
    def bridge_url(self) -> str:
        return f"http://{BRIDGE_IP}:{self.port}"


class MultiNodeCluster(harness.Cluster):
    """A server and ``nodes`` agents made by ``kubeling cluster up`` (see the module docstring)."""

    def __init__(self, data_dir: Path | str, *, images_dir: Path, nodes: int = 3,
                 controller_manager_args: tuple[str, ...] = (), server_args: tuple[str, ...] = (),
                 agent_args: tuple[str, ...] = (), node_agent_args: dict[str, tuple[str, ...]] | None = None,
                 flannel_backend: str = "vxlan", control_planes: int = 1, datastore: str = "sqlite",
                 startup_timeout: float = 240.0) -> None:
        _counter[0] += 1
        self.netns = Netns()
        self.name = f"kt{os.getpid() % 100000}x{_counter[0]}"
        self.nodes = nodes
        self.images_dir = images_dir
        self.controller_manager_args = controller_manager_args
        self.server_args = server_args
        self.agent_args = agent_args                  # every agent (`--agent-arg`)
        self.node_agent_args = node_agent_args or {}  # node name -> its own flags (`--node-agent-arg`)
        self.flannel_backend = flannel_backend
        self.control_planes = control_planes
        self.registry: _BridgeRegistry | None = None
        self._registry_cm = None
        super().__init__(data_dir, startup_timeout=startup_timeout)
        # after harness.Cluster's __init__, which sets its own (from KUBELING_TEST_DATASTORE): this
        # cluster's datastore is the one given here, made by `kubeling cluster up`, not the harness's
        self.datastore = datastore
        self.cluster_dir = self.data_dir / "cluster"
        self.log_path = self.cluster_dir / "logs" / ("server-1.log" if self.ha else "server.log")
        self.up = False

    @property
    def ha(self) -> bool:
        """The control-plane namespaces layout (``--datastore etcd``): see the module docstring."""
        return self.datastore == "etcd"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.ha:    # server-1's, reachable from the outer namespace
            return ClusterDir(self.cluster_dir).load().server_url
        return f"https://{self.netns.ns_ip}:{self.port}"

    @property
    def running(self) -> bool:
        if not self.up:
            return False
        st = ClusterDir(self.cluster_dir).load()
        from kubeling.cluster.cluster import alive
        if st.ha:
            return any(alive(cp.pid, f"--data-dir {cp.data_dir} ") for cp in st.control_planes.values())
        return alive(st.server_pid, f"--data-dir {self.cluster_dir / 'server'} ")

    def start(self) -> MultiNodeCluster:
        if self.up:
            return self
        self.netns.create()
        self._registry_cm = _BridgeRegistry.start(self.data_dir / "registry", netns=self.netns.name)
        self.registry = self._registry_cm.__enter__()
        self.registry.seed(build_images(self.images_dir))
        mirrors = {h: {"endpoint": [self.registry.bridge_url]} for h in ("docker.io", "k8s.gcr.io", "registry.k8s.io")}
        registries = self.data_dir / "registries.yaml"
        registries.write_text(yaml.safe_dump({"mirrors": mirrors}))
        argv = ["cluster", "up", "--nodes", str(self.nodes), "--data-dir", str(self.cluster_dir),
                "--name", self.name, "--subnet", SUBNET,
                "--secure-port", str(self.port), "--registry-config", str(registries),
                "--agent-arg=--disable-default-registry-endpoint", "--timeout", str(self.startup_timeout)]
        if self.ha:
            argv += ["--control-planes", str(self.control_planes), "--datastore", self.datastore]
        else:
            argv += ["--bind-address", "0.0.0.0"]
        argv += [f"--kube-controller-manager-arg={a}" for a in self.controller_manager_args]
        argv += [f"--server-arg={a}" for a in self.server_args]
        argv += [f"--agent-arg={a}" for a in self.agent_args]
        argv += [f"--node-agent-arg={n}={a}" for n, flags in self.node_agent_args.items() for a in flags]
        argv += ["--flannel-backend", self.flannel_backend]
        self.up = True     # from here on, destroy() has something to take down
        done = self.kubeling(*argv, check=False, timeout=self.startup_timeout + 60)
        if done.returncode != 0:
            raise harness.ServerNotReady(f"kubeling cluster up failed ({done.returncode}):\n{done.stderr}")
        assert done.stdout.strip() == f"export KUBECONFIG={self.admin_kubeconfig()}"
        self._write_host_kubeconfig()
        return self

    def admin_kubeconfig(self, server: str = "") -> Path:
        """The admin kubeconfig a server wrote: the cluster's (server-1's in the etcd layout), or
        that of ``server`` (server-<i>)."""
        return self.cluster_dir / (server or ("server-1" if self.ha else "server")) / "admin.kubeconfig"

    def _write_host_kubeconfig(self) -> None:
        if self.ha:    # clients run in the outer namespace: server-1's own kubeconfig as it is
            self.kubeconfig.write_text(self.admin_kubeconfig().read_text())
            self.kubeconfig.chmod(0o600)
            return
        cfg = yaml.safe_load(self.admin_kubeconfig().read_text())
        for c in cfg["clusters"]:
            c["cluster"]["server"] = self.url
            c["cluster"]["tls-server-name"] = BRIDGE_IP
        self.kubeconfig.write_text(yaml.safe_dump(cfg))
        self.kubeconfig.chmod(0o600)

    def ssl_context(self):
        ctx = super().ssl_context()
        ctx.check_hostname = False   # the chain is still verified; the name is the bridge's (see above)
        return ctx

    def stop(self, timeout: float = 20.0) -> int | None:
        return None   # the cluster's processes are `kubeling cluster`'s: `destroy` takes them down

    # -- clients in the outer namespace (etcd layout) -------------------------------------------

    def _run(self, argv, input, check, env, timeout, cwd):
        return super()._run([*self.netns.prefix(), *argv] if self.ha else argv, input, check, env, timeout, cwd)

    def kubectl_stream(self, *args: str, version: str = "1.33") -> harness.Stream:
        if not self.ha:
            return super().kubectl_stream(*args, version=version)
        argv = [*self.netns.prefix(), harness.kubectl_binary(version), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return harness.Stream(argv, self._env(None))

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 30, server: str = "") -> tuple[int, bytes]:
        """`harness.Cluster.request`; in the etcd layout made from the outer namespace, to server-1
        or to ``server``."""
        if not self.ha:
            return super().request(method, path, body, headers, timeout)
        job = {"kubeconfig": str(self.admin_kubeconfig(server)), "method": method, "path": path,
               "body": base64.b64encode(body or b"").decode(), "headers": headers or {}, "timeout": timeout,
               "pem": str(self.data_dir / "harness-pem")}
        done = subprocess.run([*self.netns.prefix(), sys.executable, "-c", _REQUEST], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout + 30, check=False)
        if done.returncode != 0:
            raise OSError(f"request {method} {path}: {done.stderr.strip()[-500:]}")
        out = json.loads(done.stdout)
        return out["status"], base64.b64decode(out["body"])

    def python_client(self):
        if self.ha:
            raise NotImplementedError("the etcd layout's servers are reachable from the outer namespace only")
        return super().python_client()

    def server_kubectl(self, server: str, *args: str, check: bool = True, timeout: float = 60,
                       input: str | None = None) -> subprocess.CompletedProcess:
        """kubectl through one server (server-<i>), with the admin kubeconfig it wrote itself."""
        argv = [harness.kubectl_binary("1.33"), f"--kubeconfig={self.admin_kubeconfig(server)}", *map(str, args)]
        return self._run(argv, input, check, None, timeout, None)

    def in_netns(self, netns: str, *argv: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess:
        """``argv`` in one of the cluster's namespaces (a node's or a control plane's)."""
        proc = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *argv], capture_output=True, text=True,
                              timeout=timeout, check=False, input=input)
        if check and proc.returncode != 0:
            raise harness.CommandFailed(proc)
        return proc

    def etcdctl(self, server: str, *args: str, endpoints: str = "", check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        """``etcdctl`` (API v3) inside control plane ``server``'s namespace, against every member (or
        ``endpoints``), with the etcd layout's client certificate."""
        st = self.state()
        cp = st.control_planes[server]
        pki = self.cluster_dir / "etcd" / "pki"
        return self.in_netns(cp.netns, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints",
                             endpoints or st.etcd_endpoints(), "--cacert", str(pki / "ca.crt"),
                             "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"),
                             "--dial-timeout", "3s", "--command-timeout", "10s", *args, check=check, timeout=timeout)

    def destroy(self) -> None:
        """``kubeling cluster down``, then the registry and the outer namespace; then check leaks."""
        if self.up and self.ha:
            self._links = self._link_names()
        try:
            if self.up and self.netns.created:
                done = self.kubeling("cluster", "down", "--data-dir", str(self.cluster_dir), check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"kubeling cluster down failed: {done.stdout}{done.stderr}")
        finally:
            self.up = False
            if self._registry_cm is not None:
                self._registry_cm.__exit__(None, None, None)
                self._registry_cm = None
            self.netns.delete()
        left = self.leaks()
        assert not any(left.values()), f"cluster {self.name} left {left}"

    def leaks(self) -> dict[str, list[str]]:
        """What of this cluster still exists: node namespaces, mounts, processes, cgroups."""
        prefix = f"{self.name}-"
        netns = [n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                      check=False).stdout.splitlines() if n.startswith(prefix)]
        where = str(self.cluster_dir)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(where)]
        procs = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if where in cmd:
                    procs.append(f"{entry}: {cmd[:120]}")
        cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/kubeling-{self.name}-*")]
        # the bridge and veths live in the outer namespace (gone with it); none may be in the host's
        links = [n for n in getattr(self, "_links", []) if cluster_net.link_exists(n)]
        return {"netns": netns, "mounts": mounts, "processes": procs, "cgroups": cgroups, "links": links}

    def _link_names(self) -> list[str]:
        try:
            st = self.state()
        except Exception:
            return []
        return [st.bridge, *(n.veth for n in st.nodes.values()), *(cp.veth for cp in st.control_planes.values())]

    # -- commands ------------------------------------------------------------------------------

    def kubeling(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """``kubeling <args>`` inside the outer namespace, where ``kubeling cluster`` made it all."""
        proc = subprocess.run([*self.netns.prefix(), *harness._server_command(), *args], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise harness.CommandFailed(proc)
        return proc

    def cluster(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """``kubeling cluster <args> --data-dir <this cluster>``."""
        return self.kubeling("cluster", *args, "--data-dir", str(self.cluster_dir), check=check, timeout=timeout)

    def state(self):
        """The cluster's state file (`kubeling.cluster.ClusterState`), read afresh."""
        return ClusterDir(self.cluster_dir).load()

    def node_names(self) -> list[str]:
        return list(self.state().nodes)

    def node_ready(self) -> dict[str, str]:
        """Node name -> Ready condition status, as the API server has it."""
        out = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
        return {n["metadata"]["name"]: next((c["status"] for c in n["status"].get("conditions") or []
                                             if c["type"] == "Ready"), "Unknown") for n in out["items"]}

    def wait_nodes_ready(self, names: list[str] | None = None, timeout: float = 120) -> None:
        names = names or self.node_names()
        harness.eventually(lambda: all(self.node_ready().get(n) == "True" for n in names), timeout=timeout,
                           interval=0.5, what=f"nodes {', '.join(names)} Ready")

    def wait_pods(self, namespace: str, selector: str, predicate, timeout: float = 120, what: str = "") -> list:
        """Poll the pods matching ``selector`` until ``predicate(pods)``; the pods."""
        found: list = []

        def check():
            found[:] = json.loads(self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json"
                                               ).stdout)["items"]
            return predicate(found)
        harness.eventually(check, timeout=timeout, interval=0.5, what=what or f"pods {selector} in {namespace}")
        return list(found)


_REQUEST = """
import base64, json, pathlib, ssl, sys, urllib.error, urllib.request
import yaml
job = json.load(sys.stdin)
cfg = yaml.safe_load(open(job["kubeconfig"]))
cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
pem = pathlib.Path(job["pem"]); pem.mkdir(exist_ok=True)
(pem / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
(pem / "c.key").write_bytes(base64.b64decode(user["client-key-data"])); (pem / "c.key").chmod(0o600)
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
ctx.load_cert_chain(str(pem / "c.crt"), str(pem / "c.key"))
req = urllib.request.Request(cluster["server"] + job["path"], method=job["method"], headers=job["headers"],
                             data=base64.b64decode(job["body"]) or None)
try:
    with urllib.request.urlopen(req, context=ctx, timeout=job["timeout"]) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(json.dumps({"status": status, "body": base64.b64encode(body).decode()}))
"""


@contextlib.contextmanager
def running(directory: Path, **kwargs) -> Iterator[MultiNodeCluster]:
    """A started `MultiNodeCluster` (the keyword arguments are its own), destroyed on leaving. A
    cluster that does not come up fails the test with the reason, not a traceback."""
    import pytest

    c = MultiNodeCluster(directory, **kwargs)
    try:
        try:
            c.start()
        except (harness.ServerNotReady, harness.CommandFailed) as e:
            pytest.fail(str(e), pytrace=False)
        yield c
    finally:
        c.destroy()


def running_and_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def namespace_name(test_name: str, suffix: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{base}-{suffix}"
