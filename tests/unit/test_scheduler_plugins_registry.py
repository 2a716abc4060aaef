import pytest

from kubeling.scheduler.framework.interface import EXTENSION_POINTS, Plugin
from kubeling.scheduler.plugins.registry import (
    DEFAULT_MULTI_POINT,
    IN_TREE_REGISTRY,
    default_plugin_args,
    default_plugins,
    expand_multi_point,
)


def test_registry_names_match_classes():
    for name, cls in IN_TREE_REGISTRY.items():
        assert issubclass(cls, Plugin) and cls.NAME == name


def test_every_default_plugin_is_registered_and_builds_with_default_args():
    args = default_plugin_args()
    for name, _ in DEFAULT_MULTI_POINT:
        plugin = IN_TREE_REGISTRY[name](args.get(name), None)
        assert plugin.name() == name


@pytest.mark.parametrize("point,want", [
    pytest.param("queue_sort", ["PrioritySort"], id="queue-sort"),
    pytest.param("pre_enqueue", ["SchedulingGates"], id="pre-enqueue"),
    pytest.param("bind", ["DefaultBinder"], id="bind"),
])
def test_single_plugin_points(point, want):
    assert default_plugins()[point].enabled == want


def test_filter_order_follows_upstream():
    enabled = default_plugins()["filter"].enabled
    upstream_order = ["NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity", "NodePorts",
                      "NodeResourcesFit", "VolumeBinding", "PodTopologySpread", "InterPodAffinity"]
    expected = [n for n in upstream_order if n in IN_TREE_REGISTRY]
    assert [n for n in enabled if n in upstream_order] == expected
    assert enabled[:6] == expected[:6]


def test_score_weights_follow_upstream():
    upstream = {"TaintToleration": 3, "NodeAffinity": 2, "NodeResourcesFit": 1, "PodTopologySpread": 2,
                "InterPodAffinity": 2, "NodeResourcesBalancedAllocation": 1, "ImageLocality": 1}
    weights = default_plugins()["score"].weights
    assert weights == {k: v for k, v in upstream.items() if k in IN_TREE_REGISTRY}
    assert default_plugins()["score"].enabled == list(weights)


def test_expansion_follows_implemented_methods():
    plugins = default_plugins()
    assert set(plugins) == set(EXTENSION_POINTS)
    assert "NodeAffinity" in plugins["pre_filter"].enabled and "NodeAffinity" in plugins["pre_score"].enabled
    assert "NodeName" not in plugins["pre_filter"].enabled     # Filter only
    assert "NodeResourcesBalancedAllocation" not in plugins["filter"].enabled


def test_unknown_plugin_is_refused():
    with pytest.raises(KeyError):
        expand_multi_point([("NoSuchPlugin", None)])


def test_default_args():
    args = default_plugin_args()
    assert args["NodeResourcesFit"]["scoringStrategy"] == {
        "type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]}
    args["NodeResourcesFit"]["scoringStrategy"]["type"] = "MostAllocated"
    assert default_plugin_args()["NodeResourcesFit"]["scoringStrategy"]["type"] == "LeastAllocated"   # a copy
