import pytest
from scheduler_plugins_testing import make_node, make_pod, node_info, reasons

from kubeling.scheduler.framework.interface import Code, CycleState, QueueingHint
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.plugins.nodeunschedulable import NodeUnschedulable

UNSCHED = "node.kubernetes.io/unschedulable"


@pytest.mark.parametrize("tolerations,unschedulable,want", [
    pytest.param(None, False, [], id="schedulable"),
    pytest.param(None, True, ["node(s) were unschedulable"], id="cordoned"),
    pytest.param([{"key": UNSCHED, "operator": "Exists", "effect": "NoSchedule"}], True, [],
                 id="tolerates-unschedulable"),
    pytest.param([{"operator": "Exists"}], True, [], id="tolerates-everything"),
    pytest.param([{"key": UNSCHED, "operator": "Exists", "effect": "NoExecute"}], True,
                 ["node(s) were unschedulable"], id="wrong-effect"),
])
def test_filter(tolerations, unschedulable, want):
    pod = make_pod(tolerations=tolerations) if tolerations else make_pod()
    st = NodeUnschedulable().filter(CycleState(), pod, node_info(make_node(unschedulable=unschedulable)))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_filter_without_node():
    st = NodeUnschedulable().filter(CycleState(), make_pod(), NodeInfo())
    assert st.reasons == ["node(s) had unknown conditions"]


@pytest.mark.parametrize("old,new,want", [
    pytest.param(make_node(unschedulable=True), make_node(), QueueingHint.QUEUE, id="uncordoned"),
    pytest.param(make_node(), make_node(unschedulable=True), QueueingHint.QUEUE_SKIP, id="cordoned"),
    pytest.param(None, make_node(), QueueingHint.QUEUE, id="schedulable-node-added"),
    pytest.param(make_node(), make_node(labels={"a": "b"}), QueueingHint.QUEUE_SKIP, id="unrelated-update"),
])
def test_node_hint(old, new, want):
    node_ev, _ = NodeUnschedulable().events_to_register()
    assert node_ev.hint(make_pod(), old, new) is want


def test_pod_toleration_hint():
    _, pod_ev = NodeUnschedulable().events_to_register()
    tolerating = make_pod(tolerations=[{"key": UNSCHED, "operator": "Exists"}])
    assert pod_ev.hint(make_pod(), make_pod(), tolerating) is QueueingHint.QUEUE
    assert pod_ev.hint(make_pod(), make_pod(), make_pod(tolerations=[{"key": "x"}])) is QueueingHint.QUEUE_SKIP
    assert pod_ev.hint(make_pod(), make_pod("o"), make_pod("o", tolerations=[{"operator": "Exists"}])) \
        is QueueingHint.QUEUE_SKIP
