"""PrioritySort (QueueSort): the active queue pops the highest ``spec.priority`` first, and among
equal priorities the pod that entered the queue earliest (upstream's ``queuesort`` plugin)."""

from __future__ import annotations

from kubeling.scheduler.framework.interface import Plugin
from kubeling.scheduler.framework.types import QueuedPodInfo


def pod_priority(pod: dict) -> int:
    """``spec.priority`` (set by the Priority admission plugin); 0 when absent."""
    return (pod.get("spec") or {}).get("priority") or 0


class PrioritySort(Plugin):
    NAME = "PrioritySort"

    def less(self, a: QueuedPodInfo, b: QueuedPodInfo) -> bool:
        pa, pb = pod_priority(a.pod), pod_priority(b.pod)
        return pa > pb or (pa == pb and a.timestamp < b.timestamp)
