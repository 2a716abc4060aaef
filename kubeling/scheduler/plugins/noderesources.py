"""NodeResourcesFit (PreFilter, Filter, PreScore, Score): does the node have room for the pod's
requests, and how full would it be.

Filter: PreFilter computes the pod's effective requests once (`compute_pod_resource_request`:
regular containers and sidecars add up, a plain init container counts as a maximum, overhead is
added; extended resources such as ``example.com/foo`` and hugepages too). Filter compares them
with ``allocatable - requested`` of the node and answers Unschedulable with one reason per
short resource, in upstream's words: ``Too many pods``, ``Insufficient cpu``, ``Insufficient
memory``, ``Insufficient ephemeral-storage``, ``Insufficient <name>``. A pod that requests
nothing only needs a free pod slot. ``ignoredResources`` / ``ignoredResourceGroups`` (args) skip
extended resources another component (a device plugin's scheduler extender) accounts for.

Score (``scoringStrategy``): per configured resource (default cpu and memory, weight 1) the
node's requested-after-placing share of allocatable is scored by

- ``LeastAllocated`` (default): ``(allocatable - requested) * 100 / allocatable`` — spread;
- ``MostAllocated``: ``requested * 100 / allocatable`` — pack;
- ``RequestedToCapacityRatio``: a broken-linear function of utilisation through ``shape`` points
  (``{utilization: 0..100, score: 0..10}``, scores scaled to 0..100),

and the weighted mean of the resources the node has is the score. CPU and memory count the
non-zero requests (100m / 200Mi for a container that asks nothing), so best-effort pods still
spread. `ResourceAllocationScorer` is shared with NodeResourcesBalancedAllocation.
"""

from __future__ import annotations

from collections.abc import Callable

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    Plugin,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import (
    CPU,
    EPHEMERAL_STORAGE,
    MEMORY,
    NodeInfo,
    Resource,
    compute_non_zero_request,
    compute_pod_resource_request,
    is_scalar_resource_name,
)

NAME = "NodeResourcesFit"
PRE_FILTER_STATE_KEY = "PreFilter" + NAME
PRE_SCORE_STATE_KEY = "PreScore" + NAME
LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO = (
    "LeastAllocated", "MostAllocated", "RequestedToCapacityRatio")
MAX_UTILIZATION = 100
MAX_CUSTOM_PRIORITY_SCORE = 10
DEFAULT_RESOURCES = ({"name": CPU, "weight": 1}, {"name": MEMORY, "weight": 1})

REASON_TOO_MANY_PODS = "Too many pods"
_REASON_CPU, _REASON_MEMORY, _REASON_EPHEMERAL = (
    "Insufficient cpu", "Insufficient memory", "Insufficient ephemeral-storage")


def is_extended_resource_name(name: str) -> bool:
    """Extended resources proper (``example.com/foo``): not native, not hugepages, not quota's."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def fits_request(req: Resource, node_info: NodeInfo, ignored: frozenset[str] = frozenset(),
                 ignored_groups: frozenset[str] = frozenset()) -> list[str]:
    """The reasons ``req`` does not fit ``node_info`` (empty: it fits); upstream's ``fitsRequest``."""
    reasons: list[str] = []
    alloc, used = node_info.allocatable, node_info.requested
    if len(node_info.pods) + 1 > alloc.allowed_pod_number:
        reasons.append(REASON_TOO_MANY_PODS)
    if not (req.milli_cpu or req.memory or req.ephemeral_storage or req.scalar_resources):
        return reasons
    if req.milli_cpu > 0 and req.milli_cpu > alloc.milli_cpu - used.milli_cpu:
        reasons.append(_REASON_CPU)
    if req.memory > 0 and req.memory > alloc.memory - used.memory:
        reasons.append(_REASON_MEMORY)
    if req.ephemeral_storage > 0 and req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage:
        reasons.append(_REASON_EPHEMERAL)
    for name, q in req.scalar_resources.items():
        if q == 0:
            continue
        if (ignored or ignored_groups) and is_extended_resource_name(name) and (
                name in ignored or name.split("/", 1)[0] in ignored_groups):
            continue
        if q > alloc.scalar_resources.get(name, 0) - used.scalar_resources.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def insufficient_resources(pod: dict, node_info: NodeInfo) -> list[str]:
    """Why ``pod`` does not fit ``node_info`` by resources alone (empty: it fits); upstream's
    ``noderesources.Fits``, for preemption and controllers."""
    return fits_request(compute_pod_resource_request(pod), node_info)


# -- scoring shared with BalancedAllocation ---------------------------------------------------

def _go_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as Go's (the shape function can slope down)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def _weighted(resources: list[dict], per_resource: Callable[[int, int], int]) -> Callable[[list[int], list[int]], int]:
    weights = [r.get("weight") or 1 for r in resources]

    def scorer(requested: list[int], allocatable: list[int]) -> int:
        total = weight_sum = 0
        for i, cap in enumerate(allocatable):
            if cap == 0:
                continue
            total += per_resource(requested[i], cap) * weights[i]
            weight_sum += weights[i]
        return total // weight_sum if weight_sum else 0

    return scorer


def broken_linear_function(shape: list[tuple[int, int]]) -> Callable[[int], int]:
    """Piecewise-linear through ``(utilization, score)`` points sorted by utilisation."""

    def f(p: int) -> int:
        for i, (u, s) in enumerate(shape):
            if p <= u:
                if i == 0:
                    return shape[0][1]
                u0, s0 = shape[i - 1]
                return s0 + _go_div((s - s0) * (p - u0), u - u0)
        return shape[-1][1]

    return f


def requested_to_capacity_ratio_scorer(resources: list[dict], shape: list[dict]) -> Callable[[list[int], list[int]], int]:
    scale = MAX_NODE_SCORE // MAX_CUSTOM_PRIORITY_SCORE
    points = sorted((int(p.get("utilization", 0)), int(p.get("score", 0)) * scale) for p in shape)
    raw = broken_linear_function(points)
    weights = [r.get("weight") or 1 for r in resources]

    def per_resource(requested: int, capacity: int) -> int:
        if capacity == 0 or requested > capacity:
            return raw(MAX_UTILIZATION)
        return raw(requested * MAX_UTILIZATION // capacity)

    def scorer(requested: list[int], allocatable: list[int]) -> int:
        total = weight_sum = 0
        for i, cap in enumerate(allocatable):
            if cap == 0:
                continue
            s = per_resource(requested[i], cap)
            if s > 0:
                total += s * weights[i]
                weight_sum += weights[i]
        return round(total / weight_sum) if weight_sum else 0

    return scorer


class ResourceAllocationScorer:
    """Scores a node by a function of (requested-after-placing, allocatable) per resource.

    ``use_requested`` False (NodeResourcesFit) counts non-zero cpu/memory requests for both the
    pod and the node; True (BalancedAllocation) counts the requests as written."""

    def __init__(self, resources: list[dict], scorer: Callable[[list[int], list[int]], int],
                 use_requested: bool) -> None:
        self.resources = [dict(r) for r in resources]
        self.names = [r["name"] for r in self.resources]
        self.scorer = scorer
        self.use_requested = use_requested

    def pod_request_list(self, pod: dict) -> list[int]:
        req = compute_pod_resource_request(pod)
        non_zero = req if self.use_requested else compute_non_zero_request(pod)
        out = []
        for name in self.names:
            out.append(non_zero.get(name) if name in (CPU, MEMORY) else req.get(name))
        return out

    def score(self, node_info: NodeInfo, pod_requests: list[int]) -> int:
        # Per resource: (allocatable, requested after placing the pod); a resource the node does
        # not have (allocatable 0) is left out by the scorer. Inlined: this runs per node per pod.
        requested_sums = node_info.requested if self.use_requested else node_info.non_zero_requested
        alloc, used = node_info.allocatable, node_info.requested
        requested, allocatable = [], []
        for name, pod_req in zip(self.names, pod_requests, strict=True):
            if name == CPU:
                a, r = alloc.milli_cpu, requested_sums.milli_cpu + pod_req
            elif name == MEMORY:
                a, r = alloc.memory, requested_sums.memory + pod_req
            elif name == EPHEMERAL_STORAGE:
                a, r = alloc.ephemeral_storage, used.ephemeral_storage + pod_req
            elif pod_req == 0 and is_scalar_resource_name(name):
                a = r = 0      # an extended resource the pod does not ask for is not scored
            else:
                a = alloc.scalar_resources.get(name, 0)
                r = used.scalar_resources.get(name, 0) + pod_req if a else 0
            allocatable.append(a)
            requested.append(r if a else 0)
        return self.scorer(requested, allocatable)


def _strategy_scorer(strategy: dict) -> ResourceAllocationScorer:
    kind = strategy.get("type") or LEAST_ALLOCATED
    resources = [{"name": r["name"], "weight": r.get("weight") or 1}
                 for r in strategy.get("resources") or DEFAULT_RESOURCES]
    if kind == LEAST_ALLOCATED:
        fn = _weighted(resources, least_requested_score)
    elif kind == MOST_ALLOCATED:
        fn = _weighted(resources, most_requested_score)
    elif kind == REQUESTED_TO_CAPACITY_RATIO:
        shape = ((strategy.get("requestedToCapacityRatio") or {}).get("shape")) or []
        if not shape:
            raise ValueError("scoringStrategy.requestedToCapacityRatio.shape: Required value")
        fn = requested_to_capacity_ratio_scorer(resources, shape)
    else:
        raise ValueError(f"scoring strategy {kind} is not supported")
    return ResourceAllocationScorer(resources, fn, use_requested=False)


class Fit(Plugin):
    """NodeResourcesFit; see the module docstring. Args: NodeResourcesFitArgs."""

    NAME = NAME

    def __init__(self, args: dict | None = None, handle=None) -> None:
        super().__init__(args, handle)
        self.ignored = frozenset(self.args.get("ignoredResources") or ())
        self.ignored_groups = frozenset(self.args.get("ignoredResourceGroups") or ())
        self.scorer = _strategy_scorer(self.args.get("scoringStrategy") or {})

    # -- filter --
    def pre_filter(self, state: CycleState, pod: dict, nodes: list[NodeInfo]):
        state.write(PRE_FILTER_STATE_KEY, compute_pod_resource_request(pod))
        return None, None

    def pre_filter_extensions(self):
        return None

    def filter(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        try:
            req = state.read(PRE_FILTER_STATE_KEY)
        except KeyError:
            return Status.as_error(f'error reading "{PRE_FILTER_STATE_KEY}" from cycleState: not found')
        reasons = fits_request(req, node_info, self.ignored, self.ignored_groups)
        return Status.unschedulable(*reasons) if reasons else None

    # -- score --
    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        state.write(PRE_SCORE_STATE_KEY, self.scorer.pod_request_list(pod))
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            pod_requests = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            pod_requests = self.scorer.pod_request_list(pod)
        return self.scorer.score(node_info, pod_requests), None

    def score_extensions(self):
        return None

    # -- queueing hints --
    def events_to_register(self) -> list[ClusterEventWithHint]:
        return [
            ClusterEventWithHint(ClusterEvent(EventResource.POD, ActionType.DELETE), self._hint_pod_event),
            ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE),
                                 self._hint_node_changed),
        ]

    @staticmethod
    def _hint_pod_event(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # Only a deleted pod that held resources on a node frees anything (no in-place resize).
        if new is None and old is not None and ((old.get("spec") or {}).get("nodeName")):
            return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP

    @staticmethod
    def _hint_node_changed(pod: dict, old: dict | None, new: dict | None) -> QueueingHint:
        # An empty node of this shape must hold the pod, else no update of it can help; an
        # update helps only if it grew something the pod asks for.
        if new is None or insufficient_resources(pod, NodeInfo(new)):
            return QueueingHint.QUEUE_SKIP
        if old is None or _requested_resources_increased(pod, old, new):
            return QueueingHint.QUEUE
        return QueueingHint.QUEUE_SKIP


def _requested_resources_increased(pod: dict, old: dict, new: dict) -> bool:
    """Whether the node's allocatable grew in a resource the pod asks for (or in pod slots)."""
    req = compute_pod_resource_request(pod)
    a, b = NodeInfo(old).allocatable, NodeInfo(new).allocatable
    if b.allowed_pod_number > a.allowed_pod_number:
        return True
    if (req.milli_cpu > 0 and b.milli_cpu > a.milli_cpu) or (req.memory > 0 and b.memory > a.memory) or (
            req.ephemeral_storage > 0 and b.ephemeral_storage > a.ephemeral_storage):
        return True
    return any(q and b.scalar_resources.get(n, 0) > a.scalar_resources.get(n, 0)
               for n, q in req.scalar_resources.items())
