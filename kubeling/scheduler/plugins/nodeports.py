"""NodePorts (PreFilter, Filter): a pod's ``hostPort``s must be free on the node.

PreFilter collects the pod's (hostIP, protocol, hostPort) triples once, or Skips a pod without
host ports (most pods), so Filter is not even called for them. Filter checks each against the
node's ``used_ports`` (``0.0.0.0`` conflicts with every IP) and answers Unschedulable
``node(s) didn't have free ports for the requested pod ports``.
"""

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
from kubeling.scheduler.framework.types import NodeInfo, host_ports

NAME = "NodePorts"
PRE_FILTER_STATE_KEY = "PreFilter" + NAME
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"


def fits_ports(wanted: list[tuple[str, str, int]], node_info: NodeInfo) -> bool:
    used = node_info.used_ports
    return not any(used.check_conflict(ip, proto, port) for ip, proto, port in wanted)


class NodePorts(Plugin):
    NAME = NAME

    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        wanted = host_ports(pod)
        if not wanted:
            return None, Status.skip()
        state.write(PRE_FILTER_STATE_KEY, wanted)
        return None, None

    def pre_filter_extensions(self):
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        try:
            wanted = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            wanted = host_ports(pod)
        return None if fits_ports(wanted, node_info) else Status.unschedulable(ERR_REASON)

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.DELETE), self._hint_pod_deleted),
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD), None),
        ]

    @staticmethod
    def _hint_pod_deleted(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # Only a bound pod holding one of the same ports frees anything this pod wants.
        if old is None or not (old.get("spec") or {}).get("nodeName"):
            return QueueingHint.QUEUE_SKIP
        freed = {(proto, port) for _, proto, port in host_ports(old)}
        wanted = {(proto, port) for _, proto, port in host_ports(pod)}
        return QueueingHint.QUEUE if freed & wanted else QueueingHint.QUEUE_SKIP
