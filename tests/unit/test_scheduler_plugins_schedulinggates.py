import pytest

from kubeling.scheduler.framework.interface import Code, QueueingHint
from kubeling.scheduler.plugins.schedulinggates import SchedulingGates


def pod(*gates, uid="u1"):
    spec = {"containers": []}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    return {"metadata": {"name": "p", "uid": uid}, "spec": spec}


@pytest.mark.parametrize("p,want", [
    pytest.param(pod(), None, id="no-gates"),
    pytest.param(pod("foo"), "waiting for scheduling gates: [foo]", id="one-gate"),
    pytest.param(pod("foo", "bar"), "waiting for scheduling gates: [foo bar]", id="two-gates-go-slice-format"),
])
def test_pre_enqueue(p, want):
    st = SchedulingGates().pre_enqueue(p)
    if want is None:
        assert st is None
    else:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and st.reasons == [want]


@pytest.mark.parametrize("old,new,want", [
    pytest.param(pod("a", "b"), pod("a"), QueueingHint.QUEUE_SKIP, id="one-gate-left"),
    pytest.param(pod("a"), pod(), QueueingHint.QUEUE, id="last-gate-removed"),
    pytest.param(pod("a", uid="other"), pod(uid="other"), QueueingHint.QUEUE_SKIP, id="another-pod"),
])
def test_gates_eliminated_hint(old, new, want):
    (ev,) = SchedulingGates().events_to_register()
    assert ev.hint(pod("a"), old, new) is want
