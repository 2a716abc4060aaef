"""TTL-after-finished controller: upstream's ``pkg/controller/ttlafterfinished``
(``--controllers`` name ``ttl-after-finished``).

A finished Job (condition ``Complete`` or ``Failed`` True) with ``spec.ttlSecondsAfterFinished``
is deleted that many seconds after it finished — the finishing condition's
``lastTransitionTime`` — with foreground propagation (its pods go first) and its uid as a
precondition, so a new Job of the same name is never hit.

``sync(key)``: a Job not finished, without a TTL, or already being deleted is left alone; one
whose TTL has not expired is requeued for exactly when it will (``queue.add_after``); an expired
one is re-read from the API server (the cache may be stale, and the TTL may have been changed)
and, if still expired, deleted. A finish time in the future (clock skew) just waits. A Job that
cannot say when it finished is an error for that key alone (retried with backoff).
"""

from __future__ import annotations

import logging

from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import parse_time

log = logging.getLogger(__name__)


def _finished(job: dict) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c
    return None


def _needs_cleanup(job: dict) -> bool:
    return (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None and _finished(job) is not None \
        and not job["metadata"].get("deletionTimestamp")


def finish_time(job: dict):
    """When a finished Job finished; raises ValueError if its condition does not say."""
    t = parse_time((_finished(job) or {}).get("lastTransitionTime"))
    if t is None:
        meta = job["metadata"]
        raise ValueError(f"unable to find the time when the Job {meta.get('namespace')}/{meta.get('name')} finished")
    return t


class TTLAfterFinishedController(Controller):
    NAME = "ttl-after-finished"
    WORKERS = 5  # upstream's --concurrent-ttl-after-finished-syncs

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.jobs = ctx.informers.informer_for("batch", "v1", "jobs")
        self.handle(self.jobs, self._enqueue, lambda old, new: self._enqueue(new))

    def _enqueue(self, job: dict) -> None:
        if _needs_cleanup(job):
            self.queue.add(key_of(job))

    def time_left(self, job: dict) -> float | None:
        """Seconds until the Job expires (<= 0: expired); None if it needs no cleanup."""
        if not _needs_cleanup(job):
            return None
        finished = finish_time(job)
        now = self.clock.wall()
        if finished > now:
            log.warning("job %s finished in the future (%s): clock skew?", key_of(job), finished)
        return finished.timestamp() + job["spec"]["ttlSecondsAfterFinished"] - now.timestamp()

    async def sync(self, key) -> None:
        job = self.jobs.get(key)
        if job is None:
            return
        left = self.time_left(job)
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left)
            return
        meta = job["metadata"]
        try:
            fresh = await self.client.get("batch", "v1", "jobs", meta["name"], namespace=meta["namespace"])
        except Exception as e:
            if is_not_found(e):
                return
            raise
        left = self.time_left(fresh)
        if left is None:
            return
        if left > 0:
            self.queue.add_after(key, left)
            return
        log.info("deleting job %s: ttlSecondsAfterFinished expired", key)
        try:
            await self.client.delete("batch", "v1", "jobs", meta["name"], namespace=meta["namespace"],
                                     propagation_policy="Foreground", preconditions={"uid": fresh["metadata"]["uid"]})
        except Exception as e:
            if not is_not_found(e):
                raise
