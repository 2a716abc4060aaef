"""ResourceQuota controller against the FakeClient: recount, scopes, replenishment on delete."""

import asyncio

from controller_testing import NS, ControllerHarness

from kubeling.controllers.resourcequota import ResourceQuotaController


def pod(name, phase="Running", cpu=None):
    c = {"name": "c", "image": "i"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [c]}, "status": {"phase": phase}}


def quota(name, hard, **spec):
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hard": hard, **spec}}


def used(client, name):
    return ((client.object("", "v1", "resourcequotas", name, "default") or {}).get("status") or {}).get("used")


def test_recount_scopes_and_replenishment():
    async def main():
        objs = [pod("a", cpu="250m"), pod("b"), pod("done", phase="Succeeded"),
                quota("all", {"pods": "10", "count/pods": "10", "requests.cpu": "2"}),
                quota("be", {"pods": "10"}, scopes=["BestEffort"])]
        async with ControllerHarness(ResourceQuotaController, NS, *objs) as h:
            assert used(h.client, "all") == {"pods": "2", "count/pods": "3", "requests.cpu": "250m"}
            assert used(h.client, "be") == {"pods": "1"}   # only "b": "a" is Burstable, "done" finished
            await h.client.delete("", "v1", "pods", "b", namespace="default")
            await h.settle()
            assert used(h.client, "all") == {"pods": "1", "count/pods": "2", "requests.cpu": "250m"}
            assert used(h.client, "be")["pods"] == "0"

    asyncio.run(main())
