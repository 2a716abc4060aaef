"""SharedInformerFactory over the FakeClient list/watch seam: sharing, start, sync, indexers, resync, crashes."""

import asyncio

import pytest

from kubeling.client import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.factory import InformerKey, SharedInformerFactory
from kubeling.client.fake import FakeClient


def cm(name, namespace="default", labels=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})}}


NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("default", "other")]


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0)
    await asyncio.wait_for(loop(), timeout)


def by_app(obj):
    return [(obj["metadata"].get("labels") or {}).get("app", "")]


def by_app_too(obj):
    return [(obj["metadata"].get("labels") or {}).get("app", "")]


@pytest.mark.parametrize("first, second, shared", [
    pytest.param({}, {}, True, id="same-collection"),
    pytest.param({"namespace": "default"}, {"namespace": "default"}, True, id="same-namespace"),
    pytest.param({}, {"namespace": "default"}, False, id="namespace-differs"),
    pytest.param({"label_selector": "app=x"}, {"label_selector": "app=y"}, False, id="labels-differ"),
    pytest.param({}, {"field_selector": "metadata.name=a"}, False, id="fields-differ"),
    pytest.param({"namespace": ""}, {}, True, id="empty-namespace-is-all"),
])
def test_one_informer_per_collection(first, second, shared):
    f = SharedInformerFactory(FakeClient())
    a = f.informer_for("", "v1", "configmaps", **first)
    b = f.informer_for("", "v1", "configmaps", **second)
    assert (a is b) == shared
    assert len(f.informers) == (1 if shared else 2)


def test_shared_informer_lists_and_watches_once_for_every_handler():
    async def main():
        client = FakeClient(*NAMESPACES, cm("a"))
        f = SharedInformerFactory(client)
        seen = {i: [] for i in range(3)}
        regs = [f.informer_for("", "v1", "configmaps").add_handler(on_add=lambda o, i=i: seen[i].append(o))
                for i in range(3)]
        stop = asyncio.Event()
        f.start(stop)
        f.start(stop)  # idempotent
        assert await f.wait_for_cache_sync(1) == {InformerKey("", "v1", "configmaps"): True}
        for r in regs:
            assert await r.wait_for_sync(1)
        assert all(len(v) == 1 for v in seen.values())
        assert len(client.filter_actions("list", "configmaps")) == 1
        assert len(client.filter_actions("watch", "configmaps")) == 1
        stop.set()
        await f.shutdown()

    asyncio.run(main())


def test_start_starts_informers_requested_later():
    async def main():
        client = FakeClient(*NAMESPACES, cm("a"))
        f = SharedInformerFactory(client)
        stop = asyncio.Event()
        first = f.informer_for("", "v1", "configmaps")
        f.start(stop)
        later = f.informer_for("", "v1", "namespaces")
        assert f.started(InformerKey("", "v1", "configmaps"))
        assert not f.started(InformerKey("", "v1", "namespaces"))
        assert list(await f.wait_for_cache_sync(1)) == [InformerKey("", "v1", "configmaps")]
        f.start(stop)
        synced = await f.wait_for_cache_sync(1)
        assert synced == {InformerKey("", "v1", "configmaps"): True, InformerKey("", "v1", "namespaces"): True}
        assert [o["metadata"]["name"] for o in later.list()] == ["default", "other"]
        assert len(client.filter_actions("list", "configmaps")) == 1 and first.has_synced()
        stop.set()
        await f.shutdown()

    asyncio.run(main())


def test_wait_for_cache_sync_reports_an_informer_that_cannot_list():
    async def main():
        client = FakeClient(*NAMESPACES)
        client.prepend_reactor("list", "secrets", lambda a: (_ for _ in ()).throw(
            StatusError(403, "Forbidden", "secrets is forbidden")))
        f = SharedInformerFactory(client, clock=FakeClock())
        f.informer_for("", "v1", "namespaces")
        f.informer_for("", "v1", "secrets")
        stop = asyncio.Event()
        f.start(stop)
        synced = await f.wait_for_cache_sync(0.05)
        assert synced == {InformerKey("", "v1", "namespaces"): True, InformerKey("", "v1", "secrets"): False}
        stop.set()
        await f.shutdown()

    asyncio.run(main())


def test_indexers_before_and_after_start_and_conflicts():
    async def main():
        client = FakeClient(*NAMESPACES, cm("a", labels={"app": "x"}), cm("b", "other", {"app": "x"}))
        f = SharedInformerFactory(client)
        inf = f.informer_for("", "v1", "configmaps", indexers={"app": by_app})
        assert f.informer_for("", "v1", "configmaps", indexers={"app": by_app}) is inf  # same function: no-op
        with pytest.raises(ValueError, match="already exists"):
            f.informer_for("", "v1", "configmaps", indexers={"app": by_app_too})
        stop = asyncio.Event()
        f.start(stop)
        await f.wait_for_cache_sync(1)
        assert sorted(o["metadata"]["name"] for o in inf.by_index("app", "x")) == ["a", "b"]
        # After start: the cache is re-indexed at once, and later objects are indexed too.
        f.informer_for("", "v1", "configmaps", indexers={"ns": lambda o: [o["metadata"]["namespace"]]})
        assert [o["metadata"]["name"] for o in inf.by_index("ns", "other")] == ["b"]
        await client.create("", "v1", "configmaps", cm("c", "other"))
        await until(lambda: len(inf.by_index("ns", "other")) == 2)
        stop.set()
        await f.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("default, handler_period, step, resyncs", [
    pytest.param(0, None, 100, 0, id="no-default-no-resync"),
    pytest.param(30, None, 30, 1, id="factory-default"),
    pytest.param(30, None, 29, 0, id="factory-default-not-yet"),
    pytest.param(30, 10, 30, 3, id="handler-own-period"),
    pytest.param(30, 0, 100, 0, id="handler-opts-out"),
    pytest.param(0, 0.1, 1, 1, id="below-minimum-is-raised-to-1s"),
])
def test_per_handler_resync(default, handler_period, step, resyncs):
    async def main():
        clock = FakeClock()
        client = FakeClient(*NAMESPACES, cm("a"))
        f = SharedInformerFactory(client, default_resync=default, clock=clock)
        updates = []
        reg = f.informer_for("", "v1", "configmaps").add_handler(
            on_update=lambda old, new: updates.append((old is new, clock.now())), resync_period=handler_period)
        stop = asyncio.Event()
        f.start(stop)
        await reg.wait_for_sync(1)
        await asyncio.sleep(0)
        for _ in range(step):  # one second at a time, letting the resync loop sleep again in between
            clock.step(1)
            for _ in range(3):
                await asyncio.sleep(0)
        assert len(updates) == resyncs
        assert all(same for same, _ in updates)  # a resync hands the cached object as old and new
        stop.set()
        await f.shutdown()

    asyncio.run(main())


def test_informer_crash_is_reported_and_shutdown_waits():
    async def main():
        client = FakeClient(*NAMESPACES)

        def bug(action):
            raise TypeError("a bug in the list path")

        client.prepend_reactor("list", "configmaps", bug)
        f = SharedInformerFactory(client)
        with pytest.raises(RuntimeError):
            f.failure()  # not started yet
        f.informer_for("", "v1", "configmaps")
        f.informer_for("", "v1", "namespaces")
        stop = asyncio.Event()
        f.start(stop)
        with pytest.raises(TypeError, match="a bug in the list path"):
            await asyncio.wait_for(f.failure(), 1)
        stop.set()
        await asyncio.wait_for(f.shutdown(), 1)

    asyncio.run(main())
