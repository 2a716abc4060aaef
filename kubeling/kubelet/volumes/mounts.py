"""`container_mounts`: a container's ``volumeMounts`` as runtime `Mount`s (upstream's makeMounts).

For each volumeMount, in order:

- the volume's host path comes from `VolumeManager.mount_pod`'s answer; a name it lacks fails
  (``cannot find volume "x" to mount into container "c"``);
- ``readOnly`` is honoured, and API-data volumes (configMap, secret, downwardAPI, projected)
  and ``persistentVolumeClaim.readOnly`` claims are always read-only, as upstream;
- ``subPath`` (or ``subPathExpr``, expanded with the container's env: ``$(VAR)``) must be
  relative without ``..``; a missing subPath is created as a directory inside the volume (with
  the volume root's mode) without following symlinks out of it. The resolved path is then
  bind-mounted at ``pods/<uid>/volume-subpaths/<volume>/<container>/<index>`` from an
  ``O_PATH|O_NOFOLLOW`` descriptor, so a container cannot swap a component for a symlink to
  the host between the check and the mount (CVE-2017-1002101), and runc binds that fixed
  mount. Since the bind pins the resolved inode, a subPath of a configMap volume does not see
  updates, exactly as upstream. A container restart reuses its existing bind mount.
- ``mountPropagation``: None (default) -> private, HostToContainer -> rslave,
  Bidirectional -> rshared (privileged containers only, as upstream validates).

Then the termination message: ``terminationMessagePath`` (default ``/dev/termination-log``) is
bound read-write from ``pods/<uid>/containers/<name>/<attempt>-termination-log`` (created
empty, 0666), so the status manager can read what the container wrote after it exits.

Errors raise `CreateContainerConfigError` (reason ``CreateContainerConfigError``) with
upstream's messages; the pod worker reports them in the container's waiting state.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

from kubeling.kubelet.envvars import CreateContainerConfigError, expand
from kubeling.kubelet.runtime import Mount
from kubeling.kubelet.volumes import REGISTRY, mountutil

PROPAGATION = {None: "private", "": "private", "None": "private", "HostToContainer": "rslave",
               "Bidirectional": "rshared"}
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def termination_log_path(pod_dir: Path, container_name: str, attempt: int) -> Path:
    return Path(pod_dir) / "containers" / container_name / f"{attempt}-termination-log"


def _always_read_only(volume: dict) -> bool:
    if any(cls.read_only and cls.SOURCE in volume for cls in REGISTRY.values()):
        return True
    return bool((volume.get("persistentVolumeClaim") or {}).get("readOnly"))


def _privileged(container: dict) -> bool:
    return bool((container.get("securityContext") or {}).get("privileged"))


async def container_mounts(pod: dict, container: dict, volume_paths: dict[str, str], pod_dir: Path, *,
                           env: list[tuple[str, str]] | None = None, attempt: int = 0) -> list[Mount]:
    """The container's mounts (see the module docstring). ``env`` expands ``subPathExpr``."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or ()}
    cname = container.get("name") or ""
    mounts: list[Mount] = []
    for index, vm in enumerate(container.get("volumeMounts") or ()):
        name = vm.get("name") or ""
        host_path = volume_paths.get(name)
        if host_path is None:
            raise CreateContainerConfigError(f'cannot find volume "{name}" to mount into container "{cname}"')
        propagation = vm.get("mountPropagation")
        if propagation not in PROPAGATION:
            raise CreateContainerConfigError(f"invalid MountPropagation mode: {propagation!r}")
        if propagation == "Bidirectional" and not _privileged(container):
            raise CreateContainerConfigError("Bidirectional mount propagation is available only to privileged "
                                             "containers")
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand(vm["subPathExpr"], dict(env or ()))
        if sub:
            if sub.startswith("/"):
                raise CreateContainerConfigError(f"error SubPath `{sub}` must not be an absolute path")
            if ".." in sub.split("/"):
                raise CreateContainerConfigError(f"unable to provision SubPath `{sub}`: must not contain '..'")
            target = Path(pod_dir) / "volume-subpaths" / name / cname / str(index)
            try:
                host_path = await asyncio.to_thread(_prepare_subpath, Path(host_path), sub, target)
            except OSError:
                raise CreateContainerConfigError(f'failed to prepare subPath for volumeMount "{name}" of '
                                                 f'container "{cname}"') from None
        read_only = bool(vm.get("readOnly")) or _always_read_only(volumes.get(name) or {})
        mounts.append(Mount(vm.get("mountPath") or "", str(host_path), read_only, PROPAGATION[propagation]))
    message_path = container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
    if message_path:
        log_file = termination_log_path(pod_dir, cname, attempt)
        await asyncio.to_thread(_touch, log_file)
        mounts.append(Mount(message_path, str(log_file), False, "private"))
    return mounts


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o666)
    try:
        os.fchmod(fd, 0o666)   # any container user may write its message
    finally:
        os.close(fd)


def _safe_make_dir(base: Path, sub: str, mode: int) -> None:
    """Create ``base/sub`` directories one component at a time, never following a symlink."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in [p for p in sub.split("/") if p not in ("", ".")]:
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, mode, dir_fd=fd)
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.fchmod(nfd, mode)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)


def _open_no_symlinks(base: Path, rel: str) -> int:
    """An O_PATH descriptor of ``base/rel`` opened component by component with O_NOFOLLOW."""
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in [p for p in rel.split("/") if p not in ("", ".")]:
            nfd = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            if stat.S_ISLNK(os.fstat(nfd).st_mode):
                os.close(nfd)
                raise OSError(errno.ELOOP, f"symlink in subPath component {part}")
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _prepare_subpath(volume: Path, sub: str, target: Path) -> Path:
    """Blocking: the bind mount of ``volume/sub`` at ``target`` (reused if already there)."""
    if mountutil.is_mount_point(target):
        return target
    full = volume / sub
    if not os.path.lexists(full):
        _safe_make_dir(volume, sub, stat.S_IMODE(os.stat(volume).st_mode))
    # Resolve symlinks once (a configMap key is a symlink through ..data), check the result
    # stays inside the volume, then open it without following anything.
    base = os.path.realpath(volume)
    resolved = os.path.realpath(full)
    if resolved != base and not resolved.startswith(base.rstrip("/") + "/"):
        raise OSError(errno.EPERM, f"subpath {sub} resolves outside the volume")
    fd = _open_no_symlinks(Path(base), os.path.relpath(resolved, base))
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            target.mkdir(exist_ok=True)
        elif not target.exists():
            os.close(os.open(target, os.O_CREAT | os.O_RDONLY, 0o644))
        mountutil.bind(f"/proc/self/fd/{fd}", target)
    finally:
        os.close(fd)
    return target
