"""The runc runtime's on-disk state: what a new `RuncRuntime` over the same root reads back.

Layout under the agent root::

    runc/                       runc's --root (its own state.json per container)
    pause/rootfs/               the pause image: a static busybox, shared by every sandbox
    sandboxes/<id>/record.json  `SandboxRecord`; with shareProcessNamespace the pause's bundle
                                (config.json) and its shim files (shim.json, status.json,
                                attach.sock, shim.log, runc.log)
    sandboxes/<id>/ns/ipc, uts  the pod's IPC and UTS namespaces, held by bind mounts
    sandboxes/<id>/shm          the pod's /dev/shm (a tmpfs shared by its containers)
    containers/<id>/record.json `ContainerRecord`; bundle: config.json, rootfs/ (the overlay
                                mount), upper/ and work/ (its writable layer), shim files
    pods/<uid>/etc-hosts, resolv.conf   the pod's managed files (as the kubelet lays them out)

Contracts:
- A record is written whole and atomically (write to a temp name, rename), so an agent that
  dies mid-write leaves the old or the new version, never half of one. There is no fsync: what
  the records describe (processes, mounts, namespaces) does not outlive the machine either, and
  after a power loss a record read back broken is shown as UNKNOWN and removed like the rest;
  with ~10 files per pod, an fsync each was the largest cost of starting many pods at once.
- ``status.json`` belongs to the shim (written once, when the process has exited); every other
  file is the runtime's.
- Loading never raises on a broken record: it is reported as None and the caller shows the
  object as UNKNOWN (and can still remove it).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import orjson


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` by a rename (atomic, not durable: see the contracts)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp")   # unique per writer
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(name, path)


def read_json(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _from_dict(cls, data: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SandboxRecord:
    id: str
    uid: str
    name: str
    namespace: str
    attempt: int
    created_at: float
    config: dict                      # the SandboxConfig as a dict (for hosts file, teardown)
    cgroup_parent: str                # absolute cgroup path of the pod, e.g. /kubeling/kubepods/pod<uid>
    netns_path: str = ""              # "" for hostNetwork
    ip: str = ""
    ipc_path: str = ""                # the pod's IPC namespace, a bind mount (see `namespaces`)
    uts_path: str = ""                # its UTS namespace ("" for hostNetwork)
    pid: int = 0                      # the pause process (shareProcessNamespace only), or 0
    pid_start: int = 0                # its start time in clock ticks (guards against pid reuse)
    stopped: bool = False             # stop_pod_sandbox ran: NOTREADY from then on

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> SandboxRecord:
        return _from_dict(cls, data)


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    created_at: float
    image: str = ""
    image_ref: str = ""
    log_path: str = ""
    cgroups_path: str = ""            # absolute cgroup path of the container
    stop_signal: str = "SIGTERM"
    tty: bool = False
    stdin: bool = False
    shares_pid: bool = False          # in the sandbox's pid namespace (shareProcessNamespace)
    pid: int = 0
    pid_start: int = 0
    shim_pid: int = 0
    shim_start: int = 0
    started_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> ContainerRecord:
        return _from_dict(cls, data)


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in ticks); 0 if the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    rest = stat[stat.rfind(b")") + 2:].split()
    if rest[0] == b"Z":
        return 0
    return int(rest[19])


def alive(pid: int, start: int) -> bool:
    """True if ``pid`` is still the process that was recorded (same start time)."""
    return pid > 0 and process_start_time(pid) == start


class Layout:
    """Paths under one agent root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runc_root = root / "runc"
        self.pause_rootfs = root / "pause" / "rootfs"
        self.sandboxes = root / "sandboxes"
        self.containers = root / "containers"
        self.pods = root / "pods"

    def make(self) -> None:
        for d in (self.runc_root, self.sandboxes, self.containers, self.pods):
            d.mkdir(parents=True, exist_ok=True)

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.sandboxes / sandbox_id

    def container_dir(self, container_id: str) -> Path:
        return self.containers / container_id

    def pod_dir(self, uid: str) -> Path:
        return self.pods / uid

    def load_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        data = read_json(self.sandbox_dir(sandbox_id) / "record.json")
        return SandboxRecord.from_json(data) if data else None

    def load_container(self, container_id: str) -> ContainerRecord | None:
        data = read_json(self.container_dir(container_id) / "record.json")
        return ContainerRecord.from_json(data) if data else None

    def save_sandbox(self, rec: SandboxRecord) -> None:
        write_atomic(self.sandbox_dir(rec.id) / "record.json", rec.to_json())

    def save_container(self, rec: ContainerRecord) -> None:
        write_atomic(self.container_dir(rec.id) / "record.json", rec.to_json())

    def sandbox_ids(self) -> list[str]:
        return sorted(p.name for p in self.sandboxes.iterdir()) if self.sandboxes.exists() else []

    def container_ids(self) -> list[str]:
        return sorted(p.name for p in self.containers.iterdir()) if self.containers.exists() else []

    @staticmethod
    def exit_status(obj_dir: Path) -> dict | None:
        """The shim's ``status.json``: None while the process runs (or if the shim died)."""
        return read_json(obj_dir / "status.json")
