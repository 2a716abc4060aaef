"""NodeAffinity (PreFilter, Filter, PreScore, Score): ``spec.nodeSelector`` and node affinity.

- PreFilter parses the pod's required constraints once (`RequiredNodeAffinity`) and, when every
  required term names nodes through ``matchFields`` ``metadata.name In [...]`` (DaemonSet pods
  do), narrows the cycle to those nodes, so a 1,000-node cluster does not filter 999 nodes for a
  daemon pod. Terms are ORed and a term's fields ANDed, so the set is the union over terms of the
  intersection within a term; one term without such a field means "all nodes". Empty: the terms
  contradict each other (``pod affinity terms conflict``). No constraints at all: Skip.
- Filter: UnschedulableAndUnresolvable ``node(s) didn't match Pod's node affinity/selector``
  (``node(s) didn't match scheduler-enforced node affinity`` for the profile's ``addedAffinity``).
- Score: the sum of the weights of the preferred terms the node matches (plus ``addedAffinity``'s
  preferred terms), normalised to 0..100 by the best node.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    NodeScore,
    Plugin,
    PreFilterResult,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.helper import (
    OBJECT_NAME_FIELD,
    RequiredNodeAffinity,
    default_normalize_score,
    match_node_selector_term,
    match_node_selector_terms,
)

NAME = "NodeAffinity"
PRE_FILTER_STATE_KEY = "PreFilter" + NAME
PRE_SCORE_STATE_KEY = "PreScore" + NAME
ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_ENFORCED = "node(s) didn't match scheduler-enforced node affinity"
ERR_REASON_CONFLICT = "pod affinity terms conflict"


def _node_affinity(pod: dict) -> dict:
    return ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}


def preferred_terms(node_affinity: dict) -> list[tuple[int, dict]]:
    """(weight, preference) of each preferred term with a non-zero weight."""
    return [(t.get("weight") or 0, t.get("preference") or {})
            for t in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
            if t.get("weight")]


def score_preferred(terms: list[tuple[int, dict]], node: dict) -> int:
    meta = node.get("metadata") or {}
    labels, name = meta.get("labels") or {}, meta.get("name") or ""
    return sum(w for w, term in terms if match_node_selector_term(term, labels, name))


def required_node_names(terms: list[dict]) -> set[str] | None:
    """The nodes the required terms name through ``matchFields`` (None: any node may match)."""
    names: set[str] | None = None
    for term in terms:
        term_names: set[str] | None = None
        for req in term.get("matchFields") or ():
            if req.get("key") == OBJECT_NAME_FIELD and req.get("operator") == "In":
                values = set(req.get("values") or ())
                term_names = values if term_names is None else term_names & values
        if term_names is None:
            return None
        names = term_names if names is None else names | term_names
    return names


class NodeAffinity(Plugin):
    """Args (NodeAffinityArgs): ``addedAffinity``, a NodeAffinity every pod must also satisfy."""

    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        added = self.args.get("addedAffinity") or {}
        required = added.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.added_terms: list[dict] | None = None if required is None else list(required.get("nodeSelectorTerms") or ())
        self.added_preferred = preferred_terms(added)

    def _enforced(self, node: dict) -> bool:
        return self.added_terms is None or match_node_selector_terms(node, self.added_terms)

    # -- filter --
    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        required = RequiredNodeAffinity(pod)
        if required.terms is None and self.added_terms is None and not (pod.get("spec") or {}).get("nodeSelector"):
            return None, Status.skip()
        state.write(PRE_FILTER_STATE_KEY, required)
        if not required.terms:
            return None, None
        names = required_node_names(required.terms)
        if names is None:
            return None, None
        if not names:
            return None, Status.unresolvable(ERR_REASON_CONFLICT)
        return PreFilterResult(names), None

    def pre_filter_extensions(self):
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        node = node_info.node or {}
        if not self._enforced(node):
            return Status.unresolvable(ERR_REASON_ENFORCED)
        try:
            required = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:     # PreFilter skipped or disabled: parse here
            required = RequiredNodeAffinity(pod)
        return None if required.match(node) else Status.unresolvable(ERR_REASON_POD)

    # -- score --
    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        if not nodes:
            return None
        terms = preferred_terms(_node_affinity(pod))
        if not terms and not self.added_preferred:
            return Status.skip()
        state.write(PRE_SCORE_STATE_KEY, terms)
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        node = node_info.node or {}
        try:
            terms = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            terms = preferred_terms(_node_affinity(pod))
        count = score_preferred(self.added_preferred, node) if self.added_preferred else 0
        return count + score_preferred(terms, node), None

    def score_extensions(self) -> NodeAffinity:
        return self

    def normalize_score(self, state: CycleState, pod: dict, scores: list[NodeScore]) -> Status | None:
        default_normalize_score(MAX_NODE_SCORE, False, scores)
        return None

    # -- queueing hints --
    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [ClusterEventWithHint(
            ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL), self._hint_node_changed)]

    def _hint_node_changed(self, pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        if new is None or not self._enforced(new):
            return QueueingHint.QUEUE_SKIP
        required = RequiredNodeAffinity(pod)
        if not required.match(new):
            return QueueingHint.QUEUE_SKIP
        if old is not None and required.match(old):
            return QueueingHint.QUEUE_SKIP    # it matched before: the update is not what changed
        return QueueingHint.QUEUE
