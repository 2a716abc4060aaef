"""Schedule arithmetic for the CronJob controller: upstream's ``pkg/controller/cronjob/utils.go``.

- `parse_schedule` (`kubeling.api.cron`): the schedule in the CronJob's ``timeZone`` (UTC
  without one, as a kube-controller-manager running in UTC does). ``TZ=``/``CRON_TZ=`` prefixes
  never get here: validation refuses them.
- `most_recent_schedule_time`: the latest schedule time in ``(earliest, now]``, where earliest is
  ``status.lastScheduleTime`` or the creation time, moved up to ``now - startingDeadlineSeconds``
  when that is set, plus how many were missed (more than 100 makes upstream's
  ``TooManyMissedTimes`` warning). Like upstream it estimates the count from the interval
  between the next two times instead of walking every one.
- `job_name`: ``<cronjob>-<scheduled time in minutes since the epoch>``, so the name is the lock
  that stops one schedule time making two Jobs.
- `ScaledClock`: a test seam. It runs a clock ``speed`` times faster than its base, optionally
  from a chosen wall time, so an end-to-end test sees minutes pass in seconds
  (``kubeling controller-manager --cronjob-clock-speed``).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


from kubeling.api.cron import Schedule, parse_schedule, time_zone  # noqa: F401 - this module's API

from kubeling.controllers.controller_utils import parse_time

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TOO_MANY_MISSED = 100
NEXT_SCHEDULE_DELTA = 0.1  # requeue a little after the slot, so the slot has surely come
NONE, FEW, MANY = "none", "few", "many"


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recent:
    earliest: dt.datetime
    most_recent: dt.datetime | None
    missed: str


def most_recent_schedule_time(cj: dict, now: dt.datetime, sched: Schedule, with_deadline: bool = True) -> Recent:
    """See the module docstring; raises ValueError for a schedule that never fires twice."""
    status = cj.get("status") or {}
    earliest = parse_time(status.get("lastScheduleTime")) or parse_time(cj["metadata"].get("creationTimestamp")) \
        or now
    deadline = (cj.get("spec") or {}).get("startingDeadlineSeconds")
    if with_deadline and deadline is not None:
        earliest = max(earliest, now - dt.timedelta(seconds=deadline))
    try:
        t1 = sched.next(earliest)
        t2 = sched.next(t1)
    except Exception as e:  # noqa: BLE001 - croniter: "failed to find next date" (e.g. 31 February)
        raise ValueError(str(e)) from None
    if now < t1:
        return Recent(earliest, None, NONE)
    if now < t2:
        return Recent(earliest, t1, NONE)
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    # start one interval before the estimate so irregular schedules (e.g. 30 6-16/4 * * 1-5)
    # still find their true latest time
    t = sched.next(t1 + dt.timedelta(seconds=(missed - 2) * between))
    most_recent = None
    while t <= now:
        most_recent = t
        t = sched.next(t)
    return Recent(earliest, most_recent, MANY if missed > TOO_MANY_MISSED else FEW)


def next_schedule_delay(cj: dict, now: dt.datetime, sched: Schedule) -> float:
    """Seconds until the sync after the next schedule time (upstream's nextScheduleTimeDuration)."""
    try:
        r = most_recent_schedule_time(cj, now, sched, with_deadline=False)
        base = r.most_recent or (r.earliest if r.missed == NONE else now)
    except ValueError:
        base = now
    return (sched.next(base) - now).total_seconds() + NEXT_SCHEDULE_DELTA


def job_name(cj: dict, scheduled: dt.datetime) -> str:
    return f"{cj['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


def job_from_template(cj: dict, scheduled: dt.datetime, tz: dt.tzinfo) -> dict:
    """The Job a CronJob makes for ``scheduled`` (upstream's getJobFromTemplate2)."""
    template = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = scheduled.astimezone(tz).isoformat(timespec="seconds").replace("+00:00", "Z")
    meta = cj["metadata"]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(cj, scheduled), "namespace": meta["namespace"],
                         "labels": dict(tmeta.get("labels") or {}), "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": copy.deepcopy(template.get("spec") or {})}


def finished_type(job: dict) -> str | None:
    """``Complete`` or ``Failed`` when the Job has that condition True, else None."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def start_time_key(job: dict) -> tuple:
    """Oldest first: jobs without a startTime last, names break ties (upstream's byJobStartTime)."""
    start = parse_time((job.get("status") or {}).get("startTime"))
    return (start is None, start or dt.datetime.max.replace(tzinfo=dt.UTC), job["metadata"]["name"])


class ScaledClock:
    """A `Clock` running ``speed`` times as fast as ``base``, from wall time ``start`` (or
    ``base``'s now). Timers and sleeps are shortened by ``speed`` on the base clock."""

    def __init__(self, base, speed: float = 1.0, start: dt.datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.base, self.speed = base, speed
        self._mono0 = base.now()
        self._wall0 = start or base.wall()

    def now(self) -> float:
        return self._mono0 + (self.base.now() - self._mono0) * self.speed

    def wall(self) -> dt.datetime:
        return self._wall0 + dt.timedelta(seconds=(self.base.now() - self._mono0) * self.speed)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self.base.call_later(max(delay, 0.0) / self.speed, fn, *args)

    async def sleep(self, delay: float) -> None:
        await self.base.sleep(max(delay, 0.0) / self.speed)
