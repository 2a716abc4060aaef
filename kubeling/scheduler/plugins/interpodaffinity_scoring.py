"""InterPodAffinity's soft half: PreScore, Score, NormalizeScore (upstream's
``interpodaffinity/scoring.go``).

PreScore builds {topology key: {value: weight}} from every existing pod, in both directions:

- the incoming pod's preferred affinity (+weight) and anti-affinity (-weight) terms that match
  the existing pod, in the existing pod's node's domain;
- the existing pod's required affinity terms matching the incoming pod (+``hardPodAffinityWeight``,
  default 1: pods that *must* be near the incoming pod's kind attract it) and its preferred
  affinity (+weight) / anti-affinity (-weight) terms matching the incoming pod.

When the incoming pod has no preferred terms, only nodes and pods that carry affinity can add
anything, so only those are visited (``have_pods_with_affinity_list``); with
``ignorePreferredTermsOfExistingPods`` such a pod skips scoring altogether.

A node's score is the sum over keys of the weight of its value; NormalizeScore maps
[min, max] onto [0, 100] (all equal → 0).
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    CycleState,
    NodeScore,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo, PodInfo
from kubeling.scheduler.plugins.interpodaffinity_filter import node_labels

PRE_SCORE_STATE_KEY = "PreScoreInterPodAffinity"


class PreScoreState:
    __slots__ = ("topology_score",)

    def __init__(self) -> None:
        self.topology_score: dict[str, dict[str, int]] = {}

    def add(self, key: str, value: str, weight: int) -> None:
        by_value = self.topology_score.setdefault(key, {})
        by_value[value] = by_value.get(value, 0) + weight

    def clone(self) -> PreScoreState:
        return self     # read-only after PreScore


class ScoringMixin:
    """Needs the plugin's ``ns_labels(namespace)``, ``hard_pod_affinity_weight`` and
    ``ignore_preferred_terms_of_existing_pods``."""

    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        lister = self.handle.snapshot_shared_lister()
        if not lister.list():
            return Status.skip()
        pi = PodInfo.of(pod)
        has_constraints = bool(pi.preferred_affinity_terms or pi.preferred_anti_affinity_terms)
        if self.ignore_preferred_terms_of_existing_pods and not has_constraints:
            return Status.skip()
        visit = lister.list() if has_constraints else lister.have_pods_with_affinity_list()
        s = PreScoreState()
        pod_ns_labels = self.ns_labels((pod.get("metadata") or {}).get("namespace") or "")
        for ni in visit:
            labels = node_labels(ni)
            if not labels:
                continue
            for existing in ni.pods if has_constraints else ni.pods_with_affinity:
                self._process_existing_pod(s, pi, pod_ns_labels, existing, labels)
        if not s.topology_score:
            return Status.skip()
        state.write(PRE_SCORE_STATE_KEY, s)
        return None

    def _process_existing_pod(self, s: PreScoreState, incoming: PodInfo, incoming_ns_labels: dict,
                              existing: PodInfo, labels: dict) -> None:
        def process(terms, pod: dict, ns_labels, sign: int, weight: int | None = None) -> None:
            for t in terms:
                term, w = (t, weight) if weight is not None else (t.term, t.weight)
                value = labels.get(term.topology_key)
                if value is not None and term.matches(pod, ns_labels):
                    s.add(term.topology_key, value, sign * w)

        if incoming.preferred_affinity_terms or incoming.preferred_anti_affinity_terms:
            ens = (existing.pod.get("metadata") or {}).get("namespace") or ""
            ens_labels = self.ns_labels(ens)
            process(incoming.preferred_affinity_terms, existing.pod, ens_labels, 1)
            process(incoming.preferred_anti_affinity_terms, existing.pod, ens_labels, -1)
        if self.hard_pod_affinity_weight > 0:
            process(existing.required_affinity_terms, incoming.pod, incoming_ns_labels, 1,
                    self.hard_pod_affinity_weight)
        process(existing.preferred_affinity_terms, incoming.pod, incoming_ns_labels, 1)
        process(existing.preferred_anti_affinity_terms, incoming.pod, incoming_ns_labels, -1)

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            s: PreScoreState = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            return 0, Status.as_error(f"reading {PRE_SCORE_STATE_KEY!r} from cycleState: PreScore did not run")
        labels = node_labels(node_info)
        total = 0
        for key, by_value in s.topology_score.items():
            value = labels.get(key)
            if value is not None:
                total += by_value.get(value, 0)
        return total, None

    def score_extensions(self):
        return self

    def normalize_score(self, state: CycleState, pod: dict, scores: list[NodeScore]) -> Status | None:
        try:
            s: PreScoreState = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            return None
        if not s.topology_score or not scores:
            return None
        lo, hi = min(x.score for x in scores), max(x.score for x in scores)
        for x in scores:
            x.score = int(MAX_NODE_SCORE * (x.score - lo) / (hi - lo)) if hi > lo else 0
        return None
