"""TTL-after-finished against the FakeClient: finished Jobs go ttlSecondsAfterFinished later."""

import asyncio
import datetime as dt

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.client.clock import FakeClock
from kubeling.controllers.ttlafterfinished import TTLAfterFinishedController

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
        async with ControllerHarness(TTLAfterFinishedController, NS, *jobs, clock=FakeClock(wall=START)) as h:
            for s in steps:
                await h.step(s)
            assert names(h.client) == left
            for a in h.client.filter_actions("delete", "jobs"):
                assert a.options["propagation_policy"] == "Foreground"
                assert a.options["preconditions"] == {"uid": f"uid-{a.name}"}

    asyncio.run(main())
