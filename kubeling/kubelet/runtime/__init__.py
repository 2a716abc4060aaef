"""The container runtime boundary: upstream's CRI ``RuntimeService`` and ``ImageService``, in Python.

The kubelet never touches runc, namespaces, cgroups or image layers itself: it speaks this
protocol, and a runtime (``runc.RuncRuntime``, ``hollow.HollowRuntime``) implements it. The
shapes follow CRI v1 (``RunPodSandbox``, ``CreateContainer``, ``ContainerStatus`` ...) so that a
Kubernetes engineer recognises every call.

Objects::

    PodSandbox  one per pod (per attempt): a network namespace (unless hostNetwork), ipc and uts
                namespaces (runc: held by bind mounts, with a pause process only for
                shareProcessNamespace), a cgroup parent, /etc/hosts, resolv.conf and the
                hostname. Its IP comes from the `network` plugin the runtime was built with.
    Container   belongs to one sandbox; joins its net/ipc/uts namespaces, has its own pid and
                mount namespaces (the sandbox's pid namespace with shareProcessNamespace). Its
                rootfs is an overlay of the image's shared layers plus its own upper dir.

Container states (CRI's ``ContainerState``)::

    create_container -> CREATED --start_container--> RUNNING --(process exits)--> EXITED
                           |                            |                           |
                           +------ remove_container <---+--- stop_container --------+
                                   (also from UNKNOWN: a container whose record is broken)

Contracts:
- Every method is a coroutine; none blocks the event loop for more than a few milliseconds
  (fork/exec and file work go to threads or subprocesses).
- Ids are opaque strings, unique for the runtime's lifetime; 64 hex characters for runc.
- ``stop_*`` and ``remove_*`` are idempotent: stopping a stopped container or removing a
  missing one succeeds. Removing a sandbox removes its containers.
- State survives the kubelet: a new runtime object over the same ``root`` lists the same
  sandboxes and containers, still running, with unchanged ids, exit codes and start times.
  Exit codes of containers that ended while no kubelet ran are kept.
- Failures are `RuntimeError_` subclasses carrying upstream's reason strings, so the kubelet
  can put them in container status unchanged.
- Times are UNIX seconds (float); 0 means "not yet".
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class RuntimeError_(Exception):
    """A runtime operation failed. ``reason`` is the upstream container-status reason."""

    reason = "RunContainerError"


class CreateContainerError(RuntimeError_):
    reason = "CreateContainerError"


class RunContainerError(RuntimeError_):
    reason = "RunContainerError"


class SandboxError(RuntimeError_):
    reason = "CreatePodSandboxError"


class NotFound(RuntimeError_):
    reason = "NotFound"


class ContainerState(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class SandboxState(str, enum.Enum):
    READY = "ready"
    NOTREADY = "notready"


@dataclass
class PortMapping:
    """A ``hostPort``: traffic to host_ip:host_port goes to the pod's container_port."""

    container_port: int
    host_port: int
    protocol: str = "TCP"
    host_ip: str = ""


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class SandboxConfig:
    """What ``RunPodSandbox`` needs, computed by the kubelet from the pod."""

    uid: str
    name: str
    namespace: str
    attempt: int = 0
    hostname: str = ""
    host_network: bool = False
    share_process_namespace: bool = False
    dns: DNSConfig = field(default_factory=DNSConfig)
    host_aliases: list[tuple[str, list[str]]] = field(default_factory=list)  # (ip, hostnames)
    port_mappings: list[PortMapping] = field(default_factory=list)
    cgroup_parent: str = ""          # relative, e.g. "kubepods/burstable/pod<uid>"
    sysctls: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class PodSandboxStatus:
    id: str
    uid: str
    name: str
    namespace: str
    attempt: int
    state: SandboxState
    created_at: float
    ip: str = ""                     # "" for hostNetwork pods: the kubelet uses the host IP
    netns_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: str = "private"     # private | rslave | rshared (mountPropagation)


@dataclass
class LinuxResources:
    cpu_period: int = 0              # microseconds; 0 = unset
    cpu_quota: int = 0               # microseconds per period; 0 = unlimited
    cpu_shares: int = 0              # 0 = runtime default
    memory_limit_bytes: int = 0      # 0 = unlimited
    pids_limit: int = 0              # 0 = unlimited
    oom_score_adj: int = 0


@dataclass
class SecurityContext:
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    readonly_rootfs: bool = False
    privileged: bool = False
    no_new_privs: bool = False       # allowPrivilegeEscalation: false
    capabilities_add: list[str] = field(default_factory=list)    # "NET_ADMIN" or "CAP_NET_ADMIN"
    capabilities_drop: list[str] = field(default_factory=list)   # "ALL" allowed
    masked_paths: list[str] | None = None      # None = the runtime's defaults
    readonly_paths: list[str] | None = None


@dataclass
class Image:
    """An image in the node's store. ``layers`` are unpacked directories, bottom layer first."""

    id: str                          # "sha256:<config digest>"
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    config: dict = field(default_factory=dict)   # the OCI image config's "config" section
    layers: list[Path] = field(default_factory=list)


@dataclass
class ContainerConfig:
    """What ``CreateContainer`` needs: the kubelet has resolved command, env and mounts."""

    name: str
    image: Image
    image_ref: str = ""              # what the pod asked for, for status
    attempt: int = 0
    command: list[str] = field(default_factory=list)   # the final argv
    env: list[tuple[str, str]] = field(default_factory=list)
    working_dir: str = ""
    mounts: list[Mount] = field(default_factory=list)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    log_path: str = ""               # CRI-format log file the runtime writes
    resources: LinuxResources = field(default_factory=LinuxResources)
    security: SecurityContext = field(default_factory=SecurityContext)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: ContainerState
    image: str = ""                  # the image id
    image_ref: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    reason: str = ""                 # "OOMKilled", "Error", "Completed" for EXITED
    message: str = ""
    log_path: str = ""
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerStats:
    id: str
    timestamp: float
    cpu_usage_core_nanoseconds: int = 0    # cumulative
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    memory_rss_bytes: int = 0
    writable_layer_bytes: int = 0


class StreamSession(Protocol):
    """A running exec or attach. ``stdin`` is None unless asked for; with a tty, stderr is None
    and everything arrives on stdout. ``wait()`` returns the exit code (attach: the container's)."""

    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    async def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...

    async def close(self) -> None: ...


class RuntimeService(Protocol):
    """CRI's RuntimeService (see the module docstring for the contracts)."""

    name: str

    async def version(self) -> dict: ...

    async def run_pod_sandbox(self, config: SandboxConfig) -> str: ...

    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...

    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus: ...

    async def list_pod_sandboxes(self, uid: str | None = None) -> list[PodSandboxStatus]:
        """Every sandbox, or only the pod ``uid``'s (CRI's ListPodSandbox filter)."""

    async def create_container(self, sandbox_id: str, config: ContainerConfig,
                               sandbox: SandboxConfig) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM (or the image's StopSignal), then SIGKILL after ``timeout`` seconds."""

    async def remove_container(self, container_id: str) -> None: ...

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]: ...

    async def container_status(self, container_id: str) -> ContainerStatus: ...

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float) -> tuple[int, bytes, bytes]:
        """Run ``cmd`` in the container; (exit code, stdout, stderr). Used by probes and hooks.
        A timeout kills the process and raises `asyncio.TimeoutError`."""

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool,
                   stdin: bool) -> StreamSession: ...

    async def attach(self, container_id: str, *, tty: bool, stdin: bool) -> StreamSession: ...

    async def port_forward(self, sandbox_id: str,
                           port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to ``port`` on the pod's loopback, from inside its network namespace."""

    async def container_stats(self, container_id: str) -> ContainerStats: ...

    async def sandbox_stats(self, sandbox_id: str) -> ContainerStats:
        """Usage of the whole pod cgroup (``id`` is the sandbox id)."""

    async def close(self) -> None:
        """Release the runtime object's own resources; containers keep running."""


class ImageService(Protocol):
    """CRI's ImageService over the node's content-addressed store."""

    async def pull_image(self, ref: str, auth: dict | None = None) -> Image:
        """Pull ``ref`` (any Docker-style reference); ``auth`` is a docker config ``auths`` entry
        ({"username","password"} or {"auth"}). Raises `images.PullError` subclasses."""

    async def image_status(self, ref: str) -> Image | None: ...

    async def list_images(self) -> list[Image]: ...

    async def remove_image(self, image_id: str) -> None: ...

    async def fs_info(self) -> dict:
        """{"capacity_bytes", "used_bytes", "available_bytes", "inodes_free"} of the image fs."""
