"""The controller shape: wait for caches, workers on the queue, retries, drain at stop, crashes escalate."""

import asyncio

import pytest

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import Controller, ControllerContext, key_of, run_workers


def cm(name):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}


class ConfigMapLister(Controller):
    """A minimal controller over configmaps that records its syncs; ``fail`` makes a key fail n times."""

    NAME = "configmap-lister"

    def __init__(self, ctx, fail=None, block=None):
        super().__init__(ctx)
        self.configmaps = ctx.informers.informer_for("", "v1", "configmaps")
        self.handle(self.configmaps, on_add=lambda o: self.queue.add(key_of(o)))
        self.synced: list[str] = []
        self.fail = dict(fail or {})
        self.block = block
        self.cache_at_first_sync: int | None = None

    async def sync(self, key):
        if self.cache_at_first_sync is None:
            self.cache_at_first_sync = len(self.queue) + 1
        if self.block is not None:
            await self.block.wait()
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise RuntimeError(f"transient failure of {key}")
        self.synced.append(key)


def make(*objs, clock=None, **kw):
    clock = clock or FakeClock()
    client = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}, *objs,
                        clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    return ConfigMapLister(ControllerContext(client, factory, clock=clock), **kw), factory


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0)
    await asyncio.wait_for(loop(), timeout)


def test_run_waits_for_caches_then_syncs_every_key():
    async def main():
        c, factory = make(cm("a"), cm("b"), cm("c"))
        stop = asyncio.Event()
        run = asyncio.create_task(c.run(2, stop))
        await asyncio.sleep(0)
        assert c.synced == []  # the factory has not started: no cache, no work
        factory.start(stop)
        await until(lambda: len(c.synced) == 3)
        assert sorted(c.synced) == ["default/a", "default/b", "default/c"]
        assert c.cache_at_first_sync == 3  # every initial object was queued before the first sync
        stop.set()
        await asyncio.wait_for(run, 1)
        await factory.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("failures, requeues_before_success", [
    pytest.param(0, 0, id="success-forgets"),
    pytest.param(1, 1, id="one-failure-retried"),
    pytest.param(3, 3, id="backoff-grows"),
])
def test_failures_requeue_with_backoff_and_success_forgets(failures, requeues_before_success):
    async def main():
        clock = FakeClock()
        c, factory = make(cm("a"), clock=clock, fail={"default/a": failures})
        stop = asyncio.Event()
        factory.start(stop)
        run = asyncio.create_task(c.run(1, stop))
        delays = []
        for _ in range(failures):
            await until(lambda: c.queue.waiting() == 1)
            delays.append(c.queue.num_requeues("default/a"))
            clock.step(10)
        await until(lambda: c.synced == ["default/a"])
        assert delays == list(range(1, requeues_before_success + 1))
        await until(lambda: c.queue.num_requeues("default/a") == 0)  # forgotten after the success
        stop.set()
        await asyncio.wait_for(run, 1)
        await factory.shutdown()

    asyncio.run(main())


def test_stop_drains_the_sync_in_hand_and_unregisters():
    async def main():
        block = asyncio.Event()
        c, factory = make(cm("a"), block=block)
        stop = asyncio.Event()
        factory.start(stop)
        run = asyncio.create_task(c.run(1, stop))
        await until(lambda: c.queue.processing() == 1)
        stop.set()
        await asyncio.sleep(0.01)
        assert not run.done()  # the sync in hand is not cut short
        block.set()
        await asyncio.wait_for(run, 1)
        assert c.synced == ["default/a"]
        assert c.registrations == [] and c.configmaps._handlers == []
        await factory.shutdown()

    asyncio.run(main())


def test_stop_before_caches_sync_returns_without_work():
    async def main():
        c, factory = make(cm("a"))
        stop = asyncio.Event()
        run = asyncio.create_task(c.run(2, stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(run, 1)
        assert c.synced == [] and c.queue.shutting_down()

    asyncio.run(main())


def test_a_crashed_worker_escalates():
    async def main():
        c, factory = make(cm("a"))

        def broken_forget(key):
            raise KeyError("a bug outside sync")

        c.queue.forget = broken_forget
        stop = asyncio.Event()
        factory.start(stop)
        with pytest.raises(KeyError, match="a bug outside sync"):
            await asyncio.wait_for(c.run(3, stop), 1)
        assert c.queue.shutting_down()
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_run_workers_never_syncs_one_key_twice_at_once():
    async def main():
        from kubeling.client.workqueue import RateLimitingQueue
        queue = RateLimitingQueue()
        running, overlaps, done = set(), [], []

        async def sync(key):
            if key in running:
                overlaps.append(key)
            running.add(key)
            await asyncio.sleep(0.001)
            running.discard(key)
            done.append(key)
            if len(done) < 6:
                queue.add(key)  # re-added while in hand: processed again, after this one

        stop = asyncio.Event()
        queue.add("k")
        task = asyncio.create_task(run_workers("t", queue, sync, stop, workers=4))
        await until(lambda: len(done) == 6)
        stop.set()
        await asyncio.wait_for(task, 1)
        assert overlaps == []

    asyncio.run(main())
