"""The CronJob controller: upstream's ``pkg/controller/cronjob`` (ControllerV2, ``--controllers``
name ``cronjob``).

Keys are ``namespace/name`` of CronJobs. A Job event enqueues the CronJob controlling it. Each
sync requeues the key for just after the next schedule time, so nothing polls.

``sync(key)``, level-triggered, on a copy of the cached CronJob and the Jobs it controls:

1. **History**: finished Jobs beyond ``successfulJobsHistoryLimit``/``failedJobsHistoryLimit``
   are deleted oldest first (by startTime; event ``SuccessfulDelete``);
2. **Bookkeeping**: a finished Job in ``status.active`` leaves it (``SawCompletedJob``), the
   newest completion sets ``status.lastSuccessfulTime``, an unfinished Job we own but did not
   list is reported (``UnexpectedJob``), and an active reference whose Job is gone leaves it
   (``MissingJob``);
3. nothing more if the CronJob is being deleted, its ``timeZone`` is unknown
   (``UnknownTimeZone``), it is suspended, or its schedule does not parse
   (``UnparseableSchedule``/``InvalidSchedule``);
4. the most recent unmet schedule time is found (`cronjob_utils.most_recent_schedule_time`;
   over 100 missed records ``TooManyMissedTimes``). Too late for ``startingDeadlineSeconds``
   records ``MissSchedule``; already made (in ``active`` by name, or equal to
   ``lastScheduleTime``) does nothing;
5. ``concurrencyPolicy``: ``Forbid`` with a Job active records ``JobAlreadyActive`` and leaves
   the time unmet (it starts once the Job ends, if still within the deadline); ``Replace``
   deletes the active Jobs first; ``Allow`` just goes on;
6. the Job ``<cronjob>-<minutes>`` is created (``SuccessfulCreate``; an AlreadyExists of our own
   Job re-adds it to ``active``), with the ``batch.kubernetes.io/cronjob-scheduled-timestamp``
   annotation; ``active`` and ``lastScheduleTime`` are written with one status update.

Time comes from ``self.clock`` (``ctx.clock``, or a `ScaledClock` over it when the context sets
``cronjob_clock_speed``/``cronjob_clock_start``): tests drive it instead of waiting minutes.
Errors (a failed create, a status conflict) requeue only this CronJob.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import zoneinfo

from kubeling.client import is_already_exists, is_not_found, object_of
from kubeling.client.events import NORMAL, WARNING
from kubeling.client.workqueue import RateLimitingQueue
from kubeling.controllers import cronjob_utils as cu
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import get_controller_of, parse_time

log = logging.getLogger(__name__)

COMPONENT = "cronjob-controller"


def _clock_for(ctx: ControllerContext):
    speed = ctx.cronjob_clock_speed or 1.0
    start = parse_time(ctx.cronjob_clock_start or None)
    if speed == 1.0 and start is None:
        return ctx.clock
    return cu.ScaledClock(ctx.clock, speed, start)


class CronJobController(Controller):
    NAME = "cronjob"
    WORKERS = 5  # upstream's --concurrent-cron-job-syncs

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.clock = _clock_for(ctx)
        if self.clock is not ctx.clock:
            # the requeue-at-next-schedule timers must run on the same (faster) clock
            self.queue = RateLimitingQueue(name=self.NAME, clock=self.clock)
        self.cronjobs = ctx.informers.informer_for("batch", "v1", "cronjobs")
        self.jobs = ctx.informers.informer_for("batch", "v1", "jobs")
        self.handle(self.cronjobs, self._enqueue, self._cronjob_updated, self._enqueue)
        self.handle(self.jobs, self._job_changed, lambda old, new: self._job_changed(new), self._job_changed)
        self.recorder = ctx.recorder(COMPONENT)

    # -- handlers ------------------------------------------------------------------------------

    def _enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def _cronjob_updated(self, old: dict, new: dict) -> None:
        self.queue.add(key_of(new))

    def _job_changed(self, obj) -> None:
        job = object_of(obj)
        ref = get_controller_of(job)
        if ref is None or ref.get("kind") != "CronJob":
            return
        cj = self.cronjobs.get(f"{job['metadata'].get('namespace')}/{ref.get('name')}")
        if cj is not None and cj["metadata"].get("uid") == ref.get("uid"):
            self.queue.add(key_of(cj))

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key) -> None:
        cached = self.cronjobs.get(key)
        if cached is None:
            return
        cj = copy.deepcopy(cached)
        cj.setdefault("apiVersion", "batch/v1")
        cj.setdefault("kind", "CronJob")
        cj.setdefault("status", {})
        uid = cj["metadata"]["uid"]
        jobs = [j for j in self.jobs.indexer.by_namespace(cj["metadata"]["namespace"])
                if (get_controller_of(j) or {}).get("uid") == uid]
        changed = await self._cleanup_finished(cj, jobs)
        error: Exception | None = None
        try:
            requeue, synced = await self._sync_cronjob(cj, jobs)
        except Exception as e:  # noqa: BLE001 - still write what bookkeeping found, then retry with backoff
            requeue, synced, error = None, True, e
        if changed or synced:
            await self.client.update_status("batch", "v1", "cronjobs", cj, namespace=cj["metadata"]["namespace"])
        if requeue is not None:
            self.queue.add_after(key, requeue)
        if error is not None:
            raise error

    async def _sync_cronjob(self, cj: dict, jobs: list[dict]) -> tuple[float | None, bool]:
        """Steps 2–6 of the module docstring; (seconds until the next sync or None, status changed)."""
        now = self.clock.wall()
        changed = await self._account(cj, jobs)
        changed = await self._drop_missing(cj, jobs) or changed
        spec, status = cj.get("spec") or {}, cj["status"]
        if cj["metadata"].get("deletionTimestamp"):
            return None, changed
        try:
            tz = cu.time_zone(spec.get("timeZone"))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            self.recorder.event(cj, WARNING, "UnknownTimeZone", f'invalid timeZone: "{spec.get("timeZone")}": {e}')
            return None, changed
        if spec.get("suspend"):
            return None, changed
        try:
            sched = cu.parse_schedule(spec.get("schedule", ""), spec.get("timeZone"))
        except ValueError as e:
            self.recorder.event(cj, WARNING, "UnparseableSchedule",
                                f'unparseable schedule: "{spec.get("schedule")}" : {e}')
            return None, changed
        try:
            recent = cu.most_recent_schedule_time(cj, now, sched)
        except ValueError as e:
            self.recorder.event(cj, WARNING, "InvalidSchedule", f"invalid schedule: {spec.get('schedule')} : {e}")
            return None, changed
        next_in = cu.next_schedule_delay(cj, now, sched)
        scheduled = recent.most_recent
        if scheduled is None:
            return next_in, changed
        if recent.missed == cu.MANY:
            self.recorder.event(cj, WARNING, "TooManyMissedTimes",
                                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or "
                                "check clock skew")
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + dt.timedelta(seconds=deadline) < now:
            self.recorder.event(cj, WARNING, "MissSchedule", "Missed scheduled time to start a job: "
                                + scheduled.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000"))
            return next_in, changed
        name = cu.job_name(cj, scheduled)
        if any(a.get("name") == name for a in status.get("active") or ()) or \
                parse_time(status.get("lastScheduleTime")) == scheduled:
            return next_in, changed
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and status.get("active"):
            self.recorder.event(cj, NORMAL, "JobAlreadyActive",
                                "Not starting job because prior execution is running and concurrency policy is Forbid")
            return next_in, changed
        if policy == "Replace":
            for ref in list(status.get("active") or ()):
                if not await self._delete_job(cj, ref["name"], ref.get("uid")):
                    raise RuntimeError(f"could not replace job {ref.get('namespace')}/{ref['name']}")
                changed = True
        created = await self._create_job(cj, scheduled, tz)
        if created is None:
            return None, changed
        status.setdefault("active", []).append(_reference(created))
        status["lastScheduleTime"] = cu.rfc3339(scheduled)
        return next_in, True

    async def _account(self, cj: dict, jobs: list[dict]) -> bool:
        """Step 2 over the listed Jobs; True if the status changed."""
        changed = False
        for job in jobs:
            status = cj["status"]
            active_uids = {a.get("uid") for a in status.get("active") or ()}
            juid = job["metadata"].get("uid")
            finished = cu.finished_type(job)
            if juid not in active_uids and finished is None:
                # our own status write may not have reached the cache yet: ask the server
                fresh = await self.client.get("batch", "v1", "cronjobs", cj["metadata"]["name"],
                                              namespace=cj["metadata"]["namespace"])
                if any(a.get("uid") == juid for a in (fresh.get("status") or {}).get("active") or ()):
                    cj["metadata"]["resourceVersion"] = fresh["metadata"].get("resourceVersion")
                    cj["status"] = fresh.get("status") or {}
                    continue
                self.recorder.event(cj, WARNING, "UnexpectedJob",
                                    f"Saw a job that the controller did not create or forgot: {job['metadata']['name']}")
            elif juid in active_uids and finished is not None:
                status["active"] = [a for a in status.get("active") or () if a.get("uid") != juid]
                self.recorder.event(cj, NORMAL, "SawCompletedJob",
                                    f"Saw completed job: {job['metadata']['name']}, status: {finished}")
                changed = True
            if finished == "Complete":
                done = (job.get("status") or {}).get("completionTime")
                last = parse_time(status.get("lastSuccessfulTime"))
                if done and (last is None or parse_time(done) > last):
                    status["lastSuccessfulTime"] = done
                    changed = True
        return changed

    async def _drop_missing(self, cj: dict, jobs: list[dict]) -> bool:
        """An active reference whose Job is in neither the cache nor the API server goes."""
        listed = {j["metadata"].get("uid") for j in jobs}
        changed = False
        for ref in list(cj["status"].get("active") or ()):
            if ref.get("uid") in listed:
                continue
            try:
                await self.client.get("batch", "v1", "jobs", ref["name"], namespace=cj["metadata"]["namespace"])
                continue  # the cache is behind; the Job is there
            except Exception as e:
                if not is_not_found(e):
                    raise
            self.recorder.event(cj, NORMAL, "MissingJob", f"Active job went missing: {ref['name']}")
            cj["status"]["active"] = [a for a in cj["status"]["active"] if a.get("uid") != ref.get("uid")]
            changed = True
        return changed

    async def _create_job(self, cj: dict, scheduled: dt.datetime, tz: dt.tzinfo) -> dict | None:
        want = cu.job_from_template(cj, scheduled, tz)
        ns = cj["metadata"]["namespace"]
        try:
            created = await self.client.create("batch", "v1", "jobs", want, namespace=ns)
        except Exception as e:
            if not is_already_exists(e):
                self.recorder.event(cj, WARNING, "FailedCreate", f"Error creating job: {getattr(e, 'message', e)}")
                raise
            created = await self.client.get("batch", "v1", "jobs", want["metadata"]["name"], namespace=ns)
            if (get_controller_of(created) or {}).get("uid") != cj["metadata"]["uid"]:
                return None  # someone else's Job: leave it alone
            if any(a.get("uid") == created["metadata"].get("uid") for a in cj["status"].get("active") or ()):
                return None
            log.info("cronjob %s/%s: job %s already exists", ns, cj["metadata"]["name"], want["metadata"]["name"])
            return created
        self.recorder.event(cj, NORMAL, "SuccessfulCreate", f"Created job {created['metadata']['name']}")
        return created

    async def _delete_job(self, cj: dict, name: str, uid: str | None) -> bool:
        """Delete a Job and its pods (background), and drop it from ``active``."""
        ns = cj["metadata"]["namespace"]
        try:
            await self.client.delete("batch", "v1", "jobs", name, namespace=ns, propagation_policy="Background")
        except Exception as e:  # noqa: BLE001 - any failure is reported as FailedDelete
            if not is_not_found(e):
                self.recorder.event(cj, WARNING, "FailedDelete", f"Deleted job: {getattr(e, 'message', e)}")
                return False
        cj["status"]["active"] = [a for a in cj["status"].get("active") or () if a.get("uid") != uid]
        self.recorder.event(cj, NORMAL, "SuccessfulDelete", f"Deleted job {name}")
        return True

    async def _cleanup_finished(self, cj: dict, jobs: list[dict]) -> bool:
        """Step 1: keep at most the history limits of finished Jobs; True if any was deleted."""
        spec = cj.get("spec") or {}
        changed = False
        for kind, limit in (("Complete", spec.get("successfulJobsHistoryLimit")),
                            ("Failed", spec.get("failedJobsHistoryLimit"))):
            if limit is None:
                continue
            done = sorted((j for j in jobs if cu.finished_type(j) == kind), key=cu.start_time_key)
            for job in done[:max(len(done) - limit, 0)]:
                if await self._delete_job(cj, job["metadata"]["name"], job["metadata"].get("uid")):
                    changed = True
        return changed


def _reference(job: dict) -> dict:
    meta = job["metadata"]
    return {"kind": "Job", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
            "apiVersion": "batch/v1", "resourceVersion": meta.get("resourceVersion")}
