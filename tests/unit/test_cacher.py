"""The cacher's LIST side against a real SQLite store: consistent reads, which lists go to the
store, pages cut from the cache, byte-equality with the store path, damaged values, restarts."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from test_cacher_support import cm, create, delete, key, run, served, update

from kubeling.api import errors
from kubeling.apiserver import cacher as cacher_mod
from kubeling.apiserver import listwatch
from kubeling.apiserver.cacher import Cacher, resource_prefix
from kubeling.apiserver.crd import served_for
from kubeling.apiserver.watch_cache import SelectionPredicate
from kubeling.storage import SQLiteStore

CM = ("", "v1", "configmaps")


def everything(sv) -> SelectionPredicate:
    return SelectionPredicate(sv.res)


@pytest.mark.parametrize("key_, want", [
    pytest.param("/registry/core/configmaps/ns/a", "/registry/core/configmaps/", id="namespaced"),
    pytest.param("/registry/core/namespaces/ns", "/registry/core/namespaces/", id="cluster-scoped"),
    pytest.param("/registry/example.com/widgets/ns/w", "/registry/example.com/widgets/", id="custom"),
    pytest.param("/registry/core", None, id="too-short"),
    pytest.param("/other/core/configmaps/ns/a", None, id="outside"),
])
def test_resource_prefix(key_, want):
    assert resource_prefix(key_) == want


def test_consistent_list_sees_every_acknowledged_write(tmp_path):
    """A write acknowledged before a list is in the list, however fast they follow each other."""
    sv = served(*CM)

    async def body(store, cacher):
        for i in range(200):
            obj = cm(f"c{i:03d}", "ns")
            rv = await create(store, obj)
            page = await cacher.list(sv, "ns", everything(sv))
            assert page.from_cache and page.revision >= rv
            assert page.entries[-1].name == f"c{i:03d}" and len(page.entries) == i + 1
        obj["data"] = {"k": "changed"}
        rv = await update(store, obj)
        page = await cacher.list(sv, "ns", everything(sv))
        assert page.entries[-1].obj["data"] == {"k": "changed"}
        assert page.entries[-1].obj["metadata"]["resourceVersion"] == str(rv)
    run(body, tmp_path)


def test_consistent_list_waits_for_a_revision_outside_the_prefix(tmp_path):
    """A commit outside /registry/ produces no event; the watch's progress covers it."""
    sv = served(*CM)

    async def body(store, cacher):
        await create(store, cm("a", "ns"))
        await store.create("/elsewhere/x", b"{}")
        t = time.monotonic()
        page = await cacher.list(sv, "ns", everything(sv))
        assert page.from_cache and page.revision == await store.current_revision()
        assert time.monotonic() - t < 1.0
    run(body, tmp_path)


def _store_page_json(page) -> bytes:
    return errors.encode_json(page.body())  # what a response carries


@pytest.mark.parametrize("ns, label, field, limit", [
    pytest.param("ns1", "", "", 0, id="namespace"),
    pytest.param(None, "", "", 0, id="all-namespaces"),
    pytest.param(None, "tier=web", "", 0, id="label-selector"),
    pytest.param("ns2", "tier in (web,db)", "metadata.name!=c003", 0, id="label-and-field"),
    pytest.param(None, "", "metadata.namespace=ns2", 0, id="field-namespace"),
    pytest.param("ns1", "", "", 2, id="first-page"),
    pytest.param(None, "tier=db", "", 3, id="first-page-with-selector"),
])
def test_cached_list_equals_store_list_byte_for_byte(tmp_path, ns, label, field, limit):
    sv = served(*CM)

    async def body(store, cacher):
        for i in range(12):
            await create(store, cm(f"c{i:03d}", f"ns{i % 3}", {"tier": ("web", "db")[i % 2]},
                                   {"i": str(i), "html": "<a href='x'>&amp;</a>\u2028"}))
        await update(store, cm("c004", "ns1", {"tier": "db"}, {"i": "changed"}))
        await delete(store, cm("c007", "ns1"))
        pred = SelectionPredicate.parse(sv, label, field)
        cached = await cacher.list(sv, ns, pred, limit=limit)
        assert cached.from_cache
        # The store path, at the same revision (nothing was written since).
        items, rv, token, remaining = await listwatch.list_objects(
            store, sv, ns, listwatch.MATCH_ALL if pred.everything else pred.match_object, limit=limit)
        stored = cacher_mod.ListPage(sv, rv, objects=items, continue_token=token, remaining=remaining)
        assert cached.revision == stored.revision
        assert cached.json() == _store_page_json(stored)
        assert errors.encode_json(cached.body()) == cached.json()
        if limit:
            assert cached.continue_token and cached.continue_token == stored.continue_token
            # The next page comes from the store's snapshot at the cache's revision.
            rest = await cacher.list(sv, ns, pred, continue_token=cached.continue_token)
            assert not rest.from_cache and rest.revision == cached.revision
            everything_ = await cacher.list(sv, ns, pred)
            assert [e.name for e in cached.entries] + [o["metadata"]["name"] for o in rest.objects] == \
                [e.name for e in everything_.entries]
    run(body, tmp_path)


@pytest.mark.parametrize("opts, from_cache", [
    pytest.param({}, True, id="consistent"),
    pytest.param({"limit": 2}, True, id="consistent-with-limit"),
    pytest.param({"resource_version": "0"}, True, id="any"),
    pytest.param({"resource_version": "0", "limit": 2}, True, id="any-ignores-limit"),
    pytest.param({"resource_version": "R"}, True, id="not-older-than-legacy"),
    pytest.param({"resource_version": "R", "rv_match": "NotOlderThan", "limit": 2}, True, id="not-older-than"),
    pytest.param({"resource_version": "R", "rv_match": "Exact"}, False, id="exact"),
    pytest.param({"resource_version": "R", "limit": 2}, False, id="legacy-exact-with-limit"),
])
def test_which_lists_the_cache_serves(tmp_path, opts, from_cache):
    sv = served(*CM)

    async def body(store, cacher):
        for i in range(4):
            rv = await create(store, cm(f"c{i}", "ns"))
        kw = dict(opts)
        if kw.get("resource_version") == "R":
            kw["resource_version"] = str(rv - 1)
        page = await cacher.list(sv, "ns", everything(sv), **kw)
        assert page.from_cache is from_cache
        if kw.get("rv_match") == "Exact":
            assert page.revision == rv - 1 and len(page.objects) == 3
        if kw == {"resource_version": "0", "limit": 2}:
            assert len(page.entries) == 4 and not page.continue_token
    run(body, tmp_path)


def test_not_older_than_a_future_revision_is_504_after_the_wait(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        t = time.monotonic()
        with pytest.raises(errors.StatusError) as ei:
            await cacher.list(sv, "ns", everything(sv), resource_version=str(rv + 5))
        assert time.monotonic() - t >= 0.2
        e = ei.value
        assert (e.code, e.reason) == (504, "Timeout")
        assert e.message == f"Too large resource version: {rv + 5}, current: {rv}"
        assert e.details["causes"][0]["reason"] == "ResourceVersionTooLarge"
        # A write that arrives while the list waits releases it.
        task = asyncio.create_task(cacher.list(sv, "ns", everything(sv), resource_version=str(rv + 1)))
        await asyncio.sleep(0.05)
        await create(store, cm("b", "ns"))
        page = await task
        assert [e.name for e in page.entries] == ["a", "b"]
        assert not cacher._waiters
    run(body, tmp_path, fresh_timeout=0.2)


@pytest.mark.parametrize("opts, code", [
    pytest.param({"resource_version": "x"}, 400, id="bad-rv"),
    pytest.param({"resource_version": "0", "rv_match": "Exact"}, 400, id="exact-zero"),
    pytest.param({"rv_match": "Sometimes"}, 400, id="bad-match"),
    pytest.param({"continue_token": "garbage"}, 400, id="bad-token"),
])
def test_bad_list_options_are_rejected_as_on_the_store_path(tmp_path, opts, code):
    sv = served(*CM)

    async def body(store, cacher):
        with pytest.raises(errors.StatusError) as ei:
            await cacher.list(sv, "ns", everything(sv), **opts)
        assert ei.value.code == code
    run(body, tmp_path)


def test_undecodable_value_is_skipped_and_counted(tmp_path, caplog):
    sv = served(*CM)

    async def body(store, cacher):
        await create(store, cm("a", "ns"))
        await store.create(key(cm("broken", "ns")), b"{not json")
        await create(store, cm("c", "ns"))
        page = await cacher.list(sv, "ns", everything(sv))
        assert [e.name for e in page.entries] == ["a", "c"]
        assert cacher.decode_errors == 1
        assert "broken" in caplog.text and "does not decode" in caplog.text
    run(body, tmp_path)


def test_restart_rebuilds_from_the_store_with_its_history(tmp_path):
    """A new cacher lists at an older base and replays the log: its window reaches back."""
    sv = served(*CM)

    async def main():
        store = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0)
        try:
            await create(store, cm("gone", "ns"))
            first = await create(store, cm("a", "ns"))
            await delete(store, cm("gone", "ns"))
            await store.create(key(cm("broken", "ns")), b"\xff")
            cacher = Cacher(store)
            await cacher.start()
            try:
                page = await cacher.list(sv, "ns", everything(sv))
                assert [e.name for e in page.entries] == ["a"]
                cache = cacher._caches[sv.prefix]
                assert cache.oldest == 0 and [e.revision for e in cache.events_since(first, "ns")] == [first + 1]
            finally:
                await cacher.stop()
            # With a short replay the base is recent and older starts are refused.
            cacher = Cacher(store, replay=1)
            await cacher.start()
            try:
                cache = cacher._caches[sv.prefix]
                assert cache.oldest == await store.current_revision() - 1
                with pytest.raises(errors.StatusError) as ei:
                    list(cache.events_since(first, "ns"))
                assert ei.value.code == 410 and ei.value.message == \
                    f"too old resource version: {first} ({cache.oldest})"
            finally:
                await cacher.stop()
        finally:
            await store.close()
    asyncio.run(main())


def test_store_watch_failure_rebuilds_the_cache_and_ends_watches(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        await create(store, cm("a", "ns"))
        w = await cacher.watch(sv, "ns", everything(sv))
        cacher._watch.close()  # the store watch ends under the cacher
        await asyncio.wait_for(w.done, 5)
        await create(store, cm("b", "ns"))
        await asyncio.wait_for(cacher._ready.wait(), 5)
        page = await cacher.list(sv, "ns", everything(sv))
        assert [e.name for e in page.entries] == ["a", "b"]
    run(body, tmp_path)


def test_custom_resources_appear_with_their_first_object(tmp_path):
    """Resources come and go with CRDs: no registration, the window starts at the cacher's base.
    Each served version gets its own bytes, equal to the store path's."""
    crd = {"metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True},
                                 {"name": "v2", "served": True, "storage": False}]}}
    v1, v2 = served_for(crd)

    async def body(store, cacher):
        base = cacher.revision
        obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"},
               "spec": {"size": 3}}
        await create(store, obj, resource="widgets", group="example.com")
        for sv in (v1, v2):
            page = await cacher.list(sv, "ns", SelectionPredicate(sv.res))
            assert [e.name for e in page.entries] == ["w"]
            items, rv, _, _ = await listwatch.list_objects(store, sv, "ns", listwatch.MATCH_ALL)
            assert page.json() == errors.encode_json(cacher_mod.ListPage(sv, rv, objects=items).body())
            assert orjson.loads(page.json())["items"][0]["apiVersion"] == sv.res.group_version  # CR items keep it
        assert cacher._caches[v1.prefix].oldest == base
    run(body, tmp_path)


@pytest.mark.parametrize("field", [
    pytest.param("spec.nodeName=n1", id="kind-field"),
    pytest.param("spec.host=n1", id="deprecated-label-renamed-by-the-strategy"),
    pytest.param("status.phase!=Running,metadata.namespace=ns", id="two-terms"),
])
def test_field_selectors_use_the_kinds_attributes(tmp_path, field):
    sv = served("", "v1", "pods")

    async def body(store, cacher):
        for i, (node, phase) in enumerate([("n1", "Running"), ("n2", "Pending"), ("n1", "Pending")]):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "ns"},
                   "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": phase}}
            await create(store, pod, resource="pods")
        pred = SelectionPredicate.parse(sv, "", field)
        page = await cacher.list(sv, "ns", pred)
        items, _, _, _ = await listwatch.list_objects(store, sv, "ns", pred.match_object)
        assert [e.name for e in page.entries] == [o["metadata"]["name"] for o in items]
        assert page.entries, "the selector matches some pods"
    run(body, tmp_path)


def test_start_over_revisions_outside_the_prefix(tmp_path):
    """A replay window holding no event of the cacher's prefix still ends (by the watch's progress)."""
    async def main():
        store = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0)
        try:
            await create(store, cm("a", "ns"))
            for i in range(5):
                await store.create(f"/elsewhere/{i}", b"{}")
            cacher = Cacher(store, replay=3)
            await asyncio.wait_for(cacher.start(), 5)
            try:
                assert cacher.revision == await store.current_revision()
            finally:
                await cacher.stop()
        finally:
            await store.close()
    asyncio.run(main())


def test_store_watch_pending_is_exact_and_progress_covers_other_prefixes(tmp_path):
    """What the cacher relies on from `BufferedWatch`: ``pending()`` never counts an event that
    would be skipped (so draining it never waits), and ``progress()`` moves with commits under
    other prefixes while nothing is buffered."""
    async def main():
        store = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0)
        try:
            first = await create(store, cm("a", "ns"))
            w = store.watch("/registry/", first)
            assert w.progress() == first - 1  # nothing read yet
            await create(store, cm("b", "ns"))  # live and in the backfill: a duplicate to drop
            got = [await w.__anext__()]
            while w.pending():
                got.append(await asyncio.wait_for(w.__anext__(), 1))
            assert [e.kv.key.rsplit("/", 1)[1] for e in got] == ["a", "b"]
            rv = (await store.create("/elsewhere/x", b"{}"))[1].mod_revision
            assert w.pending() == 0 and w.progress() == rv
            future = store.watch("/registry/", rv + 3)  # a start that has not happened yet
            waiting = asyncio.ensure_future(future.__anext__())
            await asyncio.sleep(0.1)  # its (empty) backfill is loaded; it waits
            await create(store, cm("c", "ns"))  # before the start: never to be yielded
            assert future.pending() == 0 and not waiting.done()
            await create(store, cm("d", "ns"))
            await create(store, cm("e", "ns"))  # the start revision
            assert (await asyncio.wait_for(waiting, 1)).kv.key.endswith("/e")
            w.close()
            future.close()
        finally:
            await store.close()
    asyncio.run(main())


def test_watch_cache_lists_stay_sorted_as_keys_come_and_go():
    """Scopes listed once keep their sorted keys up to date (no re-sort per change)."""
    from kubeling.apiserver.watch_cache import WatchCache
    from kubeling.storage.interface import DELETE, PUT, Event, KeyValue

    prefix = "/registry/core/configmaps/"
    cache = WatchCache(prefix, 0)
    rev = 0

    def put(ns, name):
        nonlocal rev
        rev += 1
        kv = KeyValue(f"{prefix}{ns}/{name}", orjson.dumps(cm(name, ns)), rev, rev)
        return cache.apply(Event(PUT, kv, None), lambda e: orjson.loads(e.kv.value))

    def drop(ns, name):
        nonlocal rev
        rev += 1
        kv = KeyValue(f"{prefix}{ns}/{name}", b"{}", 1, rev)
        return cache.apply(Event(DELETE, kv, None), lambda e: orjson.loads(e.kv.value))

    def listed(ns):
        return [(e.namespace, e.name) for e in cache.list(ns)]

    for ns, name in [("b", "2"), ("a", "9"), ("b", "1")]:
        put(ns, name)
    assert listed(None) == [("a", "9"), ("b", "1"), ("b", "2")] and listed("b") == [("b", "1"), ("b", "2")]
    put("a", "0")
    put("c", "5")
    drop("b", "1")
    put("b", "1")  # re-created
    drop("a", "9")
    assert listed(None) == [("a", "0"), ("b", "1"), ("b", "2"), ("c", "5")]
    assert listed("b") == [("b", "1"), ("b", "2")] and listed("a") == [("a", "0")]
    drop("a", "0")
    assert listed("a") == [] and "a" not in cache.by_namespace
    assert listed(None) == sorted(listed(None)) and [e.revision for e in cache.history] == list(range(1, rev + 1))
