"""Container root filesystems: the overlay over an image's shared layers, the pause rootfs, and
the mount/unmount calls they need.

A container's rootfs is ``overlay(lowerdir=<image layers, top first>, upperdir=<its own>,
workdir=<its own>)`` mounted at ``containers/<id>/rootfs``; the layers themselves are never
written, so every container of an image shares them (issue 6, "Runtime").

Contracts: these functions block (mount(2), file copies): call them through
``asyncio.to_thread``. ``unmount`` is idempotent (not mounted = done).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

PAUSE_APPLETS = ("sh", "sleep")


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach ``target`` (lazily: a process that still has a file open there cannot block removal)."""
    while _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
        pass  # stacked mounts: peel every one
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOENT):
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def mount_overlay(layers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay of ``layers`` (bottom layer first, as `Image.layers`)."""
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    lower = [str(p) for p in reversed(layers)]
    if not lower:
        empty = upper.parent / "empty"
        empty.mkdir(exist_ok=True)
        lower = [str(empty)]
    options = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if len(options) >= 4096:
        # mount(2) takes one page of options; many long layer paths do not fit.
        raise OSError(errno.E2BIG, f"overlay options too long ({len(layers)} layers)")
    mount("overlay", target, "overlay", 0, options)


def mount_shm(target: Path, size: int = 64 * 1024 * 1024) -> None:
    """The pod's /dev/shm: one tmpfs that every container of the sandbox binds (IPC is shared)."""
    target.mkdir(parents=True, exist_ok=True)
    mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")


def ensure_pause_rootfs(target: Path, busybox: str) -> Path:
    """A tiny rootfs holding the static busybox (``sh`` and ``sleep`` applets): the pause image."""
    marker = target / "bin" / "busybox"
    if marker.exists():
        return target
    # a directory of its own per call: sandboxes of one agent start at once, from worker threads
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    for d in ("bin", "proc", "dev", "sys", "etc", "tmp"):
        (tmp / d).mkdir(parents=True)
    shutil.copy2(busybox, tmp / "bin" / "busybox")
    for applet in PAUSE_APPLETS:
        (tmp / "bin" / applet).symlink_to("busybox")
    try:
        os.rename(tmp, target)
    except OSError:            # another runtime object won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def remove_tree(path: Path) -> None:
    """Remove a bundle dir after its mounts are gone (never crossing into a mount still there)."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        unmount(Path(point))
    shutil.rmtree(path, ignore_errors=True)
