"""The scheduling framework (upstream's ``pkg/scheduler/framework``): `interface` is the plugin
contract, `types` what plugins read (NodeInfo, PodInfo, Resource)."""

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    MIN_NODE_SCORE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    Code,
    CycleState,
    EventResource,
    Handle,
    NodeScore,
    Plugin,
    PostFilterResult,
    PreFilterResult,
    QueueingHint,
    Status,
    is_success,
)
from kubeling.scheduler.framework.types import (
    NodeInfo,
    PodInfo,
    QueuedPodInfo,
    Resource,
)

__all__ = ["MAX_NODE_SCORE", "MIN_NODE_SCORE", "ActionType", "ClusterEvent", "ClusterEventWithHint", "Code",
           "CycleState", "EventResource", "Handle", "NodeInfo", "NodeScore", "Plugin", "PodInfo",
           "PostFilterResult", "PreFilterResult", "QueuedPodInfo", "QueueingHint", "Resource", "Status",
           "is_success"]
