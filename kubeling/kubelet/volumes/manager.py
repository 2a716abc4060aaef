"""`VolumeManager`: sets up, refreshes and tears down the volumes of the pods on this node.

Lifecycle of one pod's volumes::

    mount_pod(pod) ──▶ every spec.volumes[] set up by its plugin ──▶ {volume name: host path}
        │  (called on every pod sync: setup is idempotent, so it is cheap when nothing changed)
        ▼
    run(stop): a ConfigMap/Secret the pod uses changed (ObjectCache.on_change), refresh(pod)
               was called (downward API: labels, annotations), a token is at 80 % of its TTL,
               or the periodic resync came ──▶ needs_refresh volumes re-written (atomic writer)
        ▼
    unmount_pod(uid) ──▶ every mount below pods/<uid> unmounted, volumes, volume-subpaths and
                         termination logs deleted

Contracts:

- ``mount_pod`` registers the pod with both object caches (idempotent) and sets up every
  volume, even after one fails; then it raises `VolumeError` (reason ``FailedMount``) for the
  first failure, worded as upstream's event: ``MountVolume.SetUp failed for volume "cfg" :
  configmap "x" not found``; ``errors`` holds every failure. A volume type no plugin supports
  fails the same way.
- ``unmount_pod(uid)`` works from the directory alone (after an agent restart the manager knows
  no pods), is idempotent, and never deletes through a mount point (`mountutil.remove_tree`).
  It unregisters the pod from the object caches.
- Per pod, setup, refresh and teardown never run at the same time (one lock per UID); a
  refresh of a pod that was unmounted is a no-op.
- ``run(stop)`` returns when ``stop`` is set. Refresh failures are logged and retried at the
  next trigger; they never end the loop. Refresh latency after an API update is the watch
  delivery plus one write: well under the 2 s acceptance bound (upstream: up to ~60 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from kubeling.kubelet.objectcache import references
from kubeling.kubelet.volumes import (
    REGISTRY,
    VolumeError,
    VolumeHost,
    mountutil,
    plugin_dir_name,
    volume_dir,
)

log = logging.getLogger(__name__)

RESYNC_PERIOD = 60.0   # a safety net: every mounted API-data volume is re-checked this often


class VolumeManager:
    """See the module docstring for the contracts."""

    def __init__(self, host: VolumeHost, plugins: list[type] | None = None,
                 resync_period: float = RESYNC_PERIOD) -> None:
        self.host = host
        self.plugins = [cls(host) for cls in (plugins or REGISTRY.values())]
        self.resync_period = resync_period
        self._pods: dict[str, dict] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._deadlines: dict[str, float] = {}    # uid -> earliest token refresh
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        for cache in (host.configmaps, host.secrets):
            if cache is not None:
                cache.on_change(self._make_source_callback(cache.resource))

    # -- lookups ---------------------------------------------------------------------------------

    def plugin_for(self, volume: dict):
        for p in self.plugins:
            if p.can_support(volume):
                return p
        return None

    def _plugin_by_dir(self, dir_name: str):
        for p in self.plugins:
            if plugin_dir_name(p.NAME) == dir_name:
                return p
        return None

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def mounted_pods(self) -> list[str]:
        return list(self._pods)

    # -- mount / unmount ---------------------------------------------------------------------------

    async def mount_pod(self, pod: dict) -> dict[str, str]:
        uid = pod["metadata"]["uid"]
        for cache in (self.host.configmaps, self.host.secrets):
            if cache is not None:
                cache.register_pod(pod)
        async with self._lock(uid):
            self._pods[uid] = pod
            paths, errors = await self._setup(pod, only_refreshable=False)
        if errors:
            name, message = errors[0]
            raise VolumeError(message, volume=name, errors=[m for _, m in errors])
        return paths

    async def refresh(self, pod: dict) -> None:
        """Re-write the pod's API-data volumes (call it when the pod itself changed)."""
        uid = pod["metadata"]["uid"]
        if uid not in self._pods:
            return
        for cache in (self.host.configmaps, self.host.secrets):
            if cache is not None:
                cache.register_pod(pod)
        async with self._lock(uid):
            if uid not in self._pods:
                return
            self._pods[uid] = pod
            _, errors = await self._setup(pod, only_refreshable=True)
        for name, message in errors:
            log.warning("refreshing volume %s of pod %s: %s", name, uid, message)

    async def _setup(self, pod: dict, only_refreshable: bool) -> tuple[dict[str, str], list[tuple[str, str]]]:
        uid = pod["metadata"]["uid"]
        paths: dict[str, str] = {}
        errors: list[tuple[str, str]] = []
        deadline: float | None = None
        for vol in (pod.get("spec") or {}).get("volumes") or ():
            name = vol.get("name") or ""
            plugin = self.plugin_for(vol)
            if plugin is None:
                kinds = [k for k in vol if k != "name"]
                errors.append((name, (f'MountVolume.SetUp failed for volume "{name}" : volume type '
                                      f'{", ".join(kinds) or "(none)"} is not supported yet')))
                continue
            if only_refreshable and not plugin.needs_refresh:
                continue
            vdir = volume_dir(self.host.root, uid, plugin.NAME, name)
            try:
                paths[name] = str(await plugin.setup(pod, vol, vdir))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not isinstance(e, (LookupError, ValueError, OSError, TimeoutError)):
                    log.exception("volume %s of pod %s", name, uid)
                text = e.args[0] if isinstance(e, LookupError) and e.args else str(e)
                errors.append((name, f'MountVolume.SetUp failed for volume "{name}" : {text}'))
                continue
            at = getattr(plugin, "next_refresh", lambda d: None)(vdir)
            if at is not None:
                deadline = at if deadline is None else min(deadline, at)
        if deadline is not None:
            self._deadlines[uid] = deadline
            self._wake.set()
        elif not only_refreshable:
            self._deadlines.pop(uid, None)
        return paths, errors

    async def unmount_pod(self, uid: str) -> None:
        for cache in (self.host.configmaps, self.host.secrets):
            if cache is not None:
                cache.unregister_pod(uid)
        async with self._lock(uid):
            self._pods.pop(uid, None)
            self._deadlines.pop(uid, None)
            self._dirty.discard(uid)
            pod_dir = self.host.pod_dir(uid)
            volumes = pod_dir / "volumes"
            if volumes.is_dir():
                for plugin_dir in sorted(volumes.iterdir()):
                    plugin = self._plugin_by_dir(plugin_dir.name)
                    for vdir in sorted(plugin_dir.iterdir()) if plugin_dir.is_dir() else ():
                        if plugin is not None:
                            await plugin.teardown(vdir)
            await asyncio.to_thread(_remove_pod_volumes, pod_dir)
        self._locks.pop(uid, None)

    # -- the refresh loop --------------------------------------------------------------------------

    def _make_source_callback(self, resource: str):
        def changed(namespace: str, name: str) -> None:
            for uid, pod in self._pods.items():
                if (pod.get("metadata") or {}).get("namespace") == namespace and \
                        name in references(pod, resource):
                    self._dirty.add(uid)
            if self._dirty:
                self._wake.set()
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        next_resync = time.monotonic() + self.resync_period
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                now = time.time()
                due = [uid for uid, at in self._deadlines.items() if at <= now]
                for uid in due:
                    self._deadlines.pop(uid, None)
                    self._dirty.add(uid)
                if time.monotonic() >= next_resync:
                    self._dirty.update(self._pods)
                    next_resync = time.monotonic() + self.resync_period
                dirty, self._dirty = self._dirty, set()
                await asyncio.gather(*(self._refresh_uid(uid) for uid in dirty))
                if self._dirty:
                    continue
                timeout = next_resync - time.monotonic()
                if self._deadlines:
                    timeout = min(timeout, min(self._deadlines.values()) - time.time())
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([waker, stopper], timeout=max(0.0, timeout),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
        finally:
            stopper.cancel()

    async def _refresh_uid(self, uid: str) -> None:
        pod = self._pods.get(uid)
        if pod is None:
            return
        try:
            await self.refresh(pod)
        except Exception:
            log.exception("refreshing volumes of pod %s", uid)


def _remove_pod_volumes(pod_dir: Path) -> None:
    """Blocking: everything this package made under the pod's directory, mounts first."""
    if not pod_dir.exists():
        return
    mountutil.unmount_all(pod_dir)
    for sub in ("volumes", "volume-subpaths", "containers"):
        mountutil.remove_tree(pod_dir / sub)
    try:
        pod_dir.rmdir()   # only when nothing else (etc-hosts, resolv.conf: the runtime's) is left
    except OSError:
        pass
