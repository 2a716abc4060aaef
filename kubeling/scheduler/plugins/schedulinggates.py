"""SchedulingGates (PreEnqueue): a pod with ``spec.schedulingGates`` is held out of the active
queue until every gate is removed (the API server only lets gates be removed, never added after
creation). The status is UnschedulableAndUnresolvable with ``waiting for scheduling gates: [a b]``
(Go's rendering of the gate names), which the queue records against the gated pod."""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    EventResource,
    Plugin,
    QueueingHint,
    Status,
)


def gate_names(pod: dict) -> list[str]:
    return [g.get("name", "") for g in (pod.get("spec") or {}).get("schedulingGates") or ()]


class SchedulingGates(Plugin):
    NAME = "SchedulingGates"

    def pre_enqueue(self, pod: dict) -> Status | None:
        gates = gate_names(pod)
        if not gates:
            return None
        return Status.unresolvable(f"waiting for scheduling gates: [{' '.join(gates)}]")

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(
            ClusterEvent(EventResource.POD, ActionType.UPDATE_POD_SCHEDULING_GATES_ELIMINATED),
            self._hint_gates_eliminated)]

    @staticmethod
    def _hint_gates_eliminated(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # Only the gated pod's own update can release it, and only once its last gate is gone.
        if new is None or (new.get("metadata") or {}).get("uid") != (pod.get("metadata") or {}).get("uid"):
            return QueueingHint.QUEUE_SKIP
        return QueueingHint.QUEUE_SKIP if gate_names(new) else QueueingHint.QUEUE
