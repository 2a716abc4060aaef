"""What PodTopologySpread's halves share (upstream's ``podtopologyspread/common.go``): the parsed
`Constraint` with its node-inclusion policies, constraint parsing (``matchLabelKeys``), pod
counting, and `DefaultSelector` (the owners' selector that cluster-default constraints use).
The rules themselves are described in `podtopologyspread`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeling.api.labels import (
    Requirement,
    Selector,
    SelectorError,
    from_label_selector,
)
from kubeling.scheduler.plugins.helper import (
    RequiredNodeAffinity,
    do_not_schedule_taint,
    find_matching_untolerated_taint,
)

NAME = "PodTopologySpread"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
HONOR, IGNORE = "Honor", "Ignore"
SYSTEM, LIST = "System", "List"

ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"

# upstream's systemDefaultConstraints
SYSTEM_DEFAULT_CONSTRAINTS = (
    {"topologyKey": LABEL_HOSTNAME, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 3},
    {"topologyKey": LABEL_ZONE, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 5},
)


@dataclass(frozen=True)
class Constraint:
    """A TopologySpreadConstraint with its selector parsed and its defaults applied."""

    max_skew: int
    topology_key: str
    selector: Selector
    min_domains: int = 1
    node_affinity_policy: str = HONOR
    node_taints_policy: str = IGNORE

    def includes_node(self, pod: dict, node: dict, affinity: RequiredNodeAffinity) -> bool:
        """Whether ``node`` is one of the domains this constraint counts (the inclusion policies)."""
        if self.node_affinity_policy == HONOR and not affinity.match(node):
            return False
        if self.node_taints_policy == HONOR:
            taints = (node.get("spec") or {}).get("taints")
            tolerations = (pod.get("spec") or {}).get("tolerations")
            if find_matching_untolerated_taint(taints, tolerations, do_not_schedule_taint) is not None:
                return False
        return True


def parse_constraints(raw: list[dict] | None, pod_labels: dict, action: str) -> list[Constraint]:
    """The constraints of ``raw`` whose ``whenUnsatisfiable`` is ``action``.

    Raises `SelectorError` for a selector that does not parse (validation refuses those)."""
    out = []
    for c in raw or ():
        if (c.get("whenUnsatisfiable") or DO_NOT_SCHEDULE) != action:
            continue
        selector = from_label_selector(c.get("labelSelector"))
        keys = {k: pod_labels[k] for k in c.get("matchLabelKeys") or () if k in pod_labels}
        if keys:
            # the pod's own values for these keys narrow the selector (e.g. pod-template-hash:
            # only the current revision's pods count during a rolling update)
            selector = Selector([Requirement(k, "=", (v,)) for k, v in keys.items()]
                                + list(selector.requirements), nothing=selector.nothing)
        out.append(Constraint(
            max_skew=int(c.get("maxSkew") or 1), topology_key=c.get("topologyKey") or "", selector=selector,
            min_domains=int(c.get("minDomains") or 1),
            node_affinity_policy=c.get("nodeAffinityPolicy") or HONOR,
            node_taints_policy=c.get("nodeTaintsPolicy") or IGNORE))
    return out


def node_labels_match_spread_constraints(labels: dict, constraints: list[Constraint]) -> bool:
    """Whether the node carries every constraint's topology key."""
    return all(c.topology_key in labels for c in constraints)


def count_pods_match_selector(pod_infos, selector: Selector, namespace: str) -> int:
    """Pods of ``namespace`` matching ``selector``; terminating pods do not count (they are going).

    On the scoring hot path (once per scored node), hence the plain loop."""
    n = 0
    matches = selector.matches
    for pi in pod_infos:
        meta = pi.pod.get("metadata") or _EMPTY
        if meta.get("namespace") == namespace and not meta.get("deletionTimestamp") \
                and matches(meta.get("labels") or _EMPTY):
            n += 1
    return n


_EMPTY: dict = {}


def _informer(handle, group: str, version: str, resource: str):
    factory = getattr(handle, "informers", None)
    return factory.informer_for(group, version, resource) if factory is not None else None


class DefaultSelector:
    """The selector of the pods that belong with ``pod``: the union of the selectors of the
    Services selecting it and of its controlling ReplicationController, ReplicaSet or
    StatefulSet (upstream's ``helper.DefaultSelector``). Empty when nothing owns the pod."""

    def __init__(self, handle) -> None:
        self.services = _informer(handle, "", "v1", "services")
        self.rcs = _informer(handle, "", "v1", "replicationcontrollers")
        self.replicasets = _informer(handle, "apps", "v1", "replicasets")
        self.statefulsets = _informer(handle, "apps", "v1", "statefulsets")

    def __call__(self, pod: dict) -> Selector:
        meta = pod.get("metadata") or {}
        ns, labels = meta.get("namespace") or "", meta.get("labels") or {}
        merged: dict[str, str] = {}
        for svc in self.services.list() if self.services is not None else ():
            sel = (svc.get("spec") or {}).get("selector")
            if (svc.get("metadata") or {}).get("namespace") != ns or not sel:
                continue
            if all(labels.get(k) == v for k, v in sel.items()):
                merged.update(sel)
        reqs = [Requirement(k, "=", (v,)) for k, v in merged.items()]
        owner = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
        if owner is not None:
            reqs.extend(self._owner_requirements(owner, ns, merged))
        return Selector(reqs)

    def _owner_requirements(self, owner: dict, ns: str, merged: dict) -> list[Requirement]:
        group = (owner.get("apiVersion") or "").rpartition("/")[0]
        kind = owner.get("kind")
        key = f"{ns}/{owner.get('name')}"
        if group == "" and kind == "ReplicationController" and self.rcs is not None:
            rc = self.rcs.get(key)
            sel = ((rc or {}).get("spec") or {}).get("selector") or {}
            return [Requirement(k, "=", (v,)) for k, v in sel.items() if k not in merged]
        inf = {("apps", "ReplicaSet"): self.replicasets, ("apps", "StatefulSet"): self.statefulsets}.get((group, kind))
        obj = inf.get(key) if inf is not None else None
        if obj is None:
            return []
        try:
            return list(from_label_selector((obj.get("spec") or {}).get("selector")).requirements)
        except SelectorError:
            return []
