import pytest
from scheduler_plugins_testing import make_node, make_pod, node_info

from kubeling.scheduler.framework.interface import CycleState
from kubeling.scheduler.plugins.balancedallocation import (
    BalancedAllocation,
    balanced_resource_score,
)


def score(pl, pod, ni):
    state = CycleState()
    assert pl.pre_score(state, pod, [ni]) is None
    s, st = pl.score(state, pod, ni)
    assert st is None
    return s


@pytest.mark.parametrize("pod,existing,want", [
    # cpu 1/4 = .25, memory 2/8 = .25: perfectly balanced
    pytest.param(make_pod(requests={"cpu": "1", "memory": "2Gi"}), [], 100, id="balanced"),
    # cpu 2/4 = .5, memory 1/8 = .125: std .1875 -> 81
    pytest.param(make_pod(requests={"cpu": "2", "memory": "1Gi"}), [], 81, id="unbalanced"),
    # node already has cpu 1 (.25+.25=.5), memory 0 + 1Gi (.125)
    pytest.param(make_pod(requests={"cpu": "1", "memory": "1Gi"}), [make_pod("a", requests={"cpu": "1"})], 81,
                 id="counts-requests-on-node"),
    # requests as written: the cpu-only pod on the node adds no 200Mi default
    pytest.param(make_pod(requests={"cpu": "1", "memory": "2Gi"}), [make_pod("a", requests={"cpu": "1"})], 87,
                 id="no-non-zero-defaults"),
    # cpu 8/4 capped at 1, memory .25: std .375 -> 62
    pytest.param(make_pod(requests={"cpu": "8", "memory": "2Gi"}), [], 62, id="fraction-capped-at-one"),
])
def test_score(pod, existing, want):
    assert score(BalancedAllocation(), pod, node_info(make_node(cpu="4", memory="8Gi"), *existing)) == want


def test_best_effort_pod_skipped():
    assert BalancedAllocation().pre_score(CycleState(), make_pod(requests={}), [node_info(make_node())]).is_skip()


@pytest.mark.parametrize("requested,allocatable,want", [
    pytest.param([1, 1, 1], [2, 2, 2], 100, id="three-equal"),
    pytest.param([0, 1, 2], [2, 2, 2], 59, id="three-spread"),    # fractions 0,.5,1: std .408
    pytest.param([1, 5], [0, 10], 100, id="zero-allocatable-ignored"),
])
def test_balanced_resource_score(requested, allocatable, want):
    assert balanced_resource_score(requested, allocatable) == want


def test_custom_resources():
    pl = BalancedAllocation({"resources": [{"name": "cpu", "weight": 1}, {"name": "example.com/gpu", "weight": 1}]})
    node = make_node(cpu="4", extra={"example.com/gpu": "4"})
    assert score(pl, make_pod(requests={"cpu": "2", "example.com/gpu": "2"}), node_info(node)) == 100
    assert score(pl, make_pod(requests={"cpu": "2", "example.com/gpu": "4"}), node_info(node)) == 75
