"""Tear down everything one agent root holds, and count what would be left (issue 6, acceptance 10).

`cleanup_all` is for ``make down`` and test harnesses: it needs no agent, no records in good
shape and no network plugin; it finds objects the way `leaks` counts them (runc's state dir,
the netns files named after sandbox ids, mounts under the root, cgroup dirs under
``cgroup_root``) and removes them, killing processes first.

`leaks` counts, per kind, objects of *this* root that still exist:
``netns`` (``/run/netns/kl-<id16>`` of a sandbox dir or runc container of the root),
``runc`` (containers in the root's runc state dir), ``mounts`` (at or under the root),
``cgroups`` (pod and container dirs under ``cgroup_root``, every hierarchy), ``shims`` (live
shim processes whose config lies under the root).

Contracts: both are blocking (run them in a thread from async code); `cleanup_all` is
idempotent and never touches another root's objects, nor netns files it cannot tie to this root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kubeling.kubelet.runtime import cgroups, rootfs
from kubeling.kubelet.runtime.namespaces import NETNS_DIR, netns_name
from kubeling.kubelet.runtime.records import Layout


def _runc_ids(layout: Layout, runc: str) -> list[str]:
    if not layout.runc_root.exists():
        return []
    out = subprocess.run([runc, "--root", str(layout.runc_root), "list", "--format", "json"],
                         capture_output=True, text=True, check=False).stdout
    try:
        return [c["id"] for c in json.loads(out or "null") or []]
    except (ValueError, KeyError, TypeError):
        return sorted(p.name for p in layout.runc_root.iterdir() if p.is_dir())


def _known_ids(layout: Layout, runc: str) -> set[str]:
    ids = set(_runc_ids(layout, runc))
    ids.update(layout.sandbox_ids())
    return ids


def _netns_files(layout: Layout, runc: str) -> list[Path]:
    names = {netns_name(i) for i in _known_ids(layout, runc)}
    return [NETNS_DIR / n for n in sorted(names) if (NETNS_DIR / n).exists()]


def shim_pids(root: Path) -> list[int]:
    """Live shims whose config file lies under ``root`` (their argv names it)."""
    prefix = str(root.resolve()) + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if len(argv) >= 4 and argv[-2].endswith(b"shim.py") and argv[-1].decode(errors="replace").startswith(prefix):
            found.append(int(entry))
    return found


def leaks(root: Path, cgroup_root: str = "kubeling", runc: str = "runc") -> dict[str, int]:
    layout = Layout(Path(root))
    return {
        "netns": len(_netns_files(layout, runc)),
        "runc": len(_runc_ids(layout, runc)),
        "mounts": len(rootfs.mounts_under(Path(root))) if Path(root).exists() else 0,
        "cgroups": len(cgroups.leftover_dirs(cgroup_root)),
        "shims": len(shim_pids(Path(root))),
    }


def cleanup_all(root: Path, cgroup_root: str = "kubeling", runc: str = "runc") -> None:
    root = Path(root)
    layout = Layout(root)
    netns = _netns_files(layout, runc)
    for cid in _runc_ids(layout, runc):
        subprocess.run([runc, "--root", str(layout.runc_root), "delete", "--force", cid],
                       capture_output=True, check=False)
    for top in {cgroups.join(cgroup_root)}:
        cgroups.kill_all(top, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while shim_pids(root) and time.monotonic() < deadline:
        time.sleep(0.02)   # shims end once their container is gone
    for pid in shim_pids(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for path in netns:
        subprocess.run(["ip", "netns", "delete", path.name], capture_output=True, check=False)
    if root.exists():
        for point in sorted(rootfs.mounts_under(root), key=len, reverse=True):
            rootfs.unmount(Path(point))
    cgroups.remove(cgroups.join(cgroup_root), timeout=3)
    for d in (layout.runc_root, layout.sandboxes, layout.containers):
        shutil.rmtree(d, ignore_errors=True)
    for pod in layout.pods.glob("*") if layout.pods.exists() else []:
        for name in ("etc-hosts", "resolv.conf"):
            (pod / name).unlink(missing_ok=True)
