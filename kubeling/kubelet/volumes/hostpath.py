"""hostPath: a path of the node itself, checked against ``type`` before the pod may use it.

Types and their checks (upstream's wording in the errors)::

    ""                  no check (the runtime's bind mount creates nothing either)
    DirectoryOrCreate   created 0755 (with parents) when missing, else must be a directory
    Directory           must be a directory
    FileOrCreate        created empty 0644 when missing (the parent must exist), else a file
    File                must be a regular file
    Socket CharDevice BlockDevice   must be one

Setup returns the host path (symlinks are followed by the bind mount, as upstream); nothing is
created under the pod's volume directory and teardown never touches the host path.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from kubeling.kubelet.volumes import VolumeHost


class HostPathTypeError(ValueError):
    pass


def _is(path: str, test) -> bool:
    try:
        return test(os.stat(path).st_mode)
    except OSError:
        return False


def check_type(path: str, typ: str) -> None:
    """Blocking: upstream's ``checkType`` (creating the path for the *OrCreate types)."""
    exists = os.path.lexists(path) and os.path.exists(path)
    if typ in ("", None):
        return
    if typ in ("DirectoryOrCreate", "Directory"):
        if not exists and typ == "DirectoryOrCreate":
            os.makedirs(path, 0o755, exist_ok=True)
            return
        if not _is(path, stat.S_ISDIR):
            raise HostPathTypeError(f"hostPath type check failed: {path} is not a directory")
    elif typ in ("FileOrCreate", "File"):
        if not exists and typ == "FileOrCreate":
            fd = os.open(path, os.O_CREAT | os.O_RDONLY, 0o644)
            os.close(fd)
            return
        if not _is(path, stat.S_ISREG):
            raise HostPathTypeError(f"hostPath type check failed: {path} is not a file")
    elif typ == "Socket":
        if not _is(path, stat.S_ISSOCK):
            raise HostPathTypeError(f"hostPath type check failed: {path} is not a socket file")
    elif typ == "CharDevice":
        if not _is(path, stat.S_ISCHR):
            raise HostPathTypeError(f"hostPath type check failed: {path} is not a character device")
    elif typ == "BlockDevice":
        if not _is(path, stat.S_ISBLK):
            raise HostPathTypeError(f"hostPath type check failed: {path} is not a block device")
    else:
        raise HostPathTypeError(f"{typ} is an invalid volume type")


class HostPathPlugin:
    NAME = "kubernetes.io/host-path"
    SOURCE = "hostPath"  # the pod.spec.volumes[] key it serves
    needs_refresh = False
    read_only = False

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get("hostPath") or {}
        path = source.get("path") or ""
        if not path.startswith("/"):
            raise HostPathTypeError(f"invalid HostPath {path!r}: must be an absolute path")
        await asyncio.to_thread(check_type, path, source.get("type") or "")
        return Path(path)

    async def teardown(self, dir: Path) -> None:
        return None  # the host's path is the host's; nothing was made under the pod
