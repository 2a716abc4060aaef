"""cgroup v1 (hybrid) helpers: where a cgroup path lives, its usage, and removing it.

runc creates a container's cgroup in every mounted hierarchy (cpu, cpuacct, memory, pids, ...,
the named ``systemd`` one and the empty ``unified`` v2 mount) from one absolute
``cgroupsPath``; the runtime removes what runc leaves behind (the pod level) the same way.

Paths handed around are absolute within a hierarchy ("/kubeling/kubepods/pod<uid>/<id>"):
relative ones would be resolved by runc against the caller's own cgroup, which differs between
controllers and between agent restarts.

Contracts: blocking (sysfs file work): call through ``asyncio.to_thread``. ``remove`` is
idempotent and retries while the kernel still refuses (tasks leaving a memory cgroup take a
moment).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named ones, the v2 mount)."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2") and \
                    parts[1].startswith(str(CGROUP_FS)):
                found.append(Path(parts[1]))
    return found


def join(*parts: str) -> str:
    """An absolute cgroup path from pieces, e.g. join("kubeling", "kubepods/pod1", id)."""
    return "/" + "/".join(p.strip("/") for p in parts if p.strip("/"))


def controller_dir(controller: str, path: str) -> Path:
    return CGROUP_FS / controller / path.lstrip("/")


def remove(path: str, timeout: float = 2.0) -> bool:
    """rmdir ``path`` (and any child cgroups, deepest first) in every hierarchy.

    Returns True when nothing is left. EBUSY (tasks still leaving) is retried until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    remaining = [h / path.lstrip("/") for h in hierarchies()]
    while True:
        remaining = [d for d in remaining if not _rmtree(d)]
        if not remaining or time.monotonic() > deadline:
            return not remaining
        time.sleep(0.02)


def _rmtree(top: Path) -> bool:
    if not top.exists():
        return True
    ok = True
    for dirpath, dirnames, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            ok = False
    return ok


def kill_all(path: str, sig: int) -> None:
    """Send ``sig`` to every task of ``path`` and its children (the pids hierarchy lists them)."""
    top = controller_dir("pids", path)
    if not top.exists():
        top = controller_dir("memory", path)
    for dirpath, _, _ in os.walk(top):
        try:
            pids = Path(dirpath, "cgroup.procs").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _memory_stat(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in lines if line)}


@dataclass
class Usage:
    cpu_usage_ns: int = 0
    memory_usage: int = 0
    memory_working_set: int = 0
    memory_rss: int = 0


def usage(path: str) -> Usage:
    """cpuacct.usage and memory usage of ``path``; working set = usage - total_inactive_file
    (as cAdvisor computes it for the kubelet's eviction and stats)."""
    cpu = _read_int(controller_dir("cpuacct", path) / "cpuacct.usage")
    mem_dir = controller_dir("memory", path)
    mem = _read_int(mem_dir / "memory.usage_in_bytes")
    stat = _memory_stat(mem_dir / "memory.stat")
    inactive = stat.get("total_inactive_file", 0)
    return Usage(cpu_usage_ns=cpu, memory_usage=mem,
                 memory_working_set=max(0, mem - inactive),
                 memory_rss=stat.get("total_rss", 0))


def leftover_dirs(cgroup_root: str) -> list[Path]:
    """Every cgroup dir below ``/<cgroup_root>`` that belongs to a pod or a container (named
    ``pod<uid>`` or a 64-hex id), in every hierarchy: what `cleanup.leaks` counts."""
    found = []
    for h in hierarchies():
        top = h / cgroup_root.strip("/")
        if not top.exists():
            continue
        for dirpath, dirnames, _ in os.walk(top):
            for d in dirnames:
                if d.startswith("pod") or (len(d) == 64 and all(c in "0123456789abcdef" for c in d)):
                    found.append(Path(dirpath, d))
    return found
