"""Framework runtime: statuses per extension point, Skip, score weights and normalisation,
reserve/unreserve order, bind fall-through, plugin errors, profile building."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    PluginSet,
    PostFilterResult,
    PreFilterResult,
    Status,
)
from kubeling.scheduler.framework.runtime import Framework
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.profile import build_profiles, merge_plugins

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": []}}


def nodes(*names: str) -> list[NodeInfo]:
    return [NodeInfo({"metadata": {"name": n}, "status": {}}) for n in names]


class Binder:
    NAME = "Binder"

    def __init__(self, args=None, handle=None):
        self.bound = []

    async def bind(self, state, pod, node):
        self.bound.append(node)


class Recorder:
    """A configurable test plugin: answers per method from ``args``; records calls."""

    NAME = "Recorder"
    calls: ClassVar[list] = []

    def __init__(self, args=None, handle=None):
        self.args = args or {}
        self.handle = handle

    def pre_filter(self, state, pod, ns):
        Recorder.calls.append((self.NAME, "pre_filter"))
        return self.args.get("pre_filter_result"), self.args.get("pre_filter")

    def filter(self, state, pod, ni):
        Recorder.calls.append((self.NAME, "filter", ni.name))
        return self.args.get("filter", {}).get(ni.name)

    def pre_score(self, state, pod, ns):
        return self.args.get("pre_score")

    def score(self, state, pod, ni):
        return self.args["scores"][ni.name], None

    def reserve(self, state, pod, node):
        Recorder.calls.append((self.NAME, "reserve"))
        return self.args.get("reserve")

    def unreserve(self, state, pod, node):
        Recorder.calls.append((self.NAME, "unreserve"))


def named(name: str, base=Recorder, **methods):
    return type(name, (base,), {"NAME": name, **methods})


def framework(points: dict[str, list[str]], registry: dict, config=None, weights=None) -> Framework:
    plugins = {p: PluginSet(list(names), dict(weights or {})) for p, names in points.items()}
    plugins.setdefault("bind", PluginSet(["Binder"]))
    return Framework({"Binder": Binder, **registry}, plugins, plugin_config=config or {})


@pytest.fixture(autouse=True)
def _reset():
    Recorder.calls = []


def test_filter_stops_at_first_rejection_and_names_the_plugin():
    A, B = named("A"), named("B")
    fwk = framework({"filter": ["A", "B"]}, {"A": A, "B": B},
                    {"A": {"filter": {"n1": Status.unschedulable("no")}}})
    s = fwk.run_filter_plugins(CycleState(), POD, nodes("n1")[0])
    assert (s.code, s.plugin, s.reasons) == (Code.UNSCHEDULABLE, "A", ["no"])
    assert ("B", "filter", "n1") not in Recorder.calls
    assert fwk.run_filter_plugins(CycleState(), POD, nodes("n2")[0]) is None


def test_pre_filter_skip_skips_filter_and_results_intersect():
    A, B, C = named("A"), named("B"), named("C")
    fwk = framework({"pre_filter": ["A", "B", "C"], "filter": ["A", "B", "C"]}, {"A": A, "B": B, "C": C},
                    {"A": {"pre_filter": Status.skip()},
                     "B": {"pre_filter_result": PreFilterResult({"n1", "n2"})},
                     "C": {"pre_filter_result": PreFilterResult({"n2", "n3"})}})
    state = CycleState()
    result, s, narrowed = fwk.run_pre_filter_plugins(state, POD, nodes("n1", "n2", "n3"))
    assert s is None and result.node_names == {"n2"} and narrowed == {"B", "C"}
    fwk.run_filter_plugins(state, POD, nodes("n2")[0])
    assert ("A", "filter", "n2") not in Recorder.calls and ("B", "filter", "n2") in Recorder.calls


def test_pre_filter_rejection_and_plugin_exception():
    A = named("A")
    Boom = named("Boom", pre_filter=lambda self, state, pod, ns: 1 / 0)
    fwk = framework({"pre_filter": ["A"]}, {"A": A}, {"A": {"pre_filter": Status.unresolvable("nope")}})
    _, s, _ = fwk.run_pre_filter_plugins(CycleState(), POD, [])
    assert (s.code, s.plugin, s.message()) == (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, "A", "nope")
    fwk = framework({"pre_filter": ["Boom"]}, {"Boom": Boom})
    _, s, _ = fwk.run_pre_filter_plugins(CycleState(), POD, [])
    assert s.code == Code.ERROR and s.plugin == "Boom" and "division by zero" in s.message()


class Half:
    """NormalizeScore: scale to [0, 100] by the max."""

    def normalize_score(self, state, pod, scores):
        top = max(s.score for s in scores) or 1
        for s in scores:
            s.score = s.score * 100 // top


@pytest.mark.parametrize("weights,expected", [
    pytest.param({"A": 1, "B": 1}, {"n1": 100 + 0, "n2": 50 + 100}, id="equal-weights"),
    pytest.param({"A": 3, "B": 1}, {"n1": 300 + 0, "n2": 150 + 100}, id="a-weighs-3"),
])
def test_scores_are_normalized_then_weighted(weights, expected):
    A = named("A", score_extensions=lambda self: Half())
    B = named("B")
    fwk = framework({"score": ["A", "B"]}, {"A": A, "B": B},
                    {"A": {"scores": {"n1": 400, "n2": 200}}, "B": {"scores": {"n1": 0, "n2": 100}}}, weights)
    scores, s = fwk.run_score_plugins(CycleState(), POD, nodes("n1", "n2"))
    assert s is None and dict(scores) == expected


def test_pre_score_skip_and_out_of_range_score():
    A, B = named("A"), named("B")
    fwk = framework({"pre_score": ["A"], "score": ["A", "B"]}, {"A": A, "B": B},
                    {"A": {"pre_score": Status.skip(), "scores": {"n1": 7}}, "B": {"scores": {"n1": 101}}})
    state = CycleState()
    assert fwk.run_pre_score_plugins(state, POD, nodes("n1")) is None
    assert state.skip_score_plugins == {"A"}
    _, s = fwk.run_score_plugins(state, POD, nodes("n1"))
    assert s.code == Code.ERROR and s.plugin == "B" and "outside [0, 100]" in s.message()


def test_reserve_failure_and_unreserve_in_reverse():
    A, B = named("A"), named("B")
    fwk = framework({"reserve": ["A", "B"]}, {"A": A, "B": B}, {"B": {"reserve": Status.unschedulable("full")}})
    s = fwk.run_reserve_plugins_reserve(CycleState(), POD, "n1")
    assert s.plugin == "B"
    fwk.run_reserve_plugins_unreserve(CycleState(), POD, "n1")
    assert [c for c in Recorder.calls if c[1] == "unreserve"] == [("B", "unreserve"), ("A", "unreserve")]


def test_bind_skip_falls_through_to_next_binder():
    class Skipper:
        NAME = "Skipper"

        def __init__(self, args=None, handle=None):
            pass

        async def bind(self, state, pod, node):
            return Status.skip()
    fwk = Framework({"Skipper": Skipper, "Binder": Binder}, {"bind": PluginSet(["Skipper", "Binder"])})
    assert asyncio.run(fwk.run_bind_plugins(CycleState(), POD, "n1")) is None
    assert fwk.plugins["Binder"].bound == ["n1"]


def test_post_filter_first_success_wins():
    def pf(result, status):
        return lambda self, state, pod, statuses: (result, status)
    A = named("A", post_filter=pf(None, Status.unschedulable("a could not")))
    B = named("B", post_filter=pf(PostFilterResult("n9"), None))
    fwk = framework({"post_filter": ["A", "B"]}, {"A": A, "B": B})
    r, s = fwk.run_post_filter_plugins(CycleState(), POD, {})
    assert r.nominated_node_name == "n9" and s.code == Code.SUCCESS and s.plugin == "B"
    fwk = framework({"post_filter": ["A"]}, {"A": A})
    r, s = fwk.run_post_filter_plugins(CycleState(), POD, {})
    assert s.code == Code.UNSCHEDULABLE and s.message() == "a could not"


def test_building_refuses_plugins_without_the_points_methods():
    with pytest.raises(ValueError, match="does not extend score"):
        framework({"score": ["Binder"]}, {})
    with pytest.raises(ValueError, match="not in the registry"):
        framework({"filter": ["Nope"]}, {})


def test_profiles_merge_enabled_disabled_and_weights():
    A, B = named("A"), named("B")
    defaults = {"filter": PluginSet(["A"]), "score": PluginSet(["A"], {"A": 1}), "bind": PluginSet(["Binder"])}
    merged = merge_plugins(defaults, {"score": {"disabled": [{"name": "*"}], "enabled": [{"name": "B", "weight": 5}]},
                                      "filter": {"enabled": [{"name": "B"}]}}, {"A": A, "B": B})
    assert merged["filter"].enabled == ["A", "B"]
    assert merged["score"].enabled == ["B"] and merged["score"].weights["B"] == 5
    profiles = build_profiles({"profiles": [{"schedulerName": "default-scheduler"},
                                            {"schedulerName": "spread", "plugins": {"filter": {"disabled": [{"name": "A"}]}},
                                             "pluginConfig": [{"name": "A", "args": {"x": 1}}]}]},
                              registry={"A": A, "B": B, "Binder": Binder}, default_plugins=defaults,
                              default_args={"A": {"y": 2}})
    assert set(profiles) == {"default-scheduler", "spread"}
    assert [p.NAME for p in profiles["spread"].points["filter"]] == []
    assert profiles["spread"].plugins["A"].args == {"y": 2, "x": 1}
    assert profiles["default-scheduler"].plugins["A"].args == {"y": 2}


def test_default_profile_builds_from_the_in_tree_registry():
    profiles = build_profiles(None)
    fwk = profiles["default-scheduler"]
    assert fwk.points["queue_sort"] and fwk.points["bind"] and fwk.points["filter"]
    assert all(fwk.weights[p.NAME] >= 1 for p in fwk.points["score"])
