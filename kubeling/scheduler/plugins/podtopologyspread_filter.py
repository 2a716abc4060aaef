"""PodTopologySpread's hard half: PreFilter, Filter and the PreFilterExtensions preemption uses
(upstream's ``podtopologyspread/filtering.go``). The rules are in `podtopologyspread`'s docstring.

PreFilter counts, per ``DoNotSchedule`` constraint, the matching pods of every eligible domain
(`PreFilterState.tp_value_to_match_num`); Filter then compares the node's domain with the
smallest count. ``add_pod``/``remove_pod`` keep the counts right while preemption removes victims
or the framework adds nominated pods, on a `CycleState.clone` (hence `PreFilterState.clone`).
"""

from __future__ import annotations

from kubeling.api.labels import SelectorError
from kubeling.scheduler.framework.interface import CycleState, PreFilterResult, Status
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import RequiredNodeAffinity
from kubeling.scheduler.plugins.podtopologyspread_common import (
    DO_NOT_SCHEDULE,
    ERR_REASON_CONSTRAINTS_NOT_MATCH,
    ERR_REASON_NODE_LABEL_NOT_MATCH,
    count_pods_match_selector,
    node_labels_match_spread_constraints,
)

PRE_FILTER_STATE_KEY = "PreFilterPodTopologySpread"


class PreFilterState:
    """The constraints and, for each, {topology value: matching pods} over the eligible domains."""

    __slots__ = ("constraints", "tp_value_to_match_num")

    def __init__(self, constraints: list, counts: list[dict[str, int]]) -> None:
        self.constraints = constraints
        self.tp_value_to_match_num = counts

    def min_match_num(self, i: int) -> int:
        """The global minimum for constraint ``i``: 0 while fewer than ``minDomains`` domains exist."""
        counts = self.tp_value_to_match_num[i]
        if len(counts) < self.constraints[i].min_domains:
            return 0
        return min(counts.values(), default=0)

    def clone(self) -> PreFilterState:
        return PreFilterState(self.constraints, [dict(m) for m in self.tp_value_to_match_num])


class FilteringMixin:
    """PreFilter/Filter of `podtopologyspread.PodTopologySpread` (needs its ``constraints``)."""

    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        try:
            constraints = self.constraints(pod, DO_NOT_SCHEDULE)
        except SelectorError as e:
            return None, Status.as_error(f"obtaining pod's hard topology spread constraints: {e}")
        if not constraints:
            return None, Status.skip()
        state.write(PRE_FILTER_STATE_KEY, self._calc_pre_filter_state(pod, constraints, nodes))
        return PreFilterResult(), None

    def _calc_pre_filter_state(self, pod: dict, constraints: list, nodes: list[NodeInfo]) -> PreFilterState:
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        affinity = RequiredNodeAffinity(pod)
        counts: list[dict[str, int]] = [{} for _ in constraints]
        for ni in nodes:
            node = ni.node or {}
            labels = (node.get("metadata") or {}).get("labels") or {}
            if not node_labels_match_spread_constraints(labels, constraints):
                continue
            for i, c in enumerate(constraints):
                if not c.includes_node(pod, node, affinity):
                    continue
                value = labels[c.topology_key]
                counts[i][value] = counts[i].get(value, 0) + count_pods_match_selector(ni.pods, c.selector, ns)
        return PreFilterState(constraints, counts)

    def pre_filter_extensions(self):
        return self

    def add_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_add, node_info: NodeInfo) -> Status | None:
        return self._update_with_pod(state, pod_to_add.pod, pod_to_schedule, node_info, 1)

    def remove_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_remove,
                   node_info: NodeInfo) -> Status | None:
        return self._update_with_pod(state, pod_to_remove.pod, pod_to_schedule, node_info, -1)

    def _update_with_pod(self, state: CycleState, updated: dict, preemptor: dict, node_info: NodeInfo,
                         delta: int) -> Status | None:
        try:
            s: PreFilterState = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            return None
        node = node_info.node
        u_meta = updated.get("metadata") or {}
        if node is None or u_meta.get("namespace") != (preemptor.get("metadata") or {}).get("namespace"):
            return None
        labels = (node.get("metadata") or {}).get("labels") or {}
        if not node_labels_match_spread_constraints(labels, s.constraints):
            return None
        affinity = RequiredNodeAffinity(preemptor)
        for i, c in enumerate(s.constraints):
            if not c.selector.matches(u_meta.get("labels") or {}) or not c.includes_node(preemptor, node, affinity):
                continue
            value = labels[c.topology_key]
            s.tp_value_to_match_num[i][value] = s.tp_value_to_match_num[i].get(value, 0) + delta
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        try:
            s: PreFilterState = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            return Status.as_error(f"reading {PRE_FILTER_STATE_KEY!r} from cycleState: PreFilter did not run")
        labels = ((node_info.node or {}).get("metadata") or {}).get("labels") or {}
        pod_labels = (pod.get("metadata") or {}).get("labels") or {}
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return Status.unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
            self_match = 1 if c.selector.matches(pod_labels) else 0
            skew = s.tp_value_to_match_num[i].get(value, 0) + self_match - s.min_match_num(i)
            if skew > c.max_skew:
                return Status.unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
        return None
