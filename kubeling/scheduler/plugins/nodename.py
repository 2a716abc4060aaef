"""NodeName (Filter): a pod that names a node in ``spec.nodeName`` fits only that node.

The scheduler only sees pods without ``spec.nodeName``, so in practice this matters for
preemption's and the DaemonSet controller's "would it fit" checks, as upstream.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    EVENT_NODE_ADD,
    ClusterEventWithHint,
    CycleState,
    Plugin,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo

ERR_REASON = "node(s) didn't match the requested node name"


def fits(pod: dict, node_name: str) -> bool:
    want = (pod.get("spec") or {}).get("nodeName") or ""
    return not want or want == node_name


class NodeName(Plugin):
    NAME = "NodeName"

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        if fits(pod, node_info.name):
            return None
        return Status.unresolvable(ERR_REASON)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(EVENT_NODE_ADD, self._hint_node_added)]

    @staticmethod
    def _hint_node_added(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        name = ((new or {}).get("metadata") or {}).get("name") or ""
        return QueueingHint.QUEUE if fits(pod, name) else QueueingHint.QUEUE_SKIP
