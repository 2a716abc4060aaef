"""Shared matching rules: taints and tolerations, node selectors, score normalisation.

These are upstream's ``v1helper`` / ``component-helpers/scheduling/corev1`` rules, written once
so the scheduler and the controllers that predict it (the DaemonSet controller decides which
nodes should run a daemon pod with the same rules) cannot disagree:

- `toleration_tolerates_taint` / `tolerations_tolerate_taint` / `find_matching_untolerated_taint`
- `match_node_selector_terms` (``nodeSelectorTerms`` of a NodeSelector: terms ORed, the
  requirements of one term ANDed, ``matchFields`` on ``metadata.name`` only)
- `RequiredNodeAffinity`: a pod's ``spec.nodeSelector`` plus its required node affinity, parsed once
- `default_normalize_score`: upstream's ``helper.DefaultNormalizeScore``
- `node_taints` / `pod_tolerations` (absent means none) and `same_pod`, the check every queueing
  hint on a pod update starts with: only a change to the rejected pod itself can admit it

All functions take plain API dicts and never mutate them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kubeling.scheduler.framework.interface import MAX_NODE_SCORE, NodeScore

NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"
TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
OBJECT_NAME_FIELD = "metadata.name"


# -- taints and tolerations -------------------------------------------------------------------

def toleration_tolerates_taint(toleration: dict, taint: dict) -> bool:
    """Whether one toleration tolerates one taint.

    An empty effect matches every effect, an empty key (with ``Exists``) every key; ``Equal``
    (the default operator) also needs the values to be equal. Unknown operators tolerate nothing.
    """
    effect = toleration.get("effect") or ""
    if effect and effect != (taint.get("effect") or ""):
        return False
    key = toleration.get("key") or ""
    if key and key != (taint.get("key") or ""):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerations_tolerate_taint(tolerations: Iterable[dict] | None, taint: dict) -> bool:
    """Whether any of ``tolerations`` tolerates ``taint``."""
    return any(toleration_tolerates_taint(t, taint) for t in tolerations or ())


def node_taints(node: dict | None) -> list[dict]:
    return ((node or {}).get("spec") or {}).get("taints") or []


def pod_tolerations(pod: dict) -> list[dict]:
    return (pod.get("spec") or {}).get("tolerations") or []


def do_not_schedule_taint(taint: dict) -> bool:
    """The taints Filter enforces: NoSchedule and NoExecute (PreferNoSchedule only scores)."""
    return taint.get("effect") in (NO_SCHEDULE, NO_EXECUTE)


def find_matching_untolerated_taint(taints: Iterable[dict] | None, tolerations: Iterable[dict] | None,
                                    include: Callable[[dict], bool] | None = None) -> dict | None:
    """The first taint (among those ``include`` accepts) no toleration tolerates, else None."""
    if not taints:
        return None
    tolerations = tolerations if isinstance(tolerations, list) else list(tolerations or ())
    for taint in taints:
        if include is not None and not include(taint):
            continue
        if not tolerations_tolerate_taint(tolerations, taint):
            return taint
    return None


# -- node selectors ---------------------------------------------------------------------------

def _int(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _match_expression(req: dict, labels: dict) -> bool:
    """One NodeSelectorRequirement against labels (or against ``{"metadata.name": name}``).

    A malformed requirement matches nothing (upstream skips a term that fails to parse)."""
    key, op, values = req.get("key") or "", req.get("operator"), req.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        have, want = _int(labels[key]), _int(values[0])
        if have is None or want is None:
            return False
        return have > want if op == "Gt" else have < want
    return False


def match_node_selector_term(term: dict, labels: dict, name: str) -> bool:
    """One NodeSelectorTerm: every matchExpression against labels and every matchField against
    the node's name must hold. A term with neither matches nothing."""
    exprs, fields = term.get("matchExpressions") or (), term.get("matchFields") or ()
    if not exprs and not fields:
        return False
    for req in exprs:
        if not _match_expression(req, labels):
            return False
    for req in fields:
        if req.get("key") != OBJECT_NAME_FIELD or req.get("operator") not in ("In", "NotIn"):
            return False
        if not _match_expression(req, {OBJECT_NAME_FIELD: name}):
            return False
    return True


def match_node_selector_terms(node: dict, terms: Iterable[dict] | None) -> bool:
    """Whether ``node`` matches a NodeSelector's ``nodeSelectorTerms`` (ORed; none: no match)."""
    meta = node.get("metadata") or {}
    labels, name = meta.get("labels") or {}, meta.get("name") or ""
    return any(match_node_selector_term(t, labels, name) for t in terms or ())


class RequiredNodeAffinity:
    """A pod's hard node constraints: ``spec.nodeSelector`` (every label equal) and, when set,
    ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`` (upstream's
    ``nodeaffinity.GetRequiredNodeAffinity``). Parse once per pod, match per node."""

    __slots__ = ("node_selector", "terms")

    def __init__(self, pod: dict) -> None:
        spec = pod.get("spec") or {}
        self.node_selector: dict = spec.get("nodeSelector") or {}
        required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution"))
        self.terms: list[dict] | None = None if required is None else list(required.get("nodeSelectorTerms") or ())

    def match(self, node: dict) -> bool:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        for k, v in self.node_selector.items():
            if labels.get(k) != v:
                return False
        if self.terms is None:
            return True
        name = meta.get("name") or ""
        return any(match_node_selector_term(t, labels, name) for t in self.terms)


def pod_matches_node_selector_and_affinity_terms(pod: dict, node: dict) -> bool:
    """Convenience for controllers: whether ``pod``'s nodeSelector and required node affinity
    admit ``node``."""
    return RequiredNodeAffinity(pod).match(node)


# -- queueing hints ---------------------------------------------------------------------------

def same_pod(pod: dict, other: dict | None) -> bool:
    """Whether an event's pod ``other`` is ``pod`` itself (same uid)."""
    return other is not None and (other.get("metadata") or {}).get("uid") == (pod.get("metadata") or {}).get("uid")


# -- scores -----------------------------------------------------------------------------------

def default_normalize_score(max_priority: int, reverse: bool, scores: list[NodeScore]) -> None:
    """Scale scores in place to ``[0, max_priority]`` by the highest one; ``reverse`` flips them
    (so "fewer untolerated taints" scores higher). All zero stays zero (or max if reversed)."""
    max_count = max((s.score for s in scores), default=0)
    if max_count == 0:
        if reverse:
            for s in scores:
                s.score = max_priority
        return
    for s in scores:
        score = max_priority * s.score // max_count
        s.score = max_priority - score if reverse else score


__all__ = ["MAX_NODE_SCORE", "NO_EXECUTE", "NO_SCHEDULE", "OBJECT_NAME_FIELD", "PREFER_NO_SCHEDULE",
           "TAINT_NODE_UNSCHEDULABLE", "RequiredNodeAffinity", "default_normalize_score",
           "do_not_schedule_taint", "find_matching_untolerated_taint", "match_node_selector_term",
           "match_node_selector_terms", "node_taints", "pod_matches_node_selector_and_affinity_terms",
           "pod_tolerations", "same_pod", "toleration_tolerates_taint", "tolerations_tolerate_taint"]
