"""What only the etcd backend does (`kubeling/storage/etcd.py`), on real etcd members from
`tests/support/etcd.py`: TLS with client certificates, failover when one of three members dies
during writes, errors and `check()` while etcd is unreachable and healing after, a full backend
(`--quota-backend-bytes`) as InsufficientStorageError, compaction coordinated between two API
servers and 410 for watches behind it, and progress over writes outside the watched prefix.
The Store contract itself runs on etcd in ``test_storage_contract.py``."""

from __future__ import annotations

import asyncio
import time

import pytest
from etcd_relative import EtcdCluster
from storage_testing import take

from kubeling.storage import (
    CompactedError,
    InsufficientStorageError,
    StorageError,
    StorageTimeoutError,
    UnavailableError,
)
from kubeling.storage.etcd import COMPACT_REV_KEY, EtcdStore


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def eventually(fn, timeout=30.0, interval=0.1):
    """Await ``fn()`` until it returns a truthy value (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = await fn()
            if got:
                return got
        except Exception as e:  # noqa: BLE001
            last = e
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {timeout}s (last error: {last!r})")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd1")) as cluster:
        yield cluster


def test_a_fresh_etcd_starts_at_revision_one_and_keys_are_stored_as_they_are(tmp_path):
    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, compact_interval=0)
        try:
            assert await s.current_revision() == 1  # a fresh etcd; its first write gets 2
            ok, kv = await s.create("/registry/core/configmaps/default/x", b'{"kind":"ConfigMap"}')
            assert ok and kv.mod_revision == kv.create_revision == 2
        finally:
            await s.close()

    with EtcdCluster(tmp_path) as cluster:
        run(main(cluster))
        out = _etcdctl(cluster, "get", "--prefix", "/registry/")
        assert out.splitlines() == ["/registry/core/configmaps/default/x", '{"kind":"ConfigMap"}']


def _etcdctl(cluster, *args):
    import os
    import subprocess

    cmd = ["etcdctl", "--endpoints", cluster.endpoint]
    if cluster.tls:
        cmd += ["--cacert", cluster.ca_file, "--cert", cluster.cert_file, "--key", cluster.key_file]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, check=True, timeout=30,
                          env={**os.environ, "ETCDCTL_API": "3"}).stdout


def test_tls_with_client_certificates(tmp_path):
    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, ca_file=cluster.ca_file, cert_file=cluster.cert_file,
                                 key_file=cluster.key_file, compact_interval=0)
        try:
            w = s.watch("/tls/", 0)
            ok, kv = await s.create("/tls/a", b"v")
            assert ok
            (ev,) = await take(w, 1)
            assert ev.kv == kv
            assert (await s.get("/tls/a"))[1] == kv
            assert await s.check() is None
            w.close()
        finally:
            await s.close()
        # the members require a client certificate: without one nothing is served
        with pytest.raises(UnavailableError):
            await EtcdStore.open(cluster.endpoints, ca_file=cluster.ca_file, compact_interval=0,
                                 request_timeout=2, open_timeout=2)

    with EtcdCluster(tmp_path, tls=True) as cluster:
        assert all(u.startswith("https://") for u in cluster.endpoints)
        run(main(cluster))


def test_failover_when_a_member_of_three_dies_during_writes(tmp_path):
    """kill -9 the member the store talks to while 16 writers create keys: writes and reads go
    on through the other two, every acknowledged write is there, and a watch opened before the
    kill sees every acknowledged write once, in revision order."""

    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, compact_interval=0)
        try:
            start = await s.current_revision() + 1
            w = s.watch("/f/", start)
            acked: dict[str, int] = {}
            failed: list[str] = []
            killed = asyncio.Event()

            async def writer(i):
                for j in range(40):
                    key = f"/f/{i}/{j}"
                    try:
                        ok, kv = await s.create(key, key.encode())
                        assert ok, key
                        acked[key] = kv.mod_revision
                    except StorageError as e:
                        assert isinstance(e, UnavailableError), e  # 503/504, never a wrong answer
                        failed.append(key)
                    if i == 0 and j == 10:
                        cluster.kill9(s._cur)  # the member in use, mid-storm
                        killed.set()

            await asyncio.gather(*(writer(i) for i in range(16)))
            assert killed.is_set()
            # writes go on: at most a short window of 503/504 while etcd elects a leader
            assert len(acked) >= 16 * 40 * 0.9, f"too many failed writes: {len(failed)}"
            listed = {kv.key: kv.mod_revision for kv in (await s.list("/f/")).kvs}
            assert {k: listed.get(k) for k in acked} == acked  # 0 acknowledged writes lost
            events = await take(w, len(listed), timeout=30)
            revs = [e.kv.mod_revision for e in events]
            assert revs == sorted(set(revs)) and {e.kv.key for e in events} == set(listed)
            assert await s.check() is None  # two of three members: healthy
            w.close()
            # a server started now, with the dead member first in its list, works at once
            dead = next(i for i, m in enumerate(cluster.members) if not m.running)
            order = [cluster.endpoints[dead]] + [u for i, u in enumerate(cluster.endpoints) if i != dead]
            s2 = await EtcdStore.open(order, compact_interval=0)
            try:
                assert (await s2.create("/f/late", b"v"))[0]
                assert len((await s2.list("/f/")).kvs) == len(listed) + 1
            finally:
                await s2.close()
        finally:
            await s.close()

    with EtcdCluster(tmp_path, members=3) as cluster:
        run(main(cluster))


def test_unreachable_etcd_then_healing(tmp_path):
    """etcd stopped: reads and writes raise UnavailableError (503/504), `check()` (the /readyz
    check named etcd) fails quickly; etcd back: everything heals in the same store, and a watch
    opened before the outage resumes without a gap."""

    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, compact_interval=0, request_timeout=2)
        try:
            _, kv = await s.create("/u/a", b"1")
            w = s.watch("/u/", kv.mod_revision)
            await take(w, 1)
            cluster.stop()
            t = time.monotonic()
            with pytest.raises(UnavailableError):
                await s.check()
            assert time.monotonic() - t < 5
            with pytest.raises(UnavailableError):
                await s.get("/u/a")
            with pytest.raises(UnavailableError) as info:
                await s.create("/u/b", b"2")
            assert not isinstance(info.value, StorageTimeoutError)  # never sent: 503, not 504
            cluster.start()
            await eventually(lambda: _healthy(s), timeout=30)
            ok, kv2 = await s.create("/u/b", b"2")
            assert ok
            (ev,) = await take(w, 1, timeout=30)
            assert ev.kv == kv2
            w.close()
        finally:
            await s.close()

    with EtcdCluster(tmp_path) as cluster:
        run(main(cluster))


async def _healthy(s):
    await s.check()
    return True


def test_database_space_exceeded_is_insufficient_storage(tmp_path):
    """A full backend (--quota-backend-bytes): writes raise InsufficientStorageError (507) and
    `check()` reports it while the NOSPACE alarm stands; reads keep working."""

    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, compact_interval=0)
        try:
            big = b"x" * (512 << 10)
            with pytest.raises(InsufficientStorageError, match="database space exceeded"):
                for i in range(200):  # 100 MiB at most; the quota is 16 MiB
                    await s.create(f"/q/{i}", big)
            assert (await s.get("/q/0"))[1].value == big
            await asyncio.sleep(1.1)  # past check()'s cache
            with pytest.raises(InsufficientStorageError):
                await s.check()
        finally:
            await s.close()

    with EtcdCluster(tmp_path, quota_backend_bytes=16 << 20) as cluster:
        run(main(cluster))


def test_compaction_between_two_api_servers_and_410(etcd):
    """Two stores on one etcd (two API servers): in one compactor round only one compacts (the
    compare-and-swap on compact_rev_key), the other learns the compact revision from its watch
    stream; a watch from a compacted revision raises CompactedError (410)."""

    async def main():
        a = await EtcdStore.open(etcd.endpoints, compact_interval=0, compact_keep=5)
        b = await EtcdStore.open(etcd.endpoints, compact_interval=0, compact_keep=5)
        try:
            first = await a.current_revision() + 1
            for i in range(20):
                await a.create(f"/c/{i}", b"v")
            _, before = await a.get(COMPACT_REV_KEY.decode())
            results = await asyncio.gather(a.compact_once(), b.compact_once())
            _, after = await a.get(COMPACT_REV_KEY.decode())
            assert after.mod_revision > (before.mod_revision if before else 0)
            assert int(after.value) == max(results)
            # one write to compact_rev_key for the round: the loser saw the version move
            assert (after.create_revision == after.mod_revision) if before is None else True
            target = int(after.value)
            assert target == first + 14  # 5 revisions of data kept
            await eventually(lambda: _at(b, target), timeout=10)
            with pytest.raises(CompactedError):
                await take(b.watch("/c/", first), 1)
            with pytest.raises(CompactedError):
                await b.list("/c/", revision=first)
            assert len((await b.list("/c/", revision=target)).kvs) == 15
            # an idle cluster is not compacted again: the compactor's own write is no history
            assert await a.compact_once() == target and await b.compact_once() == target
        finally:
            await a.close()
            await b.close()

    run(main())


async def _at(store, revision):
    return store.compact_revision == revision


def test_progress_covers_writes_outside_the_prefix(etcd):
    """The watch cache's consistent reads: a watch on /registry/ knows it is current up to a
    write made outside it (another tenant, the compactor's key) without an event."""

    async def main():
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        try:
            w = s.watch("/p/", 0)
            _, kv = await s.create("/p/a", b"1")
            await take(w, 1)
            _, other = await s.create("/elsewhere/x", b"1")
            current = await s.current_revision()
            assert current == other.mod_revision
            await eventually(lambda: _progressed(w, current), timeout=10, interval=0.01)
            assert w.pending() == 0
            w.close()
        finally:
            await s.close()

    run(main())


async def _progressed(w, revision):
    return w.progress() >= revision


def test_a_compaction_by_someone_else_is_learnt_at_open(etcd):
    """`etcdctl compact` (or etcd's auto-compaction) writes no compact_rev_key: the store learns
    the compact revision from etcd at open, so the watch cache never lists a revision that is gone."""

    async def main():
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        try:
            for i in range(3):
                _, kv = await s.create(f"/o/{i}", b"v")
        finally:
            await s.close()
        _etcdctl(etcd, "compact", str(kv.mod_revision))
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        try:
            assert s.compact_revision == kv.mod_revision
            with pytest.raises(CompactedError):
                await take(s.watch("/o/", kv.mod_revision), 1)
        finally:
            await s.close()

    run(main())


def test_an_etcd_that_went_back_in_time_ends_every_watch(tmp_path):
    """etcd wiped (or restored from an older snapshot) under a running store: its revisions are
    not the history the watches were following, so they end with 410 and relist; the store
    serves the new etcd."""

    async def main(cluster):
        s = await EtcdStore.open(cluster.endpoints, compact_interval=0, request_timeout=2)
        try:
            for i in range(5):
                await s.create(f"/r/{i}", b"v")
            w = s.watch("/r/", 0)
            cluster.stop()
            cluster.wipe()
            cluster.start()
            with pytest.raises(CompactedError):
                await take(w, 1, timeout=30)
            ok, kv = await eventually(lambda: s.create("/r/new", b"v"), timeout=30)
            assert ok and kv.mod_revision == 2  # the new etcd's first write
            w2 = s.watch("/r/", 0)
            _, kv2 = await s.create("/r/newer", b"v")
            (ev,) = await take(w2, 1)
            assert ev.kv == kv2
            w2.close()
        finally:
            await s.close()

    with EtcdCluster(tmp_path) as cluster:
        run(main(cluster))


def test_open_store_selects_etcd_with_tls_flags(tmp_path):
    """`kubeling server --datastore-endpoint https://... --datastore-{cafile,certfile,keyfile}`:
    `open_store` opens the etcd store over TLS, and the data dir gets no state.db."""
    from kubeling.apiserver.datastore import open_store
    from kubeling.apiserver.server import Options

    async def main(cluster):
        opts = Options(data_dir=str(tmp_path / "data"), compact_interval=0, datastore_endpoint=cluster.endpoint,
                       datastore_cafile=cluster.ca_file, datastore_certfile=cluster.cert_file,
                       datastore_keyfile=cluster.key_file)
        (tmp_path / "data").mkdir()
        s = await open_store(opts, tmp_path / "data")
        try:
            assert isinstance(s, EtcdStore)
            assert (await s.create("/registry/core/configmaps/default/tls", b"{}"))[0]
        finally:
            await s.close()
        assert list((tmp_path / "data").iterdir()) == []

    with EtcdCluster(tmp_path / "etcd", tls=True) as cluster:
        run(main(cluster))


def test_the_watch_cache_is_fresh_at_once_after_writes_outside_its_prefix(etcd):
    """A consistent LIST waits until the watch cache has the store's current revision. After a
    write outside /registry/ (the compactor's key, bootstrap data) no event comes: the cache
    knows it is current from the stream's progress, without waiting out its 3 s timeout."""
    from kubeling.apiserver.cacher import Cacher

    async def main():
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        other = await EtcdStore.open(etcd.endpoints, compact_interval=0)  # another API server
        cacher = Cacher(s)
        try:
            await cacher.start()
            waits = []
            for i in range(10):
                await other.create(f"/outside-registry/{i}", b"v")
                current = await s.current_revision()
                t = time.monotonic()
                assert await cacher.wait_fresh(current)
                waits.append(time.monotonic() - t)
            assert max(waits) < cacher.fresh_timeout / 2, waits
        finally:
            await cacher.stop()
            await other.close()
            await s.close()

    run(main())


def test_a_write_whose_answer_was_lost_is_not_answered_wrongly(etcd):
    """The member applies a write and the connection dies before the answer (what kill -9 of a
    member during writes does). The store must not re-send it into a wrong answer: a create that
    happened is acknowledged (not AlreadyExists), an update or delete that happened is
    acknowledged (not a conflict, not NotFound) with its revision read from the key's history, one
    that did not is sent again, one that lost to another writer is a conflict, and when the
    history is compacted before it could be read, the outcome is unknown: a 504."""
    import grpc

    async def main():
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        ep = s._eps[0]
        real_txn = ep.kv.Txn
        lose = {"answer": 0, "request": 0}

        async def txn(request, **kw):
            if lose["request"]:
                lose["request"] -= 1
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), "Socket closed")
            resp = await real_txn(request, **kw)
            if lose["answer"]:
                lose["answer"] -= 1  # applied, but the caller never hears of it
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), "Connection reset by peer")
            return resp

        ep.kv.Txn = txn
        try:
            lose["answer"] = 1
            ok, kv = await s.create("/lost/a", b"v1")
            assert ok and kv.value == b"v1" and kv.create_revision == kv.mod_revision
            assert (await s.get("/lost/a"))[1] == kv
            lose["answer"] = 1
            ok, kv2 = await s.update("/lost/a", b"v2", kv.mod_revision)
            assert ok and kv2.value == b"v2" and kv2.mod_revision > kv.mod_revision
            lose["request"] = 1  # lost before it was applied: sent again, once
            ok, kv3 = await s.update("/lost/a", b"v3", kv2.mod_revision)
            assert ok and kv3.mod_revision == kv2.mod_revision + 1
            lose["request"] = 1
            ok, kv4 = await s.create("/lost/b", b"b")
            assert ok and (await s.get("/lost/b"))[1] == kv4
            lose["answer"] = 1
            ok, gone = await s.delete("/lost/a", kv3.mod_revision)
            assert ok and gone.value == b"v3" and gone.mod_revision > kv3.mod_revision
            assert (await s.get("/lost/a"))[1] is None
            lose["answer"] = 1  # unconditional
            ok, gone = await s.delete("/lost/b")
            assert ok and gone.value == b"b" and gone.create_revision == kv4.create_revision
            # an update that lost to another writer while its own answer was lost: a conflict
            _, c1 = await s.create("/lost/c", b"c1")
            lose["request"] = 1
            real = s._resolve_read

            async def someone_else_first(key, amb, deadline):
                await s.update("/lost/c", b"theirs", c1.mod_revision)
                return await real(key, amb, deadline)

            s._resolve_read = someone_else_first
            ok, cur = await s.update("/lost/c", b"ours", c1.mod_revision)
            assert not ok and cur.value == b"theirs"
            s._resolve_read = real
            # history compacted before it could be read: the outcome cannot be told (504)
            _, d1 = await s.create("/lost/d", b"d1")
            lose["answer"] = 1

            async def compacted_first(key, amb, deadline):
                cur = await real(key, amb, deadline)
                await s.create("/lost/e", b"e")
                await s.compact(await s.current_revision())
                return cur

            s._resolve_read = compacted_first
            with pytest.raises(StorageTimeoutError, match="outcome unknown"):
                await s.update("/lost/d", b"d2", d1.mod_revision)
            s._resolve_read = real
        finally:
            ep.kv.Txn = real_txn
            await s.close()

    run(main())


def test_other_tenants_binary_keys_do_not_disturb_the_stream(etcd):
    """An etcd shared with another application: its keys need not be UTF-8. They pass the
    whole-keyspace stream without breaking it, and match no prefix of ours."""
    from aetcd import rpc

    async def main():
        s = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        try:
            w = s.watch("/registry/", 0)
            await s._eps[0].kv.Put(rpc.PutRequest(key=b"\xff\xfe/binary\x80", value=b"\x00"))
            _, kv = await s.create("/registry/core/configmaps/default/after-binary", b"{}")
            (ev,) = await take(w, 1)
            assert ev.kv == kv
            assert s._hub_task is not None and not s._hub_task.done()
            w.close()
        finally:
            await s.close()

    run(main())


def test_datastore_faults_become_upstreams_statuses():
    """What the API server answers for each datastore fault (kubeling/apiserver/registry/
    generic.py storage_status): no member answers 503, no answer in time (a write's outcome
    unknown) 504, etcd's "database space exceeded" 507, anything else 500."""
    from kubeling.apiserver.registry.generic import storage_status

    cases = [(UnavailableError("etcd: no leader"), 503, "ServiceUnavailable"),
             (StorageTimeoutError("write to /k: outcome unknown"), 504, "Timeout"),
             (InsufficientStorageError("mvcc: database space exceeded"), 507, "InsufficientStorage"),
             (StorageError("etcd: something else"), 500, "InternalError")]
    for err, code, reason in cases:
        st = storage_status(err)
        assert (st.code, st.reason) == (code, reason), err


def test_a_stream_that_fell_behind_compaction_ends_every_watch(etcd):
    """This server's watch stream was down while another server wrote and compacted past where
    it stopped: its watches end with 410 (the clients relist) and the stream goes on from now."""

    async def main():
        a = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        b = await EtcdStore.open(etcd.endpoints, compact_interval=0)
        try:
            w = a.watch("/behind/", 0)
            a._hub_task.cancel()  # the stream is down (as across a long outage of its member)
            await asyncio.gather(a._hub_task, return_exceptions=True)
            for i in range(5):
                await b.create(f"/behind/{i}", b"v")
            await b.compact(await b.current_revision())
            a._hub_task = asyncio.create_task(a._hub_loop(a._hub.revision + 1))
            with pytest.raises(CompactedError):
                await take(w, 1, timeout=30)
            w2 = a.watch("/behind/", 0)
            ok, kv = await a.create("/behind/new", b"v")
            (ev,) = await take(w2, 1, timeout=30)
            assert ev.kv == kv
            w2.close()
        finally:
            await a.close()
            await b.close()

    run(main())
