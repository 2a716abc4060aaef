"""MemoryStore specifics: a cheap, thread-free test seam that behaves exactly like SQLite.

The contract tests (``test_storage_contract.py``) run on it already; here:
- it costs nothing to make (no thread, no loop needed to construct, microseconds to open);
- a randomized differential run against SQLiteStore: the same operations give the same
  results, the same list at every revision (with pagination), the same watch history, and the
  same retained rows after compactions.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time

import pytest

from kubeling.storage import MemoryStore, SQLiteStore, Store

KEYS = [f"/m/{c}" for c in "abcdefg"] + ["/mx/other", "/m"]


def test_constructing_needs_no_loop_and_no_thread():
    before = threading.active_count()
    store = MemoryStore()  # outside any event loop
    assert isinstance(store, Store)

    async def main():
        ok, kv = await store.create("/a", b"v")
        assert ok and kv.mod_revision == 1
        assert (await store.list("")).kvs == [kv]
        await store.close()

    asyncio.run(main())
    assert threading.active_count() == before


def test_opening_is_cheap():
    async def main():
        start = time.perf_counter()
        for _ in range(500):
            s = await MemoryStore.open()
            await s.create("/a", b"v")
            await s.close()
        return time.perf_counter() - start

    # Microseconds each; the bound leaves room for a loaded machine.
    assert asyncio.run(main()) < 1.0


async def _random_ops(stores, rng, n_ops):
    """Apply the same random operations to every store; their answers must agree."""
    for i in range(n_ops):
        key = rng.choice(KEYS)
        value = rng.randbytes(rng.randint(0, 20))
        op = rng.choice(["create"] * 4 + ["update"] * 4 + ["delete"] * 2 + ["compact"])
        rev = await stores[0].current_revision()
        if op == "create":
            results = [await s.create(key, value) for s in stores]
        elif op == "update":
            _, cur = await stores[0].get(key)
            expected = cur.mod_revision if cur and rng.random() < 0.8 else rng.randint(0, rev + 1)
            results = [await s.update(key, value, expected) for s in stores]
        elif op == "delete":
            expected = rng.choice([0, rng.randint(0, rev + 1)])
            results = [await s.delete(key, expected) for s in stores]
        else:
            target = rng.randint(0, max(0, rev - 60))  # keep some history to compare
            results = [await s.compact(target) for s in stores]
        assert all(r == results[0] for r in results), (i, op, key, results)


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in (11, 12, 13)])
def test_memory_store_matches_sqlite(tmp_path, seed):
    async def main():
        rng = random.Random(seed)
        mem = await MemoryStore.open()
        sql = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0)
        stores = [mem, sql]
        try:
            live = [s.watch("/m/", 0) for s in stores]
            await _random_ops(stores, rng, 600)
            last = await sql.current_revision()
            assert await mem.current_revision() == last
            assert mem.compact_revision == sql.compact_revision
            for rev in range(max(sql.compact_revision, 1), last + 1):
                for prefix in ("/m/", "/m", ""):
                    assert await mem.list(prefix, revision=rev) == await sql.list(prefix, revision=rev)
                after = rng.choice(KEYS)
                page = [await s.list("/m/", revision=rev, start_after=after, limit=2) for s in stores]
                assert page[0] == page[1]
            for prefix in ("/m/", "/mx/", ""):
                assert await mem.count(prefix) == await sql.count(prefix)
            n = live[1].pending()
            assert live[0].pending() == n
            assert [await live[0].__anext__() for _ in range(n)] == \
                   [await live[1].__anext__() for _ in range(n)]
            start = sql.compact_revision + 1  # every revision after the compact one is retained
            backfills = []
            for s in stores:
                w = s.watch("", start)
                backfills.append([await asyncio.wait_for(w.__anext__(), 5)
                                  for _ in range(last - start + 1)])
                w.close()
            assert backfills[0] == backfills[1]
            assert [e.revision for e in backfills[0]] == list(range(start, last + 1))
            # The same history is retained: compaction frees memory as it frees rows.
            rows = sqlite3.connect(tmp_path / "db").execute("SELECT id FROM kine ORDER BY id")
            assert [r.revision for r in mem._log] == [r[0] for r in rows.fetchall()]
            for w in live:
                w.close()
        finally:
            await mem.close()
            await sql.close()

    asyncio.run(main())
