"""Mount helpers for the volume plugins (upstream's mount-utils): mount(2)/umount2(2) through libc,
the mount table from ``/proc/self/mountinfo``, and a tree removal that never crosses a mount.

Every function here blocks (syscalls, file walks): callers run them with ``asyncio.to_thread``.

Safety contract: `remove_tree` first unmounts everything mounted below the path, checks that
nothing remains mounted there, and then refuses to descend into any directory on another device.
A leftover bind mount of a hostPath or of a subPath therefore fails the removal instead of
deleting host files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_RDONLY = 0x1
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(rc: int, what: str, path: str | os.PathLike) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what} {path}: {os.strerror(e)}")


def mount(source: str, target: str | os.PathLike, fstype: str | None, flags: int, data: str = "") -> None:
    _check(_libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), "mount", target)


def mount_tmpfs(target: str | os.PathLike, size_bytes: int | None = None) -> None:
    """A tmpfs at ``target`` (nosuid, nodev), of ``size_bytes`` when given."""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_bytes}" if size_bytes else "")


def bind(source: str | os.PathLike, target: str | os.PathLike) -> None:
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None), "bind mount", target)


def unmount(target: str | os.PathLike) -> None:
    """Unmount ``target``; a busy mount is detached lazily; "not mounted" is success."""
    rc = _libc.umount2(os.fsencode(target), 0)
    if rc == 0:
        return
    e = ctypes.get_errno()
    if e == errno.EBUSY:
        _check(_libc.umount2(os.fsencode(target), MNT_DETACH), "umount", target)
    elif e not in (errno.EINVAL, errno.ENOENT):
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and all(c in "01234567" for c in field[i + 1:i + 4]):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace, in mount order."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape(line.split(" ", 5)[4]) for line in f if line.strip()]


def mounts_under(path: str | os.PathLike) -> list[str]:
    """Mount points at or below ``path``, deepest (and latest) first: the unmount order."""
    base = os.path.realpath(path)
    found = [m for m in mount_points() if m == base or m.startswith(base.rstrip("/") + "/")]
    found.reverse()
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def is_mount_point(path: str | os.PathLike) -> bool:
    real = os.path.realpath(path)
    try:
        # Another filesystem starts here: surely a mount point, without reading the mount table
        # (which holds several lines per pod: reading it for every volume of every pod made
        # starting 100 pods quadratic). A bind mount of the same filesystem needs the table.
        if os.stat(real).st_dev != os.stat(os.path.dirname(real)).st_dev:
            return True
    except OSError:
        pass
    return real in set(mount_points())


def unmount_all(path: str | os.PathLike) -> None:
    """Unmount everything at or below ``path`` (stacked mounts included)."""
    for _ in range(64):  # bounded: stacked mounts at one point need one pass each
        points = mounts_under(path)
        if not points:
            return
        for p in points:
            unmount(p)
    raise OSError(errno.EBUSY, f"mounts remain under {path}")


def remove_tree(path: str | os.PathLike) -> None:
    """Unmount everything under ``path``, then delete it without crossing into another filesystem.
    A missing path is success."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    unmount_all(p)
    if mounts_under(p):
        raise OSError(errno.EBUSY, f"refusing to remove {p}: still mounted below")
    if p.is_symlink() or not p.is_dir():
        p.unlink()
        return
    _remove_same_device(p, os.lstat(p).st_dev)


def _remove_same_device(d: Path, dev: int) -> None:
    for entry in os.scandir(d):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                raise OSError(errno.EXDEV, f"refusing to remove {entry.path}: another filesystem")
            _remove_same_device(Path(entry.path), dev)
        else:
            os.unlink(entry.path)
    os.rmdir(d)
