"""Garbage collector against the FakeClient: background, orphan and foreground deletion, in-process."""

import asyncio

import pytest

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.garbagecollector import GarbageCollector

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def rs(name, uid, **meta):
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": uid, **meta}, "spec": {"replicas": 0}}


def pod(name, uid, *owners, **meta):
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o[0], "uid": o[1], **o[2]}
            if len(o) == 3 else {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o[0], "uid": o[1]}
            for o in owners]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         **({"ownerReferences": refs} if refs else {}), **meta},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


TERMINATING = "2024-01-01T00:00:00Z"


async def settle(client, gc, rounds=400):
    """Let the collector work until its queue is empty and nothing is in hand."""
    idle = 0
    for _ in range(rounds):
        await asyncio.sleep(0)
        idle = idle + 1 if len(gc.queue) == 0 and gc.queue.processing() == 0 else 0
        if idle > 20:
            return


async def run_gc(*objs):
    clock = FakeClock()
    client = FakeClient(NS, *objs, clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    gc = GarbageCollector(ControllerContext(client, factory, clock=clock))
    stop = asyncio.Event()
    task = asyncio.create_task(gc.run(4, stop))
    await asyncio.wait_for(_until(lambda: gc.monitored and all(r.has_synced() for _, r in gc.registrations)), 2)
    await settle(client, gc)
    return client, gc, stop, task, factory


async def _until(pred):
    while not pred():
        await asyncio.sleep(0)


def names(client, resource, group=""):
    version = "v1"
    return sorted(o["metadata"]["name"] for o in client.tracker.list(
        client.tracker.resource(group, version, resource), None, None, None))


@pytest.mark.parametrize("objs, pods_left, refs_left", [
    pytest.param([pod("p", "p1", ("gone", "rs-gone"))], [], {}, id="owner-absent-collected"),
    pytest.param([rs("r", "rs1"), pod("p", "p1", ("r", "rs1"))], ["p"], {"p": ["rs1"]}, id="owner-present-kept"),
    pytest.param([rs("r", "rs1"), pod("p", "p1", ("r", "rs1"), ("gone", "rs-gone"))], ["p"], {"p": ["rs1"]},
                 id="absent-reference-dropped"),
    pytest.param([rs("r", "rs-new"), pod("p", "p1", ("r", "rs-old"))], [], {},
                 id="owner-recreated-with-another-uid-is-absent"),
    pytest.param([pod("p", "p1")], ["p"], {"p": []}, id="no-owners-untouched"),
])
def test_dependents_of_absent_owners(objs, pods_left, refs_left):
    async def main():
        client, gc, stop, task, factory = await run_gc(*objs)
        assert names(client, "pods") == pods_left
        for name, uids in refs_left.items():
            refs = client.object("", "v1", "pods", name, "default")["metadata"].get("ownerReferences") or []
            assert [r["uid"] for r in refs] == uids
        for a in client.filter_actions("delete", "pods"):
            assert a.options["propagation_policy"] == "Background"
            assert a.options["preconditions"] == {"uid": "p1"}  # never a same-named newcomer
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


def test_unknown_owner_kind_is_never_collected():
    async def main():
        p = pod("p", "p1")
        p["metadata"]["ownerReferences"] = [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w",
                                             "uid": "w1"}]
        client, gc, stop, task, factory = await run_gc(p)
        assert names(client, "pods") == ["p"]
        assert client.filter_actions("delete") == []
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("finalizer, pods_left, owner_left", [
    pytest.param("orphan", ["p", "q"], False, id="orphan-keeps-dependents-without-the-reference"),
    pytest.param("foregroundDeletion", [], False, id="foreground-deletes-dependents-first"),
])
def test_owner_being_deleted_with_a_propagation_finalizer(finalizer, pods_left, owner_left):
    async def main():
        owner = rs("r", "rs1", deletionTimestamp=TERMINATING, finalizers=[finalizer])
        client, gc, stop, task, factory = await run_gc(
            owner, pod("p", "p1", ("r", "rs1", {"blockOwnerDeletion": True})), pod("q", "q1", ("r", "rs1")))
        assert names(client, "pods") == pods_left
        for name in pods_left:
            assert "ownerReferences" not in client.object("", "v1", "pods", name, "default")["metadata"]
        assert (client.object("apps", "v1", "replicasets", "r", "default") is not None) == owner_left
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


def test_foreground_waits_for_dependents_held_by_finalizers():
    async def main():
        owner = rs("r", "rs1", deletionTimestamp=TERMINATING, finalizers=["foregroundDeletion"])
        held = pod("p", "p1", ("r", "rs1", {"blockOwnerDeletion": True}), finalizers=["example.com/hold"])
        client, gc, stop, task, factory = await run_gc(owner, held)
        assert client.object("", "v1", "pods", "p", "default")["metadata"]["deletionTimestamp"]
        assert client.object("apps", "v1", "replicasets", "r", "default") is not None  # still waiting
        assert gc.queue.waiting() == 1  # looked at again after FOREGROUND_RECHECK
        p = await client.get("", "v1", "pods", "p", namespace="default")
        p["metadata"]["finalizers"] = []
        await client.update("", "v1", "pods", p)  # the last finalizer goes: the pod goes
        await settle(client, gc)
        assert client.object("apps", "v1", "replicasets", "r", "default") is None
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


def test_live_deletion_with_propagation_policies():
    """A short run: the owner is deleted through the API while the collector watches."""
    async def main():
        client, gc, stop, task, factory = await run_gc(
            rs("bg", "rs-bg"), pod("a", "a1", ("bg", "rs-bg")),
            rs("or", "rs-or"), pod("b", "b1", ("or", "rs-or")))
        await client.delete("apps", "v1", "replicasets", "bg", namespace="default", propagation_policy="Background")
        await client.delete("apps", "v1", "replicasets", "or", namespace="default", propagation_policy="Orphan")
        await settle(client, gc)
        assert names(client, "pods") == ["b"]
        assert "ownerReferences" not in client.object("", "v1", "pods", "b", "default")["metadata"]
        assert names(client, "replicasets", "apps") == []
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


def test_discovery_failure_at_start_is_retried():
    async def main():
        failures = []
        clock = FakeClock()
        client = FakeClient(NS, pod("p", "p1", ("gone", "rs-gone")), clock=clock)
        real = client.request

        async def request(method, path, **kw):
            if len(failures) < 2:
                failures.append(path)
                raise ConnectionError("server not ready")
            return await real(method, path, **kw)

        client.request = request
        factory = SharedInformerFactory(client, clock=clock)
        gc = GarbageCollector(ControllerContext(client, factory, clock=clock))
        stop = asyncio.Event()
        task = asyncio.create_task(gc.run(2, stop))
        for _ in range(2):
            await _until(lambda: clock.has_waiters())
            clock.step(2)
        await asyncio.wait_for(_until(lambda: names(client, "pods") == []), 2)
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())
