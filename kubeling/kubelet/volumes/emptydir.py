"""emptyDir: a directory that lives as long as the pod, on the node's disk or in memory (tmpfs).

- ``medium: ""``: a 0777 directory under the pod's volumes dir, kept across container restarts
  (that is what lets redis's data survive a crash).
- ``medium: Memory``: a tmpfs whose ``size=`` is the smallest of ``sizeLimit``, the pod's memory
  limit and the node's allocatable memory (upstream's SizeMemoryBackedVolumes rule).
- ``sizeLimit`` on disk is recorded in ``size_limits`` for the eviction manager; enforcing it
  (periodic du, then eviction) is not done here.
- HugePages media are refused: the node advertises no huge pages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubeling.api import quantity
from kubeling.kubelet.volumes import VolumeHost, ensure_tmpfs, remove_volume_dir


def pod_memory_limit(pod: dict) -> int | None:
    """Upstream's PodLimits for memory: the sum over app containers, at least each init container's."""
    spec = pod.get("spec") or {}

    def limit(c: dict) -> int:
        raw = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        return quantity.value(raw) if raw is not None else 0

    total = sum(limit(c) for c in spec.get("containers") or ())
    for c in spec.get("initContainers") or ():
        total = max(total, limit(c))
    return total or None


class EmptyDirPlugin:
    NAME = "kubernetes.io/empty-dir"
    SOURCE = "emptyDir"  # the pod.spec.volumes[] key it serves
    needs_refresh = False
    read_only = False

    def __init__(self, host: VolumeHost) -> None:
        self.host = host
        self.size_limits: dict[str, int] = {}   # volume dir -> sizeLimit bytes, for eviction

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    def memory_size(self, pod: dict, source: dict) -> int | None:
        candidates = []
        alloc = self.host.node_allocatable.get("memory")
        if alloc is not None:
            candidates.append(quantity.value(alloc))
        pod_limit = pod_memory_limit(pod)
        if pod_limit:
            candidates.append(pod_limit)
        if source.get("sizeLimit") is not None and quantity.value(source["sizeLimit"]) > 0:
            candidates.append(quantity.value(source["sizeLimit"]))
        return min(candidates) if candidates else None

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get("emptyDir") or {}
        medium = source.get("medium") or ""
        if medium == "Memory":
            await asyncio.to_thread(ensure_tmpfs, dir, self.memory_size(pod, source))
        elif medium == "":
            await asyncio.to_thread(_make_dir, dir)
        elif medium.startswith("HugePages"):
            raise ValueError(f"hugepages are not supported on this node (medium {medium!r})")
        else:
            raise ValueError(f"unknown storage medium {medium!r}")
        if source.get("sizeLimit") is not None:
            self.size_limits[str(dir)] = quantity.value(source["sizeLimit"])
        return dir

    async def teardown(self, dir: Path) -> None:
        self.size_limits.pop(str(dir), None)
        await remove_volume_dir(dir)


def _make_dir(dir: Path) -> None:
    if not dir.is_dir():
        dir.mkdir(parents=True, exist_ok=True)
        # chmod after mkdir: the umask would narrow the 0777 every container user needs.
        dir.chmod(0o777)
