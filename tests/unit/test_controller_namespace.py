"""Namespace controller against the FakeClient: emptying a terminating namespace, conditions, finalize."""

import asyncio

import pytest

from kubeling.client import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.namespace import RECHECK_SECONDS, NamespaceController

TERMINATING = "2024-01-01T00:00:00Z"


def namespace(name, terminating=True, finalizers=("kubernetes",)):
    meta = {"name": name, **({"deletionTimestamp": TERMINATING} if terminating else {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": list(finalizers)},
            "status": {"phase": "Terminating" if terminating else "Active"}}


def cm(name, ns="x", **meta):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, **meta}}


def deploy(name, ns="x"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1}}


async def start(*objs):
    clock = FakeClock()
    client = FakeClient(*objs, clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    ctrl = NamespaceController(ControllerContext(client, factory, clock=clock))
    stop = asyncio.Event()
    factory.start(stop)
    assert all((await factory.wait_for_cache_sync(1)).values())
    return client, ctrl, clock, stop, factory


def conditions(client, name):
    ns = client.object("", "v1", "namespaces", name)
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in (ns.get("status") or {}).get("conditions", [])}


@pytest.mark.parametrize("ns, content, namespace_left, content_left, writes", [
    pytest.param(namespace("x"), [], False, [], ["update:finalize"], id="empty-is-finalized"),
    pytest.param(namespace("x"), [cm("a"), cm("b"), deploy("d")], False, [],
                 ["delete:a", "delete:b", "delete:d", "update:finalize"], id="content-deleted-then-finalized"),
    pytest.param(namespace("x", terminating=False), [cm("a")], True, ["a"], [], id="active-untouched"),
    pytest.param(namespace("x", finalizers=()), [cm("a")], True, ["a"], [], id="already-finalized-untouched"),
])
def test_sync(ns, content, namespace_left, content_left, writes):
    async def main():
        client, ctrl, clock, stop, factory = await start(ns, *content)
        await ctrl.sync("x")
        assert (client.object("", "v1", "namespaces", "x") is not None) == namespace_left
        assert sorted(o["metadata"]["name"] for o in client.tracker.list(
            client.tracker.resource("", "v1", "configmaps"), "x", None, None)) == content_left
        done = [f"{a.verb}:{a.subresource or a.name}" for a in client.actions if a.verb in ("delete", "update")]
        assert done == writes
        for a in client.filter_actions("delete"):
            assert a.options["propagation_policy"] == "Background"
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_content_held_by_finalizers_sets_conditions_and_rechecks():
    async def main():
        client, ctrl, clock, stop, factory = await start(namespace("x"), cm("held", finalizers=["example.com/keep"]))
        await ctrl.sync("x")
        assert client.object("", "v1", "namespaces", "x") is not None
        conds = conditions(client, "x")
        assert conds["NamespaceContentRemaining"] == (
            "True", "SomeResourcesRemain", "Some resources are remaining: configmaps has 1 resource instances")
        assert conds["NamespaceFinalizersRemaining"] == (
            "True", "SomeFinalizersRemain",
            "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances")
        assert ctrl.queue.waiting() == 1
        clock.step(RECHECK_SECONDS)
        assert len(ctrl.queue) == 1  # due again
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_delete_failure_sets_content_failure_condition_and_raises():
    async def main():
        client, ctrl, clock, stop, factory = await start(namespace("x"), cm("a"))

        def refuse(action):
            raise StatusError(500, "InternalError", "etcd is on fire")

        client.prepend_reactor("delete", "configmaps", refuse)
        with pytest.raises(StatusError):
            await ctrl.sync("x")
        assert conditions(client, "x")["NamespaceDeletionContentFailure"] == (
            "True", "ContentDeletionFailed", "etcd is on fire")
        assert client.object("", "v1", "namespaces", "x") is not None
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_short_run_deletes_a_namespace_end_to_end():
    async def main():
        client, ctrl, clock, stop, factory = await start(namespace("x", terminating=False), cm("a"), deploy("d"))
        task = asyncio.create_task(ctrl.run(2, stop))
        await client.delete("", "v1", "namespaces", "x")

        async def gone():
            while client.object("", "v1", "namespaces", "x") is not None:
                await asyncio.sleep(0)
        await asyncio.wait_for(gone(), 2)
        assert client.tracker.list(client.tracker.resource("apps", "v1", "deployments"), "x", None, None) == []
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())
