import pytest
from scheduler_plugins_testing import make_node, make_pod, node_info, reasons

from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    NodeScore,
    QueueingHint,
)
from kubeling.scheduler.plugins.tainttoleration import TaintToleration


def taint(key, value="", effect="NoSchedule"):
    return {"key": key, "value": value, "effect": effect}


def tol(key="", value="", effect="", operator="Equal"):
    t = {"operator": operator}
    if key:
        t["key"] = key
    if value:
        t["value"] = value
    if effect:
        t["effect"] = effect
    return t


@pytest.mark.parametrize("taints,tolerations,want", [
    pytest.param([], [], [], id="no-taints"),
    pytest.param([taint("dedicated", "gpu")], [], ["node(s) had untolerated taint {dedicated: gpu}"],
                 id="untolerated-no-schedule"),
    pytest.param([taint("node-role.kubernetes.io/control-plane")], [],
                 ["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"], id="empty-value"),
    pytest.param([taint("k", "v", "NoExecute")], [], ["node(s) had untolerated taint {k: v}"], id="no-execute"),
    pytest.param([taint("k", "v", "PreferNoSchedule")], [], [], id="prefer-only-scores"),
    pytest.param([taint("k", "v")], [tol("k", "v", "NoSchedule")], [], id="tolerated-equal"),
    pytest.param([taint("k", "v")], [tol("k", "w")], ["node(s) had untolerated taint {k: v}"], id="wrong-value"),
    pytest.param([taint("k", "v")], [tol("k", operator="Exists")], [], id="exists-any-value"),
    pytest.param([taint("k", "v")], [tol(operator="Exists")], [], id="exists-without-key-tolerates-all"),
    pytest.param([taint("k", "v")], [tol("k", "v", "NoExecute")], ["node(s) had untolerated taint {k: v}"],
                 id="wrong-effect"),
    pytest.param([taint("a"), taint("b", "2")], [tol("a", operator="Exists")],
                 ["node(s) had untolerated taint {b: 2}"], id="first-untolerated-reported"),
])
def test_filter(taints, tolerations, want):
    pod = make_pod(tolerations=tolerations)
    st = TaintToleration().filter(CycleState(), pod, node_info(make_node(taints=taints)))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_score_and_normalize():
    pl = TaintToleration()
    nodes = [node_info(make_node("clean")),
             node_info(make_node("one", taints=[taint("a", effect="PreferNoSchedule")])),
             node_info(make_node("two", taints=[taint("a", effect="PreferNoSchedule"),
                                                taint("b", effect="PreferNoSchedule"),
                                                taint("c", effect="NoSchedule")])),
             node_info(make_node("tolerated", taints=[taint("t", effect="PreferNoSchedule")]))]
    pod = make_pod(tolerations=[tol("t", operator="Exists", effect="PreferNoSchedule"), tol("a", effect="NoSchedule",
                                                                                            operator="Exists")])
    state = CycleState()
    assert pl.pre_score(state, pod, nodes) is None
    scores = [NodeScore(n.name, pl.score(state, pod, n)[0]) for n in nodes]
    assert [s.score for s in scores] == [0, 1, 2, 0]
    pl.score_extensions().normalize_score(state, pod, scores)
    assert [s.score for s in scores] == [100, 50, 0, 100]


def test_normalize_all_zero_is_max():
    scores = [NodeScore("a", 0), NodeScore("b", 0)]
    TaintToleration().normalize_score(CycleState(), make_pod(), scores)
    assert [s.score for s in scores] == [100, 100]


@pytest.mark.parametrize("old,new,want", [
    pytest.param(make_node(taints=[taint("k")]), make_node(), QueueingHint.QUEUE, id="taint-removed"),
    pytest.param(None, make_node(), QueueingHint.QUEUE, id="untainted-node-added"),
    pytest.param(None, make_node(taints=[taint("k")]), QueueingHint.QUEUE_SKIP, id="tainted-node-added"),
    pytest.param(make_node(), make_node(labels={"x": "y"}), QueueingHint.QUEUE_SKIP, id="was-already-fine"),
])
def test_node_hint(old, new, want):
    node_ev, _ = TaintToleration().events_to_register()
    assert node_ev.hint(make_pod(), old, new) is want


def test_pod_toleration_hint():
    _, pod_ev = TaintToleration().events_to_register()
    assert pod_ev.hint(make_pod(), make_pod(), make_pod(tolerations=[tol("k", operator="Exists")])) is QueueingHint.QUEUE
    assert pod_ev.hint(make_pod(), make_pod("o"), make_pod("o")) is QueueingHint.QUEUE_SKIP
