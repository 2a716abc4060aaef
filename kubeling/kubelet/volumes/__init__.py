"""Pod volumes: one plugin per volume type, the manager that sets them up, and container mounts.

Files::

    __init__.py          VolumePlugin (the protocol), VolumeHost (what the agent provides),
                         VolumeError, REGISTRY, volume_dir
    manager.py           VolumeManager: mount_pod / unmount_pod / refresh / run(stop)
    mounts.py            container_mounts: volumeMounts (readOnly, subPath, subPathExpr,
                         mountPropagation) and the termination-log file -> runtime.Mount
    atomic_writer.py     the ..data symlink swap for API-data volumes
    emptydir.py hostpath.py configmap.py secret.py downwardapi.py projected.py
    persistentvolumeclaim.py   the plugins
    fieldpath.py         downward API values (shared with envvars)
    mountutil.py         mount(2), umount2(2), the mount table, a removal that never crosses a mount

Directory layout, as upstream's kubelet root::

    <root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume name>/     a volume
    <root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index>      subPath bind mounts
    <root>/pods/<uid>/containers/<container>/<attempt>-termination-log

Plugin contract (`VolumePlugin`):

- ``SOURCE`` is the ``pod.spec.volumes[]`` key the plugin serves (``can_support`` checks it).
- ``NAME`` is upstream's plugin name (``kubernetes.io/configmap``); its directory is the name
  with ``/`` replaced by ``~``. A plugin is built once per manager as ``cls(host)``.
- ``can_support(volume)`` looks at one ``pod.spec.volumes[]`` entry. Exactly one plugin of
  `REGISTRY` supports each volume source.
- ``await setup(pod, volume, dir) -> Path`` makes the volume ready and returns the host path a
  container mount binds: ``dir`` itself for most plugins, the host's path for hostPath and
  hostPath/local PersistentVolumes (which then create nothing under ``dir``). ``setup`` is
  idempotent: the manager calls it again on every pod sync and, for ``needs_refresh`` plugins,
  whenever a source changes; an unchanged source leaves the files alone. It raises any
  exception whose text is the user-facing reason (upstream's wording: ``configmap "x" not
  found``); the manager wraps it in `VolumeError`.
- ``await teardown(dir)`` removes what setup made (unmounting tmpfs first). It must work from
  the directory alone, after an agent restart, and is idempotent.
- ``needs_refresh``: the content follows API objects or the pod (configMap, secret,
  downwardAPI, projected) and is rewritten by the manager's ``run`` loop.
  ``read_only``: every container mount of it is read-only, whatever ``readOnly`` says
  (upstream's read-only API-data volumes).
- ``next_refresh(dir) -> float | None`` (optional): the wall-clock time at which setup must run
  again even without a change (projected service-account tokens, at 80 % of their TTL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import mountutil
from kubeling.kubelet.volumes.atomic_writer import AtomicWriter, FileProjection

# (pod, service account name, audience ("" = the API server's), expirationSeconds|None)
#   -> (token, expiry as UNIX seconds)
TokenFunc = Callable[[dict, str, str, "int | None"], Awaitable[tuple[str, float]]]


class VolumeError(Exception):
    """A volume could not be set up; ``reason`` and ``message`` go into the pod's Event."""

    def __init__(self, message: str, reason: str = "FailedMount", volume: str = "",
                 errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.volume = volume
        self.errors = errors or [message]


@dataclass
class VolumeHost:
    """What the agent gives the volume plugins. ``client`` (a `RESTClient`) resolves PVCs."""

    root: Path
    configmaps: ObjectCache | None = None
    secrets: ObjectCache | None = None
    token: TokenFunc | None = None
    node_allocatable: dict = field(default_factory=dict)
    client: Any = None

    def pod_dir(self, uid: str) -> Path:
        return Path(self.root) / "pods" / uid


class VolumePlugin(Protocol):
    NAME: str
    SOURCE: str
    needs_refresh: bool
    read_only: bool

    def can_support(self, volume: dict) -> bool: ...

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path: ...

    async def teardown(self, dir: Path) -> None: ...


def plugin_dir_name(name: str) -> str:
    return name.replace("/", "~")


def volume_dir(root: Path, uid: str, plugin_name: str, volume_name: str) -> Path:
    return Path(root) / "pods" / uid / "volumes" / plugin_dir_name(plugin_name) / volume_name


def pod_fs_group(pod: dict) -> int | None:
    return ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")


def with_fs_group(pod: dict, payload: dict[str, FileProjection]) -> dict[str, FileProjection]:
    """Upstream's volume ownership for read-only volumes: with ``fsGroup``, files belong to that
    group and are group-readable (a 0600 token becomes 0640)."""
    gid = pod_fs_group(pod)
    if gid is None:
        return payload
    return {p: FileProjection(f.data, f.mode | 0o440, f.uid, gid) for p, f in payload.items()}


def ensure_tmpfs(dir: Path, size_bytes: int | None = None) -> None:
    """Blocking: make ``dir`` and mount a tmpfs on it unless one is there (setup is idempotent)."""
    dir.mkdir(parents=True, exist_ok=True)
    if not mountutil.is_mount_point(dir):
        mountutil.mount_tmpfs(dir, size_bytes)


async def write_payload(dir: Path, payload: dict[str, FileProjection], tmpfs: bool) -> bool:
    """Write an API-data volume: on a tmpfs for secrets (never on disk), else on disk."""
    if tmpfs:
        await asyncio.to_thread(ensure_tmpfs, dir)
    else:
        await asyncio.to_thread(dir.mkdir, 0o755, True, True)
    return await AtomicWriter(dir).write_async(payload)


async def remove_volume_dir(dir: Path) -> None:
    """The common teardown: unmount whatever is mounted there, then delete it."""
    await asyncio.to_thread(mountutil.remove_tree, dir)


DEFAULT_MODE = 0o644   # defaultMode of configMap, secret, downwardAPI and projected volumes


class ProjectionPlugin:
    """Base of the plugins that project API data into files through the atomic writer
    (configMap, secret, downwardAPI): a subclass names the volume key it serves (``SOURCE``),
    whether its files live on a tmpfs (``TMPFS``), and computes its ``payload``; setup writes it
    (only what changed) and teardown removes the directory, unmounting the tmpfs."""

    NAME = ""
    SOURCE = ""
    TMPFS = False
    needs_refresh = True
    read_only = True

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def payload(self, pod: dict, source: dict, mode: int) -> dict[str, FileProjection]:
        raise NotImplementedError

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:  # noqa: A002
        source = volume.get(self.SOURCE) or {}
        mode = source.get("defaultMode")
        payload = await self.payload(pod, source, DEFAULT_MODE if mode is None else mode)
        await write_payload(dir, with_fs_group(pod, payload), tmpfs=self.TMPFS)
        return dir

    async def teardown(self, dir: Path) -> None:  # noqa: A002
        await remove_volume_dir(dir)


async def lookup_source(cache: ObjectCache, pod: dict, name: str, optional: bool) -> dict:
    """The ConfigMap or Secret a volume names; ``{}`` when it is missing and optional."""
    found = await cache.get((pod.get("metadata") or {}).get("namespace") or "default", name)
    if found is None:
        if not optional:
            raise LookupError(cache.not_found_message(name))
        return {}
    return found


# The plugins import the names above from this package, so they are imported last; REGISTRY is a
# plain dict built once, in this fixed order.
from kubeling.kubelet.volumes.configmap import ConfigMapPlugin
from kubeling.kubelet.volumes.downwardapi import DownwardAPIPlugin
from kubeling.kubelet.volumes.emptydir import EmptyDirPlugin
from kubeling.kubelet.volumes.hostpath import HostPathPlugin
from kubeling.kubelet.volumes.persistentvolumeclaim import PersistentVolumeClaimPlugin
from kubeling.kubelet.volumes.projected import ProjectedPlugin
from kubeling.kubelet.volumes.secret import SecretPlugin

REGISTRY: dict[str, type] = {p.NAME: p for p in (
    EmptyDirPlugin, HostPathPlugin, ConfigMapPlugin, SecretPlugin, DownwardAPIPlugin, ProjectedPlugin,
    PersistentVolumeClaimPlugin)}
