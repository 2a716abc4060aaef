"""ResourceQuota controller against the FakeClient: recount, scopes, replenishment on delete."""

import asyncio

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.resourcequota import ResourceQuotaController

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def pod(name, phase="Running", cpu=None):
    c = {"name": "c", "image": "i"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [c]}, "status": {"phase": phase}}


def quota(name, hard, **spec):
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hard": hard, **spec}}


async def _until(pred, rounds=2000):
    for _ in range(rounds):
        if pred():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def used(client, name):
    return ((client.object("", "v1", "resourcequotas", name, "default") or {}).get("status") or {}).get("used")


def test_recount_scopes_and_replenishment():
    async def main():
        clock = FakeClock()
        client = FakeClient(NS, pod("a", cpu="250m"), pod("b"), pod("done", phase="Succeeded"),
                            quota("all", {"pods": "10", "count/pods": "10", "requests.cpu": "2"}),
                            quota("be", {"pods": "10"}, scopes=["BestEffort"]), clock=clock)
        factory = SharedInformerFactory(client, clock=clock)
        rq = ResourceQuotaController(ControllerContext(client, factory, clock=clock))
        stop = asyncio.Event()
        factory.start(stop)
        task = asyncio.create_task(rq.run(2, stop))
        await _until(lambda: used(client, "all") and used(client, "be"))
        assert used(client, "all") == {"pods": "2", "count/pods": "3", "requests.cpu": "250m"}
        assert used(client, "be") == {"pods": "1"}   # only "b": "a" is Burstable, "done" finished
        await client.delete("", "v1", "pods", "b", namespace="default")
        await _until(lambda: used(client, "all")["pods"] == "1")
        assert used(client, "all") == {"pods": "1", "count/pods": "2", "requests.cpu": "250m"}
        await _until(lambda: used(client, "be")["pods"] == "0")
        stop.set()
        await task
    asyncio.run(main())
