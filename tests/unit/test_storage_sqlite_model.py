"""Randomized model check of the SQLite store against a plain dict per revision.

A seeded random workload of creates, CAS updates (some stale) and deletes runs against the store
and against a model that keeps a snapshot of the key space at every revision. Then: every
``list`` at every retained revision equals the model's snapshot; the events a live watcher saw
equal the events backfilled from the log; compaction keeps every snapshot from the compact
revision on; and a reopened store agrees with all of it.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from kubeling.storage import DELETE, PUT, CompactedError, KeyValue, SQLiteStore, StorageError

KEYS = [f"/m/{c}" for c in "abcdefgh"] + ["/mx/other"]


async def _workload(store, rng, n_ops):
    """Returns snapshots: revision -> {key: (value, create_revision, mod_revision)}."""
    model: dict[str, tuple[bytes, int, int]] = {}
    snapshots = {0: {}}
    rev = 0
    for i in range(n_ops):
        key = rng.choice(KEYS)
        value = b"v%d" % i
        op = rng.choice(["create", "update", "update", "delete", "stale"])
        cur = model.get(key)
        if op == "create":
            ok, kv = await store.create(key, value)
            assert ok == (cur is None)
            if ok:
                rev += 1
                model[key] = (value, rev, rev)
        elif op in ("update", "stale"):
            expected = cur[2] if cur and op == "update" else rng.randint(1, rev + 1)
            ok, kv = await store.update(key, value, expected)
            assert ok == (cur is not None and expected == cur[2])
            if ok:
                rev += 1
                model[key] = (value, cur[1], rev)
        else:
            expected = rng.choice([0, cur[2] if cur else 0, 1])
            ok, kv = await store.delete(key, expected)
            assert ok == (cur is not None and expected in (0, cur[2]))
            if ok:
                rev += 1
                del model[key]
        if ok:
            assert kv.mod_revision == rev
            snapshots[rev] = dict(model)
        else:
            assert kv == (None if cur is None else KeyValue(key, *cur)), (op, key)
    return snapshots


def _kv(key, entry):
    value, create_rev, mod_rev = entry
    return (key, value, create_rev, mod_rev)


def _listed(res):
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision) for kv in res.kvs]


def _expected(snapshot, prefix):
    return [_kv(k, snapshot[k]) for k in sorted(snapshot) if k.startswith(prefix)]


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in (1, 2, 3)])
def test_store_matches_model(tmp_path, seed):
    path = str(tmp_path / "db")

    async def main():
        rng = random.Random(seed)
        store = await SQLiteStore.open(path, compact_interval=0)
        live = store.watch("/m/", 0)
        snapshots = await _workload(store, rng, 400)
        last = max(snapshots)
        assert await store.current_revision() == last
        for rev, snap in snapshots.items():
            if rev == 0:
                continue
            assert _listed(await store.list("/m/", revision=rev)) == _expected(snap, "/m/")
        # Paginated reads at a past revision add up to the full list.
        mid = last // 2
        pages, after = [], ""
        while True:
            res = await store.list("/m/", revision=mid, start_after=after, limit=3)
            pages += _listed(res)
            remaining = [k for k in snapshots[mid] if k.startswith("/m/") and k > after]
            assert res.count == len(remaining)
            if not res.more:
                break
            after = res.kvs[-1].key
        assert pages == _expected(snapshots[mid], "/m/")
        # Live fan-out and log backfill describe exactly the same history.
        n_events = sum(1 for r in snapshots if r and _changed_under(snapshots, r, "/m/"))
        seen = [await live.__anext__() for _ in range(n_events)]
        backfilled = [await ev for ev in _n(store.watch("/m/", 1), n_events)]
        assert seen == backfilled
        _check_events_against_model(seen, snapshots)
        live.close()
        # Compact to the middle: later snapshots intact, earlier ones reported compacted.
        await store.compact(mid)
        for rev in (mid, mid + 1, last):
            res = await store.list("/m/", revision=rev)
            assert _listed(res) == _expected(snapshots[rev], "/m/")
        if mid > 1:
            with pytest.raises(CompactedError):
                await store.list("/m/", revision=mid - 1)
        expected_tail = [e for e in seen if e.kv.mod_revision > mid]
        tail = [await ev for ev in _n(store.watch("/m/", mid + 1), len(expected_tail))]
        assert tail == expected_tail
        await store.close()
        store = await SQLiteStore.open(path, compact_interval=0)
        try:
            assert _listed(await store.list("")) == _expected(snapshots[last], "")
            assert store.compact_revision == mid
        finally:
            await store.close()

    asyncio.run(main())


def _changed_under(snapshots, rev, prefix):
    before, after = snapshots[rev - 1], snapshots[rev]
    keys = [k for k in set(before) | set(after) if k.startswith(prefix)]
    return any(before.get(k) != after.get(k) for k in keys)


def _n(watch, n):
    for _ in range(n):
        yield watch.__anext__()


def _check_events_against_model(events, snapshots):
    for ev in events:
        rev = ev.kv.mod_revision
        key = ev.kv.key
        before, after = snapshots[rev - 1].get(key), snapshots[rev].get(key)
        if ev.type == DELETE:
            assert after is None and ev.kv.value == before[0]
            assert ev.prev_kv.mod_revision == before[2]
        else:
            assert ev.type == PUT
            assert _kv(key, after) == (key, ev.kv.value, ev.kv.create_revision, rev)
            if before is None:
                assert ev.prev_kv is None and ev.kv.create_revision == rev
            else:
                assert (ev.prev_kv.value, ev.prev_kv.mod_revision) == (before[0], before[2])


def test_open_rejects_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"this is not sqlite" * 100)

    async def main():
        with pytest.raises(StorageError, match="cannot open"):
            await SQLiteStore.open(str(path))
        path.unlink()
        store = await SQLiteStore.open(str(path))  # the failed open released the lock
        await store.close()

    asyncio.run(main())
