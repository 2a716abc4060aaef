"""batch/v1 defaulting: upstream's ``pkg/apis/batch/v1/defaults.go`` plus the pod
template walks.

Note what a CronJob does *not* get: ``SetDefaults_Job`` takes a whole Job, so the
``jobTemplate.spec`` of a CronJob keeps its completions / parallelism /
backoffLimit unset until the CronJob controller creates a Job from it. Only the
type-level defaulters (pod template, pod-failure-policy patterns) reach inside.
"""

from __future__ import annotations

from kubeling.api.defaults import podspec
from kubeling.api.defaults._util import child, dicts, is_empty, set_ptr, set_zero

MAX_INT32 = 2**31 - 1


def _pod_failure_policy(spec: dict) -> None:
    """``SetDefaults_PodFailurePolicyOnPodConditionsPattern``: status defaults to "True"."""
    for rule in dicts(child(spec, "podFailurePolicy"), "rules"):
        for pattern in dicts(rule, "onPodConditions"):
            set_zero(pattern, "status", "True")


def _job_spec_walk(spec: dict | None) -> None:
    if spec is None:
        return
    _pod_failure_policy(spec)
    podspec.template_defaults(child(spec, "template", create=True))


def set_defaults_job(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    # A non-parallel job may leave both unset; then both become 1.
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    set_ptr(spec, "parallelism", 1)
    if spec.get("backoffLimit") is None:
        # With a per-index limit the global one must not cut in first.
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    template_meta = child(child(spec, "template"), "metadata")
    labels = template_meta.get("labels") if template_meta else None
    meta = child(obj, "metadata", create=True)
    if isinstance(labels, dict) and meta is not None and is_empty(meta.get("labels")):
        meta["labels"] = dict(labels)
    set_ptr(spec, "completionMode", "NonIndexed")
    set_ptr(spec, "suspend", False)
    if spec.get("podReplacementPolicy") is None:
        # JobPodReplacementPolicy: on by default since 1.29.
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
    set_ptr(spec, "manualSelector", False)


def set_object_defaults_job(obj: dict) -> None:
    set_defaults_job(obj)
    _job_spec_walk(child(obj, "spec"))


def set_object_defaults_cron_job(obj: dict) -> None:
    spec = child(obj, "spec", create=True)
    if spec is None:
        return
    set_zero(spec, "concurrencyPolicy", "Allow")
    set_ptr(spec, "suspend", False)
    set_ptr(spec, "successfulJobsHistoryLimit", 3)
    set_ptr(spec, "failedJobsHistoryLimit", 1)
    _job_spec_walk(child(child(spec, "jobTemplate", create=True), "spec", create=True))


DEFAULTERS = {
    ("batch", "v1", "Job"): set_object_defaults_job,
    ("batch", "v1", "CronJob"): set_object_defaults_cron_job,
}
