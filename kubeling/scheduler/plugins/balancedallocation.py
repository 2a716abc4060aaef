"""NodeResourcesBalancedAllocation (PreScore, Score): prefer nodes whose resources would be used
evenly after placing the pod.

For each configured resource (default cpu and memory) the fraction ``requested / allocatable``
(capped at 1) is taken, with the requests as written (no 100m/200Mi defaults, unlike
NodeResourcesFit); the score is ``(1 - std) * 100`` where std is the standard deviation of the
fractions (``|f1 - f2| / 2`` for two). A pod that requests none of the resources is skipped
(upstream since 1.33: otherwise best-effort pods pile onto one node).
"""

from __future__ import annotations

import math

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    CycleState,
    Plugin,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.noderesources import (
    DEFAULT_RESOURCES,
    ResourceAllocationScorer,
)

NAME = "NodeResourcesBalancedAllocation"
PRE_SCORE_STATE_KEY = "PreScore" + NAME


def balanced_resource_score(requested: list[int], allocatable: list[int]) -> int:
    fractions = [min(r / a, 1.0) for r, a in zip(requested, allocatable, strict=True) if a]
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation(Plugin):
    """Args (NodeResourcesBalancedAllocationArgs): ``resources`` [{name, weight}]."""

    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        resources = [{"name": r["name"], "weight": r.get("weight") or 1}
                     for r in self.args.get("resources") or DEFAULT_RESOURCES]
        self.scorer = ResourceAllocationScorer(resources, balanced_resource_score, use_requested=True)

    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        requests = self.scorer.pod_request_list(pod)
        if not any(requests):
            return Status.skip()
        state.write(PRE_SCORE_STATE_KEY, requests)
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            requests = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            requests = self.scorer.pod_request_list(pod)
            if not any(requests):
                return 0, None
        return self.scorer.score(node_info, requests), None

    def score_extensions(self):
        return None
