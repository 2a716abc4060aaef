"""InterPodAffinity (PreFilter, Filter, PreScore, Score): place a pod near, or away from, pods
matching its ``podAffinity``/``podAntiAffinity`` terms, and respect existing pods' anti-affinity
toward it (upstream's ``plugins/interpodaffinity``).

A term selects pods by ``labelSelector`` in ``namespaces`` (default: the pod's own) and/or
namespaces matching ``namespaceSelector`` (``{}``: all), and names a node label
(``topologyKey``) whose value is the domain: "near" means the same value. Terms come parsed on
`PodInfo` (`types.AffinityTerm`). The hard rules are in `interpodaffinity_filter`, the weights in
`interpodaffinity_scoring`.

Namespace labels (for ``namespaceSelector``) come from ``handle.namespace_lister()`` (the
namespace informer); an unknown namespace has no labels, so only an empty selector matches it.

Plugin args: ``hardPodAffinityWeight`` (default 1, 0..100), ``ignorePreferredTermsOfExistingPods``
(default false).
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    EventResource,
    Plugin,
    QueueingHint,
)
from kubeling.scheduler.framework.types import PodInfo
from kubeling.scheduler.plugins.interpodaffinity_filter import FilteringMixin
from kubeling.scheduler.plugins.interpodaffinity_scoring import ScoringMixin

NAME = "InterPodAffinity"
DEFAULT_HARD_POD_AFFINITY_WEIGHT = 1


class InterPodAffinity(FilteringMixin, ScoringMixin, Plugin):
    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        w = self.args.get("hardPodAffinityWeight")
        self.hard_pod_affinity_weight = DEFAULT_HARD_POD_AFFINITY_WEIGHT if w is None else int(w)
        if not 0 <= self.hard_pod_affinity_weight <= 100:
            raise ValueError(f"hardPodAffinityWeight: Invalid value: {w}: not in valid range [0-100]")
        self.ignore_preferred_terms_of_existing_pods = bool(self.args.get("ignorePreferredTermsOfExistingPods"))
        lister_fn = getattr(handle, "namespace_lister", None)
        self._namespaces = lister_fn() if callable(lister_fn) else None

    def ns_labels(self, namespace: str) -> dict:
        """The labels of ``namespace`` ({} when unknown or without a namespace lister)."""
        ns = self._namespaces.get(namespace) if self._namespaces is not None and namespace else None
        return ((ns or {}).get("metadata") or {}).get("labels") or {}

    # -- queueing hints ----------------------------------------------------------------------

    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.ALL), self._hint_pod_change),
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL)),
        ]

    def _hint_pod_change(self, pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        """A pod that appears may satisfy the pod's affinity; one that goes (or changes labels)
        may lift its anti-affinity or its own anti-affinity toward the pod."""
        pi = PodInfo.of(pod)
        ns_labels = self.ns_labels
        if new is not None and any(t.matches(new, ns_labels((new.get("metadata") or {}).get("namespace") or ""))
                                   for t in pi.required_affinity_terms):
            return QueueingHint.QUEUE
        if old is not None:
            old_pi = PodInfo.of(old)
            if old_pi.required_anti_affinity_terms:
                return QueueingHint.QUEUE
            ons = ns_labels((old.get("metadata") or {}).get("namespace") or "")
            if any(t.matches(old, ons) for t in pi.required_anti_affinity_terms):
                return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP
