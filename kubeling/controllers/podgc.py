"""Pod garbage collector: upstream's ``pkg/controller/podgc`` (``--controllers`` name ``podgc``,
upstream's short alias, as the other controllers here use; upstream also accepts
``pod-garbage-collector-controller``).

Every `GC_PERIOD` (20 s) one pass over the pod and node caches, as upstream's ``gc``:

1. **terminated**: when more than ``--terminated-pod-gc-threshold`` pods (``ctx``,
   12500 by default; 0 disables) are Succeeded/Failed, the excess is deleted, evicted pods
   first, then oldest first;
2. **terminating on an out-of-service node**: a pod being deleted on a node that is not Ready
   and has the ``node.kubernetes.io/out-of-service`` taint is force-deleted (the kubelet is
   known to be gone, so nobody else will finish it);
3. **orphaned**: a pod bound to a Node that is not in the cache is quarantined for
   `QUARANTINE` (40 s); if the Node is then still absent — checked with a GET, not the cache —
   the pod gets the ``DisruptionTarget`` condition (reason ``DeletionByPodGC``, "PodGC: node
   no longer exists"), phase Failed, and is force-deleted;
4. **unscheduled terminating**: a pod being deleted that was never bound is force-deleted.

"Force-deleted": a pod not yet terminal is first patched to phase Failed (with the condition,
if any) so that its controller counts it, then deleted with ``gracePeriodSeconds: 0``.

Keys: `GC_KEY` for the periodic pass (it requeues itself) and ``("node", name)`` for a
quarantined node name. A pod whose delete fails is logged and left for the next pass; one bad
pod never stops the others.
"""

from __future__ import annotations

import asyncio
import logging

from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext
from kubeling.controllers.controller_utils import parse_time, pod_condition

log = logging.getLogger(__name__)

GC_KEY = "gc"
GC_PERIOD = 20.0
QUARANTINE = 40.0
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
ORPHAN_CONDITION = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists"}


def is_terminated(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Pending", "Running", "Unknown", None)


def _evicted_then_oldest(pod: dict) -> tuple:
    status = pod.get("status") or {}
    evicted = status.get("phase") == "Failed" and status.get("reason") == "Evicted"
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (not evicted, created.timestamp() if created else 0.0, pod["metadata"].get("name", ""))


def _node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


class PodGCController(Controller):
    NAME = "podgc"
    WORKERS = 1  # one pass at a time, as upstream's single gc loop

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.threshold = ctx.terminated_pod_gc_threshold
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.handle(self.pods)
        self.handle(self.nodes)

    async def run(self, workers: int, stop: asyncio.Event) -> None:
        self.queue.add(GC_KEY)  # picked up once the caches have synced
        await super().run(workers, stop)

    async def sync(self, key) -> None:
        if key == GC_KEY:
            try:
                await self.gc()
            finally:
                self.queue.add_after(GC_KEY, GC_PERIOD)
            return
        await self._gc_orphans_of(key[1])

    async def gc(self) -> None:
        pods = self.pods.list()
        if self.threshold > 0:
            await self._gc_terminated(pods)
        await self._gc_terminating(pods)
        known = {n["metadata"]["name"] for n in self.nodes.list()}
        for name in {(p.get("spec") or {}).get("nodeName") for p in pods} - known - {None, ""}:
            self.queue.add_after(("node", name), QUARANTINE)
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") and not (pod.get("spec") or {}).get("nodeName"):
                await self._force_delete(pod)

    async def _gc_terminated(self, pods: list[dict]) -> None:
        done = [p for p in pods if is_terminated(p)]
        excess = len(done) - self.threshold
        if excess <= 0:
            return
        log.info("garbage collecting %d terminated pods", excess)
        done.sort(key=_evicted_then_oldest)
        await asyncio.gather(*(self._force_delete(p) for p in done[:excess]))

    async def _gc_terminating(self, pods: list[dict]) -> None:
        doomed = []
        for pod in pods:
            if not pod["metadata"].get("deletionTimestamp"):
                continue
            node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
            if node is None or _node_ready(node):
                continue
            if any(t.get("key") == OUT_OF_SERVICE for t in (node.get("spec") or {}).get("taints") or ()):
                doomed.append(pod)
        doomed.sort(key=_evicted_then_oldest)
        await asyncio.gather(*(self._force_delete(p) for p in doomed))

    async def _gc_orphans_of(self, node_name: str) -> None:
        """After quarantine: if the Node is really gone, its pods go too."""
        if self.nodes.get(node_name) is not None:
            return
        try:
            await self.client.get("", "v1", "nodes", node_name)
            return
        except Exception as e:
            if not is_not_found(e):
                raise
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") == node_name:
                log.info("deleting pod %s/%s: its node %s no longer exists", pod["metadata"].get("namespace"),
                         pod["metadata"]["name"], node_name)
                await self._force_delete(pod, ORPHAN_CONDITION)

    async def _force_delete(self, pod: dict, condition: dict | None = None) -> None:
        """Mark the pod Failed (plus ``condition``) unless terminal, then delete it with grace 0."""
        meta = pod["metadata"]
        try:
            if not is_terminated(pod):
                status: dict = {"phase": "Failed"}
                if condition is not None:
                    now = self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
                    conds = [c for c in (pod.get("status") or {}).get("conditions") or ()
                             if c.get("type") != condition["type"]]
                    old = pod_condition(pod, condition["type"]) or {}
                    same = old.get("status") == condition["status"]
                    conds.append({**condition, "lastProbeTime": None,
                                  "lastTransitionTime": old.get("lastTransitionTime") if same else now})
                    status["conditions"] = conds
                await self.client.patch("", "v1", "pods", meta["name"], {"metadata": {"uid": meta["uid"]},
                                                                         "status": status},
                                        namespace=meta["namespace"], subresource="status", patch_type="strategic")
            await self.client.delete("", "v1", "pods", meta["name"], namespace=meta["namespace"],
                                     grace_period_seconds=0, preconditions={"uid": meta["uid"]})
        except Exception as e:  # noqa: BLE001 - one pod's failure never stops the pass
            if not is_not_found(e):
                log.warning("pod GC: deleting %s/%s failed: %s", meta.get("namespace"), meta["name"], e)
