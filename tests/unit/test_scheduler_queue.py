"""SchedulingQueue: ordering, backoff, unschedulable pods moved by events with hints, in-flight
events, gated pods, nominated pods."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.client.clock import FakeClock
from kubeling.scheduler.framework.interface import (
    EVENT_UNSCHEDULABLE_TIMEOUT,
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    EventResource,
    QueueingHint,
    Status,
)
from kubeling.scheduler.framework.types import PodInfo
from kubeling.scheduler.queue import SchedulingQueue

NODE_ADD = ClusterEvent(EventResource.NODE, ActionType.ADD, "NodeAdd")
NODE_TAINT = ClusterEvent(EventResource.NODE, ActionType.UPDATE_NODE_TAINT, "NodeUpdate")
POD_DELETE = ClusterEvent(EventResource.ASSIGNED_POD, ActionType.DELETE, "AssignedPodDelete")


def pod(name: str, priority: int = 0, nominated: str = "", gated: bool = False) -> dict:
    p = {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
         "spec": {"priority": priority, "containers": [{"name": "c"}]}, "status": {}}
    if nominated:
        p["status"]["nominatedNodeName"] = nominated
    if gated:
        p["spec"]["schedulingGates"] = [{"name": "g"}]
    return p


def less(a, b) -> bool:
    pa, pb = a.pod["spec"]["priority"], b.pod["spec"]["priority"]
    return pa > pb or (pa == pb and a.timestamp < b.timestamp)


def gates(p: dict) -> Status | None:
    if p["spec"].get("schedulingGates"):
        s = Status.unresolvable("waiting for scheduling gates")
        s.plugin = "SchedulingGates"
        return s
    return None


def queue(clock: FakeClock, hints: dict | None = None) -> SchedulingQueue:
    return SchedulingQueue(less, clock=clock, pre_enqueue=gates, hints=lambda p: hints or {})


def pop(q: SchedulingQueue):
    return asyncio.run(asyncio.wait_for(q.pop(), 1))


def fail(q: SchedulingQueue, qpi, *plugins: str) -> None:
    qpi.unschedulable_plugins = set(plugins)
    q.add_unschedulable_if_not_present(qpi)
    q.done(qpi.pod)


def test_pops_by_priority_then_arrival():
    clock = FakeClock()
    q = queue(clock)
    q.add(pod("low", 0))
    clock.step(1)
    q.add(pod("high", 10))
    clock.step(1)
    q.add(pod("low2", 0))
    assert [pop(q).pod["metadata"]["name"] for _ in range(3)] == ["high", "low", "low2"]


def test_pop_waits_for_a_pod_and_close_ends_it():
    async def main():
        q = queue(FakeClock())
        waiter = asyncio.create_task(q.pop())
        await asyncio.sleep(0)
        assert not waiter.done()
        q.add(pod("a"))
        assert (await asyncio.wait_for(waiter, 1)).pod["metadata"]["name"] == "a"
        waiter = asyncio.create_task(q.pop())
        await asyncio.sleep(0)
        q.close()
        assert await asyncio.wait_for(waiter, 1) is None
    asyncio.run(main())


@pytest.mark.parametrize("attempts,expected", [
    pytest.param(1, 1.0, id="first-failure-1s"),
    pytest.param(2, 2.0, id="second-2s"),
    pytest.param(4, 8.0, id="fourth-8s"),
    pytest.param(5, 10.0, id="capped-at-10s"),
    pytest.param(30, 10.0, id="many-still-10s"),
])
def test_backoff_doubles_from_one_second_to_ten(attempts, expected):
    q = queue(FakeClock())
    q.add(pod("a"))
    qpi = pop(q)
    qpi.attempts = attempts
    assert q.backoff_duration(qpi) == expected


def test_error_goes_to_backoff_then_active_when_it_expires():
    clock = FakeClock()
    q = queue(clock)
    q.add(pod("a"))
    qpi = pop(q)
    fail(q, qpi)   # no plugin rejected it: an error
    assert q.where(qpi.pod) == "backoff"
    clock.step(0.9)
    q.flush_backoff_completed()
    assert q.where(qpi.pod) == "backoff"
    clock.step(0.2)
    q.flush_backoff_completed()
    assert q.where(qpi.pod) == "active"
    assert pop(q).attempts == 2


def test_event_moves_only_pods_whose_rejecting_plugin_registered_it():
    clock = FakeClock()
    hints = {"Fit": [ClusterEventWithHint(NODE_ADD)],
             "TaintToleration": [ClusterEventWithHint(NODE_TAINT)]}
    q = queue(clock, hints)
    q.add(pod("fit"))
    q.add(pod("taint"))
    fail(q, pop(q), "Fit")
    fail(q, pop(q), "TaintToleration")
    assert q.where(pod("fit")) == q.where(pod("taint")) == "unschedulable"
    clock.step(20)   # past any backoff: moved pods go straight to activeQ
    assert q.move_all_to_active_or_backoff_queue(POD_DELETE) == 0
    assert q.move_all_to_active_or_backoff_queue(NODE_ADD, None, {}) == 1
    assert q.where(pod("fit")) == "active"
    assert q.where(pod("taint")) == "unschedulable"


@pytest.mark.parametrize("answer,where", [
    pytest.param(QueueingHint.QUEUE, "active", id="queue"),
    pytest.param(QueueingHint.QUEUE_SKIP, "unschedulable", id="skip"),
    pytest.param(RuntimeError("bug"), "active", id="hint-raises-counts-as-queue"),
])
def test_queueing_hint_decides(answer, where):
    clock = FakeClock()
    seen = []

    def hint(p, old, new):
        seen.append((p["metadata"]["name"], old, new))
        if isinstance(answer, Exception):
            raise answer
        return answer
    q = queue(clock, {"Fit": [ClusterEventWithHint(NODE_ADD, hint)]})
    q.add(pod("a"))
    fail(q, pop(q), "Fit")
    clock.step(20)
    q.move_all_to_active_or_backoff_queue(NODE_ADD, None, {"new": 1})
    assert seen == [("a", None, {"new": 1})]
    assert q.where(pod("a")) == where


def test_moved_pod_still_backing_off_goes_to_backoff():
    clock = FakeClock()
    q = queue(clock, {"Fit": [ClusterEventWithHint(NODE_ADD)]})
    q.add(pod("a"))
    fail(q, pop(q), "Fit")
    q.move_all_to_active_or_backoff_queue(NODE_ADD)
    assert q.where(pod("a")) == "backoff"


def test_event_while_in_flight_requeues_instead_of_parking():
    clock = FakeClock()
    q = queue(clock, {"Fit": [ClusterEventWithHint(NODE_ADD)]})
    q.add(pod("a"))
    qpi = pop(q)
    q.move_all_to_active_or_backoff_queue(NODE_ADD, None, {})   # while "a" is being scheduled
    fail(q, qpi, "Fit")
    assert q.where(pod("a")) == "backoff"   # requeued (backing off from this failure), not parked
    clock.step(1.5)
    q.flush_backoff_completed()
    # without such an event it is parked
    qpi = pop(q)
    fail(q, qpi, "Fit")
    assert q.where(pod("a")) == "unschedulable"


def test_left_over_unschedulable_pods_are_flushed_after_five_minutes():
    clock = FakeClock()
    q = queue(clock)
    q.add(pod("a"))
    fail(q, pop(q), "Fit")
    clock.step(299)
    q.flush_unschedulable_left_over()
    assert q.where(pod("a")) == "unschedulable"
    clock.step(2)
    q.flush_unschedulable_left_over()
    assert q.where(pod("a")) == "active"
    assert EVENT_UNSCHEDULABLE_TIMEOUT.is_wildcard()


def test_gated_pod_waits_until_its_gates_are_removed():
    clock = FakeClock()
    q = queue(clock)
    gated = pod("g", gated=True)
    q.add(gated)
    assert q.where(gated) == "unschedulable"
    q.move_all_to_active_or_backoff_queue(NODE_ADD)   # still gated: stays
    assert q.where(gated) == "unschedulable"
    ungated = pod("g")
    q.update(gated, ungated)
    assert q.where(ungated) == "active"
    assert pop(q).attempts == 1


def test_update_of_unschedulable_pod_spec_requeues_it_status_only_does_not():
    clock = FakeClock()
    q = queue(clock)
    old = pod("a")
    q.add(old)
    fail(q, pop(q), "TaintToleration")
    clock.step(20)
    status_only = pod("a")
    status_only["status"]["conditions"] = [{"type": "PodScheduled", "status": "False"}]
    q.update(old, status_only)
    assert q.where(old) == "unschedulable"
    tolerating = pod("a")
    tolerating["spec"]["tolerations"] = [{"operator": "Exists"}]
    q.update(status_only, tolerating)
    assert q.where(old) == "active"


def test_delete_removes_from_every_sub_queue():
    clock = FakeClock()
    q = queue(clock)
    for n in ("a", "b", "c"):
        q.add(pod(n))
    fail(q, pop(q), "Fit")       # a -> unschedulable
    fail(q, pop(q))              # b -> backoff
    for n in ("a", "b", "c"):
        q.delete(pod(n))
    assert len(q) == 0
    clock.step(20)
    q.flush_backoff_completed()
    assert len(q) == 0


def test_nominated_pods_by_node():
    q = queue(FakeClock())
    q.add(pod("a", nominated="n1"))
    q.add(pod("b"))
    assert [pi.pod["metadata"]["name"] for pi in q.nominated_pods_for_node("n1")] == ["a"]
    q.add_nominated_pod(PodInfo.of(pod("b")), "n1")
    q.add_nominated_pod(PodInfo.of(pod("a")), "n2")   # a re-nominated elsewhere
    assert [pi.pod["metadata"]["name"] for pi in q.nominated_pods_for_node("n1")] == ["b"]
    assert [pi.pod["metadata"]["name"] for pi in q.nominated_pods_for_node("n2")] == ["a"]
    q.delete(pod("a"))
    q.delete_nominated_pod_if_exists(pod("b"))
    assert q.nominated_pods_for_node("n1") == q.nominated_pods_for_node("n2") == []


def test_events_before_a_pod_was_popped_do_not_count_for_it():
    clock = FakeClock()
    q = queue(clock, {"Fit": [ClusterEventWithHint(NODE_ADD)]})
    q.add(pod("a"))
    q.add(pod("b"))
    first = pop(q)
    q.move_all_to_active_or_backoff_queue(NODE_ADD)   # while only "a" is in flight
    second = pop(q)
    fail(q, second, "Fit")
    assert q.where(second.pod) == "unschedulable"
    fail(q, first, "Fit")
    assert q.where(first.pod) == "backoff"
    assert q._events == []   # nothing in flight: the log is gone


def test_event_log_overflow_requeues_in_flight_pods():
    from kubeling.scheduler.queue import _MAX_IN_FLIGHT_EVENTS
    clock = FakeClock()
    q = queue(clock, {"Fit": [ClusterEventWithHint(NODE_ADD)]})
    q.add(pod("a"))
    qpi = pop(q)
    for _ in range(_MAX_IN_FLIGHT_EVENTS + 1):
        q.move_all_to_active_or_backoff_queue(POD_DELETE)   # Fit did not register it, but too many to keep
    assert len(q._events) <= _MAX_IN_FLIGHT_EVENTS
    fail(q, qpi, "Fit")
    assert q.where(qpi.pod) == "backoff"
