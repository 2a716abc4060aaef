"""SQLite-specific tests of kubeling.storage.sqlite.SQLiteStore: the kine-style rows on disk,
stepwise compaction, reopening a file, and one process per file.

The Store contract itself (revisions, CAS, lists, watches, compaction semantics, closing) is
tested on every backend in ``test_storage_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading

import pytest
from storage_testing import fill, take

from kubeling.storage import CompactedError, FutureRevisionError, SQLiteStore, StorageError


def run(coro_fn, tmp_path, **kw):
    """Open a store on tmp_path, run ``coro_fn(store)``, close the store."""

    async def main():
        store = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0, **kw)
        try:
            return await coro_fn(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_compaction_deletes_superseded_rows_and_tombstones(tmp_path):
    """What compaction leaves in the table; the contract side is in test_storage_contract.py."""
    db = tmp_path / "db"

    async def body(s):
        await fill(s)  # live: a (rev 4), c (3), d (6), /pq/x (7); b deleted at 5
        await s.update("/p/c", b"c2", 3)  # rev 8
        assert await s.compact(8) == 8 and s.compact_revision == 8
        assert await s.compact(3) == 8  # already compacted further: a no-op
        with pytest.raises(FutureRevisionError):
            await s.compact(9)
        rows = sqlite3.connect(db).execute("SELECT id, name FROM kine ORDER BY id").fetchall()
        assert rows == [(4, "/p/a"), (6, "/p/d"), (7, "/pq/x"), (8, "/p/c")]
    run(body, tmp_path)


def test_compaction_in_steps(tmp_path, monkeypatch):
    monkeypatch.setattr("kubeling.storage.sqlite.COMPACT_STEP", 7)

    async def body(s):
        for i in range(40):  # revision i + 1; key i % 5 was last written at revision i - 4
            if i < 5:
                await s.create(f"/k/{i}", b"v")
            else:
                assert (await s.update(f"/k/{i % 5}", b"v%d" % i, i - 4))[0]
        assert await s.compact(38) == 38
        res = await s.list("/k/")
        assert sorted(kv.mod_revision for kv in res.kvs) == [36, 37, 38, 39, 40]
        n = sqlite3.connect(tmp_path / "db").execute("SELECT COUNT(*) FROM kine").fetchone()[0]
        assert n == 5 + 2  # the newest row of each key, plus revisions 39 and 40's predecessors
    run(body, tmp_path)


def test_reopen_restores_data_revisions_and_compaction(tmp_path):
    path = str(tmp_path / "db")

    async def main():
        s = SQLiteStore(path, compact_interval=0)
        await s.open()
        await fill(s)
        await s.compact(5)
        await s.delete("/pq/x")  # rev 8: the newest row is a tombstone
        await s.compact(8)  # ...and compaction removes it; the revision must not go back
        await s.close()
        async with SQLiteStore(path, compact_interval=0) as s2:
            assert s2.compact_revision == 8
            assert await s2.current_revision() == 8
            assert [kv.key for kv in (await s2.list("")).kvs] == ["/p/a", "/p/c", "/p/d"]
            ok, kv = await s2.create("/p/new", b"n")
            assert ok and kv.mod_revision == 9
            with pytest.raises(CompactedError):
                await s2.list("/p/", revision=7)
    asyncio.run(main())


def test_one_process_per_file_and_closed_store(tmp_path):
    path = str(tmp_path / "db")

    async def main():
        s = await SQLiteStore.open(path, compact_interval=0)
        other = SQLiteStore(path)
        with pytest.raises(StorageError, match="in use"):
            await other.open()
        w = s.watch("/x/", 0)
        await s.close()
        await s.close()  # idempotent
        assert [e async for e in w] == []  # closing the store ends its watches
        with pytest.raises(StorageError):
            await s.create("/x/a", b"v")
        with pytest.raises(StorageError):
            await s.get("/x/a")
        with pytest.raises(StorageError):
            await take(s.watch("/x/", 0), 1)
        s2 = await SQLiteStore.open(path, compact_interval=0)  # the lock was released
        await s2.get("/x/a")
        await s2.close()
        leaked = [t.name for t in threading.enumerate() if t.name.startswith("sqlite-")]
        assert leaked == []
    asyncio.run(main())


def test_values_survive_a_reopen_byte_for_byte(tmp_path):
    path = str(tmp_path / "db")
    values = {f"/b/{i}": bytes([i]) * i + bytes(range(256)) for i in range(0, 256, 15)}
    values["/b/empty"] = b""

    async def main():
        async with SQLiteStore(path, compact_interval=0) as s:
            for key, value in values.items():
                assert (await s.create(key, value))[0]
        async with SQLiteStore(path, compact_interval=0) as s:
            assert {kv.key: kv.value for kv in (await s.list("/b/")).kvs} == values
    asyncio.run(main())


def test_lock_file_next_to_database(tmp_path):
    async def body(s):
        assert os.path.exists(str(tmp_path / "db") + ".lock")
    run(body, tmp_path)
