"""Printers for batch/v1: Job (STATUS, COMPLETIONS, DURATION) and CronJob."""

from __future__ import annotations

from datetime import datetime

from kubeling.api import duration
from kubeling.api.printers.common import (AGE, CONTAINERS, IMAGES, NAME, Column, Printer, age, bool_ptr,
                                          container_cells, deleting, format_selector, g, name, since)

_BATCH = "io.k8s.api.batch.v1."


def _doc(defn: str, prop: str) -> tuple[str, str]:
    return (_BATCH + defn, prop)


def _condition(o: dict, ctype: str) -> bool:
    for c in g(o, "status", "conditions", default=[]):
        if c.get("type") == ctype:
            return c.get("status") == "True"
    return False


def job_status(o: dict) -> str:
    """Complete, Failed, Terminating, Suspended, FailureTarget or Running — first that applies."""
    if _condition(o, "Complete"):
        return "Complete"
    if _condition(o, "Failed"):
        return "Failed"
    if deleting(o):
        return "Terminating"
    if _condition(o, "Suspended"):
        return "Suspended"
    if _condition(o, "FailureTarget"):
        return "FailureTarget"
    return "Running"


def job_completions(o: dict) -> str:
    """``succeeded/completions``; without completions ``n/1`` or ``n/1 of <parallelism>``."""
    succeeded = g(o, "status", "succeeded", default=0)
    completions = g(o, "spec", "completions")
    if completions is not None:
        return f"{succeeded}/{completions}"
    parallelism = g(o, "spec", "parallelism", default=0)
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def job_duration(o: dict, now: datetime) -> str:
    start = g(o, "status", "startTime")
    if not start:
        return ""
    end = g(o, "status", "completionTime")
    if not end:
        return since(start, now)
    return duration.between(start, end)


def _job(o: dict, now: datetime) -> list:
    names, images = container_cells(g(o, "spec", "template", "spec"))
    return [name(o), job_status(o), job_completions(o), job_duration(o, now), age(o, now), names, images,
            format_selector(g(o, "spec", "selector"))]


JOB = Printer((
    NAME, Column("Status", doc="Status of the job."), Column("Completions", doc=_doc("JobStatus", "succeeded")),
    Column("Duration", doc="Time required to complete the job."), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("JobSpec", "selector")),
), _job)


def _cron_job(o: dict, now: datetime) -> list:
    spec = o.get("spec") or {}
    last = g(o, "status", "lastScheduleTime")
    names, images = container_cells(g(spec, "jobTemplate", "spec", "template", "spec"))
    return [name(o), spec.get("schedule", ""), spec.get("timeZone") or "<none>", bool_ptr(spec.get("suspend")),
            len(g(o, "status", "active", default=[])), since(last, now) if last else "<none>", age(o, now),
            names, images, format_selector(g(spec, "jobTemplate", "spec", "selector"))]


CRON_JOB = Printer((
    NAME, Column("Schedule", doc=_doc("CronJobSpec", "schedule")),
    Column("Timezone", doc=_doc("CronJobSpec", "timeZone")),
    Column("Suspend", "boolean", _doc("CronJobSpec", "suspend")),
    Column("Active", "integer", _doc("CronJobStatus", "active")),
    Column("Last Schedule", doc=_doc("CronJobStatus", "lastScheduleTime")), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("JobSpec", "selector")),
), _cron_job)


PRINTERS: dict[tuple[str, str], Printer] = {
    ("batch", "Job"): JOB,
    ("batch", "CronJob"): CRON_JOB,
}
