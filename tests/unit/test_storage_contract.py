"""The Store contract (``kubeling/storage/interface.py``), run on every backend.

Each test takes the ``open_store`` fixture, parametrized over the SQLite backend, the
in-memory fake and a real etcd (Debian's, one member for the module), so all keep exactly the same
etcd semantics: revisions, compare-and-swap,
reads at past revisions, pagination, watches (backfill, live, dedupe, overflow), compaction,
closing, health, and huge numbers from the wire. Backend-specific behaviour (files, locks,
crashes, disk full) lives in ``test_storage_sqlite*.py``, ``test_storage_integrity.py`` and
``test_storage_memory.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from etcd_relative import EtcdCluster, RelativeStore
from storage_testing import fill, take

from kubeling.storage import (
    DELETE,
    PUT,
    CompactedError,
    FutureRevisionError,
    KeyValue,
    MemoryStore,
    SQLiteStore,
    StorageError,
    Store,
    WatchOverflowError,
    prefix_end,
)

INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory):
    """One real etcd member for the module; each test sees it through `RelativeStore`."""
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as etcd:
        yield etcd.endpoint


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("memory", id="memory"),
                        pytest.param("etcd", id="etcd")])
def open_store(request, tmp_path):
    """``await open_store(**options)`` opens a fresh store of the backend under test (on etcd: a
    view of the module's etcd with keys and revisions of the test's own, see `etcd_relative`)."""

    def opener(**kw):
        if request.param == "sqlite":
            return SQLiteStore.open(str(tmp_path / "db"), **{"compact_interval": 0, **kw})
        if request.param == "etcd":
            return RelativeStore.open(request.getfixturevalue("etcd_endpoint"), **{"compact_interval": 0, **kw})
        return MemoryStore.open(**kw)

    return opener


def run(coro_fn, open_store, **kw):
    """Open a store, run ``coro_fn(store)``, close the store."""

    async def main():
        store = await open_store(**kw)
        try:
            return await coro_fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_store_satisfies_protocol(open_store):
    async def body(s):
        assert isinstance(s, Store)
    run(body, open_store)


def test_create_get(open_store):
    async def body(s):
        assert await s.get("/a/x") == (0, None)
        ok, kv = await s.create("/a/x", b"one")
        assert ok and kv == KeyValue("/a/x", b"one", 1, 1)
        ok, existing = await s.create("/a/x", b"two")
        assert not ok and existing == kv
        assert await s.get("/a/x") == (1, kv)
        assert await s.current_revision() == 1  # the failed create did not bump the revision
        ok, kv2 = await s.create("/a/y", bytearray(b"y"))
        assert ok and kv2.mod_revision == 2 and kv2.value == b"y"
        assert await s.get("/a/x") == (2, kv)
    run(body, open_store)


def test_update_compare_and_swap(open_store):
    async def body(s):
        _, kv = await s.create("/a/x", b"v1")
        ok, kv2 = await s.update("/a/x", b"v2", kv.mod_revision)
        assert ok and kv2 == KeyValue("/a/x", b"v2", 1, 2)
        ok, cur = await s.update("/a/x", b"v3", kv.mod_revision)  # stale revision loses
        assert not ok and cur == kv2
        assert await s.update("/a/missing", b"v", 1) == (False, None)
        assert (await s.get("/a/x"))[1].value == b"v2"
        assert await s.current_revision() == 2
    run(body, open_store)


def test_delete_conditional_and_unconditional(open_store):
    async def body(s):
        _, a = await s.create("/a/x", b"x")
        _, b = await s.create("/a/y", b"y")
        ok, cur = await s.delete("/a/x", expected_mod_revision=b.mod_revision)
        assert not ok and cur == a
        ok, gone = await s.delete("/a/x", expected_mod_revision=a.mod_revision)
        assert ok and gone == KeyValue("/a/x", b"x", 1, 3)
        ok, gone = await s.delete("/a/y")
        assert ok and gone == KeyValue("/a/y", b"y", 2, 4)
        assert await s.delete("/a/y") == (False, None)
        assert await s.get("/a/x") == (4, None)
        assert await s.update("/a/x", b"z", 3) == (False, None)  # deleted keys cannot be updated
        ok, again = await s.create("/a/x", b"x2")  # a new incarnation, new create_revision
        assert ok and again == KeyValue("/a/x", b"x2", 5, 5)
    run(body, open_store)


def test_rejects_bad_arguments(open_store):
    async def body(s):
        with pytest.raises(TypeError):
            await s.create("/a/x", "not bytes")
        with pytest.raises(ValueError):
            await s.create("", b"x")
        with pytest.raises(ValueError):
            await s.list("/a/", revision=-1)
    run(body, open_store)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)), id="every-byte"),
        pytest.param(b"\x00\x00{\"a\": 1}\x00", id="nul-bytes"),
        pytest.param(b"\xff\xfe invalid utf-8 \xc3\x28", id="invalid-utf8"),
        pytest.param(b"{" * 1000 + b"x" * (1 << 20), id="one-mebibyte"),
    ],
)
def test_values_come_back_exactly_as_written(open_store, value):
    """Every read path returns the written bytes unchanged: the store never decodes values."""

    async def body(s):
        w = s.watch("/v/", 0)
        ok, kv = await s.create("/v/k", value)
        assert ok and kv.value == value
        assert (await s.get("/v/k"))[1].value == value
        assert [kv.value for kv in (await s.list("/v/")).kvs] == [value]
        ok, _ = await s.update("/v/k", value + b"!", kv.mod_revision)
        ok, gone = await s.delete("/v/k")
        assert ok and gone.value == value + b"!"
        created, updated, deleted = await take(w, 3)
        assert created.kv.value == value and updated.prev_kv.value == value
        assert deleted.kv.value == value + b"!"
        backfilled = await take(s.watch("/v/", 1), 3)
        assert backfilled == [created, updated, deleted]
        w.close()
    run(body, open_store)


def test_list_now_and_at_past_revisions(open_store):
    async def body(s):
        await fill(s)
        now = await s.list("/p/")
        assert now.revision == 7 and not now.more and now.count == 3
        assert [(kv.key, kv.value, kv.mod_revision) for kv in now.kvs] == [
            ("/p/a", b"a2", 4), ("/p/c", b"c1", 3), ("/p/d", b"d1", 6)]
        at3 = await s.list("/p/", revision=3)
        assert at3.revision == 3
        assert [(kv.key, kv.value) for kv in at3.kvs] == [
            ("/p/a", b"a1"), ("/p/b", b"b1"), ("/p/c", b"c1")]
        at5 = await s.list("/p/", revision=5)
        assert [kv.key for kv in at5.kvs] == ["/p/a", "/p/c"]
        assert [kv.key for kv in (await s.list("")).kvs] == ["/p/a", "/p/c", "/p/d", "/pq/x"]
        with pytest.raises(FutureRevisionError):
            await s.list("/p/", revision=8)
    run(body, open_store)


@pytest.mark.parametrize(
    "revision,start_after,limit,keys,more,count",
    [
        pytest.param(0, "", 2, ["/p/a", "/p/c"], True, 3, id="first-page"),
        pytest.param(0, "/p/c", 2, ["/p/d"], False, 1, id="last-page"),
        pytest.param(0, "/p/a", 1, ["/p/c"], True, 2, id="middle-page"),
        pytest.param(3, "/p/a", 1, ["/p/b"], True, 2, id="page-at-past-revision"),
        pytest.param(0, "/p/d", 5, [], False, 0, id="past-the-end"),
        pytest.param(0, "", 3, ["/p/a", "/p/c", "/p/d"], False, 3, id="limit-equals-count"),
        pytest.param(0, "", INT64_MAX, ["/p/a", "/p/c", "/p/d"], False, 3, id="limit-int64-max"),
        pytest.param(0, "", 2**64, ["/p/a", "/p/c", "/p/d"], False, 3, id="limit-beyond-int64"),
        pytest.param(4, "/p/a", 2**70, ["/p/b", "/p/c"], False, 2, id="huge-limit-at-past-revision"),
    ],
)
def test_list_pagination(open_store, revision, start_after, limit, keys, more, count):
    async def body(s):
        await fill(s)
        res = await s.list("/p/", revision=revision, start_after=start_after, limit=limit)
        assert [kv.key for kv in res.kvs] == keys
        assert (res.more, res.count) == (more, count)
    run(body, open_store)


@pytest.mark.parametrize("revision", [pytest.param(INT64_MAX, id="int64-max"),
                                      pytest.param(2**63, id="int64-max-plus-one"),
                                      pytest.param(10**20, id="twenty-digits")])
def test_huge_revisions_are_future_revisions(open_store, revision):
    """Numbers beyond SQLite's int64 are ordinary future revisions, never OverflowError."""

    async def body(s):
        await fill(s)
        with pytest.raises(FutureRevisionError) as info:
            await s.list("/p/", revision=revision)
        assert (info.value.revision, info.value.current_revision) == (revision, 7)
        with pytest.raises(FutureRevisionError):
            await s.compact(revision)
        _, kv = await s.get("/p/a")
        assert await s.update("/p/a", b"x", revision) == (False, kv)
        assert await s.delete("/p/a", revision) == (False, kv)
        assert await s.current_revision() == 7
    run(body, open_store)


def test_watch_from_a_huge_revision_waits(open_store):
    """A watch from a revision that has not happened yet waits for it, like any future start:
    nothing is yielded for the revisions before it, and nothing raises."""

    async def body(s):
        await fill(s)
        w = s.watch("/p/", 10**20)
        await s.create("/p/e", b"e")
        with pytest.raises(asyncio.TimeoutError):
            await take(w, 1, timeout=0.2)
        w.close()
        assert [e async for e in w] == []
        assert s.watcher_count() == 0
    run(body, open_store)


def test_count(open_store):
    async def body(s):
        await fill(s)
        assert await s.count("/p/") == 3
        assert await s.count("/pq/") == 1
        assert await s.count("/none/") == 0
        assert await s.count("") == 4
    run(body, open_store)


def test_watch_backfill_then_live_without_gaps(open_store):
    async def body(s):
        await fill(s)
        w = s.watch("/p/", 2)
        first = await take(w, 5)  # revisions 2..6 from the log (7 is another prefix)
        assert [e.kv.mod_revision for e in first] == [2, 3, 4, 5, 6]
        assert [e.type for e in first] == [PUT, PUT, PUT, DELETE, PUT]
        upd, dele = first[2], first[3]
        assert upd.prev_kv == KeyValue("/p/a", b"a1", 1, 1) and upd.kv.value == b"a2"
        assert dele.kv == KeyValue("/p/b", b"b1", 2, 5)
        assert dele.prev_kv == KeyValue("/p/b", b"b1", 2, 2)
        assert first[0].prev_kv is None and first[0].kv.create_revision == 2
        await s.update("/p/c", b"c2", 3)
        (live,) = await take(w, 1)
        assert live.kv.mod_revision == 8 and live.prev_kv.value == b"c1"
        w.close()
        w.close()  # idempotent
        assert [e async for e in w] == []
        assert s.watcher_count() == 0
    run(body, open_store)


def test_watch_from_now_sees_only_new_events(open_store):
    async def body(s):
        await fill(s)
        w = s.watch("/p/", 0)
        await s.create("/pq/y", b"other prefix")
        _, kv = await s.create("/p/e", b"e")
        (ev,) = await take(w, 1)
        assert ev.type == PUT and ev.kv == kv and ev.prev_kv is None
        w.close()
    run(body, open_store)


def test_watch_with_concurrent_writers_is_ordered_and_complete(open_store):
    """Watchers started before, during and after a write storm each see every revision from
    their start exactly once, in order: the backfill/live overlap is deduplicated."""

    async def body(s):
        n_writers, per = 10, 30
        total = n_writers * per
        watches = [s.watch("/w/", 1)]

        async def writer(i):
            for j in range(per):
                key = f"/w/{i}-{j % 3}"
                ok, kv = await s.create(key, b"v")
                if not ok:
                    await s.update(key, b"v%d" % j, kv.mod_revision)
                if j == per // 2 and i == 0:  # mid-storm: a from-revision and a from-now watch
                    watches.append(s.watch("/w/", 5))
                    watches.append(s.watch("/w/", 0))

        await asyncio.gather(*(writer(i) for i in range(n_writers)))
        watches.append(s.watch("/w/", 100))
        last = await s.current_revision()
        assert last == total  # every create or update succeeded: no gaps in revisions
        for w in watches:
            start = w.next_revision
            events = await take(w, last - start + 1)
            revs = [e.kv.mod_revision for e in events]
            assert revs == list(range(start, last + 1))
            w.close()
        assert watches[1].next_revision - 1 == last and watches[3].next_revision - 1 == last
    run(body, open_store)


def test_watch_overflow_drops_slow_watcher_only(open_store):
    async def body(s):
        slow = s.watch("/o/", 0)
        fast = s.watch("/o/", 0)
        got = []

        async def consume():
            async for ev in fast:
                got.append(ev.kv.mod_revision)
                if len(got) == 25:
                    return

        consumer = asyncio.create_task(consume())
        for i in range(25):  # never awaited by `slow`: its buffer of 10 overflows
            await s.create(f"/o/{i}", b"v")
        await asyncio.wait_for(consumer, 5)
        assert got == list(range(1, 26))
        delivered = []
        with pytest.raises(WatchOverflowError) as info:
            async for ev in slow:
                delivered.append(ev.kv.mod_revision)
        assert delivered == list(range(1, 11))  # what was buffered still arrives, in order
        assert isinstance(info.value, CompactedError) and info.value.last_revision == 10
        assert [e async for e in slow] == []  # ended for good
        fast.close()
        assert s.watcher_count() == 0
    run(body, open_store, watch_buffer=10)


def test_compaction_keeps_live_keys_and_reports_compacted(open_store):
    async def body(s):
        await fill(s)  # live: a (rev 4), c (3), d (6), /pq/x (7); b deleted at 5
        await s.update("/p/c", b"c2", 3)  # rev 8
        assert await s.compact(8) == 8 and s.compact_revision == 8
        assert await s.compact(3) == 8  # already compacted further: a no-op
        with pytest.raises(FutureRevisionError):
            await s.compact(9)
        res = await s.list("/p/")
        assert [(kv.key, kv.value) for kv in res.kvs] == [
            ("/p/a", b"a2"), ("/p/c", b"c2"), ("/p/d", b"d1")]
        assert (await s.list("/p/", revision=8)).kvs == res.kvs  # the compact revision is readable
        with pytest.raises(CompactedError) as info:
            await s.list("/p/", revision=7)
        assert (info.value.compact_revision, info.value.current_revision) == (8, 8)
        with pytest.raises(CompactedError):
            await take(s.watch("/p/", 8), 1)
        assert s.watcher_count() == 0
        w = s.watch("/p/", 9)
        ok, kv = await s.create("/p/b", b"b2")  # a key whose tombstone was compacted
        assert ok and kv.create_revision == 9
        (ev,) = await take(w, 1)
        assert ev.kv == kv and ev.prev_kv is None
        w.close()
        ok, _ = await s.update("/p/a", b"a3", 4)  # the surviving row still guards CAS
        assert ok
    run(body, open_store)


def test_compaction_keeps_every_later_snapshot(open_store):
    """Compacting to C leaves reads at C and later, and the watch history after C, intact."""

    async def body(s):
        for i in range(40):  # revision i + 1; key i % 5 was last written at revision i - 4
            if i < 5:
                await s.create(f"/k/{i}", b"v")
            elif i % 7 == 0:
                await s.delete(f"/k/{i % 5}")
                await s.create(f"/k/{i % 5}", b"v%d" % i)
            else:
                _, kv = await s.get(f"/k/{i % 5}")
                assert (await s.update(f"/k/{i % 5}", b"v%d" % i, kv.mod_revision))[0]
        last = await s.current_revision()
        before = {rev: (await s.list("/k/", revision=rev)).kvs for rev in range(20, last + 1)}
        history = await take(s.watch("/k/", 21), last - 20)
        assert await s.compact(20) == 20
        for rev, kvs in before.items():
            assert (await s.list("/k/", revision=rev)).kvs == kvs
        assert await take(s.watch("/k/", 21), last - 20) == history
        assert await s.compact(last) == last
        assert (await s.list("/k/")).kvs == before[last]
        assert await s.current_revision() == last
    run(body, open_store)


def test_periodic_compaction(open_store):
    async def main():
        s = await open_store(compact_interval=0.02, compact_keep=5)
        try:
            revs = [(await s.create(f"/k/{i}", b"v"))[1].mod_revision for i in range(20)]
            # the last 5 writes' history is kept, no more: the compact revision is the 15th
            # create's (15), or, on a backend whose compactor writes a revision of its own as
            # etcd's does, that write if it came right after the 15th create
            for _ in range(200):
                if revs[14] <= s.compact_revision < revs[15]:
                    break
                await asyncio.sleep(0.01)
            assert revs[14] <= s.compact_revision < revs[15]
            assert await s.count("/k/") == 20
        finally:
            await s.close()
    asyncio.run(main())


def test_closed_store(open_store):
    async def main():
        s = await open_store()
        w = s.watch("/x/", 0)
        await s.close()
        await s.close()  # idempotent
        assert [e async for e in w] == []  # closing the store ends its watches
        with pytest.raises(StorageError):
            await s.create("/x/a", b"v")
        with pytest.raises(StorageError):
            await s.get("/x/a")
        with pytest.raises(StorageError):
            await s.list("/x/")
        with pytest.raises(StorageError):
            await take(s.watch("/x/", 0), 1)
        with pytest.raises(StorageError, match="closed"):
            await s.check()
    asyncio.run(main())


def test_check_is_quiet_on_a_healthy_store(open_store):
    async def body(s):
        assert await s.check() is None
        await fill(s)
        assert await s.check() is None
        assert await s.current_revision() == 7  # the health check wrote nothing visible
    run(body, open_store)


def test_concurrent_creates_are_all_acknowledged_with_unique_revisions(open_store):
    """Throughput sanity (no timing asserts; see bench/bench_storage.py): 50 callers; every
    write acknowledged once, revisions dense and unique."""

    async def body(s):
        results = await asyncio.gather(
            *(s.create(f"/t/{c}/{i}", b"x" * 200) for c in range(50) for i in range(20)))
        assert all(ok for ok, _ in results)
        revs = sorted(kv.mod_revision for _, kv in results)
        assert revs == list(range(1, 1001))
        res = await s.list("/t/")
        assert res.count == 1000 and len(res.kvs) == 1000
    run(body, open_store)


def test_write_acknowledged_after_fan_out(open_store):
    """When create() returns, the event is already queued for every watcher."""

    async def body(s):
        w = s.watch("/f/", 0)
        await s.create("/f/a", b"v")
        assert len(w._live) == 1
        w.close()
    run(body, open_store)


@pytest.mark.parametrize(
    "prefix,end",
    [
        pytest.param("/registry/pods/", "/registry/pods0", id="slash"),
        pytest.param("a", "b", id="single"),
        pytest.param("", None, id="empty"),
        pytest.param("a\U0010ffff", "b", id="max-codepoint-carries"),
        pytest.param("\ud7ff", "\ue000", id="skips-surrogates"),
    ],
)
def test_prefix_end(prefix, end):
    assert prefix_end(prefix) == end
