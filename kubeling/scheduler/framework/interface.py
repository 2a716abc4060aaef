"""The scheduling framework's contract: upstream's ``pkg/scheduler/framework/interface.go``.

A plugin is a class with ``NAME`` and one or more of the extension-point methods below. Every
method is **synchronous** and pure over its inputs plus `CycleState`: one scheduling cycle runs
Filter over hundreds of nodes, and a coroutine per call would cost more than the work. Only
binding (``pre_bind``/``bind``) is async, because it talks to the API server.

Scheduling cycle (one pod at a time), then the binding cycle (concurrently, per pod)::

    PreEnqueue ─▶ queue (QueueSort.less) ─▶ PreFilter ─▶ Filter × nodes ─▶ PostFilter (preemption)
          ─▶ PreScore ─▶ Score × nodes ─▶ NormalizeScore ─▶ pick host ─▶ Reserve ─▶ (assume)
          ─▶ [binding cycle] PreBind ─▶ Bind ─▶ PostBind          (Unreserve on any failure)

Statuses: a plugin answers a `Status`; ``None`` means Success (cheap on the hot path).
``Unschedulable`` means "this node (or the pod now) does not fit, maybe later";
``UnschedulableAndUnresolvable`` means preemption cannot help on that node; ``Skip`` from
PreFilter/PreScore means the plugin has nothing to do for this pod and its Filter/Score is not
called this cycle; ``Error`` is a bug or an API failure.

`CycleState` carries data from PreFilter/PreScore to Filter/Score within one cycle, under the
plugin's own key. Preemption clones it (`CycleState.clone`), so state values that
``add_pod``/``remove_pod`` mutate implement ``clone()``.

Queueing hints: `EnqueueExtensions.events_to_register` says which cluster events may make a pod
this plugin rejected schedulable, each with an optional hint function
``hint(pod, old, new) -> QueueingHint``; the queue moves a pod out of ``unschedulable`` only
when an event one of its rejecting plugins registered says ``QUEUE``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from kubeling.scheduler.framework.types import NodeInfo

MAX_NODE_SCORE = 100
MIN_NODE_SCORE = 0
MAX_TOTAL_SCORE = 2**63 - 1


class Code(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5
    PENDING = 6


class Status:
    """A plugin's verdict: a `Code`, the reasons (each becomes a ``FailedScheduling`` count), and
    the plugin that said it (filled in by the framework)."""

    __slots__ = ("code", "error", "plugin", "reasons")

    def __init__(self, code: Code, *reasons: str, plugin: str = "", error: BaseException | None = None) -> None:
        self.code = code
        self.reasons = list(reasons)
        self.plugin = plugin
        self.error = error

    @classmethod
    def unschedulable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE, *reasons)

    @classmethod
    def unresolvable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, *reasons)

    @classmethod
    def as_error(cls, err: BaseException | str) -> Status:
        e = err if isinstance(err, BaseException) else RuntimeError(err)
        return cls(Code.ERROR, str(e), error=e)

    @classmethod
    def skip(cls) -> Status:
        return cls(Code.SKIP)

    def is_success(self) -> bool:
        return self.code == Code.SUCCESS

    def is_skip(self) -> bool:
        return self.code == Code.SKIP

    def is_rejected(self) -> bool:
        """Unschedulable, unresolvable or pending: the pod does not fit (not an error)."""
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE, Code.PENDING)

    def message(self) -> str:
        return ", ".join(self.reasons)

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {self.reasons!r}, plugin={self.plugin!r})"


def is_success(status: Status | None) -> bool:
    return status is None or status.code == Code.SUCCESS


class StateData(Protocol):
    def clone(self) -> StateData: ...


class CycleState:
    """Per-cycle scratch space, keyed by plugin-chosen strings (see the module docstring)."""

    __slots__ = ("_data", "skip_filter_plugins", "skip_score_plugins")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filter_plugins: set[str] = set()
        self.skip_score_plugins: set[str] = set()

    def read(self, key: str) -> Any:
        """The value written under ``key``; KeyError if PreFilter/PreScore never wrote it."""
        return self._data[key]

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clone(self) -> CycleState:
        c = CycleState()
        c._data = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in self._data.items()}
        c.skip_filter_plugins = set(self.skip_filter_plugins)
        c.skip_score_plugins = set(self.skip_score_plugins)
        return c


@dataclass
class PreFilterResult:
    """PreFilter may narrow the nodes to try: ``node_names`` None means all nodes."""

    node_names: set[str] | None = None

    def merge(self, other: PreFilterResult | None) -> PreFilterResult:
        if other is None or other.node_names is None:
            return self
        if self.node_names is None:
            return PreFilterResult(set(other.node_names))
        return PreFilterResult(self.node_names & other.node_names)


@dataclass
class PostFilterResult:
    """What PostFilter (preemption) decided: the node the pod is nominated to, if any."""

    nominated_node_name: str = ""


@dataclass
class NodeScore:
    name: str
    score: int


# -- cluster events and queueing hints --------------------------------------------------------

class ActionType(enum.IntFlag):
    ADD = 1
    DELETE = 2
    UPDATE_NODE_ALLOCATABLE = 4
    UPDATE_NODE_LABEL = 8
    UPDATE_NODE_TAINT = 16
    UPDATE_NODE_CONDITION = 32
    UPDATE_NODE_ANNOTATION = 64
    UPDATE_POD_LABEL = 128
    UPDATE_POD_SCALE_DOWN = 256
    UPDATE_POD_TOLERATION = 512
    UPDATE_POD_SCHEDULING_GATES_ELIMINATED = 1024
    UPDATE_POD_GENERATED_RESOURCE_CLAIM = 2048
    UPDATE = (UPDATE_NODE_ALLOCATABLE | UPDATE_NODE_LABEL | UPDATE_NODE_TAINT | UPDATE_NODE_CONDITION
              | UPDATE_NODE_ANNOTATION | UPDATE_POD_LABEL | UPDATE_POD_SCALE_DOWN | UPDATE_POD_TOLERATION
              | UPDATE_POD_SCHEDULING_GATES_ELIMINATED | UPDATE_POD_GENERATED_RESOURCE_CLAIM)
    ALL = ADD | DELETE | UPDATE


class EventResource(str, enum.Enum):
    POD = "Pod"
    ASSIGNED_POD = "AssignedPod"      # an event about a pod that is bound to a node
    UNSCHEDULED_POD = "UnscheduledPod"
    NODE = "Node"
    PERSISTENT_VOLUME = "PersistentVolume"
    PERSISTENT_VOLUME_CLAIM = "PersistentVolumeClaim"
    STORAGE_CLASS = "StorageClass"
    WILDCARD = "*"


@dataclass(frozen=True)
class ClusterEvent:
    resource: EventResource
    action: ActionType
    label: str = ""

    def is_wildcard(self) -> bool:
        return self.resource == EventResource.WILDCARD and self.action == ActionType.ALL

    def matches(self, incoming: ClusterEvent) -> bool:
        """Whether a plugin registered for ``self`` cares about ``incoming``."""
        if self.is_wildcard():
            return True
        same = self.resource == incoming.resource or (
            self.resource == EventResource.POD and incoming.resource in (EventResource.ASSIGNED_POD,
                                                                          EventResource.UNSCHEDULED_POD))
        return same and bool(self.action & incoming.action)


class QueueingHint(enum.Enum):
    QUEUE_SKIP = 0
    QUEUE = 1


# hint(pod, old_obj, new_obj) -> QueueingHint; None means "always QUEUE"
QueueingHintFn = Callable[[dict, Any, Any], QueueingHint]


@dataclass
class ClusterEventWithHint:
    event: ClusterEvent
    hint: QueueingHintFn | None = None


# well-known events (upstream's framework.EventXxx)
EVENT_ASSIGNED_POD_DELETE = ClusterEvent(EventResource.ASSIGNED_POD, ActionType.DELETE, "AssignedPodDelete")
EVENT_NODE_ADD = ClusterEvent(EventResource.NODE, ActionType.ADD, "NodeAdd")
EVENT_UNSCHEDULABLE_TIMEOUT = ClusterEvent(EventResource.WILDCARD, ActionType.ALL, "UnschedulableTimeout")
EVENT_FORCE_ACTIVATE = ClusterEvent(EventResource.WILDCARD, ActionType.ALL, "ForceActivate")


# -- plugins ----------------------------------------------------------------------------------

class Plugin:
    """Base of every plugin. ``__init__(args, handle)``: ``args`` is the plugin's config (a dict,
    from the profile's ``pluginConfig``), ``handle`` the `Handle`."""

    NAME: ClassVar[str] = ""

    def __init__(self, args: dict | None = None, handle: Handle | None = None) -> None:
        self.args = args or {}
        self.handle = handle

    def name(self) -> str:
        return self.NAME


# The extension points, as upstream names them. A plugin class implements the methods of the
# points it is enabled at; the framework checks this when it builds a profile.
#
#   queue_sort:  less(a: QueuedPodInfo, b: QueuedPodInfo) -> bool
#   pre_enqueue: pre_enqueue(pod) -> Status | None
#   pre_filter:  pre_filter(state, pod, nodes: list[NodeInfo]) -> tuple[PreFilterResult | None, Status | None]
#                pre_filter_extensions() -> PreFilterExtensions | None
#   filter:      filter(state, pod, node_info: NodeInfo) -> Status | None
#   post_filter: post_filter(state, pod, statuses: dict[str, Status]) -> tuple[PostFilterResult | None, Status]
#   pre_score:   pre_score(state, pod, nodes: list[NodeInfo]) -> Status | None
#   score:       score(state, pod, node_info: NodeInfo) -> tuple[int, Status | None]
#                score_extensions() -> ScoreExtensions | None
#   reserve:     reserve(state, pod, node_name) -> Status | None;  unreserve(state, pod, node_name) -> None
#   permit:      permit(state, pod, node_name) -> tuple[Status | None, float]   (timeout seconds)
#   pre_bind:    async pre_bind(state, pod, node_name) -> Status | None
#   bind:        async bind(state, pod, node_name) -> Status | None   (Skip: let the next binder)
#   post_bind:   post_bind(state, pod, node_name) -> None
#   events:      events_to_register() -> list[ClusterEventWithHint]   (EnqueueExtensions)

EXTENSION_POINTS = {
    "queue_sort": ("less",),
    "pre_enqueue": ("pre_enqueue",),
    "pre_filter": ("pre_filter",),
    "filter": ("filter",),
    "post_filter": ("post_filter",),
    "pre_score": ("pre_score",),
    "score": ("score",),
    "reserve": ("reserve", "unreserve"),
    "permit": ("permit",),
    "pre_bind": ("pre_bind",),
    "bind": ("bind",),
    "post_bind": ("post_bind",),
}


class PreFilterExtensions(Protocol):
    """Incremental updates of a plugin's PreFilter state when preemption (or nominated pods)
    adds or removes a pod on a node during "what if" filtering."""

    def add_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_add: PodInfoLike,
                node_info: NodeInfo) -> Status | None: ...

    def remove_pod(self, state: CycleState, pod_to_schedule: dict, pod_to_remove: PodInfoLike,
                   node_info: NodeInfo) -> Status | None: ...


class ScoreExtensions(Protocol):
    def normalize_score(self, state: CycleState, pod: dict, scores: list[NodeScore]) -> Status | None: ...


class PodInfoLike(Protocol):
    pod: dict


class SharedLister(Protocol):
    """The snapshot of the cluster a cycle sees (upstream's ``SharedLister``/``NodeInfoLister``)."""

    def list(self) -> list[NodeInfo]: ...

    def get(self, node_name: str) -> NodeInfo: ...

    def have_pods_with_affinity_list(self) -> list[NodeInfo]: ...

    def have_pods_with_required_anti_affinity_list(self) -> list[NodeInfo]: ...


class Handle(Protocol):
    """What plugins may use from the framework (upstream's ``framework.Handle``)."""

    client: Any                    # the REST client (async); only pre_bind/bind/post_filter use it
    recorder: Any                  # EventRecorder
    informer_factory: Any          # the SharedInformerFactory; plugins get listers from it in __init__
                                   # (VolumeBinding: PVCs, PVs, StorageClasses), before it starts

    def snapshot_shared_lister(self) -> SharedLister: ...

    def run_pre_filter_extension_add_pod(self, state: CycleState, pod: dict, pod_to_add: PodInfoLike,
                                         node_info: NodeInfo) -> Status | None: ...

    def run_pre_filter_extension_remove_pod(self, state: CycleState, pod: dict, pod_to_remove: PodInfoLike,
                                            node_info: NodeInfo) -> Status | None: ...

    def run_filter_plugins(self, state: CycleState, pod: dict, node_info: NodeInfo) -> Status | None: ...

    def run_filter_plugins_with_nominated_pods(self, state: CycleState, pod: dict,
                                               node_info: NodeInfo) -> Status | None: ...

    def nominated_pods_for_node(self, node_name: str) -> list[PodInfoLike]: ...

    def pod_lister(self) -> Any: ...          # the pod informer (get/list/by_index)

    def namespace_lister(self) -> Any: ...    # the namespace informer (namespaceSelector labels)

    # ``informers`` is the same factory as ``informer_factory``; the scheduler starts the factory
    # after building every plugin and waits for all its informers to sync before its first cycle.
    informers: Any
    rng: Any                       # random.Random shared with host selection (tests seed it)


@dataclass
class PluginSet:
    enabled: list[str] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)   # score plugins only
