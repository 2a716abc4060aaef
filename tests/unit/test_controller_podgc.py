"""Pod GC against the FakeClient: terminated beyond the threshold, orphaned, terminating pods."""

import asyncio
import datetime as dt

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.client.clock import FakeClock
from kubeling.controllers.podgc import GC_PERIOD, QUARANTINE, PodGCController

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def pod(name, phase="Running", node="n1", minute=0, deleting=False, reason=None):
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}",
            "creationTimestamp": (START + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if deleting:
        meta |= {"deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["example.com/hold"]}
    status = {"phase": phase} | ({"reason": reason} if reason else {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}, "status": status}


def node(name, ready=True, taints=()):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"taints": list(taints)},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


async def run(objs, threshold, steps=(0,), reactor=None):
    h = ControllerHarness(PodGCController, NS, *objs, workers=1, clock=FakeClock(wall=START),
                          terminated_pod_gc_threshold=threshold)
    if reactor:
        h.client.prepend_reactor(*reactor)
    async with h:
        for s in steps:
            await h.step(s)
    return h.client


def deleted(client):
    return [a.name for a in client.filter_actions("delete", "pods")]


@pytest.mark.parametrize("objs, threshold, want", [
    pytest.param([pod(f"p{i}", "Succeeded", minute=i) for i in range(5)], 3, ["p0", "p1"], id="oldest-first"),
    pytest.param([pod("old", "Succeeded", minute=0), pod("evicted", "Failed", minute=9, reason="Evicted"),
                  pod("new", "Failed", minute=5)], 2, ["evicted"], id="evicted-first"),
    pytest.param([pod(f"p{i}", "Succeeded", minute=i) for i in range(5)], 0, [], id="zero-disables"),
    pytest.param([pod("r1"), pod("r2"), pod("s", "Succeeded")], 0, [], id="running-pods-never"),
])
def test_terminated_beyond_threshold(objs, threshold, want):
    client = asyncio.run(run([node("n1"), *objs], threshold))
    assert sorted(deleted(client)) == sorted(want)
    for a in client.filter_actions("delete", "pods"):
        assert a.options["grace_period_seconds"] == 0


def test_orphaned_pods_after_quarantine_get_disruption_target_and_go():
    async def main():
        objs = [node("n1"), pod("kept"), pod("orphan", node="gone"), pod("done", "Succeeded", node="gone")]
        client = await run(objs, 100, steps=(0, QUARANTINE - 1))
        assert deleted(client) == []
        client = await run(objs, 100, steps=(0, GC_PERIOD, QUARANTINE + 1))
        assert sorted(deleted(client)) == ["done", "orphan"]
        (patch,) = [a for a in client.filter_actions("patch", "pods") if a.name == "orphan"]
        assert patch.subresource == "status"
        assert patch.obj["status"]["phase"] == "Failed"
        (cond,) = patch.obj["status"]["conditions"]
        assert (cond["type"], cond["reason"], cond["message"]) == ("DisruptionTarget", "DeletionByPodGC",
                                                                   "PodGC: node no longer exists")

    asyncio.run(main())


@pytest.mark.parametrize("objs, want", [
    pytest.param([node("n1", ready=False, taints=[{"key": "node.kubernetes.io/out-of-service",
                                                   "effect": "NoExecute"}]), pod("t", deleting=True)], ["t"],
                 id="out-of-service-node"),
    pytest.param([node("n1", ready=False), pod("t", deleting=True)], [], id="not-ready-without-taint-kept"),
    pytest.param([node("n1"), pod("u", node="", deleting=True)], ["u"], id="unscheduled-terminating"),
])
def test_terminating(objs, want):
    client = asyncio.run(run(objs, 100))
    assert deleted(client) == want


def test_one_failing_delete_does_not_stop_the_others():
    def refuse(action):
        if action.name == "p0":
            from kubeling.api.errors import StatusError
            raise StatusError(500, "InternalError", "boom")

    objs = [node("n1"), *[pod(f"p{i}", "Succeeded", minute=i) for i in range(4)]]
    client = asyncio.run(run(objs, 1, reactor=("delete", "pods", refuse)))
    assert sorted(deleted(client)) == ["p0", "p1", "p2"]
    assert client.object("", "v1", "pods", "p1", "default") is None
    assert client.object("", "v1", "pods", "p0", "default") is not None
