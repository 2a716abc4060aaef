"""``kubeling.storage.migrate``: a SQLite state copied into an (empty) etcd-shaped store.

The target is parametrized: a real single-member etcd (Debian's, through ``EtcdStore``) and the
in-memory fake. The end-to-end migration of a served cluster is ``tests/e2e/test_etcd_migration.py``;
here the cases a server start cannot easily reach: the order and bytes of every key, revisions
above SQLite's, the compaction of the SQLite-era revisions, an interrupted migration refused, a
crash between "done" and the rename finished, an etcd that already holds a cluster left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import sys
from pathlib import Path

import pytest

from kubeling.storage import CompactedError, MemoryStore, SQLiteStore
from kubeling.storage.etcd import EtcdStore
from kubeling.storage.migrate import MARKER, MigrationError, migrate_sqlite, raise_revision_before_open

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.etcd import EtcdCluster  # noqa: E402


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1) as cluster:
        yield cluster


@pytest.fixture(params=["etcd", "memory"])
def target(request, tmp_path):
    """``async with target() as store``: an empty etcd-shaped store (etcd: its keys deleted)."""

    class Opener:
        # how the server passes the etcd connection (the fast, pre-open revision raise)
        conf = {"endpoints": request.getfixturevalue("etcd").endpoints} if request.param == "etcd" else None

        async def __aenter__(self):
            if request.param == "memory":
                self.store = await MemoryStore.open()
                return self.store
            self.store = await EtcdStore.open(etcd.endpoint, compact_interval=0)
            for prefix in ("/registry/", "/kubeling/"):
                for kv in (await self.store.list(prefix)).kvs:
                    await self.store.delete(kv.key)
            return self.store

        async def __aexit__(self, *exc):
            await self.store.close()

    etcd = request.getfixturevalue("etcd") if request.param == "etcd" else None
    return Opener


async def make_sqlite(path) -> tuple[int, list]:
    """A state file with creates, updates and deletes interleaved; returns (revision, live kvs)."""
    s = await SQLiteStore.open(str(path), compact_interval=0)
    try:
        for i in range(200):
            await s.create(f"/registry/core/configmaps/ns/c{i:03d}", json.dumps({"i": i}).encode())
            if i % 3 == 0:
                await s.create(f"/registry/core/secrets/ns/s{i:03d}", bytes([0, 1, 2, i % 256]) * 10)
        for i in range(0, 200, 7):  # updates move keys to the end of the revision order
            _, kv = await s.get(f"/registry/core/configmaps/ns/c{i:03d}")
            assert (await s.update(kv.key, b'{"updated":true}', kv.mod_revision))[0]
        for i in range(1, 200, 11):
            assert (await s.delete(f"/registry/core/configmaps/ns/c{i:03d}"))[0]
        return await s.current_revision(), (await s.list("")).kvs
    finally:
        await s.close()


def test_every_key_is_copied_in_revision_order_above_sqlite_revisions(target, tmp_path):
    async def main():
        revision, before = await make_sqlite(tmp_path / "state.db")
        if target.conf:
            await raise_revision_before_open(tmp_path, target.conf)
        async with target() as store:
            if target.conf:
                assert await store.current_revision() >= revision
            summary = await migrate_sqlite(store, tmp_path, etcd=target.conf)
            assert summary["state"] == "done" and summary["objects"] == len(before)
            after = {kv.key: kv for kv in (await store.list("/registry/")).kvs}
            assert after.keys() == {kv.key for kv in before}
            assert all(after[kv.key].value == kv.value for kv in before)  # byte for byte
            old_order = [kv.key for kv in sorted(before, key=lambda kv: kv.mod_revision)]
            assert sorted(after, key=lambda k: after[k].mod_revision) == old_order
            assert min(kv.mod_revision for kv in after.values()) > revision
            # SQLite-era revisions are compacted: a watch resumed there gets 410, not a replay
            assert store.compact_revision >= revision
            with pytest.raises(CompactedError):
                w = store.watch("/registry/", revision)
                try:
                    await anext(aiter(w))
                finally:
                    w.close()
            assert (await store.list("/kubeling/migration-bump/")).count == 0
            assert json.loads((await store.get(MARKER))[1].value)["state"] == "done"
            assert not (tmp_path / "state.db").exists()
            assert [p.name.startswith("state.db.migrated-") for p in tmp_path.iterdir()] == [True]
            assert await migrate_sqlite(store, tmp_path) is None  # nothing left to migrate

    asyncio.run(main())


def test_an_interrupted_migration_is_refused(target, tmp_path):
    async def main():
        await make_sqlite(tmp_path / "state.db")
        async with target() as store:
            await store.create(MARKER, json.dumps({"state": "copying", "source": "x"}).encode())
            await store.create("/registry/core/configmaps/ns/c000", b"{}")
            with pytest.raises(MigrationError, match="unfinished migration.*etcdctl"):
                await migrate_sqlite(store, tmp_path, endpoint_hint="http://127.0.0.1:2379")
            assert (tmp_path / "state.db").exists()
            # without a state file as well: a half-copied etcd is never served
            os.rename(tmp_path / "state.db", tmp_path / "elsewhere.db")
            with pytest.raises(MigrationError):
                await migrate_sqlite(store, tmp_path)

    asyncio.run(main())


def test_a_crash_between_done_and_the_rename_is_finished(target, tmp_path):
    async def main():
        await make_sqlite(tmp_path / "state.db")
        async with target() as store:
            summary = await migrate_sqlite(store, tmp_path)
            os.rename(summary["renamedTo"], tmp_path / "state.db")  # as if the rename never happened
            revision = await store.current_revision()
            again = await migrate_sqlite(store, tmp_path)
            assert again is not None and not (tmp_path / "state.db").exists()
            assert await store.current_revision() == revision  # nothing copied twice

    asyncio.run(main())


def test_an_etcd_that_already_holds_a_cluster_is_left_alone(target, tmp_path):
    async def main():
        await make_sqlite(tmp_path / "state.db")
        async with target() as store:
            await store.create("/registry/core/namespaces/default", b"{}")
            revision = await store.current_revision()
            assert await migrate_sqlite(store, tmp_path) is None
            assert (tmp_path / "state.db").exists() and await store.current_revision() == revision
            assert await migrate_sqlite(store, tmp_path / "empty") is None  # no state file at all

    asyncio.run(main())


def test_a_stale_claim_that_copied_nothing_is_taken_over(target, tmp_path):
    async def main():
        await make_sqlite(tmp_path / "state.db")
        async with target() as store:
            # a server that claimed the migration and died while raising the revision
            await store.create(MARKER, json.dumps({"state": "copying", "heartbeat": 0}).encode())
            summary = await migrate_sqlite(store, tmp_path)
            assert summary["state"] == "done" and not (tmp_path / "state.db").exists()

    asyncio.run(main())


def test_a_server_waits_for_a_live_migration_by_another(target, tmp_path):
    async def main():
        async with target() as store:
            marker = {"state": "copying", "claim": "other", "heartbeat": time.time()}
            _, kv = await store.create(MARKER, json.dumps(marker).encode())
            await store.create("/registry/core/namespaces/default", b"{}")  # copied so far

            async def other_server_finishes():
                await asyncio.sleep(1.5)
                assert (await store.update(MARKER, json.dumps({**marker, "state": "done"}).encode(),
                                           kv.mod_revision))[0]

            finishing = asyncio.create_task(other_server_finishes())
            started = time.monotonic()
            assert await asyncio.wait_for(migrate_sqlite(store, tmp_path), 30) is None  # no state.db here
            assert time.monotonic() - started >= 1.0 and finishing.done()

    asyncio.run(main())


def test_migration_into_an_etcd_with_tls_and_client_certificates(tmp_path):
    """The revision is raised over the server's TLS settings (--datastore-cafile/certfile/keyfile)."""
    async def main(etcd):
        revision, before = await make_sqlite(tmp_path / "state.db")
        conf = {"endpoints": etcd.endpoints, "ca_file": etcd.ca_file, "cert_file": etcd.cert_file,
                "key_file": etcd.key_file}
        await raise_revision_before_open(tmp_path, conf)
        assert "claim" in conf  # claimed, and the revision raised, before the store opened
        store = await EtcdStore.open(etcd.endpoint, ca_file=etcd.ca_file, cert_file=etcd.cert_file,
                                     key_file=etcd.key_file, compact_interval=0)
        try:
            assert await store.current_revision() >= revision
            summary = await migrate_sqlite(store, tmp_path, etcd=conf)
            assert summary["objects"] == len(before) and summary["bumpSeconds"] < 5
            assert (await store.list("/registry/")).count == len(before)
        finally:
            await store.close()

    with EtcdCluster(tmp_path / "etcd", members=1, tls=True) as etcd:
        asyncio.run(main(etcd))
