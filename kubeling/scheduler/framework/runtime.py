"""`Framework`: one profile's plugins, run per extension point (upstream's
``pkg/scheduler/framework/runtime/framework.go``); it is also the `Handle` plugins get.

Building: ``Framework(registry, plugins, plugin_config=..., ...)`` where ``plugins`` maps an
extension point of `interface.EXTENSION_POINTS` (``"filter"``, ``"score"``, ...) to a `PluginSet`
(enabled names in order, score weights). Each named plugin is instantiated once, as
``cls(args, handle)``, and shared by all its points; a plugin enabled at a point whose methods
it lacks is a `ValueError` at build time, not a crash mid-cycle.

Running, the rules upstream keeps:

- PreFilter: the first rejection stops the chain (its status says which plugin); ``Skip``
  records the plugin in ``state.skip_filter_plugins``; results narrow the nodes (intersection).
- Filter: the first non-success on a node stops that node's chain.
- PostFilter: the first plugin that answers success or ``UnschedulableAndUnresolvable`` wins.
- PreScore ``Skip`` records ``state.skip_score_plugins``; Score runs each remaining plugin over
  the nodes, NormalizeScore if the plugin has it, then multiplies by the plugin's weight. A
  score outside [0, 100] after normalising is an error.
- Reserve in order, Unreserve in reverse; Permit collects ``Wait`` timeouts; PreBind stops at the
  first failure; Bind: the first plugin that does not ``Skip`` binds.
- A plugin that raises is an ``Error`` status naming it (a bug must not kill the scheduler).

Everything except PreBind/Bind is synchronous (see `interface`).
"""

from __future__ import annotations

import logging
from typing import Any

from kubeling.scheduler.framework.interface import (
    EXTENSION_POINTS,
    MAX_NODE_SCORE,
    MIN_NODE_SCORE,
    ClusterEventWithHint,
    Code,
    CycleState,
    NodeScore,
    PluginSet,
    PostFilterResult,
    PreFilterResult,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo, PodInfo

log = logging.getLogger(__name__)

DEFAULT_SCORE_WEIGHT = 1
_FILTERS_KEY = "kubeling.io/framework-filters"   # CycleState key of the cycle's filter list


def _named(status: Status | None, plugin: str) -> Status | None:
    if status is not None and not status.plugin:
        status.plugin = plugin
    return status


def _error(plugin: str, point: str, e: BaseException) -> Status:
    log.exception("plugin %s failed at %s", plugin, point)
    s = Status.as_error(RuntimeError(f"running {point} plugin {plugin!r}: {e}"))
    s.plugin = plugin
    return s


class Framework:
    """One profile. See the module docstring; it implements `interface.Handle`."""

    def __init__(self, registry: dict[str, type], plugins: dict[str, PluginSet], *, profile_name: str = "",
                 plugin_config: dict[str, dict] | None = None, client: Any = None, recorder: Any = None,
                 snapshot: Any = None, pod_lister: Any = None, namespace_lister: Any = None,
                 nominator: Any = None, percentage_of_nodes_to_score: int | None = None,
                 informers: Any = None, rng: Any = None) -> None:
        self.profile_name = profile_name
        self.client = client
        self.recorder = recorder
        # the scheduler's SharedInformerFactory: plugins ask it for the listers they need (services,
        # ReplicaSets, PDBs, PVCs...) when they are built, before the factory starts
        self.informers = informers
        self.informer_factory = informers   # the same factory, under the name VolumeBinding reads
        self.rng = rng
        self.snapshot = snapshot
        self._pod_lister = pod_lister
        self._namespace_lister = namespace_lister
        self.nominator = nominator
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.plugins: dict[str, Any] = {}
        self.weights: dict[str, int] = {}
        self.points: dict[str, list[Any]] = {p: [] for p in EXTENSION_POINTS}
        cfg = plugin_config or {}
        for point, pset in plugins.items():
            if point not in EXTENSION_POINTS:
                raise ValueError(f"profile {profile_name!r}: unknown extension point {point!r}")
            for name in pset.enabled:
                p = self._instance(registry, name, cfg.get(name))
                missing = [m for m in EXTENSION_POINTS[point] if not callable(getattr(p, m, None))]
                if missing:
                    raise ValueError(f"plugin {name!r} does not extend {point} (no {', '.join(missing)})")
                if p not in self.points[point]:
                    self.points[point].append(p)
                if point == "score":
                    self.weights[name] = int(pset.weights.get(name, DEFAULT_SCORE_WEIGHT) or DEFAULT_SCORE_WEIGHT)
        if len(self.points["queue_sort"]) > 1:
            raise ValueError(f"profile {profile_name!r}: only one queue sort plugin can be enabled")
        if not self.points["bind"]:
            raise ValueError(f"profile {profile_name!r}: at least one bind plugin is needed")

    def _instance(self, registry: dict[str, type], name: str, args: dict | None) -> Any:
        p = self.plugins.get(name)
        if p is None:
            cls = registry.get(name)
            if cls is None:
                raise ValueError(f"plugin {name!r} is not in the registry")
            p = self.plugins[name] = cls(args, self)
        return p

    # -- Handle ------------------------------------------------------------------------------

    def snapshot_shared_lister(self):
        return self.snapshot

    def pod_lister(self):
        return self._pod_lister

    def namespace_lister(self):
        """The namespace informer (InterPodAffinity's namespaceSelector reads labels from it)."""
        return self._namespace_lister

    def nominated_pods_for_node(self, node_name: str) -> list[PodInfo]:
        return self.nominator.nominated_pods_for_node(node_name) if self.nominator is not None else []

    # -- the queue's side --------------------------------------------------------------------

    def queue_sort_func(self):
        """``less(a, b)`` of the QueueSort plugin (priority, then timestamp, without one)."""
        if self.points["queue_sort"]:
            return self.points["queue_sort"][0].less
        return lambda a, b: a.timestamp < b.timestamp

    def run_pre_enqueue_plugins(self, pod: dict) -> Status | None:
        for p in self.points["pre_enqueue"]:
            try:
                s = p.pre_enqueue(pod)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "PreEnqueue", e)
            if s is not None and not s.is_success():
                return _named(s, p.NAME)
        return None

    def enqueue_extensions(self) -> dict[str, list[ClusterEventWithHint]]:
        """{plugin: events it registered} for every plugin that can reject a pod."""
        out: dict[str, list[ClusterEventWithHint]] = {}
        for name, p in self.plugins.items():
            fn = getattr(p, "events_to_register", None)
            if callable(fn):
                out[name] = list(fn() or ())
        return out

    # -- scheduling cycle --------------------------------------------------------------------

    def run_pre_filter_plugins(self, state: CycleState, pod: dict,
                               nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None, set[str]]:
        """(result, status, plugins that narrowed the nodes)."""
        result: PreFilterResult | None = None
        narrowed: set[str] = set()
        for p in self.points["pre_filter"]:
            try:
                r, s = p.pre_filter(state, pod, nodes)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return None, _error(p.NAME, "PreFilter", e), narrowed
            if s is not None and s.is_skip():
                state.skip_filter_plugins.add(p.NAME)
                continue
            if s is not None and not s.is_success():
                s = _named(s, p.NAME)
                if s.code == Code.ERROR:
                    s.reasons = [f"running PreFilter plugin {p.NAME!r}: {s.message()}"]
                return None, s, narrowed
            if r is not None and r.node_names is not None:
                narrowed.add(p.NAME)
                result = PreFilterResult(set(r.node_names)) if result is None else result.merge(r)
                if not result.node_names:
                    break
        return result, None, narrowed

    def has_filter_plugins(self) -> bool:
        return bool(self.points["filter"])

    def has_score_plugins(self) -> bool:
        return bool(self.points["score"])

    def has_post_filter_plugins(self) -> bool:
        return bool(self.points["post_filter"])

    def _filters(self, state: CycleState) -> list[tuple[str, Any]]:
        """(name, bound filter) of the plugins not skipped this cycle, computed once per cycle
        (the skip set is final once PreFilter ran) instead of once per node."""
        try:
            return state.read(_FILTERS_KEY)
        except KeyError:
            skip = state.skip_filter_plugins
            fs = [(p.NAME, p.filter) for p in self.points["filter"] if p.NAME not in skip]
            state.write(_FILTERS_KEY, fs)
            return fs

    def run_filter_plugins(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None:
        for name, fn in self._filters(state):
            try:
                s = fn(state, pod, node_info)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(name, "Filter", e)
            if s is not None and s.code != Code.SUCCESS:
                if s.code == Code.SKIP:
                    continue
                return _named(s, name)
        return None

    def run_filter_plugins_with_nominated_pods(self, state: CycleState, pod: dict,
                                               node_info: NodeInfo) -> Status | None:
        """Filter as if the node also ran the pods nominated to it with priority ≥ the pod's
        (upstream runs it twice: with them, for the pod not to steal their room, and without,
        for anti-affinity-like plugins that nominated pods could make pass)."""
        if self.nominator is None:
            return self.run_filter_plugins(state, pod, node_info)
        nominated = self.nominator.nominated_pods_for_node(node_info.name)
        prio = pod_priority(pod)
        uid = (pod.get("metadata") or {}).get("uid")
        extra = [pi for pi in nominated
                 if pod_priority(pi.pod) >= prio and (pi.pod.get("metadata") or {}).get("uid") != uid]
        if extra:
            state_with = state.clone()
            ni = node_info.snapshot()
            for pi in extra:
                ni.add_pod_info(pi)
                s = self.run_pre_filter_extension_add_pod(state_with, pod, pi, ni)
                if s is not None and not s.is_success():
                    return s
            s = self.run_filter_plugins(state_with, pod, ni)
            if s is not None and not s.is_success():
                return s
        return self.run_filter_plugins(state, pod, node_info)

    def _pre_filter_extension(self, state: CycleState, which: str, pod: dict, other, node_info: NodeInfo):
        for p in self.points["pre_filter"]:
            if p.NAME in state.skip_filter_plugins:
                continue
            ext_fn = getattr(p, "pre_filter_extensions", None)
            ext = ext_fn() if callable(ext_fn) else None
            if ext is None:
                continue
            try:
                s = getattr(ext, which)(state, pod, other, node_info)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, f"PreFilterExtension {which}", e)
            if s is not None and not s.is_success():
                return _named(s, p.NAME)
        return None

    def run_pre_filter_extension_add_pod(self, state: CycleState, pod: dict, pod_to_add,
                                         node_info: NodeInfo) -> Status | None:
        return self._pre_filter_extension(state, "add_pod", pod, pod_to_add, node_info)

    def run_pre_filter_extension_remove_pod(self, state: CycleState, pod: dict, pod_to_remove,
                                            node_info: NodeInfo) -> Status | None:
        return self._pre_filter_extension(state, "remove_pod", pod, pod_to_remove, node_info)

    def run_post_filter_plugins(self, state: CycleState, pod: dict,
                                statuses: dict[str, Status]) -> tuple[PostFilterResult | None, Status]:
        reasons: list[str] = []
        result: PostFilterResult | None = None
        for p in self.points["post_filter"]:
            try:
                r, s = p.post_filter(state, pod, statuses)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return None, _error(p.NAME, "PostFilter", e)
            s = _named(s or Status(Code.SUCCESS), p.NAME)
            if s.code in (Code.SUCCESS, Code.UNSCHEDULABLE_AND_UNRESOLVABLE):
                return r, s
            if s.code == Code.ERROR:
                return None, s
            reasons.extend(s.reasons)
            if r is not None and result is None:
                result = r
        return result, Status(Code.UNSCHEDULABLE, *reasons)

    def run_pre_score_plugins(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        for p in self.points["pre_score"]:
            try:
                s = p.pre_score(state, pod, nodes)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "PreScore", e)
            if s is not None and s.is_skip():
                state.skip_score_plugins.add(p.NAME)
            elif s is not None and not s.is_success():
                return _named(s, p.NAME)
        return None

    def run_score_plugins(self, state: CycleState, pod: dict,
                          nodes: list[NodeInfo]) -> tuple[list[tuple[str, int]], Status | None]:
        """[(node name, weighted total)] in ``nodes`` order."""
        totals = [0] * len(nodes)
        skip = state.skip_score_plugins
        for p in self.points["score"]:
            if skip and p.NAME in skip:
                continue
            score = p.score
            try:
                raw = []
                for ni in nodes:
                    sc, s = score(state, pod, ni)
                    if s is not None and s.code != Code.SUCCESS:
                        return [], _named(s, p.NAME)
                    raw.append(sc)
                ext_fn = getattr(p, "score_extensions", None)
                ext = ext_fn() if ext_fn is not None else None
                if ext is not None:
                    # NodeScore objects only for plugins that normalise: they may rewrite them
                    scores = [NodeScore(ni.name, int(sc)) for ni, sc in zip(nodes, raw)]
                    s = ext.normalize_score(state, pod, scores)
                    if s is not None and not s.is_success():
                        return [], _named(s, p.NAME)
                    raw = [ns.score for ns in scores]
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return [], _error(p.NAME, "Score", e)
            if raw and (min(raw) < MIN_NODE_SCORE or max(raw) > MAX_NODE_SCORE):
                bad = next(i for i, sc in enumerate(raw) if not MIN_NODE_SCORE <= sc <= MAX_NODE_SCORE)
                return [], _error(p.NAME, "Score", ValueError(
                    f"score {raw[bad]} of node {nodes[bad].name} is outside [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}]"))
            w = self.weights.get(p.NAME, DEFAULT_SCORE_WEIGHT)
            totals = [t + int(sc) * w for t, sc in zip(totals, raw)]
        return [(ni.name, t) for ni, t in zip(nodes, totals)], None

    def run_reserve_plugins_reserve(self, state: CycleState, pod: dict, node_name: str) -> Status | None:
        for p in self.points["reserve"]:
            try:
                s = p.reserve(state, pod, node_name)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "Reserve", e)
            if s is not None and not s.is_success():
                return _named(s, p.NAME)
        return None

    def run_reserve_plugins_unreserve(self, state: CycleState, pod: dict, node_name: str) -> None:
        for p in reversed(self.points["reserve"]):
            try:
                p.unreserve(state, pod, node_name)
            except Exception:  # unreserve must reach every plugin
                log.exception("plugin %s failed at Unreserve", p.NAME)

    def run_permit_plugins(self, state: CycleState, pod: dict, node_name: str) -> tuple[Status | None, float]:
        """(status, longest wait): ``Wait`` with the longest timeout if any plugin waits."""
        wait = 0.0
        for p in self.points["permit"]:
            try:
                s, timeout = p.permit(state, pod, node_name)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "Permit", e), 0.0
            if s is None or s.is_success():
                continue
            if s.code == Code.WAIT:
                wait = max(wait, float(timeout or 0))
                continue
            return _named(s, p.NAME), 0.0
        return (Status(Code.WAIT), wait) if wait > 0 else (None, 0.0)

    # -- binding cycle -----------------------------------------------------------------------

    async def run_pre_bind_plugins(self, state: CycleState, pod: dict, node_name: str) -> Status | None:
        for p in self.points["pre_bind"]:
            try:
                s = await p.pre_bind(state, pod, node_name)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "PreBind", e)
            if s is not None and not s.is_success() and not s.is_skip():
                return _named(s, p.NAME)
        return None

    async def run_bind_plugins(self, state: CycleState, pod: dict, node_name: str) -> Status | None:
        for p in self.points["bind"]:
            try:
                s = await p.bind(state, pod, node_name)
            except Exception as e:  # noqa: BLE001 - a plugin bug is an Error status
                return _error(p.NAME, "Bind", e)
            if s is not None and s.is_skip():
                continue
            return _named(s, p.NAME) if s is not None and not s.is_success() else None
        return Status.as_error("no bind plugin bound the pod")

    def run_post_bind_plugins(self, state: CycleState, pod: dict, node_name: str) -> None:
        for p in self.points["post_bind"]:
            try:
                p.post_bind(state, pod, node_name)
            except Exception:
                log.exception("plugin %s failed at PostBind", p.NAME)


def pod_priority(pod: dict) -> int:
    """``spec.priority`` (0 when unset, as upstream's corev1helpers.PodPriority)."""
    p = (pod.get("spec") or {}).get("priority")
    return int(p) if p is not None else 0
