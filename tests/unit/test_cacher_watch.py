"""The cacher's WATCH side: history windows and 410s, initial events, selectors seen per watcher,
bookmarks, the shared fan-out, and how a watch ends (timeout, slow or gone clients, errors)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from test_cacher_support import (
    BACKENDS,
    Client,
    cm,
    create,
    delete,
    names,
    run,
    served,
    settle,
    update,
)

from kubeling.api import errors
from kubeling.apiserver.watch_cache import SelectionPredicate
from kubeling.apiserver.watchstream import renderer

CM = ("", "v1", "configmaps")


def pred(sv, label="", field="", name=""):
    return SelectionPredicate.parse(sv, label, field, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_replays_history_in_order_then_live_events(tmp_path, backend):
    sv = served(*CM)

    async def body(store, cacher):
        rv0 = await create(store, cm("a", "ns"))
        await update(store, cm("a", "ns", data={"n": "2"}))
        await create(store, cm("other", "elsewhere"))
        await delete(store, cm("a", "ns"))
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv0))
        await create(store, cm("b", "ns"))
        await settle(cacher, store)
        evs = await c.stop()
        assert names(evs) == [("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        assert rvs == sorted(rvs) and rvs[0] > rv0
        assert evs[0]["object"]["data"] == {"n": "2"}
    run(body, tmp_path, backend=backend)


def test_watch_older_than_the_window_gets_410(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv0 = await create(store, cm("a", "ns"))
        for i in range(6):  # window of 4 events: the first ones are evicted
            await update(store, cm("a", "ns", data={"i": str(i)}))
        oldest = cacher._caches[sv.prefix].oldest
        assert oldest > rv0
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv0))
        await asyncio.wait_for(c.task, 5)
        evs = c.events()
        assert [e["type"] for e in evs] == ["ERROR"]
        st = evs[0]["object"]
        assert (st["kind"], st["status"], st["code"], st["reason"]) == ("Status", "Failure", 410, "Expired")
        assert st["message"] == f"too old resource version: {rv0} ({oldest})"
        # From the window's oldest revision it resumes.
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(oldest))
        assert len(await c.stop()) == 4
    run(body, tmp_path, capacity=4)


def test_watch_older_than_the_store_compaction_gets_410(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv0 = await create(store, cm("a", "ns"))
        for i in range(3):
            await update(store, cm("a", "ns", data={"i": str(i)}))
        await store.compact(await store.current_revision() - 1)
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv0))
        await asyncio.wait_for(c.task, 5)
        evs = c.events()
        assert [e["type"] for e in evs] == ["ERROR"] and evs[0]["object"]["code"] == 410
        assert evs[0]["object"]["message"].startswith(f"too old resource version: {rv0} (")
    run(body, tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hundred_watchers_with_selectors_each_see_exactly_their_events_in_order(tmp_path, backend):
    sv = served(*CM)

    async def body(store, cacher):
        clients = [await Client.open(cacher, sv, "ns" if i % 2 else None, pred(sv, f"w={i % 10}"))
                   for i in range(100)]
        want: dict[tuple[str | None, str], list] = {}
        for j in range(200):
            ns = f"ns{'' if j % 3 else 'x'}"  # "ns" or "nsx"
            obj = cm(f"o{j:03d}", ns, {"w": str(j % 10)})
            rv = await create(store, obj)
            for scope in (None, ns):
                want.setdefault((scope, str(j % 10)), []).append(("ADDED", obj["metadata"]["name"], str(rv)))
            if j % 4 == 0:
                rv = await update(store, {**obj, "data": {"j": str(j)}})
                for scope in (None, ns):
                    want[(scope, str(j % 10))].append(("MODIFIED", obj["metadata"]["name"], str(rv)))
        await settle(cacher, store)
        for i, c in enumerate(clients):
            got = [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                   for e in await c.stop()]
            assert got == want[("ns" if i % 2 else None, str(i % 10))], f"watcher {i}"
        assert cacher.watcher_count() == 0
    run(body, tmp_path, backend=backend)


def test_objects_leaving_and_entering_a_selector(tmp_path):
    """As upstream: DELETED carries the previous content at the event's revision; ADDED when the
    object matches again; unrelated changes are not seen."""
    sv = served(*CM)

    async def body(store, cacher):
        await create(store, cm("s", "ns", {"tier": "web"}))
        await settle(cacher, store)
        c = await Client.open(cacher, sv, "ns", pred(sv, "tier=web"), resource_version="0")
        await create(store, cm("t", "ns", {"tier": "db"}))
        rv_out = await update(store, cm("s", "ns", {"tier": "db"}, {"v": "2"}))
        rv_in = await update(store, cm("s", "ns", {"tier": "web"}, {"v": "3"}))
        await delete(store, cm("s", "ns"))
        await settle(cacher, store)
        evs = await c.stop()
        assert names(evs) == [("ADDED", "s"), ("DELETED", "s"), ("ADDED", "s"), ("DELETED", "s")]
        gone = evs[1]["object"]
        assert gone["metadata"]["labels"] == {"tier": "web"} and gone["data"] == {"k": "v"}
        assert gone["metadata"]["resourceVersion"] == str(rv_out)
        assert evs[2]["object"]["data"] == {"v": "3"} and evs[2]["object"]["metadata"]["resourceVersion"] == str(rv_in)
    run(body, tmp_path)


@pytest.mark.parametrize("opts, bookmark", [
    pytest.param({"send_initial": True, "rv_match": "NotOlderThan", "bookmarks": True}, True, id="streaming-list"),
    pytest.param({"send_initial": True, "rv_match": "NotOlderThan"}, False, id="streaming-list-no-bookmarks"),
    pytest.param({}, False, id="legacy-empty-rv"),
    pytest.param({"resource_version": "0"}, False, id="legacy-rv-0"),
])
def test_initial_events(tmp_path, opts, bookmark):
    sv = served(*CM)

    async def body(store, cacher):
        for n in ("b", "a"):
            await create(store, cm(n, "ns"))
        rv = await create(store, cm("x", "elsewhere"))
        await settle(cacher, store)  # legacy starts serve the cache as it is
        c = await Client.open(cacher, sv, "ns", pred(sv), **opts)
        await create(store, cm("c", "ns"))
        await settle(cacher, store)
        evs = await c.stop()
        want = [("ADDED", "a"), ("ADDED", "b")] + ([("BOOKMARK", "")] if bookmark else []) + [("ADDED", "c")]
        assert names(evs) == want
        if bookmark:
            meta = evs[2]["object"]["metadata"]
            assert meta == {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}
            assert (evs[2]["object"]["kind"], evs[2]["object"]["apiVersion"]) == ("ConfigMap", "v1")
    run(body, tmp_path)


@pytest.mark.parametrize("rv", [pytest.param("0", id="from-now"), pytest.param("FUTURE", id="future")])
def test_watch_without_initial_events(tmp_path, rv):
    sv = served(*CM)

    async def body(store, cacher):
        cur = await create(store, cm("old", "ns"))
        await settle(cacher, store)  # "0" means the cache's revision, whatever it is
        opts = {"send_initial": False, "rv_match": "NotOlderThan", "resource_version": "0"} if rv == "0" \
            else {"resource_version": str(cur + 1)}  # a revision that has not happened yet
        c = await Client.open(cacher, sv, "ns", pred(sv), **opts)
        await create(store, cm("new1", "ns"))
        await create(store, cm("new2", "ns"))
        await settle(cacher, store)
        evs = await c.stop()
        assert names(evs) == ([("ADDED", "new1"), ("ADDED", "new2")] if rv == "0" else [("ADDED", "new2")])
    run(body, tmp_path)


def test_watch_by_name_sees_only_that_object(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        c = await Client.open(cacher, sv, "ns", pred(sv, name="b"), resource_version=str(rv))
        await create(store, cm("b", "ns"))
        await create(store, cm("c", "ns"))
        await delete(store, cm("b", "ns"))
        await settle(cacher, store)
        assert names(await c.stop()) == [("ADDED", "b"), ("DELETED", "b")]
    run(body, tmp_path)


def test_live_watchers_share_bytes_and_get_one_write_per_batch(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        clients = [await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv)) for _ in range(3)]
        assert all(c.watcher.live for c in clients)
        seen = []
        orig = clients[0].transport.write
        clients[0].transport.write = lambda data: (seen.append(data), orig(data))
        writes = [c.transport.writes for c in clients]
        # One commit with three events: the store's group commit batches concurrent writes.
        await asyncio.gather(*(create(store, cm(f"b{i}", "ns")) for i in range(3)))
        await settle(cacher, store)
        assert [c.transport.writes - w for c, w in zip(clients, writes)] == [len(seen)] * 3
        assert len(seen) < 3, "events of one batch go out in one write"
        cev = cacher._caches[sv.prefix].history[-1]
        assert cev.chunk("ADDED", cev.cur, sv) is cev.chunk("ADDED", cev.cur, sv)
        for c in clients:
            assert names(await c.stop()) == [("ADDED", "b0"), ("ADDED", "b1"), ("ADDED", "b2")]
    run(body, tmp_path)


def test_table_watchers_render_their_own_rows(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        table = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv),
                                  render=renderer(sv, "Table", "v1", "None"))
        meta = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv),
                                 render=renderer(sv, "PartialObjectMetadata", "v1", "Metadata"))
        await create(store, cm("b", "ns", data={"x": "1", "y": "2"}))
        await settle(cacher, store)
        (ev,) = await table.stop()
        assert ev["type"] == "ADDED" and ev["object"]["kind"] == "Table"
        assert ev["object"]["rows"][0]["cells"][:2] == ["b", 2]
        (ev,) = await meta.stop()
        assert ev["object"]["kind"] == "PartialObjectMetadata" and ev["object"]["metadata"]["name"] == "b"
    run(body, tmp_path)


def test_idle_watchers_get_bookmarks_at_the_cache_revision(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        quiet = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv), bookmarks=True)
        plain = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv))
        other = await create(store, cm("x", "elsewhere"))  # not for these watchers; moves the revision
        await asyncio.sleep(0.5)
        evs = await quiet.stop()
        assert evs and {e["type"] for e in evs} == {"BOOKMARK"}
        assert evs[-1]["object"]["metadata"]["resourceVersion"] == str(other)
        assert await plain.stop() == []
    run(body, tmp_path, bookmark_interval=0.2)


def test_client_that_stops_reading_is_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kubeling.apiserver.watchstream")
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv), buffered=10 << 20)
        await create(store, cm("b", "ns"))
        await asyncio.wait_for(c.task, 5)
        assert c.transport.aborted and cacher.watcher_count() == 0
        assert "bytes unsent" in caplog.text
    run(body, tmp_path)


def test_watch_queueing_too_much_while_catching_up_ends(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        for i in range(5):
            rv = await create(store, cm(f"a{i}", "ns"))
        await settle(cacher, store)
        w = await cacher.watch(sv, "ns", pred(sv), resource_version="0")  # not served yet
        for i in range(4):
            await create(store, cm(f"b{i}", "ns"))
        await settle(cacher, store)
        assert w.done.done() and cacher.watcher_count() == 0
        assert rv
    run(body, tmp_path, pending_limit=3)


def test_timeout_and_departed_clients_end_watches(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        timed = await Client.open(cacher, sv, "ns", pred(sv), timeout=0.2, resource_version=str(rv))
        gone = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv))
        gone.transport.closing = True  # the client hung up
        await asyncio.wait_for(asyncio.gather(timed.task, gone.task), 5)
        assert cacher.watcher_count() == 0
    run(body, tmp_path, bookmark_interval=0.2)


def test_stopping_the_cacher_ends_watches(tmp_path):
    sv = served(*CM)

    async def body(store, cacher):
        c = await Client.open(cacher, sv, "ns", pred(sv), resource_version="0")
        await cacher.stop()
        await asyncio.wait_for(c.task, 5)
        assert c.transport.data == b""
    run(body, tmp_path)


def test_event_bytes_equal_the_store_path_encoding(tmp_path):
    """What a cached watcher writes is what a response encoder (`errors.encode_json`, upstream's
    bytes) gives for ``{"type": ..., "object": obj}``."""
    sv = served("apps", "v1", "deployments")
    legacy = served("extensions", "v1beta1", "deployments")

    async def body(store, cacher):
        dep = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "namespace": "ns", "annotations": {"note": "<b> & </b>"}},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}
        rv = await create(store, dep, resource="deployments", group="apps")
        await settle(cacher, store)
        cev = cacher._caches[sv.prefix].history[-1]
        for s in (sv, legacy):
            want = errors.encode_json({"type": "ADDED", "object": cev.cur.converted(s)})
            assert cev.line("ADDED", cev.cur, s) == want
        assert orjson.loads(cev.line("ADDED", cev.cur, legacy))["object"]["apiVersion"] == "extensions/v1beta1"
        assert cev.cur.obj["metadata"]["resourceVersion"] == str(rv)
    run(body, tmp_path)


def test_a_failing_watcher_ends_alone(tmp_path, caplog):
    sv = served(*CM)

    def broken(etype, obj):
        raise RuntimeError("renderer bug")

    async def body(store, cacher):
        rv = await create(store, cm("a", "ns"))
        bad = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv), render=broken)
        good = await Client.open(cacher, sv, "ns", pred(sv), resource_version=str(rv))
        await create(store, cm("b", "ns"))
        await settle(cacher, store)
        await asyncio.wait_for(bad.task, 5)
        await create(store, cm("c", "ns"))
        await settle(cacher, store)
        assert names(await good.stop()) == [("ADDED", "b"), ("ADDED", "c")]
        assert "renderer bug" in caplog.text
    run(body, tmp_path)


def test_pod_watches_by_node_name_are_told_only_of_their_nodes_pods(tmp_path):
    """Upstream's trigger index: a `spec.nodeName=<node>` pod watch is registered under that node
    and offered only events whose pod is (or was) on it, yet sees exactly what filtering would
    show: ADDED when the pod is bound there, DELETED when it goes."""
    sv = served("", "v1", "pods")

    def pod(name, node=""):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
                "spec": {"containers": [{"name": "c", "image": "i"}], **({"nodeName": node} if node else {})}}

    async def body(store, cacher):
        n1 = await Client.open(cacher, sv, None, pred(sv, field="spec.nodeName=n1"), resource_version="0")
        n2 = await Client.open(cacher, sv, None, pred(sv, field="spec.nodeName=n2"), resource_version="0")
        unbound = await Client.open(cacher, sv, None, pred(sv, field="spec.nodeName="), resource_version="0")
        subs = next(iter(cacher._subs.values()))
        assert set(subs.by_trigger) == {"n1", "n2", ""} and not subs.all
        await create(store, pod("a"), resource="pods")
        await update(store, pod("a", "n1"), resource="pods")
        await create(store, pod("b", "n2"), resource="pods")
        await delete(store, pod("a", "n1"), resource="pods")
        await settle(cacher, store)
        assert names(await n1.stop()) == [("ADDED", "a"), ("DELETED", "a")]
        assert names(await n2.stop()) == [("ADDED", "b")]
        assert names(await unbound.stop()) == [("ADDED", "a"), ("DELETED", "a")]
        assert not cacher._subs   # every trigger registration was removed with its watch
    run(body, tmp_path)
