"""`SchedulingQueue`: upstream's ``PriorityQueue`` (``internal/queue/scheduling_queue.go``).

Three sub-queues, each pod (by UID) in at most one of them, or *in flight* (popped, being
scheduled or bound) and in none::

    add ──PreEnqueue ok──▶ activeQ ──pop──▶ in flight ──done──▶ (gone, or requeued by the failure)
          └─gated──▶ unschedulablePods                    │
                                                            └─ add_unschedulable_if_not_present
    unschedulablePods ──cluster event with QUEUE hint──▶ backoffQ (still backing off) | activeQ
                      ──5 min left over (flush)────────▶ backoffQ | activeQ
    backoffQ ──backoff expired (flush, every second)──▶ activeQ

- activeQ is a heap ordered by the profile's QueueSort ``less``; backoffQ a heap by backoff
  expiry. A pod's backoff is ``initial × 2^(attempts-1)``, capped at ``max`` (1 s → 10 s), from
  the time it last failed.
- A cluster event moves an unschedulable pod only if one of the plugins that rejected it
  registered a matching event and that registration's hint answers ``QUEUE`` (no hint means
  ``QUEUE``; a hint that raises counts as ``QUEUE``, as upstream). A pod rejected by no plugin
  (an error) goes to backoffQ directly.
- Events that happen while a pod is in flight are remembered for it: if one of them would have
  moved it, the failure handler's requeue sends it to backoffQ/activeQ instead of parking it in
  unschedulablePods, so no event is lost between pop and requeue.
- Nominated pods (``status.nominatedNodeName``, set by preemption) are tracked here for
  `Framework.run_filter_plugins_with_nominated_pods`.

Concurrency: one asyncio loop; only `pop` awaits (for a pod to become active). ``clock`` is the
injectable clock; `run` drives the two periodic flushes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

from kubeling.client.clock import sleep_or_stop
from kubeling.scheduler import metrics
from kubeling.scheduler.framework.interface import (
    EVENT_UNSCHEDULABLE_TIMEOUT,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    EventResource,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import PodInfo, QueuedPodInfo, pod_key

log = logging.getLogger(__name__)

POD_INITIAL_BACKOFF = 1.0        # podInitialBackoffSeconds
POD_MAX_BACKOFF = 10.0           # podMaxBackoffSeconds
POD_MAX_IN_UNSCHEDULABLE = 300.0  # podMaxInUnschedulablePodsDuration
_MAX_IN_FLIGHT_EVENTS = 10000     # past this the log is dropped and in-flight pods are simply requeued
EVENT_UNSCHEDULED_POD_UPDATE = ClusterEvent(EventResource.UNSCHEDULED_POD, ActionType.UPDATE, "UnscheduledPodUpdate")


def uid_of(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or pod_key(pod)


def nominated_node_of(pod: dict) -> str:
    return (pod.get("status") or {}).get("nominatedNodeName") or ""


class _Active:
    """A heap entry ordered by ``less``; ``removed`` entries are skipped when popped."""

    __slots__ = ("less", "qpi", "removed")

    def __init__(self, qpi: QueuedPodInfo, less) -> None:
        self.qpi, self.less, self.removed = qpi, less, False

    def __lt__(self, other: _Active) -> bool:
        return self.less(self.qpi, other.qpi)


class SchedulingQueue:
    """See the module docstring.

    ``less(a, b)``: the QueueSort plugin; ``pre_enqueue(pod) -> Status | None``;
    ``hints(pod) -> {plugin: [ClusterEventWithHint]}`` for the pod's profile.
    """

    def __init__(self, less, *, clock, pre_enqueue: Callable[[dict], Status | None] | None = None,
                 hints: Callable[[dict], dict[str, list[ClusterEventWithHint]]] | None = None,
                 initial_backoff: float = POD_INITIAL_BACKOFF, max_backoff: float = POD_MAX_BACKOFF,
                 max_in_unschedulable: float = POD_MAX_IN_UNSCHEDULABLE) -> None:
        self.less = less
        self.clock = clock
        self.pre_enqueue = pre_enqueue or (lambda pod: None)
        self.hints = hints or (lambda pod: {})
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.max_in_unschedulable = max_in_unschedulable
        self._active: list[_Active] = []
        self._active_by_uid: dict[str, _Active] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_by_uid: dict[str, QueuedPodInfo] = {}
        self._seq = itertools.count()
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        # in-flight pods: uid -> position in the event log when popped (None: the log overflowed).
        # One shared log, appended only while some pod is in flight (upstream's inFlightEvents),
        # instead of a list per pod: an event costs O(1), not O(pods in flight).
        self.in_flight: dict[str, int | None] = {}
        self._events: list[tuple] = []
        self._events_base = 0        # the log position of _events[0]
        self._nominated: dict[str, dict[str, PodInfo]] = {}   # node -> uid -> pod info
        self._nominated_node: dict[str, str] = {}             # uid -> node
        self._wakeup = asyncio.Event()
        self.closed = False
        self._gated = 0

    # -- adding ------------------------------------------------------------------------------

    def _new_qpi(self, pod: dict) -> QueuedPodInfo:
        now = self.clock.now()
        return QueuedPodInfo(PodInfo.of(pod), timestamp=now, initial_attempt_timestamp=None)

    def add(self, pod: dict) -> None:
        """A new unscheduled pod (informer add)."""
        uid = uid_of(pod)
        if self._where(uid) is not None or uid in self.in_flight:
            return
        qpi = self._new_qpi(pod)
        self._to_active_or_gated(qpi)
        self._add_nominated(qpi.pod_info)
        self._report()

    def _to_active_or_gated(self, qpi: QueuedPodInfo) -> bool:
        """Run PreEnqueue; activeQ if it passes, else park as gated. True if active."""
        s = self.pre_enqueue(qpi.pod)
        if s is not None and not s.is_success():
            qpi.gated = True
            qpi.unschedulable_plugins = {s.plugin} if s.plugin else set()
            self.unschedulable[uid_of(qpi.pod)] = qpi
            return False
        qpi.gated = False
        self._push_active(qpi)
        return True

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        uid = uid_of(qpi.pod)
        if qpi.initial_attempt_timestamp is None:
            qpi.initial_attempt_timestamp = self.clock.now()
        e = _Active(qpi, self.less)
        self._active_by_uid[uid] = e
        heapq.heappush(self._active, e)
        self._wakeup.set()

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        uid = uid_of(qpi.pod)
        self._backoff_by_uid[uid] = qpi
        heapq.heappush(self._backoff, (self.backoff_expiry(qpi), next(self._seq), uid))

    def backoff_expiry(self, qpi: QueuedPodInfo) -> float:
        return qpi.timestamp + self.backoff_duration(qpi)

    def backoff_duration(self, qpi: QueuedPodInfo) -> float:
        d = self.initial_backoff
        for _ in range(1, qpi.attempts):
            d *= 2
            if d >= self.max_backoff:
                return self.max_backoff
        return min(d, self.max_backoff)

    def _is_backing_off(self, qpi: QueuedPodInfo) -> bool:
        return qpi.attempts > 0 and self.backoff_expiry(qpi) > self.clock.now()

    def add_unschedulable_if_not_present(self, qpi: QueuedPodInfo) -> None:
        """The failure handler's requeue of a pod that was in flight (see the module docstring)."""
        uid = uid_of(qpi.pod)
        if self._where(uid) is not None:
            return
        qpi.timestamp = self.clock.now()
        events = self._events_since(self.in_flight.get(uid, self._log_end()))
        rejectors = qpi.unschedulable_plugins | qpi.pending_plugins
        if not rejectors or events is None:
            self._push_backoff(qpi)   # an error, or too much happened meanwhile: retry after backoff
        elif any(self._worth_requeuing(qpi, ev, old, new) for ev, old, new in events):
            self._requeue(qpi)
        else:
            self.unschedulable[uid] = qpi
        self._report()

    def done(self, pod_or_uid) -> None:
        """The pod's scheduling attempt (and binding) is over; stop recording events for it."""
        uid = pod_or_uid if isinstance(pod_or_uid, str) else uid_of(pod_or_uid)
        self.in_flight.pop(uid, None)
        if not self.in_flight:
            self._events_base = self._log_end()
            self._events.clear()
        elif len(self._events) > 256:
            # drop what no in-flight pod can still need (amortised: only when the log is long)
            oldest = min((p for p in self.in_flight.values() if p is not None), default=self._log_end())
            cut = oldest - self._events_base
            if cut > 0:
                del self._events[:cut]
                self._events_base = oldest

    # -- popping -----------------------------------------------------------------------------

    async def pop(self) -> QueuedPodInfo | None:
        """The next pod by QueueSort order, waiting for one; None once closed."""
        while True:
            while self._active:
                e = heapq.heappop(self._active)
                if e.removed:
                    continue
                uid = uid_of(e.qpi.pod)
                del self._active_by_uid[uid]
                e.qpi.attempts += 1
                self.in_flight[uid] = self._log_end()
                self._report()
                return e.qpi
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    # -- updates from the informer -----------------------------------------------------------

    def update(self, old: dict | None, new: dict) -> None:
        """An unscheduled pod changed."""
        uid = uid_of(new)
        where = self._where(uid)
        if uid in self.in_flight:
            self._record_in_flight(EVENT_UNSCHEDULED_POD_UPDATE, old, new)
            return
        if where is None:
            self.add(new)
            return
        qpi = self._get(uid, where)
        qpi.pod_info = PodInfo.of(new)
        self._update_nominated(new, qpi.pod_info)
        if where == "active":
            self._active_by_uid[uid].removed = True
            self._push_active(qpi)
        elif where == "unschedulable" and _spec_changed(old, new):
            # the pod itself changed (tolerations, gates, affinity...): it may fit now
            del self.unschedulable[uid]
            if qpi.gated:
                self._to_active_or_gated(qpi)
            else:
                self._requeue(qpi)
        self._report()

    def delete(self, pod: dict) -> None:
        uid = uid_of(pod)
        where = self._where(uid)
        if where == "active":
            self._active_by_uid.pop(uid).removed = True
        elif where == "backoff":
            del self._backoff_by_uid[uid]     # its heap entry is skipped when flushed
        elif where == "unschedulable":
            del self.unschedulable[uid]
        self.delete_nominated_pod_if_exists(pod)
        self._report()

    # -- cluster events ----------------------------------------------------------------------

    def move_all_to_active_or_backoff_queue(self, event: ClusterEvent, old=None, new=None,
                                            pre_check: Callable[[dict], bool] | None = None) -> int:
        """Move the unschedulable pods this event may help (hints); returns how many moved."""
        self._record_in_flight(event, old, new)
        moved = 0
        for uid, qpi in list(self.unschedulable.items()):
            if pre_check is not None and not pre_check(qpi.pod):
                continue
            if not self._worth_requeuing(qpi, event, old, new):
                continue
            del self.unschedulable[uid]
            if qpi.gated:
                if not self._to_active_or_gated(qpi):
                    continue
            else:
                self._requeue(qpi)
            moved += 1
        if moved:
            self._report()
        return moved

    def _log_end(self) -> int:
        return self._events_base + len(self._events)

    def _record_in_flight(self, event: ClusterEvent, old, new) -> None:
        if not self.in_flight:
            return
        if len(self._events) >= _MAX_IN_FLIGHT_EVENTS:
            for uid in self.in_flight:
                self.in_flight[uid] = None
            self._events_base = self._log_end()
            self._events.clear()
        self._events.append((event, old, new))

    def _events_since(self, position: int | None) -> list[tuple] | None:
        """The events logged since ``position``; None if the log overflowed meanwhile."""
        if position is None:
            return None
        return self._events[max(position - self._events_base, 0):]

    def _worth_requeuing(self, qpi: QueuedPodInfo, event: ClusterEvent, old, new) -> bool:
        if event.is_wildcard():
            return True
        rejectors = qpi.unschedulable_plugins | qpi.pending_plugins
        if not rejectors:
            return True
        registered = self.hints(qpi.pod)
        for plugin in rejectors:
            for ewh in registered.get(plugin, ()):
                if not ewh.event.matches(event):
                    continue
                if ewh.hint is None:
                    return True
                try:
                    if ewh.hint(qpi.pod, old, new) == QueueingHint.QUEUE:
                        return True
                except Exception:  # a failing hint must not strand the pod
                    log.exception("queueing hint of %s failed for %s", plugin, pod_key(qpi.pod))
                    return True
        return False

    def _requeue(self, qpi: QueuedPodInfo) -> None:
        if self._is_backing_off(qpi):
            self._push_backoff(qpi)
        else:
            self._push_active(qpi)

    def flush_backoff_completed(self) -> None:
        now = self.clock.now()
        while self._backoff and self._backoff[0][0] <= now:
            expiry, _, uid = heapq.heappop(self._backoff)
            qpi = self._backoff_by_uid.get(uid)
            if qpi is None or self.backoff_expiry(qpi) != expiry:
                continue   # deleted, or re-added with another expiry
            del self._backoff_by_uid[uid]
            self._push_active(qpi)
        self._gated = sum(1 for q in self.unschedulable.values() if q.gated)
        self._report()

    def flush_unschedulable_left_over(self) -> None:
        now = self.clock.now()
        old = {uid for uid, q in self.unschedulable.items() if now - q.timestamp > self.max_in_unschedulable}
        if old:
            self.move_all_to_active_or_backoff_queue(EVENT_UNSCHEDULABLE_TIMEOUT,
                                                     pre_check=lambda pod: uid_of(pod) in old)

    async def run(self, stop: asyncio.Event) -> None:
        """The periodic flushes: backoffQ every second, left-over unschedulable pods every 30 s."""
        n = 0
        while not await sleep_or_stop(self.clock, 1.0, stop):
            self.flush_backoff_completed()
            n += 1
            if n % 30 == 0:
                self.flush_unschedulable_left_over()

    # -- nominated pods ----------------------------------------------------------------------

    def _add_nominated(self, pi: PodInfo, node: str | None = None) -> None:
        node = node or nominated_node_of(pi.pod)
        if not node:
            return
        uid = uid_of(pi.pod)
        self.delete_nominated_pod_if_exists(pi.pod)
        self._nominated.setdefault(node, {})[uid] = pi
        self._nominated_node[uid] = node

    def add_nominated_pod(self, pi: PodInfo, node_name: str) -> None:
        """Preemption nominated ``pi`` to ``node_name`` (before the status patch lands)."""
        self._add_nominated(pi, node_name)

    def _update_nominated(self, pod: dict, pi: PodInfo) -> None:
        uid = uid_of(pod)
        node = nominated_node_of(pod) or self._nominated_node.get(uid, "")
        if node:
            self._add_nominated(pi, node)

    def delete_nominated_pod_if_exists(self, pod: dict) -> None:
        uid = uid_of(pod)
        node = self._nominated_node.pop(uid, None)
        if node is not None:
            pods = self._nominated.get(node, {})
            pods.pop(uid, None)
            if not pods:
                self._nominated.pop(node, None)

    def nominated_pods_for_node(self, node_name: str) -> list[PodInfo]:
        return list(self._nominated.get(node_name, {}).values())

    # -- reading -----------------------------------------------------------------------------

    def _where(self, uid: str) -> str | None:
        if uid in self._active_by_uid:
            return "active"
        if uid in self._backoff_by_uid:
            return "backoff"
        if uid in self.unschedulable:
            return "unschedulable"
        return None

    def _get(self, uid: str, where: str) -> QueuedPodInfo:
        if where == "active":
            return self._active_by_uid[uid].qpi
        if where == "backoff":
            return self._backoff_by_uid[uid]
        return self.unschedulable[uid]

    def where(self, pod: dict) -> str | None:
        """``active`` | ``backoff`` | ``unschedulable`` | None (in flight or unknown)."""
        return self._where(uid_of(pod))

    def pending_pods(self) -> dict[str, list[dict]]:
        return {"active": [e.qpi.pod for e in self._active_by_uid.values()],
                "backoff": [q.pod for q in self._backoff_by_uid.values()],
                "unschedulable": [q.pod for q in self.unschedulable.values()]}

    def __len__(self) -> int:
        return len(self._active_by_uid) + len(self._backoff_by_uid) + len(self.unschedulable)

    def _report(self) -> None:
        # the gated count is refreshed by the once-a-second flush: counting it here is O(pods)
        metrics.set_pending(len(self._active_by_uid), len(self._backoff_by_uid),
                            max(len(self.unschedulable) - self._gated, 0), self._gated)


def _spec_changed(old: dict | None, new: dict) -> bool:
    """Whether anything but status/metadata bookkeeping changed (upstream's isPodUpdated)."""
    if old is None:
        return True

    def strip(p: dict) -> tuple:
        meta = dict(p.get("metadata") or {})
        for k in ("resourceVersion", "generation", "managedFields"):
            meta.pop(k, None)
        return meta, p.get("spec")

    return strip(old) != strip(new)
