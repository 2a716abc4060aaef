"""NodeUnschedulable (Filter): a cordoned node (``spec.unschedulable``) takes no new pods, unless
the pod tolerates ``node.kubernetes.io/unschedulable:NoSchedule`` (DaemonSet pods do)."""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    Plugin,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import (
    NO_SCHEDULE,
    TAINT_NODE_UNSCHEDULABLE,
    pod_tolerations,
    same_pod,
    tolerations_tolerate_taint,
)

ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_REASON_UNKNOWN_CONDITION = "node(s) had unknown conditions"
_UNSCHEDULABLE_TAINT = {"key": TAINT_NODE_UNSCHEDULABLE, "effect": NO_SCHEDULE}


def tolerates_unschedulable(pod: dict) -> bool:
    return tolerations_tolerate_taint(pod_tolerations(pod), _UNSCHEDULABLE_TAINT)


def _unschedulable(node: dict | None) -> bool:
    return bool(((node or {}).get("spec") or {}).get("unschedulable"))


class NodeUnschedulable(Plugin):
    NAME = "NodeUnschedulable"

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        node = node_info.node
        if node is None:
            return Status.unresolvable(ERR_REASON_UNKNOWN_CONDITION)
        if not _unschedulable(node) or tolerates_unschedulable(pod):
            return None
        return Status.unresolvable(ERR_REASON_UNSCHEDULABLE)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),
                                 self._hint_node_changed),
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.UPDATE_POD_TOLERATION),
                                 self._hint_pod_toleration_changed),
        ]

    @staticmethod
    def _hint_node_changed(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # Only an uncordon (or a new schedulable node) can help; a still-cordoned node cannot.
        if new is None or _unschedulable(new):
            return QueueingHint.QUEUE_SKIP
        if old is None or _unschedulable(old):
            return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP

    @staticmethod
    def _hint_pod_toleration_changed(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        if same_pod(pod, new) and tolerates_unschedulable(new):
            return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP
