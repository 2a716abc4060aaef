"""TTL-after-finished against the FakeClient: finished Jobs go ttlSecondsAfterFinished later."""

import asyncio
import datetime as dt

import pytest

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.ttlafterfinished import TTLAfterFinishedController

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def job(name, ttl=None, finished_at=START, kind="Complete", time=True):
    cond = {"type": kind, "status": "True"}
    if time and finished_at is not None:
        cond["lastTransitionTime"] = finished_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"conditions": [cond]} if finished_at is not None else {}
    spec = {"template": {}} | ({"ttlSecondsAfterFinished": ttl} if ttl is not None else {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default",
                                                                  "uid": f"uid-{name}"},
            "spec": spec, "status": status}


async def settle(ctl):
    idle = 0
    for _ in range(2000):
        await asyncio.sleep(0)
        busy = len(ctl.queue) or ctl.queue.processing() or any(r.pending() for _, r in ctl.registrations)
        idle = 0 if busy else idle + 1
        if idle > 30:
            return


def names(client):
    """Jobs not being deleted (foreground deletion leaves the Job until the GC removed its pods)."""
    res = client.tracker.resource("batch", "v1", "jobs")
    return sorted(j["metadata"]["name"] for j in client.tracker.list(res, "default", None, None)
                  if not j["metadata"].get("deletionTimestamp"))


@pytest.mark.parametrize("jobs, steps, left", [
    pytest.param([job("a", ttl=0)], [0], [], id="zero-ttl-goes-at-once"),
    pytest.param([job("a", ttl=100)], [99], ["a"], id="not-yet"),
    pytest.param([job("a", ttl=100)], [99, 1.5], [], id="expires-on-time"),
    pytest.param([job("a", ttl=100, kind="Failed")], [101], [], id="failed-jobs-too"),
    pytest.param([job("a")], [1000], ["a"], id="no-ttl-kept"),
    pytest.param([job("a", ttl=10, finished_at=None)], [1000], ["a"], id="unfinished-kept"),
    pytest.param([job("a", ttl=10, finished_at=START + dt.timedelta(seconds=50))], [59], ["a"],
                 id="finished-in-the-future-waits"),
    pytest.param([job("bad", ttl=10, time=False), job("good", ttl=10)], [11], ["bad"],
                 id="a-job-without-finish-time-does-not-stop-the-others"),
])
def test_ttl_after_finished(jobs, steps, left):
    async def main():
        clock = FakeClock(wall=START)
        client = FakeClient(NS, *jobs, clock=clock)
        factory = SharedInformerFactory(client, clock=clock)
        ctl = TTLAfterFinishedController(ControllerContext(client, factory, clock=clock))
        stop = asyncio.Event()
        factory.start(stop)
        task = asyncio.create_task(ctl.run(2, stop))
        await settle(ctl)
        for s in steps:
            clock.step(s)
            await settle(ctl)
        assert names(client) == left
        for a in client.filter_actions("delete", "jobs"):
            assert a.options["propagation_policy"] == "Foreground"
            assert a.options["preconditions"] == {"uid": f"uid-{a.name}"}
        stop.set()
        await asyncio.wait_for(task, 2)
        await factory.shutdown()

    asyncio.run(main())
