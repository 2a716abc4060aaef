"""DefaultPreemption (PostFilter): when a pod fits no node, evict lower-priority pods to make room
on one node and nominate the pod there (upstream's ``plugins/defaultpreemption``). The search is
`kubeling.scheduler.preemption.Evaluator`'s; this plugin says who may preempt and reads PDBs.

A pod may not preempt when:

- its ``spec.preemptionPolicy`` is ``Never`` (``not eligible due to preemptionPolicy=Never.``);
- it preempted already and a victim of lower priority is still terminating on its nominated node
  (``not eligible due to a terminating pod on the nominated node.``) — unless that node now
  rejects it as unresolvable, when it may look again;
- its previous preemption's API calls are still running.

Every message is prefixed ``preemption: `` and ends up after the Filter reasons in the
``FailedScheduling`` event, as upstream:
``0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No
preemption victims found for incoming pod.``

PodDisruptionBudgets come from the ``policy/v1`` informer of ``handle.informers`` when the handle
has a `SharedInformerFactory` there; without one no PDB is respected.

Plugin args: ``minCandidateNodesPercentage`` (default 10, 0..100) and
``minCandidateNodesAbsolute`` (default 100): how many candidate nodes the dry run collects.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    Plugin,
    PostFilterResult,
    Status,
)
from kubeling.scheduler.preemption import (
    DISRUPTION_TARGET,
    PREEMPTION_BY_SCHEDULER,
    Evaluator,
    pod_priority,
)

NAME = "DefaultPreemption"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never."
NOT_ELIGIBLE_TERMINATING = "not eligible due to a terminating pod on the nominated node."
WAITING_FOR_PREEMPTION = "waiting for the preemption for this pod to be finished"


def pod_terminating_by_preemption(pod: dict) -> bool:
    """Being deleted, and the scheduler's preemption is why."""
    if not (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == DISRUPTION_TARGET:
            return c.get("status") == "True" and c.get("reason") == PREEMPTION_BY_SCHEDULER
    return False


class DefaultPreemption(Plugin):
    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        pct = int(self.args.get("minCandidateNodesPercentage", 10))
        absolute = int(self.args.get("minCandidateNodesAbsolute", 100))
        if not 0 <= pct <= 100:
            raise ValueError(f"minCandidateNodesPercentage: Invalid value: {pct}: not in valid range [0, 100]")
        if absolute < 0:
            raise ValueError(f"minCandidateNodesAbsolute: Invalid value: {absolute}: not in valid range [0, inf)")
        if pct == 0 and absolute == 0:
            raise ValueError("minCandidateNodesPercentage and minCandidateNodesAbsolute cannot both be zero")
        factory = getattr(handle, "informers", None)
        self._pdbs = factory.informer_for("policy", "v1", "poddisruptionbudgets") if factory is not None else None
        self.evaluator = Evaluator(handle, NAME, pdb_lister=self.list_pdbs, min_candidate_nodes_percentage=pct,
                                   min_candidate_nodes_absolute=absolute, eligible=self.pod_eligible_to_preempt_others,
                                   rng=getattr(handle, "rng", None))

    def list_pdbs(self) -> list[dict]:
        return self._pdbs.list() if self._pdbs is not None else []

    def post_filter(self, state: CycleState, pod: dict,
                    statuses: dict[str, Status]) -> tuple[PostFilterResult | None, Status]:
        result, status = self.evaluator.preempt(state, pod, statuses)
        msg = status.message()
        if msg and status.code != Code.SUCCESS:
            return result, Status(status.code, f"preemption: {msg}", error=status.error)
        return result, status

    def pod_eligible_to_preempt_others(self, pod: dict, nominated_status: Status | None) -> tuple[bool, str]:
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            return False, NOT_ELIGIBLE_NEVER
        if self.evaluator.is_preempting((pod.get("metadata") or {}).get("uid") or ""):
            return False, WAITING_FOR_PREEMPTION
        nominated = (pod.get("status") or {}).get("nominatedNodeName") or ""
        if not nominated:
            return True, ""
        if nominated_status is not None and nominated_status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
            return True, ""
        try:
            ni = self.handle.snapshot_shared_lister().get(nominated)
        except KeyError:
            return True, ""
        prio = pod_priority(pod)
        for pi in ni.pods:
            if pod_priority(pi.pod) < prio and pod_terminating_by_preemption(pi.pod):
                return False, NOT_ELIGIBLE_TERMINATING
        return True, ""
