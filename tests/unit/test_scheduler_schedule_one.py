"""The placement algorithm over fake nodes (percentageOfNodesToScore, rotation, FitError messages,
host selection, nominated node) and the Scheduler over a FakeClient (bind, events, condition,
requeue, binding failure)."""

from __future__ import annotations

import asyncio
import copy
import random

import pytest

from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.scheduler.framework.interface import (
    ActionType,
    ClusterEvent,
    ClusterEventWithHint,
    CycleState,
    EventResource,
    PluginSet,
    Status,
)
from kubeling.scheduler.framework.runtime import Framework
from kubeling.scheduler.framework.types import NodeInfo
from kubeling.scheduler.schedule_one import (
    Algorithm,
    Diagnosis,
    FitError,
    num_feasible_nodes_to_find,
)
from kubeling.scheduler.scheduler import Scheduler
from kubeling.scheduler.snapshot import Snapshot


def node(name: str, cpu: str = "2", **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "pods": "110"}}}


def pod(name: str, cpu: str = "1", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": f"u-{name}"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}], **spec},
            "status": {}}


class Fits:
    """A tiny NodeResourcesFit: CPU only, registers assigned-pod deletes and node adds."""

    NAME = "Fits"

    def __init__(self, args=None, handle=None):
        self.handle = handle
        self.filtered = []

    def filter(self, state, p, ni):
        self.filtered.append(ni.name)
        from kubeling.scheduler.framework.types import PodInfo
        want = PodInfo.of(p).requests.milli_cpu
        if ni.requested.milli_cpu + want > ni.allocatable.milli_cpu:
            return Status.unschedulable("Insufficient cpu")
        return None

    def events_to_register(self):
        return [ClusterEventWithHint(ClusterEvent(EventResource.ASSIGNED_POD, ActionType.DELETE)),
                ClusterEventWithHint(ClusterEvent(EventResource.NODE, ActionType.ADD))]


class Labelled:
    """Filter: only nodes labelled ok=yes; registers nothing, so no event moves its rejects."""

    NAME = "Labelled"

    def __init__(self, args=None, handle=None):
        pass

    def filter(self, state, p, ni):
        if (ni.node["metadata"].get("labels") or {}).get("ok") != "yes":
            return Status.unresolvable("node(s) didn't match Pod's node affinity/selector")
        return None

    def events_to_register(self):
        return []


class MostFree:
    NAME = "MostFree"

    def __init__(self, args=None, handle=None):
        pass

    def score(self, state, p, ni):
        free = ni.allocatable.milli_cpu - ni.requested.milli_cpu
        return max(0, min(100, free // 100)), None


class Binder:
    NAME = "Binder"

    def __init__(self, args=None, handle=None):
        self.handle = handle

    async def bind(self, state, p, node_name):
        meta = p["metadata"]
        try:
            await self.handle.client.create("", "v1", "pods", {"target": {"name": node_name}},
                                            namespace=meta["namespace"], name=meta["name"], subresource="binding")
        except Exception as e:  # noqa: BLE001 - the framework's Error status
            return Status.as_error(e)
        return None


REGISTRY = {"Fits": Fits, "Labelled": Labelled, "MostFree": MostFree, "Binder": Binder}


def plugins(*filters: str, score: bool = True) -> dict[str, PluginSet]:
    return {"filter": PluginSet(list(filters)), "score": PluginSet(["MostFree"] if score else [], {"MostFree": 1}),
            "bind": PluginSet(["Binder"])}


def snapshot(*nodes: dict, pods: dict | None = None) -> Snapshot:
    infos = []
    for n in nodes:
        ni = NodeInfo(n)
        for p in (pods or {}).get(n["metadata"]["name"], ()):
            ni.add_pod(p)
        infos.append(ni)
    return Snapshot(infos)


@pytest.mark.parametrize("pct,n,expected", [
    pytest.param(0, 50, 50, id="under-100-all"),
    pytest.param(0, 100, 100, id="100-nodes-50pct-min-100"),
    pytest.param(0, 1000, 420, id="1000-nodes-adaptive-42pct"),
    pytest.param(0, 5000, 500, id="5000-nodes-10pct"),
    pytest.param(0, 6000, 300, id="6000-nodes-floor-5pct"),
    pytest.param(10, 500, 100, id="10pct-of-500-min-100"),
    pytest.param(100, 5000, 5000, id="100pct"),
])
def test_num_feasible_nodes_to_find(pct, n, expected):
    assert num_feasible_nodes_to_find(pct, n) == expected


def test_fit_error_counts_and_sorts_reasons():
    d = Diagnosis(node_to_status={
        "cp": Status.unschedulable("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
        "a": Status.unschedulable("Insufficient cpu"), "b": Status.unschedulable("Insufficient cpu")})
    d.post_filter_msg = "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    assert str(FitError({}, 3, d)) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    pre = Diagnosis(node_to_status={"a": Status.unresolvable("x"), "b": Status.unresolvable("x")}, pre_filter_msg="x")
    assert str(FitError({}, 2, pre)) == "0/2 nodes are available: x."


def test_filter_stops_after_enough_nodes_and_rotates():
    fwk = Framework(REGISTRY, plugins("Fits", score=False))
    snap = snapshot(*(node(f"n{i:03}") for i in range(300)))
    algo = Algorithm(rng=random.Random(1))
    feasible, _ = algo.find_nodes_that_fit(fwk, CycleState(), pod("p"), snap)
    to_find = num_feasible_nodes_to_find(0, 300)
    assert len(feasible) == to_find == 144
    assert algo.next_start_node_index == 144
    feasible, _ = algo.find_nodes_that_fit(fwk, CycleState(), pod("p"), snap)
    assert feasible[0].name == "n144"


def test_schedule_pod_scores_and_ties_break_randomly():
    fwk = Framework(REGISTRY, plugins("Fits"))
    busy = [pod("x", cpu="1", nodeName="n1")]
    snap = snapshot(node("n1"), node("n2"), node("n3"), pods={"n1": busy})
    seen = {Algorithm(rng=random.Random(seed)).schedule_pod(fwk, CycleState(), pod("p"), snap).suggested_host
            for seed in range(30)}
    assert seen == {"n2", "n3"}   # n1 scores lower; the two free nodes tie


def test_fit_error_lists_every_rejected_node():
    fwk = Framework(REGISTRY, plugins("Labelled", "Fits"))
    snap = snapshot(node("n1", cpu="1", ok="yes"), node("n2"), node("n3"))
    with pytest.raises(FitError) as e:
        Algorithm().schedule_pod(fwk, CycleState(), pod("p", cpu="2"), snap)
    assert str(e.value) == ("0/3 nodes are available: 1 Insufficient cpu, "
                            "2 node(s) didn't match Pod's node affinity/selector.")
    assert e.value.diagnosis.unschedulable_plugins == {"Labelled", "Fits"}


def test_nominated_node_is_tried_first():
    fwk = Framework(REGISTRY, plugins("Fits"))
    snap = snapshot(*(node(f"n{i}") for i in range(5)))
    p = pod("p")
    p["status"]["nominatedNodeName"] = "n3"
    r = Algorithm().schedule_pod(fwk, CycleState(), p, snap)
    assert (r.suggested_host, r.evaluated_nodes) == ("n3", 1)
    assert fwk.plugins["Fits"].filtered == ["n3"]


# -- the Scheduler over a FakeClient ------------------------------------------------------------

def fake_cluster(*objs: dict, fail_binding: set | None = None) -> FakeClient:
    c = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}, *objs)
    res = c.tracker.resource("", "v1", "pods")

    def bind(action):
        if action.subresource != "binding":
            return None
        if action.name in (fail_binding or set()):
            fail_binding.discard(action.name)
            raise RuntimeError("connection reset")
        p = copy.deepcopy(c.tracker.get(res, action.namespace, action.name))
        p["spec"]["nodeName"] = action.obj["target"]["name"]
        c.tracker.update(res, p, action.namespace, None)
        return {"kind": "Status", "status": "Success"}
    c.prepend_reactor("create", "pods", bind)
    return c


async def start(c: FakeClient, points: dict[str, PluginSet]):
    factory = SharedInformerFactory(c)
    s = Scheduler(c, factory, registry=REGISTRY, default_plugins=points, default_args={}, rng=random.Random(0))
    s.queue.initial_backoff = s.queue.max_backoff = 0.01   # backoff itself is test_scheduler_queue's
    stop = asyncio.Event()
    factory.start(stop)
    task = asyncio.create_task(s.run(stop))
    await s.wait_for_caches(stop)

    async def finish():
        stop.set()
        await task
        await factory.shutdown()
    return s, finish


async def settle(s: Scheduler, cond, what: str):
    for _ in range(400):
        await asyncio.sleep(0.005)
        s.queue.flush_backoff_completed()   # the queue's own flush runs once a second
        await s.drain()
        await s.recorder.flush()
        if cond():
            return
    raise AssertionError(f"timed out: {what}")


def stored(c: FakeClient, name: str) -> dict:
    return c.object("", "v1", "pods", name, "default")


def events(c: FakeClient, name: str) -> list[tuple[str, str, str]]:
    items = c.tracker.list(c.tracker.resource("", "v1", "events"), "default", None, None)
    return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def test_scheduler_binds_records_and_reports_unschedulable():
    async def main():
        c = fake_cluster(node("n1"), node("n2", cpu="1"))
        s, finish = await start(c, plugins("Fits"))
        try:
            await c.create("", "v1", "pods", pod("a"))
            await c.create("", "v1", "pods", pod("big", cpu="8"))
            await settle(s, lambda: stored(c, "a")["spec"].get("nodeName") and events(c, "big"), "a bound")
            host = stored(c, "a")["spec"]["nodeName"]
            assert ("Normal", "Scheduled", f"Successfully assigned default/a to {host}") in events(c, "a")
            msg = "0/2 nodes are available: 2 Insufficient cpu."
            assert events(c, "big") == [("Warning", "FailedScheduling", msg)]
            await settle(s, lambda: (stored(c, "big").get("status") or {}).get("conditions"), "the condition")
            cond = stored(c, "big")["status"]["conditions"][0]
            assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
                "PodScheduled", "False", "Unschedulable", msg)
            assert s.queue.where(stored(c, "big")) == "unschedulable"
            assert s.cache.get_pod(stored(c, "a")) is not None and not s.cache.is_assumed_pod(stored(c, "a"))
        finally:
            await finish()
    asyncio.run(main())


def test_unschedulable_pod_moves_on_a_registered_event_only():
    async def main():
        c = fake_cluster(node("n1", cpu="1", ok="yes"))
        s, finish = await start(c, plugins("Labelled", "Fits", score=False))

        def parked(attempts: int):
            uid = stored(c, "fits-later")["metadata"]["uid"]
            q = s.queue.unschedulable.get(uid)
            return q if q is not None and q.attempts == attempts else None
        try:
            await c.create("", "v1", "pods", pod("holder", cpu="1", nodeName="n1"))
            await c.create("", "v1", "pods", pod("fits-later"))
            await settle(s, lambda: parked(1), "parked")
            assert parked(1).unschedulable_plugins == {"Fits"}
            await c.create("", "v1", "nodes", node("n2", cpu="4"))   # NodeAdd: Fits registered it
            await settle(s, lambda: parked(2), "retried once and parked again")
            assert parked(2).unschedulable_plugins == {"Labelled", "Fits"}
            # n2 now passes Labelled, but Labelled registered no event: the pod stays parked
            await c.patch("", "v1", "nodes", "n2", {"metadata": {"labels": {"ok": "yes"}}})
            for _ in range(20):
                await asyncio.sleep(0.005)
                s.queue.flush_backoff_completed()
            assert parked(2) and not stored(c, "fits-later")["spec"].get("nodeName")
            await c.delete("", "v1", "pods", "holder", namespace="default")   # AssignedPodDelete: Fits
            await settle(s, lambda: stored(c, "fits-later")["spec"].get("nodeName"), "bound after the delete")
        finally:
            await finish()
    asyncio.run(main())


def test_binding_failure_forgets_the_assumed_pod_and_retries():
    async def main():
        c = fake_cluster(node("n1"), fail_binding={"a"})
        s, finish = await start(c, plugins("Fits"))
        try:
            await c.create("", "v1", "pods", pod("a"))
            await settle(s, lambda: any(r == "FailedScheduling" for _, r, _ in events(c, "a")), "the failure")
            failed = [m for _, r, m in events(c, "a") if r == "FailedScheduling"]
            assert failed[0].startswith("binding rejected: ") and "connection reset" in failed[0]
            await settle(s, lambda: stored(c, "a")["spec"].get("nodeName") == "n1", "bound on retry")
            cond = stored(c, "a")["status"]["conditions"][0]
            assert cond["reason"] == "SchedulerError"
            # the failed assume was forgotten: the pod is counted once, not twice
            await settle(s, lambda: not s.cache.is_assumed_pod(stored(c, "a")), "confirmed")
            assert s.cache.nodes["n1"].requested.milli_cpu == 1000
        finally:
            await finish()
    asyncio.run(main())


def test_terminal_and_other_schedulers_pods_are_ignored_and_finished_pods_free_room():
    async def main():
        c = fake_cluster(node("n1", cpu="1"))
        s, finish = await start(c, plugins("Fits"))
        try:
            await c.create("", "v1", "pods", pod("other", schedulerName="other"))
            await c.create("", "v1", "pods", pod("running", cpu="1", nodeName="n1"))
            await c.create("", "v1", "pods", pod("waiting", cpu="1"))
            await settle(s, lambda: s.queue.where(stored(c, "waiting")) == "unschedulable", "waiting parked")
            assert s.queue.where(stored(c, "other")) is None
            done = copy.deepcopy(stored(c, "running"))
            done["status"]["phase"] = "Succeeded"
            await c.update_status("", "v1", "pods", done)
            await settle(s, lambda: stored(c, "waiting")["spec"].get("nodeName") == "n1", "waiting bound")
            assert not stored(c, "other")["spec"].get("nodeName") and events(c, "other") == []
        finally:
            await finish()
    asyncio.run(main())


def test_plugin_error_is_a_scheduler_error_not_a_crash():
    class Broken:
        NAME = "Broken"

        def __init__(self, args=None, handle=None):
            pass

        def filter(self, state, p, ni):
            raise KeyError("oops")

    async def main():
        REGISTRY["Broken"] = Broken
        try:
            c = fake_cluster(node("n1"))
            s, finish = await start(c, plugins("Broken"))
            s.queue.initial_backoff = s.queue.max_backoff = 60   # it must still be backing off below
            try:
                await c.create("", "v1", "pods", pod("a"))
                await settle(s, lambda: events(c, "a"), "the event")
                (typ, reason, msg), = events(c, "a")
                assert (typ, reason) == ("Warning", "FailedScheduling") and "Broken" in msg
                assert s.queue.where(stored(c, "a")) == "backoff"
            finally:
                await finish()
        finally:
            del REGISTRY["Broken"]
    asyncio.run(main())
