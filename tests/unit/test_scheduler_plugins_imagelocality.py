import pytest
from scheduler_plugins_testing import container, make_node, make_pod, node_info

from kubeling.scheduler.framework.interface import CycleState
from kubeling.scheduler.framework.types import ImageStateSummary
from kubeling.scheduler.plugins.imagelocality import (
    MB,
    ImageLocality,
    node_image_sizes,
    normalized_image_name,
)


class _Lister:
    def __init__(self, nodes):
        self.nodes = nodes

    def list(self):
        return self.nodes


class _Handle:
    def __init__(self, nodes):
        self.lister = _Lister(nodes)

    def snapshot_shared_lister(self):
        return self.lister


def with_images(name, states):
    ni = node_info(make_node(name))
    ni.image_states = {k: ImageStateSummary(size, n) for k, (size, n) in states.items()}
    return ni


@pytest.mark.parametrize("name,want", [
    pytest.param("nginx", "nginx:latest", id="untagged"),
    pytest.param("nginx:1.27", "nginx:1.27", id="tagged"),
    pytest.param("localhost:5000/app", "localhost:5000/app:latest", id="registry-port-is-not-a-tag"),
    pytest.param("localhost:5000/app:v1", "localhost:5000/app:v1", id="registry-port-and-tag"),
])
def test_normalized_image_name(name, want):
    assert normalized_image_name(name) == want


def test_node_image_sizes():
    node = make_node(images=[{"names": ["docker.io/library/busybox:1.36", "busybox:1.36"], "sizeBytes": 4 * MB}])
    assert node_image_sizes(node) == {"docker.io/library/busybox:1.36": 4 * MB, "busybox:1.36": 4 * MB}


def score(pod, target, all_nodes):
    pl = ImageLocality(handle=_Handle(all_nodes))
    state = CycleState()
    assert pl.pre_score(state, pod, [target]) is None
    s, st = pl.score(state, pod, target)
    assert st is None
    return s


@pytest.mark.parametrize("states,other_nodes,want", [
    pytest.param({}, 0, 0, id="no-image"),
    # 300MB on 1 of 1 nodes: (300-23)*100/(1000-23) = 28
    pytest.param({"big:1": (300 * MB, 1)}, 0, 28, id="big-image"),
    # the same image on 1 of 2 nodes counts half: 150MB -> 12
    pytest.param({"big:1": (300 * MB, 1)}, 1, 12, id="spread-scaled"),
    pytest.param({"small:1": (10 * MB, 1)}, 0, 0, id="below-min-threshold"),
    pytest.param({"big:1": (2000 * MB, 1)}, 0, 100, id="capped-at-max"),
])
def test_score_one_container(states, other_nodes, want):
    target = with_images("n0", states)
    nodes = [target] + [node_info(make_node(f"o{i}")) for i in range(other_nodes)]
    pod = make_pod(containers=[container(image="big:1" if "big:1" in states else "small:1")])
    assert score(pod, target, nodes) == want


def test_threshold_scales_with_containers():
    target = with_images("n0", {"a:latest": (600 * MB, 1), "b:1": (600 * MB, 1)})
    pod = make_pod(containers=[container("a", image="a"), container("b", image="b:1")])
    # 1200MB over max 2000MB: (1200-23)*100/(2000-23) = 59
    assert score(pod, target, [target]) == 59
