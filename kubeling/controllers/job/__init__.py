"""The Job controller: upstream's ``pkg/controller/job`` (``--controllers`` name ``job``).

Keys are ``namespace/name`` of Jobs, plus ``("orphan", "namespace/name")`` of pods whose
tracking finalizer nobody else will remove (their Job is gone or finished, or they were
released). Handlers only enqueue; `JobController.sync` is level-triggered:

1. a Job that is gone forgets its expectations and back-off; a finished Job is left alone;
2. the Job's pods are claimed (adopting orphans that match its selector, releasing pods that no
   longer match) from the shared pod informer;
3. newly finished pods are found (`tracking.new_finished_pods`) and counted into
   succeeded/failed, with ``podFailurePolicy`` deciding which failures count;
4. the Job is failing if a ``FailJob`` rule matched (reason ``PodFailurePolicy``), more than
   ``backoffLimit`` pods failed (or, with ``restartPolicy: OnFailure``, restarted)
   (``BackoffLimitExceeded``), or it ran ``activeDeadlineSeconds`` (``DeadlineExceeded``; the
   key is requeued for the deadline). Indexed Jobs with ``backoffLimitPerIndex`` fail indexes
   instead (``FailedIndexes``, ``MaxFailedIndexesExceeded``), and an Indexed Job whose
   ``successPolicy`` matches succeeds early (``SuccessPolicy``). A finishing Job deletes its
   active pods;
5. otherwise `manage` makes the active pods match ``min(parallelism, completions -
   succeeded)``: a suspended Job deletes them all (condition ``Suspended``/``JobSuspended``;
   resuming sets ``JobResumed`` and resets ``startTime``); new pods wait out the failure
   back-off (`backoff`), are created in slow-start batches and carry the tracking finalizer;
   Indexed Jobs create the lowest missing indexes (`indexed`);
6. `tracking.StatusTracker.track` writes the status (active, ready, terminating, counters,
   ``uncountedTerminatedPods``, conditions) in the finalizer-safe order.

Expectations (`ControllerExpectations`) keep a sync from acting on a cache that has not yet
seen its own creates/deletes. Failures in one Job (a create refused, a status conflict) raise
from its sync and requeue only that key; every other Job goes on.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api.labels import from_label_selector
from kubeling.client import is_not_found, object_of
from kubeling.client.events import NORMAL, WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import (
    ControllerExpectations,
    PodControl,
    active_pods_key,
    claim_objects,
    get_controller_of,
    is_pod_active,
    is_pod_ready,
    is_pod_terminating,
    parse_time,
    pod_from_template,
    slow_start_batch,
)
from kubeling.controllers.job import indexed
from kubeling.controllers.job import pod_failure_policy as pfp
from kubeling.controllers.job.backoff import BackoffRecord, BackoffStore, finish_time
from kubeling.controllers.job.tracking import (
    JOB_TRACKING_FINALIZER,
    REMOVE_FINALIZER_PATCH,
    StatusTracker,
    SyncContext,
    condition,
    counted_failures,
    ensure_condition,
    find_condition,
    has_finalizer,
    is_finished,
    is_pod_failed,
    new_finished_pods,
    only_replace_failed,
    rfc3339,
    uid_of,
)

log = logging.getLogger(__name__)

COMPONENT = "job-controller"
MAX_POD_CREATE_DELETE_PER_SYNC = 500
ORPHAN = "orphan"
MANAGED_BY = "kubernetes.io/job-controller"

__all__ = ["JOB_TRACKING_FINALIZER", "JobController", "is_finished"]


class JobController(Controller):
    NAME = "job"
    WORKERS = 5  # upstream's --concurrent-job-syncs

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.jobs = ctx.informers.informer_for("batch", "v1", "jobs")
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.handle(self.jobs, self._job_added, self._job_updated, self._job_deleted)
        self.handle(self.pods, self._pod_added, self._pod_updated, self._pod_deleted)
        self.recorder = ctx.recorder(COMPONENT)
        self.pod_control = PodControl(self.client, self.recorder)
        self.expectations = ControllerExpectations(ctx.clock)
        self.backoff = BackoffStore()
        self.tracker = StatusTracker(self.client, self.recorder, ctx.clock, self.backoff)

    # -- handlers: enqueue only ----------------------------------------------------------------

    def _job_added(self, job: dict) -> None:
        self.queue.add(key_of(job))

    def _job_updated(self, old: dict, new: dict) -> None:
        self.queue.add(key_of(new))

    def _job_deleted(self, obj) -> None:
        job = object_of(obj)
        self.queue.add(key_of(job))
        uid = job["metadata"].get("uid")
        for pod in self.pods.indexer.by_namespace(job["metadata"].get("namespace", "")):
            ref = get_controller_of(pod)
            if ref is not None and ref.get("uid") == uid and has_finalizer(pod):
                self.queue.add((ORPHAN, key_of(pod)))

    def _job_of(self, pod: dict) -> dict | None:
        """The Job controlling ``pod`` (by controllerRef, same uid), from the cache."""
        ref = get_controller_of(pod)
        if ref is None or ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
            return None
        job = self.jobs.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if job is None or job["metadata"].get("uid") != ref.get("uid"):
            return None
        return job

    def _enqueue_matching_jobs(self, pod: dict) -> None:
        """An orphan pod: every Job whose selector matches may want to adopt it."""
        labels = pod["metadata"].get("labels") or {}
        for job in self.jobs.indexer.by_namespace(pod["metadata"].get("namespace", "")):
            selector = (job.get("spec") or {}).get("selector")
            if selector and from_label_selector(selector).matches(labels):
                self.queue.add(key_of(job))

    def _pod_added(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_gone(pod, final=False)
            return
        job = self._job_of(pod)
        if job is None:
            if has_finalizer(pod):
                self.queue.add((ORPHAN, key_of(pod)))
            if get_controller_of(pod) is None:
                self._enqueue_matching_jobs(pod)
            return
        key = key_of(job)
        self.expectations.creation_observed(key)
        self.queue.add(key)

    def _pod_updated(self, old: dict, cur: dict) -> None:
        if old["metadata"].get("resourceVersion") == cur["metadata"].get("resourceVersion"):
            return
        if cur["metadata"].get("deletionTimestamp"):
            self._pod_gone(cur, final=False)
            return
        job = self._job_of(cur)
        if job is not None and has_finalizer(old) and not has_finalizer(cur):
            self.tracker.removal_observed(key_of(job), uid_of(cur))
        old_job = self._job_of(old)
        if old_job is not None and (job is None or uid_of(old_job) != uid_of(job)):
            self.queue.add(key_of(old_job))
        if job is None:
            if has_finalizer(cur):
                self.queue.add((ORPHAN, key_of(cur)))
            if get_controller_of(cur) is None:
                self._enqueue_matching_jobs(cur)
            return
        if has_finalizer(cur) and is_finished(job):
            self.queue.add((ORPHAN, key_of(cur)))
        self.queue.add(key_of(job))

    def _pod_deleted(self, obj) -> None:
        self._pod_gone(object_of(obj), final=True)

    def _pod_gone(self, pod: dict, final: bool) -> None:
        """A pod deleted (``final``) or being deleted (it got a deletionTimestamp)."""
        job = self._job_of(pod)
        if job is None:
            if not final and has_finalizer(pod):
                self.queue.add((ORPHAN, key_of(pod)))
            return
        key = key_of(job)
        if final or not has_finalizer(pod):
            self.tracker.removal_observed(key, uid_of(pod))
        self.expectations.deletion_observed(key, uid_of(pod))
        self.queue.add(key)

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key) -> None:
        if isinstance(key, tuple):
            await self._sync_orphan_pod(key[1])
            return
        cached = self.jobs.get(key)
        if cached is None:
            self.expectations.delete(key)
            self.tracker.forget(key)
            self.backoff.remove(key)
            return
        if is_finished(cached):
            self.backoff.remove(key)
            return
        if (cached.get("spec") or {}).get("managedBy", MANAGED_BY) != MANAGED_BY:
            return  # another controller (e.g. Kueue's MultiKueue) owns this Job's pods and status
        job = copy.deepcopy(cached)
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        spec = job.setdefault("spec", {})
        if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
            self.recorder.event(job, WARNING, "UnknownCompletionMode",
                                "Skipped Job sync because completion mode is unknown")
            return
        await self._sync_job(key, job)

    async def _sync_job(self, key: str, job: dict) -> None:
        spec, status = job["spec"], job.setdefault("status", {})
        unc = status.get("uncountedTerminatedPods") or {}
        status["uncountedTerminatedPods"] = unc
        # read the expectations before the pods, so a pod arriving in between defers this sync
        satisfied = self.expectations.satisfied(key)
        pods = await self._pods_for_job(job)
        active = [p for p in pods if is_pod_active(p)]
        ctx = SyncContext(job=job, pods=pods, active=active, ready=sum(1 for p in active if is_pod_ready(p)),
                          terminating=sum(1 for p in pods if is_pod_terminating(p)),
                          uncounted_succeeded=set(unc.get("succeeded") or ()),
                          uncounted_failed=set(unc.get("failed") or ()),
                          expected_rm=self.tracker.expected_removals(key))
        now = self.clock.wall()
        new_succeeded, new_failed = new_finished_pods(ctx)
        ctx.succeeded = (status.get("succeeded") or 0) + len(new_succeeded) + len(ctx.uncounted_succeeded)
        ctx.failed = (status.get("failed") or 0) + counted_failures(job, new_failed) + len(ctx.uncounted_failed)
        suspended = bool(spec.get("suspend"))
        if not status.get("startTime") and not suspended:
            status["startTime"] = rfc3339(now)
        ctx.new_backoff = self.backoff.new_record(key, new_succeeded, new_failed, now)
        ctx.finished = self._finish_condition(key, job, ctx, now)
        if indexed.is_indexed(job):
            ctx.prev_succeeded_indexes, ctx.succeeded_indexes = indexed.succeeded_indexes(job, pods)
            ctx.succeeded = ctx.succeeded_indexes.total()
            if indexed.has_backoff_limit_per_index(job):
                self._per_index(job, ctx, now)
            if ctx.finished is None:
                message = indexed.match_success_policy(spec.get("successPolicy"), spec.get("completions") or 0,
                                                       ctx.succeeded_indexes)
                if message is not None:
                    # lingering pods are deleted; Complete follows once they are gone
                    ctx.finished = condition("SuccessCriteriaMet", "True", "SuccessPolicy", message, now)
        suspend_changed = False
        n_active = len(active)
        manage_error: Exception | None = None
        if ctx.finished is not None:
            ready_gone, deleted, manage_error = await self._delete_pods(job, active, remove_finalizer=False)
            if deleted != n_active or not satisfied:
                ctx.finished = None  # pods or finalizers may still be on their way
            n_active -= deleted
            ctx.terminating += deleted
            ctx.ready -= ready_gone
        else:
            managed = False
            if satisfied and not job["metadata"].get("deletionTimestamp"):
                n_active, manage_error = await self._manage(key, job, ctx)
                managed = True
            completions = spec.get("completions")
            done = ctx.succeeded > 0 if completions is None else ctx.succeeded >= completions
            if done and n_active == 0:
                # JobSuccessPolicy (on since 1.31) gives success its reason too
                ctx.finished = condition("SuccessCriteriaMet", "True", "CompletionsReached",
                                         "Reached expected number of succeeded pods", now)
            elif managed:
                suspend_changed = self._suspend_condition(job, suspended, now)
        needs = (suspend_changed or n_active != (status.get("active") or 0) or ctx.ready != status.get("ready")
                 or ctx.terminating != status.get("terminating"))
        status["active"], status["ready"], status["terminating"] = n_active, ctx.ready, ctx.terminating
        await self.tracker.track(key, ctx, needs)
        if manage_error is not None:
            raise manage_error

    def _finish_condition(self, key: str, job: dict, ctx: SyncContext, now) -> dict | None:
        """The terminal condition this sync heads for, if any (step 4 of the module docstring)."""
        spec = job["spec"]
        met = find_condition(job, "SuccessCriteriaMet")
        if met is not None and met.get("status") == "True":
            return met
        target = find_condition(job, "FailureTarget")
        if target is not None and target.get("status") == "True":
            return condition("Failed", "True", target.get("reason", ""), target.get("message", ""), now)
        for pod in ctx.pods:
            if is_pod_failed(pod, job):
                message = pfp.match(spec.get("podFailurePolicy"), pod)[0]
                if message is not None:
                    return condition("FailureTarget", "True", "PodFailurePolicy", message, now)
        if ctx.failed > spec.get("backoffLimit", 6) or _past_backoff_limit_on_failure(job, ctx.pods):
            return condition("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                             now)
        deadline = spec.get("activeDeadlineSeconds")
        start = parse_time(job["status"].get("startTime"))
        if deadline is not None and start is not None and not spec.get("suspend"):
            left = deadline - (now - start).total_seconds()
            if left <= 0:
                return condition("FailureTarget", "True", "DeadlineExceeded",
                                 "Job was active longer than specified deadline", now)
            self.queue.add_after(key, left)
        return None

    def _per_index(self, job: dict, ctx: SyncContext, now) -> None:
        """backoffLimitPerIndex: failed indexes, the Job failing on them, and delayed pods."""
        spec = job["spec"]
        policy = spec.get("podFailurePolicy")
        failed_pods = [p for p in ctx.pods if is_pod_failed(p, job)]
        ctx.failed_indexes = indexed.failed_indexes(job, failed_pods, lambda p: pfp.match(policy, p))
        if ctx.finished is None:
            total, most = ctx.failed_indexes.total(), spec.get("maxFailedIndexes")
            if most is not None and total > most:
                ctx.finished = condition("FailureTarget", "True", "MaxFailedIndexesExceeded",
                                         "Job has exceeded the specified maximal number of failed indexes", now)
            elif total > 0 and total + ctx.succeeded_indexes.total() >= (spec.get("completions") or 0):
                ctx.finished = condition("FailureTarget", "True", "FailedIndexes", "Job has failed indexes", now)
        tracked = [p for p in failed_pods if has_finalizer(p) and uid_of(p) not in ctx.expected_rm]
        ctx.delayed = indexed.delayed_pods(job, tracked, ctx.active, ctx.succeeded_indexes, ctx.failed_indexes,
                                           lambda p: finish_time(p, now))

    def _suspend_condition(self, job: dict, suspended: bool, now) -> bool:
        if suspended:
            changed = ensure_condition(job, "Suspended", "True", "JobSuspended", "Job suspended", now)
            if changed:
                self.recorder.event(job, NORMAL, "Suspended", "Job suspended")
            return changed
        changed = ensure_condition(job, "Suspended", "False", "JobResumed", "Job resumed", now)
        if changed:
            self.recorder.event(job, NORMAL, "Resumed", "Job resumed")
            # activeDeadlineSeconds counts continuous activity: it restarts on resume
            job["status"]["startTime"] = rfc3339(now)
        return changed

    async def _pods_for_job(self, job: dict) -> list[dict]:
        meta = job["metadata"]

        async def can_adopt() -> bool:
            fresh = await self.client.get("batch", "v1", "jobs", meta["name"], namespace=meta["namespace"])
            return fresh["metadata"].get("uid") == meta["uid"] and not fresh["metadata"].get("deletionTimestamp")

        pods = self.pods.indexer.by_namespace(meta["namespace"])
        claimed = await claim_objects(self.client, job, pods, job["spec"].get("selector"), group="", version="v1",
                                      resource="pods", api_version="batch/v1", kind="Job", can_adopt=can_adopt)
        out = []
        for p in claimed:
            refs = p["metadata"].get("ownerReferences") or []
            if not has_finalizer(p) and not any(r.get("uid") == meta["uid"] for r in refs):
                # just adopted: count it as if it had carried the finalizer (as upstream does)
                p = copy.deepcopy(p)
                p["metadata"]["finalizers"] = list(p["metadata"].get("finalizers") or []) + [JOB_TRACKING_FINALIZER]
            out.append(p)
        return out

    # -- manageJob -----------------------------------------------------------------------------

    async def _manage(self, key: str, job: dict, ctx: SyncContext) -> tuple[int, Exception | None]:
        """Create or delete pods towards the wanted number; (active pods after, the first error)."""
        spec = job["spec"]
        n_active = len(ctx.active)
        if spec.get("suspend"):
            return await self._delete_for(key, job, ctx, self._for_removal(job, ctx.active, n_active))
        completions, parallelism = spec.get("completions"), spec.get("parallelism", 1)
        if completions is None:
            want = n_active if ctx.succeeded > 0 else parallelism
        else:
            want = max(min(completions - ctx.succeeded, parallelism), 0)
        doomed = self._for_removal(job, ctx.active, max(n_active - want, 0), ctx.failed_indexes)
        doomed = doomed[:MAX_POD_CREATE_DELETE_PER_SYNC]
        if doomed:
            # a sync either deletes or creates, never both; deleting wins
            return await self._delete_for(key, job, ctx, doomed)
        terminating = ctx.terminating if only_replace_failed(job) else 0
        diff = min(want - terminating - n_active, MAX_POD_CREATE_DELETE_PER_SYNC)
        if diff <= 0:
            return n_active, None
        per_index = indexed.has_backoff_limit_per_index(job)
        now = self.clock.wall()
        wait = ctx.new_backoff.remaining(now) if ctx.new_backoff and not per_index else 0.0
        if wait > 0:
            self.queue.add_after(key, wait)
            return n_active, None
        template = copy.deepcopy(spec.get("template") or {})
        indexes: list[int] = []
        if indexed.is_indexed(job):
            indexes = indexed.first_pending_indexes(ctx.active, ctx.succeeded_indexes, diff, completions or 0,
                                                    ctx.failed_indexes)
            if per_index:
                indexes, wait = self._indexes_past_backoff(indexes, ctx, now)
                if not indexes and wait > 0:
                    self.queue.add_after(key, wait)
                    return n_active, None
            diff = len(indexes)
            template = indexed.add_index_env(template)
        tmeta = template.setdefault("metadata", {})
        if JOB_TRACKING_FINALIZER not in (tmeta.get("finalizers") or ()):
            tmeta["finalizers"] = list(tmeta.get("finalizers") or []) + [JOB_TRACKING_FINALIZER]
        if diff <= 0:
            return n_active, None
        self.expectations.expect_creations(key, diff)
        pending = iter(indexes)
        attempts = [0]
        ref = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
               "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

        async def create() -> None:
            attempts[0] += 1
            t = copy.deepcopy(template)
            ix = next(pending, None)
            generate = indexed.set_index(t, job["metadata"]["name"], ix) if ix is not None else None
            if per_index and ix is not None:
                last = ctx.delayed.get(ix)
                indexed.inherit_counts(t, last, last is None or pfp.match(spec.get("podFailurePolicy"), last)[1])
            pod = pod_from_template(t, job, ref, generate_name=generate)
            try:
                await self.pod_control.create_pod(job["metadata"]["namespace"], pod, job)
            except Exception:
                self.expectations.lower(key, add=1)  # this pod will never be observed
                raise

        created, error = await slow_start_batch(diff, 1, create)
        # creates never tried after a failing batch will never be observed either
        self.expectations.lower(key, add=diff - attempts[0])
        return n_active + created, error

    def _indexes_past_backoff(self, indexes: list[int], ctx: SyncContext, now) -> tuple[list[int], float]:
        """Indexes whose own back-off is over; else the shortest wait among them."""
        ready, waits = [], []
        for ix in indexes:
            last = ctx.delayed.get(ix)
            left = 0.0
            if last is not None:
                record = BackoffRecord("", sum(indexed.failure_counts(last)) + 1, finish_time(last, now))
                left = record.remaining(now)
            if left > 0:
                waits.append(left)
            else:
                ready.append(ix)
        return ready, (0.0 if ready or not waits else min(waits))

    def _for_removal(self, job: dict, active: list[dict], at_least: int,
                     failed: indexed.OrderedIntervals | None = None) -> list[dict]:
        """Pods to delete: bad, repeated or failed indexes first, then by ActivePods order."""
        remove, left = [], list(active)
        if indexed.is_indexed(job):
            completions = job["spec"].get("completions") or 0
            remove, left = indexed.duplicated_or_invalid(active, completions, active_pods_key)
            if failed is not None:
                remove += [p for p in left if failed.has(indexed.valid_index(p, completions))]
                left = [p for p in left if not failed.has(indexed.valid_index(p, completions))]
        if len(remove) < at_least:
            left.sort(key=active_pods_key)
            remove += left[:at_least - len(remove)]
        return remove

    async def _delete_for(self, key: str, job: dict, ctx: SyncContext, pods: list[dict]) -> tuple[int, Exception | None]:
        if not pods:
            return len(ctx.active), None
        self.expectations.expect_deletions(key, [uid_of(p) for p in pods])
        ready_gone, deleted, error = await self._delete_pods(job, pods, remove_finalizer=True, key=key)
        ctx.terminating += deleted
        ctx.ready -= ready_gone
        return len(ctx.active) - deleted, error

    async def _delete_pods(self, job: dict, pods: list[dict], *, remove_finalizer: bool,
                           key: str | None = None) -> tuple[int, int, Exception | None]:
        """Delete pods; (ready ones deleted, deleted, first error). A pod that fails to delete
        is lowered from the expectations. Deleting for scale-down or suspend drops the
        finalizer first: such a pod is not a failure to count."""
        ready_gone = deleted = 0
        first: Exception | None = None
        for pod in pods:
            meta = pod["metadata"]
            try:
                if remove_finalizer and has_finalizer(pod):
                    await self.client.patch("", "v1", "pods", meta["name"], copy.deepcopy(REMOVE_FINALIZER_PATCH),
                                            namespace=meta["namespace"], patch_type="strategic")
                await self.pod_control.delete_pod(meta["namespace"], meta["name"], job, uid=uid_of(pod))
            except Exception as e:  # noqa: BLE001 - one pod's failure must not stop the others
                if key is not None:
                    self.expectations.deletion_observed(key, uid_of(pod))
                if is_not_found(e):
                    continue
                first = first or e
                continue
            deleted += 1
            ready_gone += 1 if is_pod_ready(pod) else 0
        return ready_gone, deleted, first

    async def _sync_orphan_pod(self, pod_key: str) -> None:
        """Drop the finalizer of a pod whose Job is gone or finished, or that was released."""
        pod = self.pods.get(pod_key)
        if pod is None or not has_finalizer(pod):
            return
        ref = get_controller_of(pod)
        if ref is not None:
            if ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
                return
            job = self._job_of(pod)
            if job is not None and not is_finished(job):
                return  # adopted or still running: the Job's own sync counts it
        _, error = await self.tracker.remove_finalizers(None, [pod])
        if error is not None:
            raise error


def _past_backoff_limit_on_failure(job: dict, pods: list[dict]) -> bool:
    """With ``restartPolicy: OnFailure`` the kubelet's restarts count against backoffLimit."""
    spec = job["spec"]
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for p in pods:
        status = p.get("status") or {}
        if status.get("phase") in ("Running", "Pending"):
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                restarts += cs.get("restartCount") or 0
    limit = spec.get("backoffLimit", 6)
    return restarts > 0 if limit == 0 else restarts >= limit

