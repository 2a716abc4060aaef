"""TaintToleration (Filter, PreScore, Score): a node's NoSchedule and NoExecute taints keep out
pods that do not tolerate them; PreferNoSchedule taints only lower the node's score.

Filter answers UnschedulableAndUnresolvable (preempting pods cannot remove a taint) with
``node(s) had untolerated taint {key: value}`` for the first untolerated taint, as upstream.
Score counts the node's untolerated PreferNoSchedule taints (PreScore keeps the pod's tolerations
whose effect is empty or PreferNoSchedule); NormalizeScore reverses it so the node with the
fewest scores 100.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    NodeScore,
    Plugin,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import (
    PREFER_NO_SCHEDULE,
    default_normalize_score,
    do_not_schedule_taint,
    find_matching_untolerated_taint,
    node_taints,
    pod_tolerations,
    same_pod,
    tolerations_tolerate_taint,
)

NAME = "TaintToleration"
PRE_SCORE_STATE_KEY = "PreScore" + NAME


def untolerated_taint(pod: dict, node: dict | None) -> dict | None:
    """The first NoSchedule/NoExecute taint of ``node`` the pod does not tolerate, else None."""
    return find_matching_untolerated_taint(node_taints(node), pod_tolerations(pod), do_not_schedule_taint)


class TaintToleration(Plugin):
    NAME = NAME

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        taint = untolerated_taint(pod, node_info.node)
        if taint is None:
            return None
        return Status.unresolvable(
            f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}")

    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        if not nodes:
            return None
        prefer = [t for t in pod_tolerations(pod) if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)]
        state.write(PRE_SCORE_STATE_KEY, prefer)
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            tolerations = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            return 0, Status.as_error(f'reading "{PRE_SCORE_STATE_KEY}" from cycleState: not found')
        count = 0
        for taint in node_taints(node_info.node):
            if taint.get("effect") == PREFER_NO_SCHEDULE and not tolerations_tolerate_taint(tolerations, taint):
                count += 1
        return count, None

    def score_extensions(self) -> TaintToleration:
        return self

    def normalize_score(self, state: CycleState, pod: dict, scores: list[NodeScore]) -> Status | None:
        default_normalize_score(MAX_NODE_SCORE, True, scores)
        return None

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),
                                 self._hint_node_changed),
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.UPDATE_POD_TOLERATION),
                                 self._hint_pod_toleration_changed),
        ]

    @staticmethod
    def _hint_node_changed(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        if new is None or untolerated_taint(pod, new) is not None:
            return QueueingHint.QUEUE_SKIP
        if old is None or untolerated_taint(pod, old) is not None:
            return QueueingHint.QUEUE     # the node newly admits the pod
        return QueueingHint.QUEUE_SKIP

    @staticmethod
    def _hint_pod_toleration_changed(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # A toleration added to the rejected pod itself may admit it somewhere.
        return QueueingHint.QUEUE if same_pod(pod, new) else QueueingHint.QUEUE_SKIP
