"""PodTopologySpread (PreFilter, Filter, PreScore, Score): spread matching pods over topology
domains (upstream's ``plugins/podtopologyspread``).

A pod's ``spec.topologySpreadConstraints`` each name a node label (``topologyKey``), a selector of
the pods to count, and the tolerated imbalance ``maxSkew``:

- ``whenUnsatisfiable: DoNotSchedule`` constraints are hard (`podtopologyspread_filter`): a node
  fits when ``matching pods in its domain + 1 (if the pod matches itself) - the smallest count
  over all eligible domains <= maxSkew``. ``minDomains`` treats that minimum as 0 while fewer
  domains exist; a node without the key fails as unresolvable (``(missing required label)``).
- ``ScheduleAnyway`` constraints only score (`podtopologyspread_scoring`): fewer matching pods in
  the node's domain scores higher.
- Which nodes count as domains: ``nodeAffinityPolicy`` (default Honor: only nodes the pod's
  nodeSelector/required node affinity admits) and ``nodeTaintsPolicy`` (default Ignore; Honor:
  only nodes whose NoSchedule/NoExecute taints the pod tolerates). Pods counted are those in the
  pod's namespace, not terminating, matching the selector. ``matchLabelKeys`` add
  ``key=<the pod's own value>`` to the selector.
- **Cluster defaults**: a pod with no constraints of its own gets the plugin's default ones with
  a selector built from the Services, ReplicationControllers, ReplicaSets and StatefulSets that
  select it (upstream's ``helper.DefaultSelector``). With ``defaultingType: System`` (the default)
  these are ``kubernetes.io/hostname`` maxSkew 3 and ``topology.kubernetes.io/zone`` maxSkew 5,
  both ScheduleAnyway — this is what spreads a Deployment's replicas over hosts. System defaults
  do not require a node to carry every key (a node without a zone label still spreads by host).

Plugin args (``pluginConfig``): ``defaultConstraints`` (list of constraints without selectors),
``defaultingType`` (``System`` | ``List``).

Owner selectors come from informers: the plugin reads ``handle.informers`` (a
`SharedInformerFactory`) when the handle has one; without it only pods' own constraints apply.
"""

from __future__ import annotations

from kubeling.api.labels import SelectorError
from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    EventResource,
    Plugin,
    QueueingHint,
)
from kubeling.scheduler.plugins.podtopologyspread_common import (
    DO_NOT_SCHEDULE,
    NAME,
    SCHEDULE_ANYWAY,
    SYSTEM,
    SYSTEM_DEFAULT_CONSTRAINTS,
    Constraint,
    DefaultSelector,
    node_labels_match_spread_constraints,
    parse_constraints,
)
from kubeling.scheduler.plugins.podtopologyspread_filter import FilteringMixin
from kubeling.scheduler.plugins.podtopologyspread_scoring import ScoringMixin


class PodTopologySpread(FilteringMixin, ScoringMixin, Plugin):
    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        defaulting = self.args.get("defaultingType") or SYSTEM
        if defaulting == SYSTEM:
            self.default_constraints = list(SYSTEM_DEFAULT_CONSTRAINTS)
            self.system_defaulted = True
        else:
            self.default_constraints = list(self.args.get("defaultConstraints") or ())
            self.system_defaulted = False
        self.default_selector = DefaultSelector(handle)
        self._count_cache: dict = {}

    def constraints(self, pod: dict, action: str) -> list[Constraint]:
        """The pod's own constraints for ``action``, or the defaults with the owners' selector."""
        spec = pod.get("spec") or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if spec.get("topologySpreadConstraints"):
            return parse_constraints(spec["topologySpreadConstraints"], labels, action)
        defaults = parse_constraints(self.default_constraints, labels, action)
        if not defaults:
            return []
        selector = self.default_selector(pod)
        if selector.empty:
            return []
        return [Constraint(c.max_skew, c.topology_key, selector, c.min_domains, c.node_affinity_policy,
                           c.node_taints_policy) for c in defaults]

    def shared_lister(self):
        return self.handle.snapshot_shared_lister()

    # -- queueing hints ----------------------------------------------------------------------

    def events_to_register(self) -> list[ClusterEventWithHint]:
        node_actions = ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_NODE_LABEL | ActionType.UPDATE_NODE_TAINT
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.ALL), self._hint_pod_change),
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, node_actions), self._hint_node_change),
        ]

    def _hint_pod_change(self, pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        """A pod change matters if the changed pod is one the pod's constraints count."""
        try:
            constraints = self.constraints(pod, DO_NOT_SCHEDULE) + self.constraints(pod, SCHEDULE_ANYWAY)
        except SelectorError:
            return QueueingHint.QUEUE_SKIP
        ns = (pod.get("metadata") or {}).get("namespace")
        for other in (old, new):
            meta = (other or {}).get("metadata") or {}
            if other is None or meta.get("namespace") != ns:
                continue
            if any(c.selector.matches(meta.get("labels") or {}) for c in constraints):
                return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP

    def _hint_node_change(self, pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        """A node change matters if a node carrying the constraints' keys appears, goes, or
        changes its labels or taints."""
        try:
            constraints = self.constraints(pod, DO_NOT_SCHEDULE)
        except SelectorError:
            return QueueingHint.QUEUE_SKIP
        if not constraints:
            return QueueingHint.QUEUE_SKIP

        def relevant(n):
            return n is not None and node_labels_match_spread_constraints(
                (n.get("metadata") or {}).get("labels") or {}, constraints)

        if old is None or new is None:
            return QueueingHint.QUEUE if relevant(old or new) else QueueingHint.QUEUE_SKIP
        if not relevant(old) and not relevant(new):
            return QueueingHint.QUEUE_SKIP
        o_meta, n_meta = old.get("metadata") or {}, new.get("metadata") or {}
        keys = {c.topology_key for c in constraints}
        if any((o_meta.get("labels") or {}).get(k) != (n_meta.get("labels") or {}).get(k) for k in keys):
            return QueueingHint.QUEUE
        if (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get("taints"):
            return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP
