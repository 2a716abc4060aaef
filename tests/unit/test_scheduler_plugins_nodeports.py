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
from kubeling.scheduler.plugins.nodeports import NodePorts


def port_pod(name, *ports):
    return make_pod(name, containers=[container(ports=[
        {"containerPort": 80, "hostPort": hp, **({"protocol": proto} if proto else {}),
         **({"hostIP": ip} if ip else {})} for hp, proto, ip in ports])])


ERR = ["node(s) didn't have free ports for the requested pod ports"]


@pytest.mark.parametrize("pod,existing,want", [
    pytest.param(port_pod("p", (8080, "", "")), [], [], id="free"),
    pytest.param(port_pod("p", (8080, "", "")), [port_pod("a", (8080, "TCP", ""))], ERR, id="same-port"),
    pytest.param(port_pod("p", (8080, "UDP", "")), [port_pod("a", (8080, "TCP", ""))], [], id="other-protocol"),
    pytest.param(port_pod("p", (8080, "", "10.0.0.1")), [port_pod("a", (8080, "", "10.0.0.2"))], [],
                 id="different-host-ips"),
    pytest.param(port_pod("p", (8080, "", "10.0.0.1")), [port_pod("a", (8080, "", ""))], ERR,
                 id="wildcard-ip-taken"),
    pytest.param(port_pod("p", (8080, "", "")), [port_pod("a", (8080, "", "10.0.0.2"))], ERR,
                 id="wildcard-wanted-conflicts-with-any-ip"),
])
def test_filter(pod, existing, want):
    st = run_filter(NodePorts(), pod, node_info(make_node(), *existing))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE


def test_pod_without_host_ports_is_skipped():
    _, st = NodePorts().pre_filter(CycleState(), make_pod(), [])
    assert st.is_skip()


@pytest.mark.parametrize("deleted,want", [
    pytest.param(port_pod("a", (8080, "", "")), QueueingHint.QUEUE, id="freed-the-port"),
    pytest.param(port_pod("a", (9090, "", "")), QueueingHint.QUEUE_SKIP, id="freed-another-port"),
])
def test_pod_deleted_hint(deleted, want):
    deleted["spec"]["nodeName"] = "n1"
    pod_ev, _ = NodePorts().events_to_register()
    assert pod_ev.hint(port_pod("p", (8080, "", "")), deleted, None) is want
