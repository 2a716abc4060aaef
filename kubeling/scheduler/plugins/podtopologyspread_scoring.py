"""PodTopologySpread's soft half: PreScore, Score, NormalizeScore for ``ScheduleAnyway``
constraints and the cluster defaults (upstream's ``podtopologyspread/scoring.go``).

PreScore counts matching pods per topology value over **all** nodes (not only the filtered ones:
pods on a node the pod cannot use still make its domain crowded), but only for values that some
filtered node carries. ``kubernetes.io/hostname`` is special-cased: a host is its own domain, so
its count is the node's own pods, taken in Score.

A node's raw score is ``sum over constraints of count * log(domains + 2) + (maxSkew - 1)``: the
logarithm weighs a constraint with many small domains like one with a few big ones, and
``maxSkew - 1`` dampens differences the user said are acceptable. NormalizeScore inverts it into
[0, 100] (fewest matching pods → 100). Nodes missing a constraint's key are "ignored" and score 0
— except under the system defaults, which only need the keys a node has.
"""

from __future__ import annotations

import math

from kubeling.api.labels import SelectorError
from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    CycleState,
    NodeScore,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import RequiredNodeAffinity
from kubeling.scheduler.plugins.podtopologyspread_common import (
    LABEL_HOSTNAME,
    SCHEDULE_ANYWAY,
    count_pods_match_selector,
)

PRE_SCORE_STATE_KEY = "PreScorePodTopologySpread"
# selectors whose per-node counts are remembered (`ScoringMixin.per_node_counts`); more are
# forgotten all at once, which only costs a recount
COUNT_CACHE_SELECTORS = 64


class PreScoreState:
    __slots__ = ("constraints", "ignored_nodes", "namespace", "normalizing_weights", "per_node_counts",
                 "tp_value_to_pod_counts")

    def __init__(self, constraints: list, namespace: str, per_node_counts: list[dict]) -> None:
        self.constraints = constraints
        self.namespace = namespace
        self.per_node_counts = per_node_counts      # shared with the plugin's cache
        self.ignored_nodes: set[str] = set()
        self.tp_value_to_pod_counts: list[dict[str, int]] = [{} for _ in constraints]
        self.normalizing_weights: list[float] = []

    def clone(self) -> PreScoreState:
        return self     # read-only after PreScore


def topology_normalizing_weight(size: int) -> float:
    return math.log(size + 2)


def score_for_count(count: int, max_skew: int, weight: float) -> float:
    return count * weight + (max_skew - 1)


def node_pod_count(per_node: dict, ni: NodeInfo, selector, namespace: str) -> int:
    """`count_pods_match_selector` over the node's pods, unless ``per_node`` has it for the
    node's current generation (generations are global: equal means same content)."""
    name = ni.name
    hit = per_node.get(name)
    if hit is not None and hit[0] == ni.generation:
        return hit[1]
    n = count_pods_match_selector(ni.pods, selector, namespace)
    per_node[name] = (ni.generation, n)
    return n


class ScoringMixin:
    """PreScore/Score/NormalizeScore of `podtopologyspread.PodTopologySpread` (which sets
    ``_count_cache``)."""

    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        all_nodes = self.shared_lister().list()
        if not all_nodes:
            return Status.skip()
        try:
            constraints = self.constraints(pod, SCHEDULE_ANYWAY)
        except SelectorError as e:
            return Status.as_error(f"obtaining pod's soft topology spread constraints: {e}")
        if not constraints:
            return Status.skip()
        # only the pod's own constraints require every key on a node: a node without a zone
        # label must still spread by hostname under the system defaults
        require_all = bool((pod.get("spec") or {}).get("topologySpreadConstraints")) or not self.system_defaulted
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        s = PreScoreState(constraints, ns, [self.per_node_counts(c.selector, ns) for c in constraints])
        keys = [c.topology_key for c in constraints]
        # hostname domains are counted per node in Score; the others are counted here
        domain_idx = [i for i, k in enumerate(keys) if k != LABEL_HOSTNAME]
        counts = s.tp_value_to_pod_counts
        for ni in nodes:
            labels = ((ni.node or {}).get("metadata") or {}).get("labels") or {}
            if require_all and not all(k in labels for k in keys):
                s.ignored_nodes.add(ni.name)
                continue
            for i in domain_idx:
                value = labels.get(keys[i])
                if value is not None:
                    counts[i].setdefault(value, 0)
        for i, k in enumerate(keys):
            size = len(nodes) - len(s.ignored_nodes) if k == LABEL_HOSTNAME else len(counts[i])
            s.normalizing_weights.append(topology_normalizing_weight(size))

        # count over every node (a domain is crowded by pods on nodes this pod cannot use too),
        # only for domains some filtered node is in
        todo = [i for i in domain_idx if counts[i]]
        if todo:
            affinity = RequiredNodeAffinity(pod)
            for ni in all_nodes:
                node = ni.node or {}
                labels = (node.get("metadata") or {}).get("labels") or {}
                if require_all and not all(k in labels for k in keys):
                    continue
                for i in todo:
                    value = labels.get(keys[i])
                    if value is None or value not in counts[i]:
                        continue
                    c = constraints[i]
                    if c.includes_node(pod, node, affinity):
                        counts[i][value] += node_pod_count(s.per_node_counts[i], ni, c.selector, ns)
        state.write(PRE_SCORE_STATE_KEY, s)
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            s: PreScoreState = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            return 0, Status.as_error(f"reading {PRE_SCORE_STATE_KEY!r} from cycleState: PreScore did not run")
        if node_info.name in s.ignored_nodes:
            return 0, None
        labels = ((node_info.node or {}).get("metadata") or {}).get("labels") or {}
        total = 0.0
        for i, c in enumerate(s.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                count = node_pod_count(s.per_node_counts[i], node_info, c.selector, s.namespace)
            else:
                count = s.tp_value_to_pod_counts[i].get(value, 0)
            total += score_for_count(count, c.max_skew, s.normalizing_weights[i])
        # Go's math.Round: halves away from zero (Python's round() is banker's)
        return math.floor(total + 0.5), None

    def per_node_counts(self, selector, namespace: str) -> dict:
        """{node name: (generation, matching pods)} remembered for (selector, namespace): replicas
        of one owner share a selector, so scheduling them one after another recounts only the
        nodes that changed (`node_pod_count`)."""
        key = (selector, namespace)
        per_node = self._count_cache.get(key)
        if per_node is None:
            if len(self._count_cache) >= COUNT_CACHE_SELECTORS:
                self._count_cache.clear()
            per_node = self._count_cache[key] = {}
        return per_node

    def score_extensions(self):
        return self

    def normalize_score(self, state: CycleState, pod: dict, scores: list[NodeScore]) -> Status | None:
        try:
            s: PreScoreState = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            return Status.as_error(f"reading {PRE_SCORE_STATE_KEY!r} from cycleState: PreScore did not run")
        counted = [x.score for x in scores if x.name not in s.ignored_nodes]
        lo, hi = min(counted, default=0), max(counted, default=0)
        for x in scores:
            if x.name in s.ignored_nodes:
                x.score = 0
            elif hi == 0:
                x.score = MAX_NODE_SCORE
            else:
                x.score = MAX_NODE_SCORE * (hi + lo - x.score) // hi
        return None
