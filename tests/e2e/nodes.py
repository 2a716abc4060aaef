"""Clusters with a node agent, each in a network namespace of its own with no uplink.

A `NodeCluster` is a `harness.Cluster` whose server (and so its agent, the pods' bridge, veths
and pod namespaces) runs inside a `Netns` the harness makes. The host reaches the API server
over one veth pair (a /30 of 10.201.0.0/16); nothing in the namespace has a route anywhere else,
so no pod traffic can leave the machine. A local docker-registry runs in the same namespace on
its loopback, seeded with the images ``scripts/build-images.py`` builds from Debian binaries,
and ``registries.yaml`` points ``docker.io`` and ``k8s.gcr.io`` at it.

The server is started with ``nsenter --net`` (not ``ip netns exec``, which would also give it a
private mount namespace that the agent's overlay and netns mounts would vanish into).

`stop()` stops the server (containers outlive it, as with k3s), then runs ``kubeling node
cleanup`` in the namespace, and deletes the veth and the namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import harness  # noqa: E402
from tests.support.registry import Registry, build_images  # noqa: E402

NODE_NAME = "kl-node"
_counter = [0]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Netns:
    """A network namespace joined to the host by one veth pair; see the module docstring."""

    def __init__(self) -> None:
        _counter[0] += 1
        slot = (os.getpid() * 7 + _counter[0]) % 16000 + 1
        self.name = f"kltest-{os.getpid()}-{_counter[0]}"
        self.host_if = f"klh{os.getpid() % 100000}x{_counter[0]}"[:15]
        base = slot * 4
        self.host_ip = f"10.201.{base // 256}.{base % 256 + 1}"
        self.ns_ip = f"10.201.{base // 256}.{base % 256 + 2}"
        self.created = False

    def create(self) -> "Netns":
        _ip("netns", "add", self.name)
        self.created = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", "eth0")
        self.exec("ip", "link", "set", "eth0", "up")
        self.exec("ip", "link", "set", "lo", "up")
        return self

    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(), *argv], capture_output=True, text=True, check=check)

    def delete(self) -> None:
        if not self.created:
            return
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
        self.created = False


class NodeCluster(harness.Cluster):
    """A cluster with one agent, in its own `Netns`, with a seeded registry beside it."""

    def __init__(self, data_dir: Path | str, *, images_dir: Path, registry: bool = True, **kwargs) -> None:
        self.netns = Netns()
        # a cgroup of its own, so that cleaning this cluster up never touches another's pods
        self.cgroup_root = f"kubeling-{self.netns.name}"
        self.images_dir = images_dir
        self.with_registry = registry
        self.registry: Registry | None = None
        self._registry_cm = None
        super().__init__(data_dir, **kwargs)

    @property
    def url(self) -> str:
        return f"https://{self.netns.ns_ip}:{self.port}"

    def start(self) -> "NodeCluster":
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not self.netns.created:
            self.netns.create()
            if self.with_registry:
                self._registry_cm = Registry.start(self.data_dir / "registry", netns=self.netns.name)
                self.registry = self._registry_cm.__enter__()
                self.registry.seed(build_images(self.images_dir))
                self.write_registries({"docker.io": self.registry.url, "k8s.gcr.io": self.registry.url,
                                       "registry.k8s.io": self.registry.url})
        return super().start()

    def wait_node_ready(self, timeout: float = 60) -> None:
        harness.eventually(lambda: "True" in self.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False).stdout, timeout=timeout, what=f"node {NODE_NAME} Ready")

    def pod(self, namespace: str, name: str) -> dict:
        import json
        return json.loads(self.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)

    def wait_pod(self, namespace: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
        """Poll the pod until ``predicate(pod)`` is truthy; return the pod."""
        found: list[dict] = []

        def check():
            found[:] = [self.pod(namespace, name)]
            return predicate(found[0])
        harness.eventually(check, timeout=timeout, interval=0.3, what=what or f"pod {namespace}/{name}")
        return found[0]

    def write_registries(self, mirrors: dict[str, str], configs: dict | None = None) -> None:
        import yaml
        doc = {"mirrors": {host: {"endpoint": [url]} for host, url in mirrors.items()}}
        if configs:
            doc["configs"] = configs
        (self.data_dir / "registries.yaml").write_text(yaml.safe_dump(doc))

    def _server_argv(self) -> list[str]:
        return self.netns.prefix() + harness._server_command() + [
            "server", "--data-dir", str(self.data_dir), "--bind-address", "0.0.0.0",
            "--advertise-address", self.netns.ns_ip, "--node-name", NODE_NAME,
            "--disable-default-registry-endpoint", "--cgroup-root", self.cgroup_root,
            "--secure-port", str(self.port), *self.extra_args]

    def kubeling(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``kubeling <args>`` inside the cluster's namespace (images import, node cleanup)."""
        return self.netns.exec(*harness._server_command(), *args, check=check)

    def stop(self, timeout: float = 20.0) -> int | None:
        return super().stop(timeout)

    def destroy(self) -> None:
        """Stop everything and remove every trace: containers, netns, registry."""
        try:
            self.stop()
        finally:
            try:
                if self.netns.created:
                    done = self.kubeling("node", "cleanup", "--data-dir", str(self.data_dir),
                                         "--cgroup-root", self.cgroup_root, check=False)
                    if done.returncode != 0:
                        raise RuntimeError(f"kubeling node cleanup failed: {done.stdout}{done.stderr}")
            finally:
                if self._registry_cm is not None:
                    self._registry_cm.__exit__(None, None, None)
                    self._registry_cm = None
                self.netns.delete()


def json_of(text: str) -> dict:
    import json
    return json.loads(text)
