"""`Scheduler`: informers → queue/cache → one scheduling cycle at a time → concurrent bindings
(upstream's ``scheduler.go``, ``eventhandlers.go`` and the cycle part of ``schedule_one.go``).

::

    pods informer ──unassigned, ours──▶ SchedulingQueue ──pop──▶ scheduling cycle (sync) ──▶ binding task
                  ──assigned────────────▶ Cache ◀──assume────────┘        PreBind ─▶ Bind ─▶ PostBind
    nodes informer ───────────────────▶ Cache ──cluster events──▶ queue.move_all_to_active_or_backoff_queue

Concurrency model: one asyncio loop. The scheduling cycle — snapshot refresh, PreFilter, Filter,
PostFilter, Score, Reserve, assume, Permit — is synchronous, so nothing changes the cache under it
and no coroutine is spent per node. The binding cycle runs in its own task per pod and is never
awaited by the scheduling loop, which yields to the loop once per pod so informer handlers and
bindings make progress.

Handler rules (upstream's filters): an unassigned pod whose ``schedulerName`` is one of our
profiles and that is not terminal goes to the queue; an assigned, non-terminal pod goes to the
cache (which confirms an assumed pod). A pod that leaves a filter (bound, finished) is removed
from the side it left. Pods being deleted are skipped when popped.

Failure: the pod gets a ``FailedScheduling`` Warning event and the ``PodScheduled=False``
condition (reason ``Unschedulable``, or ``SchedulerError`` for errors) patched to ``pods/status``,
with ``status.nominatedNodeName`` when preemption nominated a node; it is requeued unless it was
deleted or bound meanwhile. Success: a ``Scheduled`` Normal event once the binding is written.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from kubeling.client.clock import REAL_CLOCK, sleep_or_stop
from kubeling.client.events import NORMAL, WARNING, EventRecorder
from kubeling.client.store import meta_namespace_key, object_of
from kubeling.controllers.base import wait_or_stop
from kubeling.scheduler import metrics
from kubeling.scheduler.cache import Cache, node_name_of
from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    EventResource,
    Status,
)
from kubeling.scheduler.framework.types import PodInfo, QueuedPodInfo, Resource, pod_key
from kubeling.scheduler.profile import DEFAULT_SCHEDULER_NAME, build_profiles
from kubeling.scheduler.queue import SchedulingQueue, uid_of
from kubeling.scheduler.schedule_one import (
    Algorithm,
    FitError,
    NoNodesAvailable,
    SchedulingError,
)
from kubeling.scheduler.snapshot import Snapshot

log = logging.getLogger(__name__)

COMPONENT = "default-scheduler"
# Bindings and status writes in flight at once. Bounded so that a burst reuses a few pooled
# connections instead of opening hundreds (each a TLS handshake) against a busy API server, which
# then times out connections - the leader election's renewals among them.
MAX_CONCURRENT_BINDINGS = 32
MAX_CONCURRENT_STATUS_WRITES = 8
EVENT_NODE_ADD = ClusterEvent(EventResource.NODE, ActionType.ADD, "NodeAdd")
EVENT_ASSIGNED_POD_ADD = ClusterEvent(EventResource.ASSIGNED_POD, ActionType.ADD, "AssignedPodAdd")
EVENT_ASSIGNED_POD_DELETE = ClusterEvent(EventResource.ASSIGNED_POD, ActionType.DELETE, "AssignedPodDelete")


def scheduler_name(pod: dict) -> str:
    return (pod.get("spec") or {}).get("schedulerName") or DEFAULT_SCHEDULER_NAME


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_assigned(pod: dict) -> bool:
    return bool(node_name_of(pod))


class Scheduler:
    """See the module docstring. ``informers`` is the process's `SharedInformerFactory`; the
    caller starts it after construction."""

    def __init__(self, client: Any, informers, *, config: dict | None = None, clock=REAL_CLOCK,
                 recorder: EventRecorder | None = None, rng: random.Random | None = None,
                 registry: dict | None = None, default_plugins=None, default_args=None) -> None:
        self.client = client
        self.informers = informers
        self.clock = clock
        self.recorder = recorder or EventRecorder(client, COMPONENT, clock=clock)
        self.cache = Cache(clock)
        self.snapshot = Snapshot()
        self.pods = informers.informer_for("", "v1", "pods")
        self.nodes = informers.informer_for("", "v1", "nodes")
        self.namespaces = informers.informer_for("", "v1", "namespaces")
        config = config or {}
        self.algorithm = Algorithm(config.get("percentageOfNodesToScore") or 0, rng)
        self.queue: SchedulingQueue | None = None
        self.profiles = build_profiles(config, registry=registry, default_plugins=default_plugins,
                                       default_args=default_args, client=client, recorder=self.recorder,
                                       snapshot=self.snapshot, pod_lister=self.pods,
                                       namespace_lister=self.namespaces, nominator=self, informers=informers,
                                       rng=self.algorithm.rng)
        first = next(iter(self.profiles.values()))
        self._hints = {name: fwk.enqueue_extensions() for name, fwk in self.profiles.items()}
        self.queue = SchedulingQueue(first.queue_sort_func(), clock=clock, pre_enqueue=self._pre_enqueue,
                                     hints=lambda pod: self._hints.get(scheduler_name(pod), {}))
        self._binding_tasks: set[asyncio.Task] = set()
        self._status_tasks: set[asyncio.Task] = set()
        self._binding_slots = asyncio.Semaphore(MAX_CONCURRENT_BINDINGS)
        self._status_slots = asyncio.Semaphore(MAX_CONCURRENT_STATUS_WRITES)
        self.registrations = [
            (self.pods, self.pods.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)),
            (self.nodes, self.nodes.add_handler(self._on_node_add, self._on_node_update, self._on_node_delete)),
            (self.namespaces, self.namespaces.add_handler()),
        ]

    # -- the nominator the frameworks see ----------------------------------------------------

    def nominated_pods_for_node(self, node_name: str) -> list[PodInfo]:
        return self.queue.nominated_pods_for_node(node_name) if self.queue is not None else []

    def has_nominated_pods(self) -> bool:
        return self.queue is not None and bool(self.queue._nominated)

    def _pre_enqueue(self, pod: dict) -> Status | None:
        fwk = self.profiles.get(scheduler_name(pod))
        return fwk.run_pre_enqueue_plugins(pod) if fwk is not None else None

    # -- pod events --------------------------------------------------------------------------

    def _responsible(self, pod: dict) -> bool:
        return scheduler_name(pod) in self.profiles

    def _on_pod_add(self, pod: dict) -> None:
        if is_assigned(pod):
            if not is_terminal(pod):
                self.cache.add_pod(pod)
                self.queue.move_all_to_active_or_backoff_queue(EVENT_ASSIGNED_POD_ADD, None, pod)
        elif self._responsible(pod) and not is_terminal(pod):
            self.queue.add(pod)

    def _on_pod_update(self, old: dict, new: dict) -> None:
        if (old.get("metadata") or {}).get("resourceVersion") == (new.get("metadata") or {}).get("resourceVersion"):
            return   # a resync or a re-list: nothing changed
        if is_assigned(new):
            if not is_assigned(old):
                self.queue.delete(old)   # it was bound (by us or by someone else)
                self._on_pod_add(new)
            elif is_terminal(new):
                if not is_terminal(old):   # it just finished: its room is free
                    self._remove_assigned(new)
            else:
                self.cache.update_pod(old, new)
                self.queue.move_all_to_active_or_backoff_queue(assigned_pod_update_event(old, new), old, new)
        elif self._responsible(new) and not is_terminal(new):
            if self.cache.is_assumed_pod(new):
                return   # its binding is in flight; the bound update follows
            self.queue.update(old, new)
        else:
            self.queue.delete(new)

    def _on_pod_delete(self, obj) -> None:
        pod = object_of(obj)
        if is_assigned(pod):
            self._remove_assigned(pod)
        else:
            self.queue.delete(pod)

    def _remove_assigned(self, pod: dict) -> None:
        self.cache.remove_pod(pod)
        self.queue.move_all_to_active_or_backoff_queue(EVENT_ASSIGNED_POD_DELETE, pod, None)

    # -- node events -------------------------------------------------------------------------

    def _on_node_add(self, node: dict) -> None:
        self.cache.add_node(node)
        self.queue.move_all_to_active_or_backoff_queue(EVENT_NODE_ADD, None, node)

    def _on_node_update(self, old: dict, new: dict) -> None:
        self.cache.update_node(old, new)
        action = node_update_actions(old, new)
        if action:
            self.queue.move_all_to_active_or_backoff_queue(ClusterEvent(EventResource.NODE, action, "NodeUpdate"),
                                                           old, new)

    def _on_node_delete(self, obj) -> None:
        self.cache.remove_node(object_of(obj))

    # -- running -----------------------------------------------------------------------------

    async def wait_for_caches(self, stop: asyncio.Event) -> bool:
        """Our handlers have seen every cached pod and node, and the plugins' listers synced."""
        waits = [reg.wait_for_sync() for _, reg in self.registrations]
        waits += [inf.wait_for_sync() for inf in self.informers.informers.values()]
        return await wait_or_stop(waits, stop)

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule until ``stop``: waits for the informers, then loops; drains in ``finally``."""
        helpers: list[asyncio.Task] = []
        try:
            if not await self.wait_for_caches(stop):
                return
            log.info("scheduler: caches synced (%d nodes, %d pods); profiles %s", self.cache.node_count(),
                     self.cache.pod_count(), ", ".join(self.profiles))
            helpers = [asyncio.create_task(self.queue.run(stop), name="scheduler-queue-flush"),
                       asyncio.create_task(self._cleanup_assumed(stop), name="scheduler-cache-cleanup"),
                       asyncio.create_task(self._close_on(stop), name="scheduler-stop")]
            while True:
                qpi = await self.queue.pop()
                if qpi is None:
                    return
                self.schedule_one(qpi)
                await asyncio.sleep(0)   # let handlers and bindings run between cycles
        finally:
            self.queue.close()
            for t in helpers:
                t.cancel()
            pending = self._binding_tasks | self._status_tasks
            if pending:
                await asyncio.shield(asyncio.wait(pending, timeout=10))
            await asyncio.gather(*helpers, return_exceptions=True)
            for informer, reg in self.registrations:
                informer.remove_handler(reg)
            await asyncio.shield(self.recorder.flush())

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.queue.close()

    async def _cleanup_assumed(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(self.clock, 1.0, stop):
            for pod in self.cache.cleanup_assumed_pods():
                self.queue.move_all_to_active_or_backoff_queue(EVENT_ASSIGNED_POD_DELETE, pod, None)

    async def drain(self) -> None:
        """Wait for every binding and status write started so far (tests, shutdown)."""
        while self._binding_tasks or self._status_tasks:
            await asyncio.gather(*(self._binding_tasks | self._status_tasks), return_exceptions=True)

    # -- the scheduling cycle ----------------------------------------------------------------

    def schedule_one(self, qpi: QueuedPodInfo) -> None:
        pod = qpi.pod
        fwk = self.profiles.get(scheduler_name(pod))
        if fwk is None or (pod.get("metadata") or {}).get("deletionTimestamp") or self.cache.is_assumed_pod(pod):
            self.queue.done(pod)
            return
        start = self.clock.now()
        state = CycleState()
        self.cache.update_snapshot(self.snapshot)
        try:
            result = self.algorithm.schedule_pod(fwk, state, pod, self.snapshot)
        except FitError as fe:
            # upstream: no PostFilter result leaves the nomination alone (a preemptor waiting for
            # its victims to terminate keeps its node); a result overrides it, "" clearing it
            nominated = None
            if fwk.has_post_filter_plugins():
                r, s = fwk.run_post_filter_plugins(state, pod, fe.diagnosis.node_to_status)
                if s.code == Code.ERROR:
                    log.error("post filter for %s failed: %s", pod_key(pod), s.message())
                elif s.message():
                    fe.diagnosis.post_filter_msg = s.message()
                if r is not None and s.code != Code.ERROR:
                    nominated = r.nominated_node_name
            qpi.unschedulable_plugins = set(fe.diagnosis.unschedulable_plugins)
            qpi.pending_plugins = set(fe.diagnosis.pending_plugins)
            self._failure(fwk, qpi, Status(Code.UNSCHEDULABLE, str(fe)), start, nominated=nominated)
            return
        except NoNodesAvailable as e:
            qpi.unschedulable_plugins = set()
            self._failure(fwk, qpi, Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, str(e)), start)
            return
        except SchedulingError as e:
            self._failure(fwk, qpi, e.status, start)
            return
        host = result.suggested_host
        assumed = assume_copy(pod, host)
        s = fwk.run_reserve_plugins_reserve(state, assumed, host)
        if s is not None:
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
            self._failure(fwk, qpi, s, start)
            return
        try:
            self.cache.assume_pod(assumed)
        except ValueError as e:
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
            self._failure(fwk, qpi, Status.as_error(e), start)
            return
        self.queue.delete_nominated_pod_if_exists(pod)
        s, _wait = fwk.run_permit_plugins(state, assumed, host)
        if s is not None:
            if s.code == Code.WAIT:
                s = Status.as_error("Permit plugins that wait are not supported")
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
            self.cache.forget_pod(assumed)
            self._failure(fwk, qpi, s, start)
            return
        metrics.observe_attempt(metrics.SCHEDULED, fwk.profile_name, self.clock.now() - start)
        task = asyncio.get_running_loop().create_task(self._binding_cycle(fwk, state, qpi, assumed, host),
                                                      name=f"bind-{pod_key(pod)}")
        self._binding_tasks.add(task)
        task.add_done_callback(self._binding_tasks.discard)

    async def _binding_cycle(self, fwk, state: CycleState, qpi: QueuedPodInfo, assumed: dict, host: str) -> None:
        try:
            async with self._binding_slots:
                s = await fwk.run_pre_bind_plugins(state, assumed, host)
                if s is None:
                    s = await fwk.run_bind_plugins(state, assumed, host)
                    if s is not None and s.code == Code.ERROR:
                        s.reasons = [f"binding rejected: {s.message()}"]   # upstream's wording
            self.cache.finish_binding(assumed)
            if s is not None:
                fwk.run_reserve_plugins_unreserve(state, assumed, host)
                self.cache.forget_pod(assumed)
                # the room it took is free again
                self.queue.move_all_to_active_or_backoff_queue(EVENT_ASSIGNED_POD_DELETE, assumed, None)
                self._failure(fwk, qpi, s, None)
                return
            fwk.run_post_bind_plugins(state, assumed, host)
            meta = assumed["metadata"]
            self.recorder.event(assumed, NORMAL, "Scheduled",
                                f"Successfully assigned {meta.get('namespace')}/{meta.get('name')} to {host}")
            if qpi.initial_attempt_timestamp is not None:
                metrics.pod_scheduling_sli_duration.labels(str(min(qpi.attempts, 15))).observe(
                    self.clock.now() - qpi.initial_attempt_timestamp)
        except Exception:  # one pod's binding never stops the scheduler
            log.exception("binding cycle of %s failed", pod_key(assumed))
            fwk.run_reserve_plugins_unreserve(state, assumed, host)
            self.cache.forget_pod(assumed)
        finally:
            self.queue.done(assumed)

    # -- failures ----------------------------------------------------------------------------

    def _failure(self, fwk, qpi: QueuedPodInfo, status: Status, start: float | None, *,
                 nominated: str | None = None) -> None:
        """Event, condition, requeue (upstream's handleSchedulingFailure).

        ``nominated``: None leaves ``status.nominatedNodeName`` alone; a string (maybe empty)
        overrides it, as after preemption."""
        pod = qpi.pod
        rejected = status.is_rejected()
        reason = "Unschedulable" if rejected else "SchedulerError"
        msg = status.message() or "scheduling failed"
        if start is not None:
            metrics.observe_attempt(metrics.UNSCHEDULABLE if rejected else metrics.ERROR, fwk.profile_name,
                                    self.clock.now() - start)
        if not rejected:
            log.warning("error scheduling pod %s, retrying: %s", pod_key(pod), msg)
        current = self.pods.get(meta_namespace_key(pod))
        if current is None or uid_of(current) != uid_of(pod):
            log.info("pod %s was deleted meanwhile; not requeued", pod_key(pod))
        elif is_assigned(current):
            log.info("pod %s was bound meanwhile; not requeued", pod_key(pod))
        else:
            qpi.pod_info = PodInfo.of(current)
            self.queue.add_unschedulable_if_not_present(qpi)
            if nominated:
                self.queue.add_nominated_pod(qpi.pod_info, nominated)
            elif nominated is not None:
                self.queue.delete_nominated_pod_if_exists(current)
        self.queue.done(pod)
        self.recorder.event(pod, WARNING, "FailedScheduling", msg)
        if current is not None and not is_assigned(current):
            task = asyncio.get_running_loop().create_task(
                self._patch_condition(current, reason, msg, nominated), name=f"status-{pod_key(pod)}")
            self._status_tasks.add(task)
            task.add_done_callback(self._status_tasks.discard)

    async def _patch_condition(self, pod: dict, reason: str, msg: str, nominated: str | None) -> None:
        status = pod.get("status") or {}
        old = next((c for c in status.get("conditions") or () if c.get("type") == "PodScheduled"), None)
        cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": msg,
                "lastProbeTime": None}
        changed = old is None or any(old.get(k) != cond[k] for k in ("status", "reason", "message"))
        cond["lastTransitionTime"] = (old or {}).get("lastTransitionTime") if old and old.get("status") == "False" \
            else self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        patch: dict = {}
        if changed:
            patch["conditions"] = [cond]
        if nominated is not None and (status.get("nominatedNodeName") or "") != nominated:
            patch["nominatedNodeName"] = nominated or None
        if not patch:
            return
        meta = pod["metadata"]
        try:
            async with self._status_slots:
                await self.client.patch("", "v1", "pods", meta["name"], {"status": patch},
                                        namespace=meta.get("namespace"), subresource="status",
                                        patch_type="strategic")
        except Exception as e:  # noqa: BLE001 - the next attempt writes it again
            log.warning("could not update the PodScheduled condition of %s: %s", pod_key(pod), e)


def assume_copy(pod: dict, host: str) -> dict:
    """The pod as the cache assumes it: a copy with ``spec.nodeName`` set (metadata shared)."""
    assumed = dict(pod)
    assumed["spec"] = dict(pod.get("spec") or {})
    assumed["spec"]["nodeName"] = host
    return assumed


def node_update_actions(old: dict, new: dict) -> ActionType:
    """Which node changes may matter to scheduling (upstream's nodeSchedulingPropertiesChange)."""
    a = ActionType(0)
    os_, ns = old.get("status") or {}, new.get("status") or {}
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    osp, nsp = old.get("spec") or {}, new.get("spec") or {}
    if os_.get("allocatable") != ns.get("allocatable"):
        a |= ActionType.UPDATE_NODE_ALLOCATABLE
    if om.get("labels") != nm.get("labels"):
        a |= ActionType.UPDATE_NODE_LABEL
    if osp.get("taints") != nsp.get("taints") or bool(osp.get("unschedulable")) != bool(nsp.get("unschedulable")):
        a |= ActionType.UPDATE_NODE_TAINT
    if _conditions(os_) != _conditions(ns):
        a |= ActionType.UPDATE_NODE_CONDITION
    if om.get("annotations") != nm.get("annotations"):
        a |= ActionType.UPDATE_NODE_ANNOTATION
    return a


def _conditions(status: dict) -> dict:
    # heartbeat times change every status update; only type -> status matters
    return {c.get("type"): c.get("status") for c in status.get("conditions") or ()}


def assigned_pod_update_event(old: dict, new: dict) -> ClusterEvent:
    """Upstream's PodSchedulingPropertiesChange for a bound pod."""
    a = ActionType(0)
    if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
        a |= ActionType.UPDATE_POD_LABEL
    ro, rn = PodInfo.of(old).requests, PodInfo.of(new).requests
    if _scaled_down(ro, rn):
        a |= ActionType.UPDATE_POD_SCALE_DOWN
    if (old.get("spec") or {}).get("tolerations") != (new.get("spec") or {}).get("tolerations"):
        a |= ActionType.UPDATE_POD_TOLERATION
    return ClusterEvent(EventResource.ASSIGNED_POD, a or ActionType.UPDATE, "AssignedPodUpdate")


def _scaled_down(old: Resource, new: Resource) -> bool:
    return new.milli_cpu < old.milli_cpu or new.memory < old.memory or \
        new.ephemeral_storage < old.ephemeral_storage or \
        any(new.scalar_resources.get(k, 0) < v for k, v in old.scalar_resources.items())


__all__ = ["COMPONENT", "Scheduler", "assigned_pod_update_event", "assume_copy", "node_update_actions"]
