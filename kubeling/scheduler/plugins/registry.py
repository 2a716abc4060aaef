"""The in-tree plugin registry and upstream's default profile.

`IN_TREE_REGISTRY` maps a plugin name (as profiles and ``FailedScheduling`` messages spell it) to
its class, one line per plugin; a class is built as ``cls(args, handle)`` with ``args`` from the
profile's ``pluginConfig`` (`default_plugin_args` when the profile says nothing).

`DEFAULT_MULTI_POINT` is upstream's v1 ``getDefaultPlugins``: one ``multiPoint`` list, in order,
with the score weights. `default_plugins` expands it as the framework's multi-point expansion
does: each plugin is enabled at every extension point whose methods its class implements, in the
list's order, so e.g. NodeAffinity lands in pre_filter, filter, pre_score and score. A plugin that
is not written yet is not in the list (upstream's VolumeRestrictions, NodeVolumeLimits and
VolumeZone; DynamicResources is behind a feature gate).
"""

from __future__ import annotations

import copy

from kubeling.scheduler.framework.interface import EXTENSION_POINTS, Plugin, PluginSet
from kubeling.scheduler.plugins.balancedallocation import BalancedAllocation
from kubeling.scheduler.plugins.defaultbinder import DefaultBinder
from kubeling.scheduler.plugins.defaultpreemption import DefaultPreemption
from kubeling.scheduler.plugins.imagelocality import ImageLocality
from kubeling.scheduler.plugins.interpodaffinity import InterPodAffinity
from kubeling.scheduler.plugins.nodeaffinity import NodeAffinity
from kubeling.scheduler.plugins.nodename import NodeName
from kubeling.scheduler.plugins.nodeports import NodePorts
from kubeling.scheduler.plugins.noderesources import Fit
from kubeling.scheduler.plugins.nodeunschedulable import NodeUnschedulable
from kubeling.scheduler.plugins.podtopologyspread import PodTopologySpread
from kubeling.scheduler.plugins.queuesort import PrioritySort
from kubeling.scheduler.plugins.schedulinggates import SchedulingGates
from kubeling.scheduler.plugins.tainttoleration import TaintToleration
from kubeling.scheduler.plugins.volumebinding import VolumeBinding

IN_TREE_REGISTRY: dict[str, type[Plugin]] = {
    SchedulingGates.NAME: SchedulingGates,
    PrioritySort.NAME: PrioritySort,
    NodeUnschedulable.NAME: NodeUnschedulable,
    NodeName.NAME: NodeName,
    TaintToleration.NAME: TaintToleration,
    NodeAffinity.NAME: NodeAffinity,
    NodePorts.NAME: NodePorts,
    Fit.NAME: Fit,
    VolumeBinding.NAME: VolumeBinding,
    PodTopologySpread.NAME: PodTopologySpread,
    InterPodAffinity.NAME: InterPodAffinity,
    DefaultPreemption.NAME: DefaultPreemption,
    BalancedAllocation.NAME: BalancedAllocation,
    ImageLocality.NAME: ImageLocality,
    DefaultBinder.NAME: DefaultBinder,
}

# (name, score weight or None), in upstream's order; the order is the order plugins run in.
DEFAULT_MULTI_POINT: list[tuple[str, int | None]] = [
    ("SchedulingGates", None),
    ("PrioritySort", None),
    ("NodeUnschedulable", None),
    ("NodeName", None),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", None),
    ("NodeResourcesFit", 1),
    ("VolumeBinding", None),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", None),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", None),
]

_RESOURCES = [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]

# Upstream's v1 defaults of each plugin's args (``SetDefaults_<Plugin>Args``).
_DEFAULT_ARGS: dict[str, dict] = {
    "NodeResourcesFit": {"scoringStrategy": {"type": "LeastAllocated", "resources": _RESOURCES}},
    "NodeResourcesBalancedAllocation": {"resources": _RESOURCES},
    "NodeAffinity": {},
    "VolumeBinding": {"bindTimeoutSeconds": 600},
    "PodTopologySpread": {"defaultingType": "System"},
    "InterPodAffinity": {"hardPodAffinityWeight": 1, "ignorePreferredTermsOfExistingPods": False},
    "DefaultPreemption": {"minCandidateNodesPercentage": 10, "minCandidateNodesAbsolute": 100},
}


def implements(cls: type, extension_point: str) -> bool:
    """Whether ``cls`` has every method of ``extension_point`` (see `EXTENSION_POINTS`)."""
    return all(callable(getattr(cls, m, None)) for m in EXTENSION_POINTS[extension_point])


def expand_multi_point(multi_point: list[tuple[str, int | None]],
                       registry: dict[str, type[Plugin]] | None = None) -> dict[str, PluginSet]:
    """``{extension_point: PluginSet}`` for a multi-point list; unknown names raise KeyError
    (upstream refuses a profile naming a plugin it has no factory for)."""
    registry = IN_TREE_REGISTRY if registry is None else registry
    out = {ep: PluginSet() for ep in EXTENSION_POINTS}
    for name, weight in multi_point:
        cls = registry[name]
        for ep, ps in out.items():
            if implements(cls, ep):
                ps.enabled.append(name)
                if ep == "score":
                    ps.weights[name] = weight or 1
    return out


def default_plugins() -> dict[str, PluginSet]:
    """The default profile's plugins per extension point (a fresh copy each call)."""
    return expand_multi_point(DEFAULT_MULTI_POINT)


def default_plugin_args() -> dict[str, dict]:
    """Each plugin's default args (a deep copy: callers may overlay the profile's pluginConfig)."""
    return copy.deepcopy(_DEFAULT_ARGS)
