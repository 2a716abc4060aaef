import pytest
from scheduler_plugins_testing import make_node, make_pod, node_info, reasons

from kubeling.scheduler.framework.interface import Code, CycleState, QueueingHint
from kubeling.scheduler.plugins.nodename import NodeName


@pytest.mark.parametrize("pod_node,node,want", [
    pytest.param("", "n1", [], id="no-node-name"),
    pytest.param("n1", "n1", [], id="same-node"),
    pytest.param("n2", "n1", ["node(s) didn't match the requested node name"], id="other-node"),
])
def test_filter(pod_node, node, want):
    st = NodeName().filter(CycleState(), make_pod(node_name=pod_node), node_info(make_node(node)))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize("pod_node,new,want", [
    pytest.param("n2", make_node("n2"), QueueingHint.QUEUE, id="the-named-node-added"),
    pytest.param("n2", make_node("n3"), QueueingHint.QUEUE_SKIP, id="another-node-added"),
])
def test_node_added_hint(pod_node, new, want):
    (ev,) = NodeName().events_to_register()
    assert ev.hint(make_pod(node_name=pod_node), None, new) is want
