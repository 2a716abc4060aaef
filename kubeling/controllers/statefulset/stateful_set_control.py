"""One reconcile of one StatefulSet (upstream's ``stateful_set_control.go``).

``update_stateful_set(sts, pods, revisions)`` runs these steps, in order, and stops at the first
that has to wait::

    revisions ─▶ status counts ─▶ replicas 0..n-1 ─▶ condemned n.. (highest first) ─▶ rolling update
                                                                                  ─▶ write status
                                                                                  ─▶ truncate history

- **Revisions**: the update revision is the ControllerRevision whose data equals the set's
  current template (created, or an older equal one renumbered as the newest — a rollback); the
  current revision is the one ``status.currentRevision`` names (the update revision at first).
- **Replicas** (ordinals ``start .. start+replicas-1``), ascending: a Failed or Succeeded pod is
  deleted (it comes back, same name, on a later sync); a missing pod is created (its claims
  first) at the current revision below the partition, else at the update revision. With
  ``OrderedReady`` (monotonic) the walk stops at a pod just created, terminating, or not Running
  and Ready (and available, with ``minReadySeconds``): ordinal i+1 is made only once 0..i are
  Ready. ``Parallel`` never stops here.
- **Condemned** (ordinals out of range), highest ordinal first: deleted, one at a time and only
  while every other pod is healthy under ``OrderedReady``; all at once under ``Parallel``. The
  retention policy's claim owners are set before the delete, so ``whenScaled: Delete`` claims
  go with their pod (the garbage collector deletes them).
- **RollingUpdate**: from the highest ordinal down to ``partition``, the first pod not at the
  update revision is deleted (the replicas step recreates it at the update revision); the walk
  waits for each updated pod to be healthy. ``OnDelete`` only recreates what the user deletes.
- **Status**: observedGeneration, replicas, readyReplicas, availableReplicas, currentReplicas,
  updatedReplicas, currentRevision, updateRevision, collisionCount. A RollingUpdate whose pods
  are all updated and Ready completes: currentRevision becomes updateRevision. The status is
  written even when a pod write failed, then the failure is raised (so the key is retried).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubeling.client.events import WARNING
from kubeling.controllers import history
from kubeling.controllers.controller_utils import update_status
from kubeling.controllers.statefulset import stateful_set_utils as u
from kubeling.controllers.statefulset.stateful_pod_control import StatefulPodControl

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one reconcile left: the status written, and whether pods wait for minReadySeconds."""

    status: dict
    wait_for_available: bool = False


class StatefulSetControl:
    def __init__(self, client, pod_control: StatefulPodControl, recorder, clock) -> None:
        self.client = client
        self.pods = pod_control
        self.recorder = recorder
        self.clock = clock

    async def update_stateful_set(self, sts: dict, pods: list[dict], revisions: list[dict]) -> Outcome:
        revisions = history.sort_revisions(revisions)
        current, update, collision = await self._revisions(sts, revisions)
        status: dict = {}
        failure: Exception | None = None
        try:
            status = await self._update_pods(sts, current, update, collision, pods)
        except Exception as e:  # noqa: BLE001 - the status is still written, then the error raised
            failure = e
            status = self._count(sts, current, update, collision, pods)
        await self._write_status(sts, status)
        live = {current["metadata"]["name"], update["metadata"]["name"]} | {u.pod_revision(p) for p in pods}
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        await history.truncate_history(self.client, revisions, live, None if limit is None else int(limit))
        if failure is not None:
            raise failure
        now = self.clock.wall()
        waiting = u.min_ready_seconds(sts) > 0 and any(
            u.is_running_and_ready(p) and not u.is_running_and_available(p, u.min_ready_seconds(sts), now)
            for p in pods)
        return Outcome(status, waiting)

    # -- revisions -----------------------------------------------------------------------------

    async def _revisions(self, sts: dict, revisions: list[dict]) -> tuple[dict, dict, int]:
        collision = int((sts.get("status") or {}).get("collisionCount") or 0)
        update = u.new_revision(sts, history.next_revision(revisions), collision)
        equal = history.find_equal_revisions(revisions, update)
        if equal and revisions and equal[-1]["metadata"]["name"] == revisions[-1]["metadata"]["name"]:
            update = equal[-1]  # the newest revision already is this template
        elif equal:
            update = await history.update_revision_number(self.client, equal[-1], update["revision"])
        else:
            update, collision = await history.create_controller_revision(self.client, sts, update, collision)
        want = (sts.get("status") or {}).get("currentRevision")
        current = next((r for r in revisions if r["metadata"]["name"] == want), None) or update
        return current, update, collision

    # -- pods ----------------------------------------------------------------------------------

    def _count(self, sts: dict, current: dict, update: dict, collision: int, pods: list[dict]) -> dict:
        cur, upd = current["metadata"]["name"], update["metadata"]["name"]
        status = {"observedGeneration": sts["metadata"].get("generation", 0), "replicas": 0, "readyReplicas": 0,
                  "currentReplicas": 0, "updatedReplicas": 0, "availableReplicas": 0, "currentRevision": cur,
                  "updateRevision": upd, "collisionCount": collision}
        now = self.clock.wall()
        for p in pods:
            status["replicas"] += 1
            if u.is_running_and_ready(p):
                status["readyReplicas"] += 1
                if u.is_running_and_available(p, u.min_ready_seconds(sts), now):
                    status["availableReplicas"] += 1
            if u.is_created(p) and not u.is_terminating(p):
                status["currentReplicas"] += u.pod_revision(p) == cur
                status["updatedReplicas"] += u.pod_revision(p) == upd
        return status

    async def _update_pods(self, sts: dict, current: dict, update: dict, collision: int,
                           pods: list[dict]) -> dict:
        status = self._count(sts, current, update, collision, pods)
        if sts["metadata"].get("deletionTimestamp"):
            return status  # the garbage collector takes the pods; nothing more to make
        cur_name, upd_name = current["metadata"]["name"], update["metadata"]["name"]
        current_set = history.apply_revision(sts, current)
        update_set = history.apply_revision(sts, update)
        start, count = u.start_ordinal(sts), u.replicas(sts)
        slots: list[dict | None] = [None] * count
        condemned: list[dict] = []
        for p in pods:
            o = u.get_ordinal(p)
            if start <= o < start + count:
                slots[o - start] = p
            elif o >= 0:
                condemned.append(p)
        current_replicas = int((sts.get("status") or {}).get("currentReplicas") or 0)
        replicas = [p if p is not None else u.new_versioned_pod(current_set, update_set, cur_name, upd_name,
                                                                start + i, current_replicas)
                    for i, p in enumerate(slots)]
        condemned.sort(key=u.get_ordinal, reverse=True)
        first_unhealthy = next((p for p in replicas + condemned if not u.is_healthy(p)), None)
        monotonic = not u.allows_burst(sts)
        min_ready = u.min_ready_seconds(sts)
        now = self.clock.wall()

        for i, pod in enumerate(replicas):
            if u.is_failed(pod) or u.is_succeeded(pod):
                if not u.is_terminating(pod):
                    self.recorder.event(sts, WARNING, "RecreatingFailedPod" if u.is_failed(pod) else
                                        "RecreatingTerminatedPod",
                                        f"StatefulSet {sts['metadata'].get('namespace')}/{sts['metadata']['name']} "
                                        f"is recreating {'failed' if u.is_failed(pod) else 'terminated'} "
                                        f"Pod {pod['metadata']['name']}")
                    await self.pods.delete_pod(sts, pod)
                    self._uncount(status, pod, cur_name, upd_name)
                if monotonic:
                    return status
                continue
            if not u.is_created(pod):
                if await self.pods.create_pod(sts, pod) is not None:
                    status["replicas"] += 1
                    status["currentReplicas"] += u.pod_revision(pod) == cur_name
                    status["updatedReplicas"] += u.pod_revision(pod) == upd_name
                if monotonic:
                    return status
                continue
            if u.is_terminating(pod):
                if monotonic:
                    return status  # its successor waits until it is gone and made again
                continue
            if monotonic and not u.is_running_and_ready(pod):
                return status
            if monotonic and min_ready and not u.is_running_and_available(pod, min_ready, now):
                return status
            await self.pods.update_pod(update_set if u.pod_revision(pod) == upd_name else current_set, pod)
            await self.pods.update_claims_for_retention(sts, pod)

        for pod in condemned:
            if u.is_terminating(pod):
                if monotonic:
                    return status
                continue
            if monotonic and not u.is_running_and_ready(pod) and pod is not first_unhealthy:
                return status
            await self.pods.update_claims_for_retention(sts, pod)
            await self.pods.delete_pod(sts, pod)
            self._uncount(status, pod, cur_name, upd_name)
            if monotonic:
                return status

        if u.strategy(sts).get("type") == "OnDelete":
            return status
        floor = start + (u.partition(sts) or 0)
        for pod in reversed(replicas):
            if u.get_ordinal(pod) < floor:
                break
            if u.pod_revision(pod) != upd_name and not u.is_terminating(pod):
                await self.pods.delete_pod(sts, pod)
                self._uncount(status, pod, cur_name, upd_name)
                return status
            if not u.is_healthy(pod):
                return status
        return status

    @staticmethod
    def _uncount(status: dict, pod: dict, cur: str, upd: str) -> None:
        status["currentReplicas"] -= u.pod_revision(pod) == cur
        status["updatedReplicas"] -= u.pod_revision(pod) == upd

    # -- status --------------------------------------------------------------------------------

    async def _write_status(self, sts: dict, status: dict) -> None:
        if u.strategy(sts).get("type", "RollingUpdate") == "RollingUpdate" and \
                status["updatedReplicas"] == status["replicas"] and status["readyReplicas"] == status["replicas"]:
            status["currentReplicas"] = status["updatedReplicas"]
            status["currentRevision"] = status["updateRevision"]
        await update_status(self.client, "apps", "statefulsets", sts, status, _merge_status)

def _merge_status(have: dict, computed: dict) -> dict:
    """``have`` with the computed fields; a zero ``collisionCount`` dropped (omitempty), as the
    server returns it, so an unchanged status compares equal and is not written again."""
    merged = {**have, **computed}
    if not merged.get("collisionCount"):
        merged.pop("collisionCount", None)
    return merged
