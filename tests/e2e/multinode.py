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

`destroy()` runs ``kubeling cluster down``, stops the registry, deletes the outer namespace and
then checks that nothing leaked (node namespaces, mounts, processes, cgroups), raising
`AssertionError` naming what is left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import harness
from nodes import Netns

from kubeling.cluster import Cluster as ClusterDir
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
                 flannel_backend: str = "vxlan", startup_timeout: float = 240.0) -> None:
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
        self.registry: _BridgeRegistry | None = None
        self._registry_cm = None
        super().__init__(data_dir, startup_timeout=startup_timeout)
        self.cluster_dir = self.data_dir / "cluster"
        self.log_path = self.cluster_dir / "logs" / "server.log"
        self.up = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.netns.ns_ip}:{self.port}"

    @property
    def running(self) -> bool:
        if not self.up:
            return False
        st = ClusterDir(self.cluster_dir).load()
        from kubeling.cluster.cluster import alive
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
                "--name", self.name, "--subnet", SUBNET, "--bind-address", "0.0.0.0",
                "--secure-port", str(self.port), "--registry-config", str(registries),
                "--agent-arg=--disable-default-registry-endpoint", "--timeout", str(self.startup_timeout)]
        argv += [f"--kube-controller-manager-arg={a}" for a in self.controller_manager_args]
        argv += [f"--server-arg={a}" for a in self.server_args]
        argv += [f"--agent-arg={a}" for a in self.agent_args]
        argv += [f"--node-agent-arg={n}={a}" for n, flags in self.node_agent_args.items() for a in flags]
        argv += ["--flannel-backend", self.flannel_backend]
        self.up = True     # from here on, destroy() has something to take down
        done = self.kubeling(*argv, check=False, timeout=self.startup_timeout + 60)
        if done.returncode != 0:
            raise harness.ServerNotReady(f"kubeling cluster up failed ({done.returncode}):\n{done.stderr}")
        assert done.stdout.strip() == f"export KUBECONFIG={self.cluster_dir / 'server' / 'admin.kubeconfig'}"
        self._write_host_kubeconfig()
        return self

    def _write_host_kubeconfig(self) -> None:
        cfg = yaml.safe_load((self.cluster_dir / "server" / "admin.kubeconfig").read_text())
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

    def destroy(self) -> None:
        """``kubeling cluster down``, then the registry and the outer namespace; then check leaks."""
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
        return {"netns": netns, "mounts": mounts, "processes": procs, "cgroups": cgroups}

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


def running_and_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def namespace_name(test_name: str, suffix: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{base}-{suffix}"
