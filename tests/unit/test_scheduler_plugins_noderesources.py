import pytest
from scheduler_plugins_testing import (
    container,
    make_node,
    make_pod,
    node_info,
    reasons,
    run_filter,
)

from kubeling.scheduler.framework.interface import Code, CycleState, QueueingHint
from kubeling.scheduler.plugins.noderesources import (
    Fit,
    broken_linear_function,
    insufficient_resources,
)

GI = "Gi"


def fit(**args):
    return Fit(args or {"scoringStrategy": {"type": "LeastAllocated"}})


# -- Filter -----------------------------------------------------------------------------------

FILTER_CASES = [
    pytest.param(make_pod(requests={"cpu": "1", "memory": "1Gi"}), make_node(cpu="2", memory="2Gi"), [],
                 [], id="fits-empty-node"),
    pytest.param(make_pod(requests={"cpu": "3"}), make_node(cpu="2"), [], ["Insufficient cpu"], id="cpu"),
    pytest.param(make_pod(requests={"memory": "3Gi"}), make_node(memory="2Gi"), [], ["Insufficient memory"],
                 id="memory"),
    pytest.param(make_pod(requests={"ephemeral-storage": "20Gi"}), make_node(), [],
                 ["Insufficient ephemeral-storage"], id="ephemeral-storage"),
    pytest.param(make_pod(requests={"example.com/foo": "1"}), make_node(), [], ["Insufficient example.com/foo"],
                 id="extended-resource-absent-on-node"),
    pytest.param(make_pod(requests={"example.com/foo": "2"}), make_node(extra={"example.com/foo": "3"}),
                 [make_pod("other", requests={"example.com/foo": "2"})], ["Insufficient example.com/foo"],
                 id="extended-resource-used-up"),
    pytest.param(make_pod(requests={"cpu": "3", "memory": "3Gi"}), make_node(cpu="2", memory="2Gi"), [],
                 ["Insufficient cpu", "Insufficient memory"], id="all-reasons-kept"),
    pytest.param(make_pod(requests={"cpu": "1"}), make_node(cpu="2"),
                 [make_pod("a", requests={"cpu": "1500m"})], ["Insufficient cpu"], id="counts-pods-on-node"),
    pytest.param(make_pod(requests={}), make_node(pods="1"), [make_pod("a")], ["Too many pods"],
                 id="too-many-pods-for-a-pod-that-asks-nothing"),
    pytest.param(make_pod(requests={"cpu": "3"}), make_node(cpu="2", pods="1"), [make_pod("a")],
                 ["Too many pods", "Insufficient cpu"], id="too-many-pods-first"),
    pytest.param(make_pod(containers=[container(requests={"cpu": "1"})],
                          init_containers=[container("init", requests={"cpu": "3"})]),
                 make_node(cpu="2"), [], ["Insufficient cpu"], id="init-container-is-a-maximum"),
    pytest.param(make_pod(containers=[container(requests={"cpu": "1"})],
                          init_containers=[container("init", requests={"cpu": "2"})]),
                 make_node(cpu="2"), [], [], id="init-container-not-added"),
    pytest.param(make_pod(containers=[container(requests={"cpu": "1"})],
                          init_containers=[container("side", requests={"cpu": "1500m"}, restart_policy="Always")]),
                 make_node(cpu="2"), [], ["Insufficient cpu"], id="sidecar-adds-up"),
    pytest.param(make_pod(requests={"cpu": "1500m"}, overhead={"cpu": "1"}), make_node(cpu="2"), [],
                 ["Insufficient cpu"], id="overhead-added"),
]


@pytest.mark.parametrize("pod,node,existing,want", FILTER_CASES)
def test_filter(pod, node, existing, want):
    st = run_filter(fit(), pod, node_info(node, *existing))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE


@pytest.mark.parametrize("args,want", [
    pytest.param({"ignoredResources": ["example.com/foo"]}, [], id="ignored-resource"),
    pytest.param({"ignoredResourceGroups": ["example.com"]}, [], id="ignored-group"),
    pytest.param({"ignoredResourceGroups": ["other.io"]}, ["Insufficient example.com/foo"], id="other-group"),
])
def test_filter_ignored_extended_resources(args, want):
    pod = make_pod(requests={"example.com/foo": "1"})
    assert reasons(run_filter(Fit(args), pod, node_info(make_node()))) == want


def test_filter_without_prefilter_state_is_an_error():
    st = fit().filter(CycleState(), make_pod(), node_info(make_node()))
    assert st.code == Code.ERROR


def test_insufficient_resources_helper():
    assert insufficient_resources(make_pod(requests={"cpu": "5"}), node_info(make_node(cpu="4"))) == ["Insufficient cpu"]


# -- Score ------------------------------------------------------------------------------------

def score(plugin, pod, ni):
    state = CycleState()
    assert plugin.pre_score(state, pod, [ni]) is None
    s, st = plugin.score(state, pod, ni)
    assert st is None
    return s


@pytest.mark.parametrize("strategy,pod,node,existing,want", [
    # cpu (4000-1000)/4000=75, memory (8-2)/8=75
    pytest.param("LeastAllocated", make_pod(requests={"cpu": "1", "memory": "2Gi"}), make_node(), [], 75,
                 id="least-empty-node"),
    # cpu 2000+1000 of 4000 -> 25; memory 2+2 of 8 -> 50; mean 37
    pytest.param("LeastAllocated", make_pod(requests={"cpu": "1", "memory": "2Gi"}), make_node(),
                 [make_pod("a", requests={"cpu": "2", "memory": "2Gi"})], 37, id="least-with-pods"),
    # no requests: 100m / 200Mi defaults -> cpu 97 (3900*100/4000), memory (8192-200)*100/8192 = 97
    pytest.param("LeastAllocated", make_pod(requests={}), make_node(), [], 97, id="least-non-zero-defaults"),
    pytest.param("LeastAllocated", make_pod(requests={"cpu": "8", "memory": "2Gi"}), make_node(), [], 37,
                 id="least-over-capacity-scores-zero-for-that-resource"),
    pytest.param("MostAllocated", make_pod(requests={"cpu": "1", "memory": "2Gi"}), make_node(), [], 25,
                 id="most-empty-node"),
    pytest.param("MostAllocated", make_pod(requests={"cpu": "8", "memory": "2Gi"}), make_node(), [], 62,
                 id="most-capped-at-capacity"),
])
def test_score_strategies(strategy, pod, node, existing, want):
    plugin = Fit({"scoringStrategy": {"type": strategy,
                                      "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]}})
    assert score(plugin, pod, node_info(node, *existing)) == want


def test_score_weights_and_extended_resources():
    plugin = Fit({"scoringStrategy": {"type": "LeastAllocated", "resources": [
        {"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}, {"name": "example.com/foo", "weight": 2}]}})
    node = make_node(extra={"example.com/foo": "4"})
    # cpu 75*3, memory 75*1, foo not requested -> not scored: (225+75)/4 = 75
    assert score(plugin, make_pod(requests={"cpu": "1", "memory": "2Gi"}), node_info(node)) == 75
    # foo 3 of 4 -> 25 * 2: (225+75+50)/6 = 58
    assert score(plugin, make_pod(requests={"cpu": "1", "memory": "2Gi", "example.com/foo": "3"}),
                 node_info(node)) == 58


def test_requested_to_capacity_ratio():
    shape = [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]   # bin packing
    plugin = Fit({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                                      "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}],
                                      "requestedToCapacityRatio": {"shape": shape}}})
    # cpu 25% -> 25, memory 25% -> 25
    assert score(plugin, make_pod(requests={"cpu": "1", "memory": "2Gi"}), node_info(make_node())) == 25
    spread = [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]
    plugin = Fit({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                                      "requestedToCapacityRatio": {"shape": spread}}})
    assert score(plugin, make_pod(requests={"cpu": "1", "memory": "2Gi"}), node_info(make_node())) == 75


@pytest.mark.parametrize("p,want", [
    pytest.param(0, 0, id="first-point"), pytest.param(25, 50, id="rising"), pytest.param(50, 100, id="peak"),
    pytest.param(75, 50, id="falling"), pytest.param(120, 0, id="beyond-last-point"),
])
def test_broken_linear_function(p, want):
    assert broken_linear_function([(0, 0), (50, 100), (100, 0)])(p) == want


def test_broken_linear_function_truncates_toward_zero_as_go():
    # 100 + (-100 * 1) / 70 = 100 - 1.43: Go's integer division gives 99, floor division 98
    assert broken_linear_function([(0, 0), (30, 100), (100, 0)])(31) == 99


@pytest.mark.parametrize("args", [
    pytest.param({"scoringStrategy": {"type": "Nope"}}, id="unknown-strategy"),
    pytest.param({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}, id="ratio-without-shape"),
])
def test_bad_args(args):
    with pytest.raises(ValueError):
        Fit(args)


# -- queueing hints ---------------------------------------------------------------------------

def hints():
    pod_ev, node_ev = fit().events_to_register()
    return pod_ev.hint, node_ev.hint


@pytest.mark.parametrize("old,new,want", [
    pytest.param(make_pod("a", node_name="n1"), None, QueueingHint.QUEUE, id="bound-pod-deleted"),
    pytest.param(make_pod("a"), None, QueueingHint.QUEUE_SKIP, id="unbound-pod-deleted"),
])
def test_pod_hint(old, new, want):
    assert hints()[0](make_pod(requests={"cpu": "1"}), old, new) is want


@pytest.mark.parametrize("old,new,want", [
    pytest.param(None, make_node(cpu="4"), QueueingHint.QUEUE, id="big-node-added"),
    pytest.param(None, make_node(cpu="1"), QueueingHint.QUEUE_SKIP, id="small-node-added"),
    pytest.param(make_node(cpu="1"), make_node(cpu="4"), QueueingHint.QUEUE, id="cpu-grew"),
    pytest.param(make_node(cpu="4", memory="8Gi"), make_node(cpu="4", memory="16Gi"), QueueingHint.QUEUE_SKIP,
                 id="unrequested-resource-grew"),
    pytest.param(make_node(cpu="4", pods="1"), make_node(cpu="4", pods="2"), QueueingHint.QUEUE, id="pods-grew"),
])
def test_node_hint(old, new, want):
    assert hints()[1](make_pod(requests={"cpu": "2"}), old, new) is want
