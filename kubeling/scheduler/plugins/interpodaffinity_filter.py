"""InterPodAffinity's hard half: PreFilter, Filter and the PreFilterExtensions preemption uses
(upstream's ``interpodaffinity/filtering.go``).

PreFilter counts, per (topology key, value):

- ``existing_anti_affinity``: terms of *existing* pods' required anti-affinity that match the
  incoming pod (a node in such a domain would break their rule);
- ``affinity``: existing pods matching **all** of the incoming pod's required affinity terms,
  counted once per term's domain;
- ``anti_affinity``: existing pods matching each of the incoming pod's required anti-affinity
  terms.

Filter, in upstream's order:

1. every required affinity term's domain on the node has a matching pod — unless no pod in the
   cluster matches and the pod matches its own terms (the first replica of a self-affine group
   may start anywhere); failing this is unresolvable, since preemption only removes pods;
2. no required anti-affinity term's domain on the node has a matching pod;
3. no existing pod's anti-affinity term covers the node's domains.

A node missing an affinity term's topology key fails (1). Counts that drop to zero are removed,
so "no pod matches anywhere" is an empty map, also after ``remove_pod``.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import CycleState, PreFilterResult, Status
from kubeling.scheduler.framework.types import NodeInfo, PodInfo

PRE_FILTER_STATE_KEY = "PreFilterInterPodAffinity"

ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH = "node(s) didn't match pod anti-affinity rules"

TopologyPair = tuple[str, str]


def _bump(counts: dict[TopologyPair, int], pair: TopologyPair, delta: int) -> None:
    n = counts.get(pair, 0) + delta
    if n == 0:
        counts.pop(pair, None)
    else:
        counts[pair] = n


def pod_info_of(p) -> PodInfo:
    """A `PodInfo` for a PodInfoLike (nominated pods and victims may come as either)."""
    return p if isinstance(p, PodInfo) else PodInfo.of(p.pod)


def node_labels(node_info: NodeInfo) -> dict:
    return ((node_info.node or {}).get("metadata") or {}).get("labels") or {}


class PreFilterState:
    __slots__ = ("affinity", "anti_affinity", "existing_anti_affinity", "namespace_labels", "pod_info")

    def __init__(self, pod_info: PodInfo, namespace_labels: dict) -> None:
        self.pod_info = pod_info
        self.namespace_labels = namespace_labels      # of the incoming pod's namespace
        self.existing_anti_affinity: dict[TopologyPair, int] = {}
        self.affinity: dict[TopologyPair, int] = {}
        self.anti_affinity: dict[TopologyPair, int] = {}

    def clone(self) -> PreFilterState:
        c = PreFilterState(self.pod_info, self.namespace_labels)
        c.existing_anti_affinity = dict(self.existing_anti_affinity)
        c.affinity = dict(self.affinity)
        c.anti_affinity = dict(self.anti_affinity)
        return c


class FilteringMixin:
    """Needs the plugin's ``ns_labels(namespace)`` and ``handle``."""

    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        lister = self.handle.snapshot_shared_lister()
        with_anti = lister.have_pods_with_required_anti_affinity_list()
        pi = PodInfo.of(pod)
        if not pi.required_affinity_terms and not pi.required_anti_affinity_terms and not with_anti:
            return None, Status.skip()
        ns = (pod.get("metadata") or {}).get("namespace") or ""
        s = PreFilterState(pi, self.ns_labels(ns))
        for ni in with_anti:
            for existing in ni.pods_with_required_anti_affinity:
                self._count_existing_anti_affinity(s, existing, ni, 1)
        if pi.required_affinity_terms or pi.required_anti_affinity_terms:
            for ni in nodes:
                for existing in ni.pods:
                    self._count_incoming(s, existing, ni, 1)
        state.write(PRE_FILTER_STATE_KEY, s)
        return PreFilterResult(), None

    @staticmethod
    def _count_existing_anti_affinity(s: PreFilterState, existing: PodInfo, ni: NodeInfo, delta: int) -> None:
        labels = node_labels(ni)
        for term in existing.required_anti_affinity_terms:
            value = labels.get(term.topology_key)
            if value is not None and term.matches(s.pod_info.pod, s.namespace_labels):
                _bump(s.existing_anti_affinity, (term.topology_key, value), delta)

    def _count_incoming(self, s: PreFilterState, existing: PodInfo, ni: NodeInfo, delta: int) -> None:
        labels = node_labels(ni)
        pi = s.pod_info
        ens = (existing.pod.get("metadata") or {}).get("namespace") or ""
        ens_labels = self.ns_labels(ens) if any(t.namespace_selector is not None for t in
                                                pi.required_affinity_terms + pi.required_anti_affinity_terms) else None
        if pi.required_affinity_terms and all(t.matches(existing.pod, ens_labels) for t in pi.required_affinity_terms):
            for t in pi.required_affinity_terms:
                value = labels.get(t.topology_key)
                if value is not None:
                    _bump(s.affinity, (t.topology_key, value), delta)
        for t in pi.required_anti_affinity_terms:
            value = labels.get(t.topology_key)
            if value is not None and t.matches(existing.pod, ens_labels):
                _bump(s.anti_affinity, (t.topology_key, value), delta)

    def pre_filter_extensions(self):
        return self

    def add_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_add, node_info: NodeInfo) -> Status | None:
        return self._update_with_pod(state, pod_info_of(pod_to_add), node_info, 1)

    def remove_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_remove,
                   node_info: NodeInfo) -> Status | None:
        return self._update_with_pod(state, pod_info_of(pod_to_remove), node_info, -1)

    def _update_with_pod(self, state: CycleState, updated: PodInfo, node_info: NodeInfo, delta: int) -> Status | None:
        try:
            s: PreFilterState = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            return None
        if node_info.node is None:
            return None
        self._count_existing_anti_affinity(s, updated, node_info, delta)
        self._count_incoming(s, updated, node_info, delta)
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        try:
            s: PreFilterState = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            return Status.as_error(f"reading {PRE_FILTER_STATE_KEY!r} from cycleState: PreFilter did not run")
        labels = node_labels(node_info)
        if not _satisfy_pod_affinity(s, labels):
            return Status.unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH)
        if not _satisfy_pod_anti_affinity(s, labels):
            return Status.unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH)
        if not _satisfy_existing_pods_anti_affinity(s, labels):
            return Status.unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH)
        return None


def _satisfy_pod_affinity(s: PreFilterState, labels: dict) -> bool:
    terms = s.pod_info.required_affinity_terms
    pods_exist = True
    for t in terms:
        value = labels.get(t.topology_key)
        if value is None:
            return False        # all topology labels must exist on the node
        if s.affinity.get((t.topology_key, value), 0) <= 0:
            pods_exist = False
    if pods_exist:
        return True
    # the first pod of a group that is affine to itself: no matching pod anywhere yet
    return not s.affinity and all(t.matches(s.pod_info.pod, s.namespace_labels) for t in terms)


def _satisfy_pod_anti_affinity(s: PreFilterState, labels: dict) -> bool:
    for t in s.pod_info.required_anti_affinity_terms:
        value = labels.get(t.topology_key)
        if value is not None and s.anti_affinity.get((t.topology_key, value), 0) > 0:
            return False
    return True


def _satisfy_existing_pods_anti_affinity(s: PreFilterState, labels: dict) -> bool:
    if not s.existing_anti_affinity:
        return True
    return not any(labels.get(k) == v for (k, v) in s.existing_anti_affinity)
