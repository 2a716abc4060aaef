"""`HollowRuntime`: the `RuntimeService` protocol in memory, with no processes (kubemark's fake
runtime, kwok's idea): pods go Running with realistic status, for scale tests and benchmarks.

What is real: the state diagram of the protocol (see ``runtime/__init__``), ids, timestamps,
sandbox IPs allocated from the node's podCIDR (freed when the sandbox stops), exit codes, and
the errors a kubelet can meet (`NotFound`, creating in a stopped sandbox, starting twice).
What is not: nothing runs, so a container stays RUNNING until it is stopped; ``exec_sync``
succeeds with empty output (probes pass); stats are small numbers that grow with time;
streaming calls (`exec`, `attach`, `port_forward`) raise `StreamingNotSupported`.

Stop semantics: a container stopped with a grace period "exits" on SIGTERM with code 0
(reason ``Completed``); with no grace period it is SIGKILLed: 137, ``Error``.

Contracts beyond the protocol's:
- State lives in this object only: a new ``HollowRuntime`` starts empty (the kubelet restarting
  with a hollow runtime sees no pods, as kubemark's does).
- Cheap: a few dicts and one dataclass per object; no tasks, threads or files. Hundreds of
  runtimes share one event loop; every coroutine returns without awaiting anything.
- ``pod_cidr_getter()`` is read at each ``run_pod_sandbox``: a node whose podCIDR arrives later
  starts to get pod IPs from then on; without one, sandboxes fail with `SandboxError`
  (upstream's "network is not ready").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import time
import zlib
from collections.abc import Callable

from kubeling.kubelet.runtime import (
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    CreateContainerError,
    NotFound,
    PodSandboxStatus,
    RunContainerError,
    RuntimeError_,
    SandboxConfig,
    SandboxError,
    SandboxState,
    StreamSession,
)

RUNTIME_NAME = "hollow"
RUNTIME_VERSION = "0.1.0"
# Plausible idle usage per container: a millicore of cpu, a few MiB of memory.
CPU_NANOS_PER_SECOND = 1_000_000
MIB = 1024 * 1024


class StreamingNotSupported(RuntimeError_):
    reason = "NotSupported"


def _new_id() -> str:
    return os.urandom(32).hex()


class _IPAM:
    """Host addresses of a CIDR, lowest free first; network, gateway (.1) and broadcast skipped."""

    __slots__ = ("cidr", "net", "used")

    def __init__(self) -> None:
        self.cidr = ""
        self.net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self.used: set[int] = set()

    def allocate(self, cidr: str) -> str:
        if cidr != self.cidr:
            self.cidr, self.net, self.used = cidr, ipaddress.ip_network(cidr, strict=False), set()
        net = self.net
        # Offsets 0 and 1 are the network and the bridge's gateway address, the last one broadcast.
        for offset in range(2, net.num_addresses - 1):
            if offset not in self.used:
                self.used.add(offset)
                return str(net.network_address + offset)
        raise SandboxError(f"failed to allocate an IP address: range {cidr} is exhausted")

    def release(self, ip: str) -> None:
        if ip and self.net is not None:
            addr = ipaddress.ip_address(ip)
            if addr in self.net:
                self.used.discard(int(addr) - int(self.net.network_address))


class HollowRuntime:
    """See the module docstring."""

    name = RUNTIME_NAME

    def __init__(self, pod_cidr_getter: Callable[[], str], *, clock: Callable[[], float] = time.time) -> None:
        self._pod_cidr = pod_cidr_getter
        self._clock = clock
        self._ipam = _IPAM()
        self._sandboxes: dict[str, PodSandboxStatus] = {}
        self._containers: dict[str, ContainerStatus] = {}

    async def version(self) -> dict:
        return {"version": "0.1.0", "runtime_name": RUNTIME_NAME, "runtime_version": RUNTIME_VERSION,
                "runtime_api_version": "v1"}

    # -- sandboxes -----------------------------------------------------------------------------

    async def run_pod_sandbox(self, config: SandboxConfig) -> str:
        ip = ""
        if not config.host_network:
            cidr = self._pod_cidr()
            if not cidr:
                raise SandboxError("network is not ready: the node has no podCIDR yet")
            ip = self._ipam.allocate(cidr)
        sid = _new_id()
        self._sandboxes[sid] = PodSandboxStatus(
            id=sid, uid=config.uid, name=config.name, namespace=config.namespace, attempt=config.attempt,
            state=SandboxState.READY, created_at=self._clock(), ip=ip,
            labels=dict(config.labels), annotations=dict(config.annotations))
        return sid

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        for c in self._containers.values():
            if c.sandbox_id == sandbox_id:
                self._stop(c, 0)
        if sandbox.state is SandboxState.READY:
            sandbox.state = SandboxState.NOTREADY
            self._ipam.release(sandbox.ip)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        await self.stop_pod_sandbox(sandbox_id)
        for cid in [c.id for c in self._containers.values() if c.sandbox_id == sandbox_id]:
            del self._containers[cid]
        self._sandboxes.pop(sandbox_id, None)

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus:
        return dataclasses.replace(self._sandbox(sandbox_id))

    async def list_pod_sandboxes(self, uid: str | None = None) -> list[PodSandboxStatus]:
        return [dataclasses.replace(s) for s in self._sandboxes.values() if uid is None or s.uid == uid]

    def _sandbox(self, sandbox_id: str) -> PodSandboxStatus:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found") from None

    # -- containers ----------------------------------------------------------------------------

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox: SandboxConfig) -> str:
        sb = self._sandboxes.get(sandbox_id)
        if sb is None or sb.state is not SandboxState.READY:
            raise CreateContainerError(f"pod sandbox {sandbox_id!r} is not ready")
        cid = _new_id()
        self._containers[cid] = ContainerStatus(
            id=cid, sandbox_id=sandbox_id, name=config.name, attempt=config.attempt,
            state=ContainerState.CREATED, image=config.image.id, image_ref=config.image_ref or config.image.id,
            created_at=self._clock(), log_path=config.log_path,
            labels=dict(config.labels), annotations=dict(config.annotations))
        return cid

    async def start_container(self, container_id: str) -> None:
        c = self._container(container_id)
        if c.state is not ContainerState.CREATED:
            raise RunContainerError(f"container {container_id} is {c.state.value}, not created")
        c.state, c.started_at = ContainerState.RUNNING, self._clock()
        # A fake pid that looks like one and differs per container.
        c.pid = 1000 + zlib.crc32(container_id.encode()) % 4_000_000

    async def stop_container(self, container_id: str, timeout: float) -> None:
        c = self._containers.get(container_id)
        if c is not None:
            self._stop(c, timeout)

    def _stop(self, c: ContainerStatus, timeout: float) -> None:
        if c.state is ContainerState.EXITED:
            return
        now = self._clock()
        if c.state is ContainerState.CREATED:
            # Never started: CRI reports it exited at once, with no start time.
            c.exit_code, c.reason = 0, "Completed"
        elif timeout > 0:
            c.exit_code, c.reason = 0, "Completed"
        else:
            c.exit_code, c.reason = 137, "Error"
        c.state, c.finished_at, c.pid = ContainerState.EXITED, now, 0

    async def remove_container(self, container_id: str) -> None:
        self._containers.pop(container_id, None)

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        return [dataclasses.replace(c) for c in self._containers.values()
                if sandbox_id is None or c.sandbox_id == sandbox_id]

    async def container_status(self, container_id: str) -> ContainerStatus:
        return dataclasses.replace(self._container(container_id))

    def _container(self, container_id: str) -> ContainerStatus:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"container {container_id!r} not found") from None

    # -- exec and streaming ------------------------------------------------------------------------

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> tuple[int, bytes, bytes]:
        c = self._container(container_id)
        if c.state is not ContainerState.RUNNING:
            raise RunContainerError(f"container {container_id} is not running")
        return 0, b"", b""

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool, stdin: bool) -> StreamSession:
        raise StreamingNotSupported("the hollow runtime runs no processes: exec is not supported")

    async def attach(self, container_id: str, *, tty: bool, stdin: bool) -> StreamSession:
        raise StreamingNotSupported("the hollow runtime runs no processes: attach is not supported")

    async def port_forward(self, sandbox_id: str, port: int):
        raise StreamingNotSupported("the hollow runtime runs no processes: port-forward is not supported")

    # -- stats -----------------------------------------------------------------------------------

    async def container_stats(self, container_id: str) -> ContainerStats:
        return self._stats(self._container(container_id), self._clock())

    def _stats(self, c: ContainerStatus, now: float) -> ContainerStats:
        running = c.state is ContainerState.RUNNING
        end = now if running else (c.finished_at or now)
        elapsed = max(0.0, end - c.started_at) if c.started_at else 0.0
        # Memory is stable per container (a function of its id), so repeated scrapes agree.
        memory = (4 + zlib.crc32(c.id.encode()) % 8) * MIB if running else 0
        return ContainerStats(id=c.id, timestamp=now, cpu_usage_core_nanoseconds=int(elapsed * CPU_NANOS_PER_SECOND),
                              memory_working_set_bytes=memory, memory_usage_bytes=memory + memory // 4,
                              memory_rss_bytes=memory // 2, writable_layer_bytes=4096 if c.started_at else 0)

    async def sandbox_stats(self, sandbox_id: str) -> ContainerStats:
        self._sandbox(sandbox_id)
        now = self._clock()
        total = ContainerStats(id=sandbox_id, timestamp=now)
        for c in self._containers.values():
            if c.sandbox_id == sandbox_id:
                s = self._stats(c, now)
                total.cpu_usage_core_nanoseconds += s.cpu_usage_core_nanoseconds
                total.memory_working_set_bytes += s.memory_working_set_bytes
                total.memory_usage_bytes += s.memory_usage_bytes
                total.memory_rss_bytes += s.memory_rss_bytes
                total.writable_layer_bytes += s.writable_layer_bytes
        return total

    async def close(self) -> None:
        return None
