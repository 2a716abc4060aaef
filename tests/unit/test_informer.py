"""Informer against a small in-memory list/watch source (a test seam, not an API server)."""

import asyncio
import copy

import pytest

from kubeling.client.clock import FakeClock
from kubeling.client.exceptions import ResourceExpired, TransportError
from kubeling.client.informer import Informer, wait_for_cache_sync
from kubeling.client.store import DeletedFinalStateUnknown, object_of

_END = object()


class FakeWatch:
    def __init__(self, api, since):
        self.api, self.since = api, since
        self.queue: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self):
        if self.api.watch_failures:
            raise self.api.watch_failures.pop(0)
        if self.since < self.api.compacted:
            raise ResourceExpired(410, "Expired", f"too old resource version: {self.since} ({self.api.compacted})")
        for rv, typ, obj in self.api.history:
            if rv > self.since:
                self.queue.put_nowait((typ, copy.deepcopy(obj)))
        self.api.watchers.add(self)
        self.api.watch_started.set()
        return self

    async def __aexit__(self, *exc):
        self.api.watchers.discard(self)

    def __aiter__(self):
        return self

    async def __anext__(self):
        ev = await self.queue.get()
        if ev is _END:
            raise StopAsyncIteration
        if isinstance(ev, Exception):
            raise ev
        return ev


class FakeAPI:
    """Objects with a global revision, a history to watch from, compaction and fault injection."""

    def __init__(self):
        self.rv = 10
        self.objects: dict[str, dict] = {}
        self.history: list[tuple[int, str, dict]] = []
        self.compacted = 0
        self.watchers: set[FakeWatch] = set()
        self.watch_started = asyncio.Event()
        self.list_calls: list[dict] = []
        self.watch_calls: list[dict] = []
        self.list_failures: list[Exception] = []
        self.watch_failures: list[Exception] = []
        self.expire_continue = False

    def _event(self, typ, obj):
        self.history.append((self.rv, typ, copy.deepcopy(obj)))
        for w in self.watchers:
            w.queue.put_nowait((typ, copy.deepcopy(obj)))

    def put(self, name, ns="default", **fields):
        self.rv += 1
        key = f"{ns}/{name}"
        typ = "MODIFIED" if key in self.objects else "ADDED"
        obj = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": ns, "resourceVersion": str(self.rv)}, **fields}
        self.objects[key] = obj
        self._event(typ, obj)
        return obj

    def remove(self, name, ns="default"):
        self.rv += 1
        obj = self.objects.pop(f"{ns}/{name}")
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._event("DELETED", obj)

    def bookmark(self):
        self.rv += 1
        for w in self.watchers:
            w.queue.put_nowait(("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": str(self.rv)}}))

    def compact(self):
        self.compacted = self.rv
        self.history.clear()

    def end_watches(self, error=None):
        for w in list(self.watchers):
            w.queue.put_nowait(error or _END)
        self.watchers.clear()
        self.watch_started.clear()

    async def list(self, group, version, resource, *, namespace=None, label_selector=None, field_selector=None,
                   limit=None, continue_=None, resource_version=None, **kw):
        self.list_calls.append({"limit": limit, "continue": continue_, "namespace": namespace,
                                "label_selector": label_selector})
        await asyncio.sleep(0)
        if self.list_failures:
            raise self.list_failures.pop(0)
        if continue_ and self.expire_continue:
            self.expire_continue = False
            raise ResourceExpired(410, "Expired", "continue token expired")
        items = [copy.deepcopy(o) for _, o in sorted(self.objects.items())]
        for o in items:  # list items come without apiVersion/kind, like the real server
            o.pop("apiVersion"), o.pop("kind")
        start = int(continue_) if continue_ else 0
        page = items[start:start + limit] if limit else items
        meta = {"resourceVersion": str(self.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        return {"apiVersion": "v1", "kind": "ConfigMapList", "metadata": meta, "items": page}

    def watch(self, group, version, resource, *, resource_version=None, allow_watch_bookmarks=False, **kw):
        self.watch_calls.append({"resource_version": resource_version, "bookmarks": allow_watch_bookmarks, **kw})
        return FakeWatch(self, int(resource_version or 0))


class Recorder:
    def __init__(self, informer=None):
        self.events = []
        self.informer = informer

    def on_add(self, obj):
        self.events.append(("add", obj["metadata"]["name"]))

    def on_update(self, old, new):
        self.events.append(("update", old["metadata"]["name"], old["metadata"]["resourceVersion"],
                            new["metadata"]["resourceVersion"]))

    def on_delete(self, obj):
        tomb = isinstance(obj, DeletedFinalStateUnknown)
        self.events.append(("delete", object_of(obj)["metadata"]["name"], tomb))

    def register(self, informer):
        return informer.add_handler(self.on_add, self.on_update, self.on_delete)


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(loop(), timeout)


class Harness:
    def __init__(self, **kw):
        self.api = FakeAPI()
        self.clock = FakeClock()
        self.informer = Informer(self.api, "", "v1", "configmaps", clock=self.clock, **kw)
        self.rec = Recorder()
        self.reg = self.rec.register(self.informer)
        self.stop = asyncio.Event()
        self.task = None

    async def __aenter__(self):
        self.task = asyncio.create_task(self.informer.run(self.stop))
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        await asyncio.wait_for(self.task, 2)

    async def watching(self):
        await asyncio.wait_for(self.api.watch_started.wait(), 2)


def test_initial_list_then_watch_from_its_resource_version():
    async def main():
        h = Harness()
        h.api.put("a", data={"k": "1"})
        h.api.put("b", ns="other")
        async with h:
            assert await h.informer.wait_for_sync(2)
            await h.watching()
            await until(h.reg.has_synced)
            assert sorted(h.rec.events) == [("add", "a"), ("add", "b")]
            a = h.informer.get("default/a")
            assert (a["apiVersion"], a["kind"], a["data"]) == ("v1", "ConfigMap", {"k": "1"})
            assert h.informer.get("other/b") is not None
            assert h.api.list_calls[0]["limit"] == 500
            assert h.api.watch_calls[0]["resource_version"] == "12"
            assert h.api.watch_calls[0]["bookmarks"] is True
            assert 300 <= h.api.watch_calls[0]["timeout_seconds"] <= 600

    asyncio.run(main())


def test_watch_events_in_order_and_cache_updated_before_handlers():
    async def main():
        h = Harness()
        seen_in_cache = []
        h.informer.add_handler(on_update=lambda old, new: seen_in_cache.append(
            h.informer.get("default/a")["metadata"]["resourceVersion"] >= new["metadata"]["resourceVersion"]))
        async with h:
            await h.watching()
            h.api.put("a")
            h.api.put("a", data={"x": "y"})
            await until(lambda: len(seen_in_cache) == 1)
            h.api.remove("a")
            await until(lambda: len(h.rec.events) == 3)
            assert h.rec.events == [("add", "a"), ("update", "a", "11", "12"), ("delete", "a", False)]
            assert h.informer.get("default/a") is None
            assert seen_in_cache == [True]

    asyncio.run(main())


def test_rewatch_after_stream_end_resumes_without_relist():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            h.api.put("a")
            await until(lambda: h.rec.events == [("add", "a")])
            h.clock.step(5)  # the watch lasted a while: re-watch immediately
            h.api.end_watches()
            h.api.put("b")  # happens while disconnected; replayed from history
            await h.watching()
            await until(lambda: len(h.rec.events) == 2)
            assert h.rec.events == [("add", "a"), ("add", "b")]
            assert len(h.api.list_calls) == 1
            assert h.api.watch_calls[1]["resource_version"] == "11"

    asyncio.run(main())


def test_bookmark_advances_resource_version_silently():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            h.api.bookmark()
            await until(lambda: h.informer.last_sync_resource_version == "11")
            assert h.rec.events == []

    asyncio.run(main())


def test_expired_watch_relists_with_tombstones_for_missed_deletes():
    async def main():
        h = Harness()
        h.api.put("keep")
        h.api.put("gone")
        async with h:
            await h.watching()
            await until(lambda: len(h.rec.events) == 2)
            h.clock.step(5)
            h.api.end_watches()
            h.api.remove("gone")
            h.api.put("keep", data={"v": "2"})
            h.api.put("new")
            h.api.compact()  # the deletion is no longer in the watch history
            await until(lambda: len(h.api.list_calls) == 2)
            await h.watching()
            await until(lambda: len(h.rec.events) == 5)
            assert h.rec.events[2:] == [("delete", "gone", True), ("update", "keep", "11", "14"), ("add", "new")]
            assert sorted(h.informer.indexer.list_keys()) == ["default/keep", "default/new"]
            assert h.api.watch_calls[-1]["resource_version"] == "15"

    asyncio.run(main())


def test_watch_error_event_410_relists():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            h.api.end_watches(ResourceExpired(410, "Expired", "too old"))
            await until(lambda: len(h.api.list_calls) == 2)

    asyncio.run(main())


def test_pagination_and_expired_continue_token():
    async def main():
        h = Harness(page_size=2)
        for n in "abcde":
            h.api.put(n)
        async with h:
            await h.informer.wait_for_sync(2)
            assert [c["continue"] for c in h.api.list_calls] == [None, "2", "4"]
            assert len(h.informer.list()) == 5
        h2 = Harness(page_size=2)
        for n in "abcde":
            h2.api.put(n)
        h2.api.expire_continue = True
        async with h2:
            await h2.informer.wait_for_sync(2)
            assert [c["limit"] for c in h2.api.list_calls] == [2, 2, None]
            assert sorted(h2.informer.indexer.list_keys()) == [f"default/{n}" for n in "abcde"]

    asyncio.run(main())


def test_list_failure_backs_off_then_recovers():
    async def main():
        h = Harness()
        h.api.list_failures = [TransportError("connection refused")] * 2
        h.api.put("a")
        async with h:
            await until(lambda: len(h.api.list_calls) == 1 and h.clock.has_waiters())
            assert not h.informer.has_synced()
            h.clock.step(1.59)  # first backoff is 0.8s..1.6s
            await until(lambda: len(h.api.list_calls) == 2 and h.clock.has_waiters())
            h.clock.step(1.0)
            await asyncio.sleep(0.01)
            assert len(h.api.list_calls) == 2, "second backoff must be longer than the first"
            h.clock.step(2.2)
            assert await h.informer.wait_for_sync(2)
            await until(lambda: h.rec.events == [("add", "a")])

    asyncio.run(main())


def test_watch_failure_rewatches_after_backoff():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            h.api.watch_failures = [TransportError("reset")]
            h.clock.step(5)
            h.api.end_watches()
            await until(lambda: len(h.api.watch_calls) == 2 and h.clock.has_waiters())
            h.clock.step(2)
            await h.watching()
            assert len(h.api.watch_calls) == 3 and len(h.api.list_calls) == 1

    asyncio.run(main())


def test_watch_that_ends_at_once_backs_off():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            h.api.end_watches()  # no events, no time passed: do not spin
            await until(h.clock.has_waiters)
            await asyncio.sleep(0.01)
            assert len(h.api.watch_calls) == 1
            h.clock.step(2)
            await h.watching()
            assert len(h.api.watch_calls) == 2

    asyncio.run(main())


def test_resync_delivers_update_with_same_object():
    async def main():
        h = Harness(resync_period=30)
        h.api.put("a")
        async with h:
            await h.watching()
            await until(lambda: h.rec.events == [("add", "a")])
            h.clock.step(30)
            await until(lambda: len(h.rec.events) == 2)
            assert h.rec.events[1] == ("update", "a", "11", "11")

    asyncio.run(main())


def test_handler_added_after_sync_gets_existing_objects():
    async def main():
        h = Harness()
        h.api.put("a")
        async with h:
            await h.watching()
            late = Recorder()
            reg = late.register(h.informer)
            await until(reg.has_synced)
            assert late.events == [("add", "a")]
            h.api.put("b")
            await until(lambda: late.events == [("add", "a"), ("add", "b")])

    asyncio.run(main())


def test_failing_and_slow_handlers_do_not_disturb_others():
    async def main():
        h = Harness()
        gate = asyncio.Event()
        slow_seen = []

        async def slow_add(obj):
            await gate.wait()
            slow_seen.append(obj["metadata"]["name"])

        def failing(obj):
            raise RuntimeError("handler bug")

        h.informer.add_handler(on_add=failing)
        h.informer.add_handler(on_add=slow_add)
        async with h:
            await h.watching()
            h.api.put("a")
            h.api.put("b")
            await until(lambda: len(h.rec.events) == 2)  # the fast handler is not held up
            assert slow_seen == []
            gate.set()
            await until(lambda: slow_seen == ["a", "b"])

    asyncio.run(main())


def test_handlers_never_run_concurrently_with_themselves():
    async def main():
        h = Harness()
        active = 0
        overlap = []

        async def on_add(obj):
            nonlocal active
            active += 1
            overlap.append(active)
            await asyncio.sleep(0.001)
            active -= 1

        h.informer.add_handler(on_add=on_add)
        async with h:
            await h.watching()
            for i in range(20):
                h.api.put(f"o{i}")
            await until(lambda: len(overlap) == 20)
            assert max(overlap) == 1

    asyncio.run(main())


def test_indexers_and_selectors_are_passed():
    async def main():
        by_owner = {"by-owner": lambda o: [o.get("data", {}).get("owner", "")]}
        h = Harness(indexers=by_owner, namespace="default", label_selector="app=x")
        h.api.put("a", data={"owner": "alice"})
        h.api.put("b", data={"owner": "bob"})
        h.api.put("c", data={"owner": "alice"})
        async with h:
            await h.informer.wait_for_sync(2)
            assert [o["metadata"]["name"] for o in h.informer.by_index("by-owner", "alice")] == ["a", "c"]
            assert len(h.informer.by_index("namespace", "default")) == 3
            assert h.api.list_calls[0]["namespace"] == "default"
            assert h.api.list_calls[0]["label_selector"] == "app=x"
            assert await wait_for_cache_sync(h.informer, timeout=1)

    asyncio.run(main())


def test_run_returns_on_stop_and_cancels_its_tasks():
    async def main():
        h = Harness()
        async with h:
            await h.watching()
            before = len(asyncio.all_tasks())
        assert h.task.done() and h.task.exception() is None
        assert len(asyncio.all_tasks()) < before
        assert not h.api.watchers, "the watch must be closed"
        with pytest.raises(RuntimeError):
            h.informer._running = True
            await h.informer.run(asyncio.Event())

    asyncio.run(main())


def test_wait_for_sync_times_out():
    async def main():
        h = Harness()
        assert not await h.informer.wait_for_sync(0.01)

    asyncio.run(main())


def test_handler_added_while_running_resyncs_on_its_own_period_until_removed():
    async def main():
        h = Harness(resync_period=30)
        h.api.put("a")
        async with h:
            await h.watching()
            late = Recorder()
            reg = h.informer.add_handler(late.on_add, late.on_update, late.on_delete, resync_period=5)
            assert await reg.wait_for_sync(1)
            h.clock.step(5)
            await until(lambda: len(late.events) == 2)
            assert late.events == [("add", "a"), ("update", "a", "11", "11")]
            assert len(h.rec.events) == 1  # the first handler keeps the informer's 30s default
            h.informer.remove_handler(reg)
            h.clock.step(5)
            await asyncio.sleep(0.01)
            assert len(late.events) == 2

    asyncio.run(main())
