"""Job status accounting with pod finalizers: upstream's ``trackJobStatusAndRemoveFinalizers``.

Every pod a Job creates carries the ``batch.kubernetes.io/job-tracking`` finalizer, so a
finished pod cannot vanish (pod GC, a user's delete, a node going away) before the Job has
counted it. Counting is a three-step protocol that never loses nor double-counts a pod even if
the controller crashes between any two writes:

1. a finished pod's UID is appended to ``status.uncountedTerminatedPods.succeeded``/``failed``
   and the status is written;
2. the pod's finalizer is removed (a strategic-merge ``$deleteFromPrimitiveList``);
3. UIDs in the uncounted lists whose pod no longer has the finalizer move into
   ``status.succeeded``/``status.failed``, and the status is written again.

A pod whose finalizer is gone is never looked at again; a UID in the lists is never appended
twice. For an Indexed Job the succeeded count is ``completedIndexes`` itself (an index cannot
succeed twice), so succeeded pods go straight to step 2.

Terminal conditions, as 1.31+ does with JobPodReplacementPolicy on: a failing Job first gets
the interim ``FailureTarget`` condition and a succeeding one ``SuccessCriteriaMet``; ``Failed``
/``Complete`` (and ``completionTime``) are added only once no pod is uncounted and none is
still terminating, so ``kubectl wait --for=condition=complete`` returns when every pod is done.

`StatusTracker` also keeps the UIDs whose finalizer removal was sent but not yet seen in the
informer (upstream's finalizer expectations): a sync skips those pods instead of counting
them again from a stale cache.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field

from kubeling.client import is_not_found
from kubeling.client.events import NORMAL, WARNING
from kubeling.controllers.job import indexed
from kubeling.controllers.job import pod_failure_policy as pfp
from kubeling.controllers.job.backoff import BackoffRecord, BackoffStore

log = logging.getLogger(__name__)

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
MAX_UNCOUNTED_PODS = 500  # keeps the UID lists (and one sync's finalizer patches) bounded
REMOVE_FINALIZER_PATCH = {"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER]}}


def rfc3339(when) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SyncContext:
    """What one ``syncJob`` works out about a Job and its pods (upstream's ``syncJobCtx``)."""

    job: dict
    pods: list[dict]
    active: list[dict]
    ready: int
    terminating: int
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_rm: set[str]
    succeeded: int = 0
    failed: int = 0
    finished: dict | None = None  # the condition this sync drives the Job to
    prev_succeeded_indexes: indexed.OrderedIntervals = field(default_factory=indexed.OrderedIntervals)
    succeeded_indexes: indexed.OrderedIntervals = field(default_factory=indexed.OrderedIntervals)
    new_backoff: BackoffRecord | None = None
    # backoffLimitPerIndex only
    failed_indexes: indexed.OrderedIntervals | None = None
    delayed: dict[int, dict] = field(default_factory=dict)  # index -> last failed pod awaiting its replacement


def has_finalizer(pod: dict) -> bool:
    return JOB_TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or ())


def uid_of(obj: dict) -> str:
    return obj["metadata"].get("uid", "")


def phase(pod: dict) -> str | None:
    return (pod.get("status") or {}).get("phase")


def only_replace_failed(job: dict) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: dict, job: dict) -> bool:
    """Failed, or (unless only failed pods are replaced) being deleted before it succeeded."""
    if phase(pod) == "Failed":
        return True
    if only_replace_failed(job):
        return False
    return bool(pod["metadata"].get("deletionTimestamp")) and phase(pod) != "Succeeded"


def condition(type_: str, status: str, reason: str, message: str, now) -> dict:
    t = rfc3339(now)
    return {"type": type_, "status": status, "lastProbeTime": t, "lastTransitionTime": t, "reason": reason,
            "message": message}


def find_condition(job: dict, type_: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def is_true(job: dict, type_: str) -> bool:
    c = find_condition(job, type_)
    return c is not None and c.get("status") == "True"


def is_finished(job: dict) -> bool:
    return is_true(job, "Complete") or is_true(job, "Failed")


def ensure_condition(job: dict, type_: str, status: str, reason: str, message: str, now) -> bool:
    """Set a condition (upstream's ensureJobConditionStatus); True if anything changed."""
    conds = job["status"].setdefault("conditions", [])
    for c in conds:
        if c.get("type") != type_:
            continue
        if (c.get("status"), c.get("reason"), c.get("message")) == (status, reason, message):
            return False
        if c.get("status") != status:
            c["lastTransitionTime"] = rfc3339(now)
        c.update(status=status, reason=reason, message=message, lastProbeTime=rfc3339(now))
        return True
    if status == "True":
        conds.append(condition(type_, status, reason, message, now))
        return True
    return False


def new_finished_pods(ctx: SyncContext) -> tuple[list[dict], list[dict]]:
    """Finished pods still carrying the finalizer and not yet in the uncounted lists."""
    fresh = [p for p in ctx.pods if has_finalizer(p) and uid_of(p) not in ctx.expected_rm]
    succeeded = [p for p in fresh if phase(p) == "Succeeded" and uid_of(p) not in ctx.uncounted_succeeded]
    failed = [p for p in fresh if is_pod_failed(p, ctx.job) and uid_of(p) not in ctx.uncounted_failed]
    return succeeded, failed


def counted_failures(job: dict, failed: list[dict]) -> int:
    """Failures that count against backoffLimit (an ``Ignore`` rule drops one)."""
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    return sum(1 for p in failed if pfp.match(policy, p)[1])


def clean_uncounted(status: dict, with_finalizer: set[str]) -> bool:
    """Step 3: move UIDs whose pod lost its finalizer into the counters; True if any moved."""
    unc = status.setdefault("uncountedTerminatedPods", {})
    changed = False
    for which in ("succeeded", "failed"):
        uids = unc.get(which) or []
        keep = [u for u in uids if u in with_finalizer]
        if len(keep) != len(uids):
            changed = True
            status[which] = (status.get(which) or 0) + len(uids) - len(keep)
        if keep:
            unc[which] = keep
        else:
            unc.pop(which, None)
    return changed


class StatusTracker:
    """Runs the protocol of the module docstring for one Job per call; see `track`."""

    def __init__(self, client, recorder, clock, backoff: BackoffStore) -> None:
        self.client = client
        self.recorder = recorder
        self.clock = clock
        self.backoff = backoff
        self._removing: dict[str, set[str]] = {}

    # -- finalizer expectations ----------------------------------------------------------------

    def expected_removals(self, key: str) -> set[str]:
        return set(self._removing.get(key, ()))

    def removal_observed(self, key: str, uid: str) -> None:
        uids = self._removing.get(key)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self._removing[key]

    def forget(self, key: str) -> None:
        self._removing.pop(key, None)

    # -- the protocol --------------------------------------------------------------------------

    async def track(self, key: str, ctx: SyncContext, needs_flush: bool) -> None:
        job = ctx.job
        status = job["status"]
        unc = status.setdefault("uncountedTerminatedPods", {})
        is_ix = indexed.is_indexed(job)
        completions = job["spec"].get("completions") or 0
        pods = sorted(ctx.pods, key=lambda p: indexed.completion_index(p) or 0) if is_ix else ctx.pods
        with_finalizer = {uid_of(p) for p in pods if has_finalizer(p) and uid_of(p) not in ctx.expected_rm}
        if clean_uncounted(status, with_finalizer):
            needs_flush = True
        policy = job["spec"].get("podFailurePolicy")
        to_remove: list[dict] = []
        new_indexes: list[int] = []
        reached_max = False
        for pod in pods:
            uid = uid_of(pod)
            if not has_finalizer(pod) or uid in ctx.expected_rm:
                continue
            failed = is_pod_failed(pod, job)
            if not (job["metadata"].get("deletionTimestamp") or ctx.finished or phase(pod) == "Succeeded" or failed):
                continue
            if not (job["metadata"].get("deletionTimestamp") or ctx.finished) and failed and any(
                    uid_of(d) == uid for d in ctx.delayed.values()):
                continue  # its failure counts move to its replacement first (backoffLimitPerIndex)
            to_remove.append(pod)
            if phase(pod) == "Succeeded" and uid not in ctx.uncounted_failed:
                if is_ix:
                    ix = indexed.valid_index(pod, completions)
                    if ix is not None and not ctx.prev_succeeded_indexes.has(ix):
                        new_indexes.append(ix)
                        needs_flush = True
                elif uid not in ctx.uncounted_succeeded:
                    unc.setdefault("succeeded", []).append(uid)
                    needs_flush = True
            elif failed or (ctx.finished is not None and ctx.finished["type"] != "SuccessCriteriaMet"):
                # once the Job is failing, every pod still running ends as a failure
                ix = indexed.valid_index(pod, completions)
                if uid not in ctx.uncounted_failed and (not is_ix or ix is not None) and pfp.match(policy, pod)[1]:
                    unc.setdefault("failed", []).append(uid)
                    needs_flush = True
            if len(new_indexes) + len(unc.get("succeeded") or ()) + len(unc.get("failed") or ()) >= MAX_UNCOUNTED_PODS:
                reached_max = True  # the status writes below requeue the Job for the rest
                break
        if is_ix:
            ctx.succeeded_indexes = ctx.succeeded_indexes.with_ordered_indexes(new_indexes)
            text = str(ctx.succeeded_indexes)
            if text != status.get("completedIndexes", ""):
                needs_flush = True
            status["completedIndexes"] = text
            status["succeeded"] = ctx.succeeded_indexes.total()
            if ctx.failed_indexes is not None:
                text = str(ctx.failed_indexes)
                if text != status.get("failedIndexes"):
                    needs_flush = True
                status["failedIndexes"] = text
        now = self.clock.wall()
        if ctx.finished is not None and ctx.finished["type"] == "FailureTarget":
            status.setdefault("conditions", []).append(ctx.finished)
            needs_flush = True
            ctx.finished = condition("Failed", "True", ctx.finished["reason"], ctx.finished["message"], now)
        if ctx.finished is not None and ctx.finished["type"] == "SuccessCriteriaMet":
            if find_condition(job, "SuccessCriteriaMet") is None:
                status.setdefault("conditions", []).append(ctx.finished)
                needs_flush = True
            ctx.finished = condition("Complete", "True", ctx.finished["reason"], ctx.finished["message"], now)
        needs_flush = await self._flush_and_remove(key, ctx, to_remove, with_finalizer, needs_flush)
        finished = not reached_max and self._enact_finished(ctx)
        if finished or needs_flush:
            ctx.job = await self.update_status(ctx.job)
            if finished:
                self._record_finished(ctx.job, ctx.finished)

    async def update_status(self, job: dict) -> dict:
        meta = job["metadata"]
        new = await self.client.update_status("batch", "v1", "jobs", job, namespace=meta["namespace"])
        new.setdefault("status", {}).setdefault("uncountedTerminatedPods", {})
        new.setdefault("apiVersion", "batch/v1")
        new.setdefault("kind", "Job")
        return new

    async def _flush_and_remove(self, key: str, ctx: SyncContext, to_remove: list[dict], with_finalizer: set[str],
                                needs_flush: bool) -> bool:
        """Steps 1–3; returns whether the status still has unwritten changes. Raises the first
        finalizer-removal error after writing whatever progress was made."""
        if needs_flush:
            ctx.job = await self.update_status(ctx.job)
            if ctx.new_backoff is not None:
                self.backoff.update(ctx.new_backoff)
            needs_flush = False
        error: Exception | None = None
        if to_remove:
            removed, error = await self.remove_finalizers(key, to_remove)
            with_finalizer -= removed
        if clean_uncounted(ctx.job["status"], with_finalizer):
            needs_flush = True
        if error is not None:
            if needs_flush:
                ctx.job = await self.update_status(ctx.job)
            raise error
        return needs_flush

    async def remove_finalizers(self, key: str | None, pods: list[dict]) -> tuple[set[str], Exception | None]:
        """Remove the tracking finalizer from ``pods``; (UIDs done or gone, the first error)."""
        if key is not None:
            self._removing.setdefault(key, set()).update(uid_of(p) for p in pods)

        async def one(pod: dict) -> str:
            meta = pod["metadata"]
            try:
                await self.client.patch("", "v1", "pods", meta["name"], copy.deepcopy(REMOVE_FINALIZER_PATCH),
                                        namespace=meta["namespace"], patch_type="strategic")
            except Exception as e:
                if key is not None:
                    self.removal_observed(key, uid_of(pod))  # no update will come for this pod
                if not is_not_found(e):
                    raise
            return uid_of(pod)

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        done = {r for r in results if isinstance(r, str)}
        errors = [r for r in results if isinstance(r, Exception)]
        return done, errors[0] if errors else None

    def _enact_finished(self, ctx: SyncContext) -> bool:
        """Add the final Complete/Failed condition once nothing is uncounted or terminating."""
        if ctx.finished is None:
            return False
        unc = ctx.job["status"].get("uncountedTerminatedPods") or {}
        if unc.get("succeeded") or unc.get("failed") or ctx.terminating > 0:
            return False
        c = ctx.finished
        now = self.clock.wall()
        ensure_condition(ctx.job, c["type"], "True", c["reason"], c["message"], now)
        if c["type"] == "Complete":
            ctx.job["status"]["completionTime"] = rfc3339(now)
        return True

    def _record_finished(self, job: dict, c: dict) -> None:
        if c["type"] == "Complete":
            completions = job["spec"].get("completions")
            if completions is not None and (job["status"].get("succeeded") or 0) > completions:
                self.recorder.event(job, WARNING, "TooManySucceededPods",
                                    "Too many succeeded pods running after completion count reached")
            self.recorder.event(job, NORMAL, "Completed", "Job completed")
        else:
            self.recorder.event(job, WARNING, c["reason"], c["message"])
