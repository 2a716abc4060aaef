"""batch/v1: Job and CronJob.

A Job's pods must not restart in place (``OnFailure`` or ``Never``), and once
created its selector, template and completion settings are fixed. A CronJob's
schedule is a standard five-field cron expression (or a ``@`` descriptor);
its time zone is a separate field.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from croniter import croniter

from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.validation import meta
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.pod import validate_pod_template

SELECTOR_MISMATCH = "`selector` does not match template `labels`"
JOB_RESTART_POLICIES = ("OnFailure", "Never")
COMPLETION_MODES = ("NonIndexed", "Indexed")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
CRONJOB_NAME_MAX = 52  # 63 minus the 11 characters of the "-<timestamp>" suffix of its jobs
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_INDEXED_COMPLETIONS = 100_000


def validate_job_spec(spec: Any, path: str, *, in_cronjob: bool = False) -> list[FieldError]:
    if not isinstance(spec, dict):
        return [required(path, "")]
    errs: list[FieldError] = []
    for k in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
              "backoffLimitPerIndex", "maxFailedIndexes"):
        errs += meta.nonneg(spec.get(k), f"{path}.{k}")
    mode = spec.get("completionMode")
    errs += meta.enum(mode, path + ".completionMode", COMPLETION_MODES)
    if mode == "Indexed":
        comp = spec.get("completions")
        if comp is None:
            errs.append(required(path + ".completions", "when completion mode is Indexed"))
        elif isinstance(comp, int) and comp > MAX_INDEXED_COMPLETIONS:
            errs.append(invalid_value(path + ".completions", comp,
                                      f"must be less than or equal to {MAX_INDEXED_COMPLETIONS} when completion "
                                      "mode is Indexed"))
    elif spec.get("backoffLimitPerIndex") is not None:
        errs.append(required(path + ".completionMode", "when backoffLimitPerIndex is specified, completionMode "
                                                       "must be set to Indexed"))
    selector = spec.get("selector")
    tmpl = spec.get("template")
    if in_cronjob and spec.get("manualSelector"):
        errs.append(not_supported(path + ".manualSelector", spec["manualSelector"], ["nil", "false"]))
    if selector is None:
        # Without manualSelector the registry generates the selector (controller-uid) before storing.
        if spec.get("manualSelector"):
            errs.append(required(path + ".selector", ""))
    else:
        errs += meta.validate_label_selector(selector, path + ".selector")
        labels = ((tmpl or {}).get("metadata") or {}).get("labels") or {}
        if isinstance(tmpl, dict) and not meta.selector_matches(selector, labels):
            errs.append(invalid_value(path + ".template.metadata.labels", labels, SELECTOR_MISMATCH))
    if not isinstance(tmpl, dict):
        return errs + [required(path + ".template", "")]
    errs += validate_pod_template(tmpl, path + ".template")
    policy = (tmpl.get("spec") or {}).get("restartPolicy")
    if policy not in JOB_RESTART_POLICIES:
        if policy in (None, ""):
            errs.append(required(path + ".template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
        else:
            errs.append(not_supported(path + ".template.spec.restartPolicy", policy, JOB_RESTART_POLICIES))
    return errs


def validate_job(job: dict) -> list[FieldError]:
    return validate_job_spec(job.get("spec"), "spec")


# While a Job is suspended and has never run, its scheduling directives may still change.
_SCHEDULING_FIELDS = ("nodeSelector", "affinity", "tolerations", "schedulingGates")


def _template_for_compare(tmpl: Any, suspended: bool) -> Any:
    if not suspended or not isinstance(tmpl, dict):
        return tmpl
    t = dict(tmpl)
    t["metadata"] = {}
    t["spec"] = {k: v for k, v in (tmpl.get("spec") or {}).items() if k not in _SCHEDULING_FIELDS}
    return t


def validate_job_update(new: dict, old: dict) -> list[FieldError]:
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    errs: list[FieldError] = []
    if os_.get("selector") is not None:
        errs += meta.immutable(ns.get("selector"), os_["selector"], "spec.selector")
    never_started = not (old.get("status") or {}).get("startTime")
    suspended = bool(ns.get("suspend")) and never_started
    if _template_for_compare(ns.get("template"), suspended) != _template_for_compare(os_.get("template"), suspended):
        errs.append(invalid_value("spec.template", ns.get("template"), meta.IMMUTABLE))
    errs += meta.immutable(ns.get("completionMode"), os_.get("completionMode"), "spec.completionMode")
    elastic = ns.get("completionMode") == "Indexed" and ns.get("completions") == ns.get("parallelism") \
        and os_.get("completions") == os_.get("parallelism")
    if not elastic:
        errs += meta.immutable(ns.get("completions"), os_.get("completions"), "spec.completions")
    for k in ("podFailurePolicy", "backoffLimitPerIndex"):
        errs += meta.immutable(ns.get(k), os_.get(k), f"spec.{k}")
    return errs


def validate_schedule(schedule: Any, path: str) -> list[FieldError]:
    if not schedule:
        return [required(path, "")]
    if not isinstance(schedule, str):
        return [invalid_value(path, schedule, "must be a string")]
    if "TZ" in schedule:
        return [invalid_value(path, schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    s = schedule.strip()
    if s.startswith("@"):
        if s in CRON_DESCRIPTORS or s.startswith("@every "):
            return []
        return [invalid_value(path, schedule, f"unrecognized descriptor: {s}")]
    fields = s.split()
    if len(fields) != 5:
        return [invalid_value(path, schedule, f"expected exactly 5 fields, found {len(fields)}: "
                                              f"[{' '.join(fields)}]")]
    try:
        croniter(s)
    except Exception as e:  # croniter raises several error types for bad expressions
        return [invalid_value(path, schedule, str(e) or "unparseable schedule")]
    return []


def validate_time_zone(tz: Any, path: str) -> list[FieldError]:
    if tz is None:
        return []
    if not isinstance(tz, str) or not tz or tz.lower() == "local":
        return [invalid_value(path, tz, f"unknown time zone {tz}")]
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return [invalid_value(path, tz, f"unknown time zone {tz}")]
    return []


def validate_cron_job(cj: dict) -> list[FieldError]:
    errs: list[FieldError] = []
    name = (cj.get("metadata") or {}).get("name") or ""
    if len(name) > CRONJOB_NAME_MAX:
        errs.append(invalid_value("metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX} characters"))
    spec = cj.get("spec")
    if not isinstance(spec, dict):
        return errs + [required("spec", "")]
    errs += validate_schedule(spec.get("schedule"), "spec.schedule")
    errs += validate_time_zone(spec.get("timeZone"), "spec.timeZone")
    errs += meta.enum(spec.get("concurrencyPolicy"), "spec.concurrencyPolicy", CONCURRENCY_POLICIES)
    for k in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        errs += meta.nonneg(spec.get(k), f"spec.{k}")
    jt = spec.get("jobTemplate")
    if not isinstance(jt, dict):
        return errs + [required("spec.jobTemplate", "")]
    errs += meta.validate_template_meta(jt.get("metadata"), "spec.jobTemplate.metadata")
    errs += validate_job_spec(jt.get("spec"), "spec.jobTemplate.spec", in_cronjob=True)
    return errs


KINDS = {
    ("batch", "Job"): Kind(validate_job, validate_job_update),
    ("batch", "CronJob"): Kind(validate_cron_job),
}
