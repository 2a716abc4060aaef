"""The placement algorithm of one scheduling cycle (upstream's ``schedule_one.go``,
``schedulePod`` and what it calls), synchronous and free of I/O::

    PreFilter ─▶ Filter over nodes ─▶ (none fit: FitError) ─▶ PreScore ─▶ Score × weight ─▶ select host

- The nominated node (``status.nominatedNodeName``, from an earlier preemption) is tried first.
- Filter visits nodes from a rotating start index and stops after ``num_feasible_nodes_to_find``
  fit (upstream's ``percentageOfNodesToScore``: all nodes below 100; else the profile's
  percentage, or adaptively ``50 - nodes/125`` %, at least 5 %, and never fewer than 100).
  The next cycle starts where this one stopped, so every node gets its turn.
- Only one node fits: it wins without scoring. Ties of the best score are broken uniformly at
  random (reservoir sampling), as upstream.
- `FitError` keeps, per node, the status that rejected it; its message is upstream's
  ``0/N nodes are available: <count> <reason>, ... .`` with reasons counted and sorted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NO_NODES_AVAILABLE = "no nodes available to schedule pods"


@dataclass
class Diagnosis:
    node_to_status: dict[str, Status] = field(default_factory=dict)
    unschedulable_plugins: set[str] = field(default_factory=set)
    pending_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""


class FitError(Exception):
    """No node fits the pod (upstream's ``framework.FitError``)."""

    def __init__(self, pod: dict, num_all_nodes: int, diagnosis: Diagnosis) -> None:
        super().__init__()
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        d = self.diagnosis
        msg = f"0/{self.num_all_nodes} nodes are available:"
        if d.pre_filter_msg:
            # PreFilter put the same status on every node: counting it per node would repeat it
            msg += f" {d.pre_filter_msg}."
        else:
            counts: dict[str, int] = {}
            for s in d.node_to_status.values():
                for r in s.reasons:
                    counts[r] = counts.get(r, 0) + 1
            hist = sorted(f"{n} {r}" for r, n in counts.items())
            if hist:
                msg += f" {', '.join(hist)}."
        if d.post_filter_msg:
            msg += f" {d.post_filter_msg}"
            if not d.post_filter_msg.endswith("."):
                msg += "."
        return msg


class NoNodesAvailable(Exception):
    def __str__(self) -> str:
        return NO_NODES_AVAILABLE


class SchedulingError(Exception):
    """A plugin answered Error: the pod goes to backoff, the event says SchedulerError."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.message())
        self.status = status


@dataclass
class ScheduleResult:
    suggested_host: str
    evaluated_nodes: int
    feasible_nodes: int


def num_feasible_nodes_to_find(percentage: int | None, num_all_nodes: int) -> int:
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    pct = percentage or 0
    if pct <= 0:
        pct = 50 - num_all_nodes // 125
        pct = max(pct, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    if pct >= 100:
        return num_all_nodes
    n = num_all_nodes * pct // 100
    return max(n, MIN_FEASIBLE_NODES_TO_FIND)


class Algorithm:
    """The rotating start index lives here, one per scheduler (shared by its profiles)."""

    def __init__(self, percentage_of_nodes_to_score: int = 0, rng: random.Random | None = None) -> None:
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.next_start_node_index = 0
        self.rng = rng or random.Random()

    def schedule_pod(self, fwk, state: CycleState, pod: dict, snapshot) -> ScheduleResult:
        """Pick a node; raises `FitError`, `NoNodesAvailable` or `SchedulingError`."""
        if snapshot.num_nodes() == 0:
            raise NoNodesAvailable()
        feasible, diagnosis = self.find_nodes_that_fit(fwk, state, pod, snapshot)
        if not feasible:
            raise FitError(pod, snapshot.num_nodes(), diagnosis)
        evaluated = len(feasible) + len(diagnosis.node_to_status)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        scores = self.prioritize_nodes(fwk, state, pod, feasible)
        return ScheduleResult(self.select_host(scores), evaluated, len(feasible))

    def find_nodes_that_fit(self, fwk, state: CycleState, pod: dict, snapshot) -> tuple[list[NodeInfo], Diagnosis]:
        diagnosis = Diagnosis()
        all_nodes = snapshot.list()
        result, s, narrowed = fwk.run_pre_filter_plugins(state, pod, all_nodes)
        if s is not None:
            if s.code == Code.ERROR:
                raise SchedulingError(s)
            # every node carries the PreFilter rejection, so preemption knows what failed where
            for ni in all_nodes:
                diagnosis.node_to_status[ni.name] = s
            diagnosis.pre_filter_msg = s.message()
            if s.plugin:
                diagnosis.unschedulable_plugins.add(s.plugin)
            return [], diagnosis
        # a nominated node (a previous preemption made room there) is tried first
        nominated = ((pod.get("status") or {}).get("nominatedNodeName")) or ""
        if nominated and (result is None or result.node_names is None or nominated in result.node_names):
            try:
                ni = snapshot.get(nominated)
            except KeyError:
                ni = None
            if ni is not None:
                st = fwk.run_filter_plugins_with_nominated_pods(state, pod, ni)
                if st is None or st.is_success():
                    return [ni], diagnosis
                if st.code == Code.ERROR:
                    raise SchedulingError(st)
        nodes = all_nodes
        if result is not None and result.node_names is not None:
            nodes = [ni for ni in all_nodes if ni.name in result.node_names]
            missing = Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                             f"node(s) didn't satisfy plugin(s) [{', '.join(sorted(narrowed))}]")
            keep = result.node_names
            for ni in all_nodes:
                if ni.name not in keep:
                    diagnosis.node_to_status[ni.name] = missing
            diagnosis.unschedulable_plugins |= narrowed
        feasible = self._filter(fwk, state, pod, nodes, diagnosis, len(all_nodes))
        return feasible, diagnosis

    def _filter(self, fwk, state: CycleState, pod: dict, nodes: list[NodeInfo], diagnosis: Diagnosis,
                num_all: int) -> list[NodeInfo]:
        n = len(nodes)
        if n == 0:
            return []
        to_find = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score
                                             if fwk.percentage_of_nodes_to_score is None
                                             else fwk.percentage_of_nodes_to_score, n)
        start = self.next_start_node_index % n
        if not fwk.has_filter_plugins():
            self.next_start_node_index = (start + to_find) % n
            return [nodes[(start + i) % n] for i in range(to_find)]
        feasible: list[NodeInfo] = []
        processed = 0
        nominator = fwk.nominator
        run = fwk.run_filter_plugins_with_nominated_pods if nominator is not None and \
            nominator.has_nominated_pods() else fwk.run_filter_plugins
        statuses = diagnosis.node_to_status
        for i in range(n):
            ni = nodes[(start + i) % n]
            processed += 1
            s = run(state, pod, ni)
            if s is None or s.code == Code.SUCCESS:
                feasible.append(ni)
                if len(feasible) >= to_find:
                    break
                continue
            if s.code == Code.ERROR:
                raise SchedulingError(s)
            statuses[ni.name] = s
            if s.plugin:
                (diagnosis.pending_plugins if s.code == Code.PENDING else diagnosis.unschedulable_plugins).add(s.plugin)
        self.next_start_node_index = (start + processed) % n
        return feasible

    def prioritize_nodes(self, fwk, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> list[tuple[str, int]]:
        if not fwk.has_score_plugins():
            return [(ni.name, 1) for ni in nodes]
        s = fwk.run_pre_score_plugins(state, pod, nodes)
        if s is not None:
            raise SchedulingError(s)
        scores, s = fwk.run_score_plugins(state, pod, nodes)
        if s is not None:
            raise SchedulingError(s)
        return scores

    def select_host(self, scores: list[tuple[str, int]]) -> str:
        if not scores:
            raise ValueError("empty priority list")
        best, best_score, ties = scores[0][0], scores[0][1], 1
        for name, sc in scores[1:]:
            if sc > best_score:
                best, best_score, ties = name, sc, 1
            elif sc == best_score:
                ties += 1
                if self.rng.randrange(ties) == 0:
                    best = name
        return best

