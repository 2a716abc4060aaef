"""Integrity of the state on disk (issue 10: corrupted state, disk full, permissions, backups).

- A damaged state file is refused at open with CorruptStoreError, whose message says how to
  restore; an empty state file is an error, never a new cluster; damage met at run time makes
  check() fail for good.
- Disk full, for real: a tmpfs mounted (as root) just for the test. A write that does not fit
  raises InsufficientStorageError and changes nothing; check() reports it until space is freed,
  then the store heals without a restart.
- The state file, its -wal/-shm and the lock file are 0600; pki/ is 0700 and keys 0600; every
  file the server writes in its data dir appears atomically (no partial file, no temp file).
- Online backups are consistent snapshots; restores verify, set the old state aside and refuse
  while a server holds the lock; ``kubeling backup/restore/doctor`` on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import subprocess

import pytest

from kubeling.apiserver import certs, datadir
from kubeling.cli.main import main as cli
from kubeling.storage import (
    CorruptStoreError,
    InsufficientStorageError,
    SQLiteStore,
    StorageError,
    backup,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def populate(path, n, size=1000):
    path.parent.mkdir(parents=True, exist_ok=True)
    async with SQLiteStore(str(path), compact_interval=0) as s:
        await asyncio.gather(*(s.create(f"/registry/x/{i:05d}", b"v" * size) for i in range(n)))


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of ``size`` mounted at ``path`` for the block; needs root (the tests run as root)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


def fill_disk(path) -> None:
    """Write zeros to ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        for small in (4096, 512, 1):
            while True:
                try:
                    f.write(b"\0" * small)
                except OSError:
                    break


# --- damaged state files --------------------------------------------------------------------


def test_empty_state_file_is_refused_not_a_new_cluster(tmp_path):
    db = tmp_path / "state.db"
    db.write_bytes(b"")

    async def main():
        with pytest.raises(CorruptStoreError) as info:
            await SQLiteStore.open(str(db))
        return str(info.value)

    message = asyncio.run(main())
    assert "empty (0 bytes)" in message and "kubeling restore" in message
    assert f"--data-dir {tmp_path}" in message
    assert db.stat().st_size == 0  # nothing was written over it


@pytest.mark.parametrize("content", [
    pytest.param(b"this is not sqlite" * 100, id="text"),
    pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, id="bad-header"),
])
def test_a_file_that_is_not_a_database_is_refused(tmp_path, content):
    db = tmp_path / "state.db"
    db.write_bytes(content)

    async def main():
        with pytest.raises(CorruptStoreError, match="cannot open .*kubeling restore"):
            await SQLiteStore.open(str(db))

    asyncio.run(main())
    assert db.read_bytes() == content


def _damage(db, offset_fraction=0.5, length=65536, seed=7):
    import random
    size = db.stat().st_size
    offset = int(size * offset_fraction) // 4096 * 4096
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(random.Random(seed).randbytes(length))


def test_random_bytes_mid_file_are_detected_at_open(tmp_path):
    """Issue 10 finding 5: 64 KiB of random bytes mid-file used to start a server that served
    partial lists; quick_check at open now refuses the file, saying how to restore."""
    db = tmp_path / "state.db"
    asyncio.run(populate(db, 3000))
    _damage(db)

    async def main():
        with pytest.raises(CorruptStoreError) as info:
            await SQLiteStore.open(str(db))
        return str(info.value)

    message = asyncio.run(main())
    assert "damaged" in message and "quick_check" in message and "kubeling restore" in message
    problems = backup.verify(db, full=True)
    assert problems, "integrity_check must agree"


def test_damage_met_at_run_time_fails_reads_and_check_for_good(tmp_path):
    db = tmp_path / "state.db"
    asyncio.run(populate(db, 3000))

    async def main():
        s = await SQLiteStore.open(str(db), compact_interval=0)
        try:
            assert await s.check() is None
            _damage(db)  # reader connections open lazily: the next read meets the damage
            with pytest.raises(CorruptStoreError, match="kubeling restore"):
                await s.list("/registry/")
            for _ in range(2):  # it does not heal by itself
                with pytest.raises(CorruptStoreError):
                    await s.check()
        finally:
            await s.close()

    asyncio.run(main())


def test_new_state_file_is_created_whole_and_private(tmp_path):
    db = tmp_path / "state.db"
    (tmp_path / "state.db.new").write_bytes(b"half-made by a crashed first start")

    async def main():
        async with SQLiteStore(str(db), compact_interval=0) as s:
            assert db.stat().st_size > 0  # the schema is in the file before any write
            await s.create("/k", b"v")
            for path in (db, f"{db}-wal", f"{db}-shm", f"{db}.lock"):
                assert mode(path) == 0o600, path

    asyncio.run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db", "state.db.lock"]


def test_existing_state_files_are_narrowed_to_0600(tmp_path):
    db = tmp_path / "state.db"
    asyncio.run(populate(db, 10))
    os.chmod(db, 0o644)
    os.chmod(f"{db}.lock", 0o644)

    async def main():
        async with SQLiteStore(str(db), compact_interval=0) as s:
            await s.create("/k", b"v")
            for path in (db, f"{db}-wal", f"{db}-shm", f"{db}.lock"):
                assert mode(path) == 0o600, path

    asyncio.run(main())


# --- disk full ------------------------------------------------------------------------------


def test_disk_full_fails_the_write_reports_unhealthy_and_heals(tmp_path):
    """A real full disk: a 3 MiB tmpfs, filled up with a file after the store opened."""

    async def main(mnt):
        s = await SQLiteStore.open(str(mnt / "state.db"), compact_interval=0)
        try:
            for i in range(20):
                await s.create(f"/registry/x/{i}", b"v" * 1000)
            before = await s.list("/registry/")
            watch = s.watch("/registry/", 0)
            fill_disk(mnt / "filler")
            with pytest.raises(InsufficientStorageError) as info:
                await s.create("/registry/x/big", b"b" * (512 * 1024))
            assert "full" in str(info.value)
            with pytest.raises(InsufficientStorageError):
                await s.check()
            # Nothing of the failed write happened; reads still work.
            assert await s.list("/registry/") == before
            assert await s.current_revision() == 20
            assert watch.pending() == 0
            (mnt / "filler").unlink()  # free the space: the store heals without a restart
            assert await s.check() is None
            assert await s.current_revision() == 20  # the probe write took no revision
            ok, kv = await s.create("/registry/x/big", b"b" * (512 * 1024))
            assert ok and kv.mod_revision == 21
            assert (await watch.__anext__()).kv == kv
            watch.close()
        finally:
            await s.close()

    with tmpfs(tmp_path / "mnt", "3m") as mnt:
        asyncio.run(main(mnt))


def test_a_successful_write_also_clears_the_fault(tmp_path):
    async def main(mnt):
        s = await SQLiteStore.open(str(mnt / "state.db"), compact_interval=0)
        try:
            await s.create("/k/a", b"a")
            fill_disk(mnt / "filler")
            with pytest.raises(InsufficientStorageError):
                await s.create("/k/big", b"b" * (512 * 1024))
            (mnt / "filler").unlink()
            assert (await s.create("/k/big", b"b" * (512 * 1024)))[0]
            assert await s.check() is None
        finally:
            await s.close()

    with tmpfs(tmp_path / "mnt", "3m") as mnt:
        asyncio.run(main(mnt))


def test_kubeconfig_write_on_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path):
    """Issue 10 finding 9: a restart on a full disk died in write_kubeconfig with a traceback
    and left a 0-byte admin.kubeconfig.tmp behind."""
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        pki = certs.PKI(mnt)
        pki.ensure()
        kubeconfig = mnt / "admin.kubeconfig"
        certs.write_kubeconfig(kubeconfig, "https://127.0.0.1:6443", pki)
        good = kubeconfig.read_bytes()
        fill_disk(mnt / "filler")
        with pytest.raises(datadir.DataDirError) as info:
            certs.write_kubeconfig(kubeconfig, "https://127.0.0.1:7443", pki)
        message = str(info.value)
        assert message == f"cannot write {kubeconfig}: No space left on device"
        assert kubeconfig.read_bytes() == good  # the old file is intact
        assert [p.name for p in mnt.iterdir() if p.name.endswith(".tmp")] == []


# --- permissions and the data directory -----------------------------------------------------


def test_pki_directory_is_0700_and_keys_0600_even_if_they_were_not(tmp_path):
    pki = certs.PKI(tmp_path)
    pki.ensure()
    os.chmod(pki.dir, 0o755)
    os.chmod(pki.serving_key, 0o644)
    certs.PKI(tmp_path).ensure()
    assert mode(pki.dir) == 0o700
    keys = sorted(pki.dir.glob("*.key"))
    assert [k.name for k in keys] == ["admin.key", "apiserver-kubelet-client.key", "apiserver.key", "ca.key",
                                      "service-account.key"]
    assert all(mode(k) == 0o600 for k in keys)
    assert mode(pki.ca_cert) == 0o644
    assert [p.name for p in pki.dir.iterdir() if p.name.endswith(".tmp")] == []


def test_prepare_creates_a_private_data_dir(tmp_path):
    data = tmp_path / "a" / "b"
    assert datadir.prepare(data) == data
    assert mode(data) == 0o700
    os.chmod(data, 0o755)
    datadir.prepare(data)
    assert mode(data) == 0o700
    assert list(data.iterdir()) == []  # the write check left nothing behind


def test_prepare_refuses_a_read_only_data_dir_in_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
        with pytest.raises(datadir.DataDirError) as info:
            datadir.prepare(ro)
        assert str(info.value) == f"data directory {ro} is not writable: Read-only file system"
        with pytest.raises(datadir.DataDirError) as info:
            datadir.prepare(ro / "sub")
        assert str(info.value) == f"cannot create data directory {ro / 'sub'}: Read-only file system"


def test_prepare_refuses_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(datadir.DataDirError, match=f"^data directory {f} is not a directory$"):
        datadir.prepare(f)


# --- backups and restores -------------------------------------------------------------------


def test_online_backup_is_a_consistent_snapshot_while_writes_go_on(tmp_path):
    db, dest = tmp_path / "state.db", tmp_path / "backups" / "snap.db"
    dest.parent.mkdir()

    async def main():
        s = await SQLiteStore.open(str(db), compact_interval=0)
        try:
            for i in range(500):
                await s.create(f"/registry/x/{i:04d}", b"%d" % i)
            stop = asyncio.Event()

            async def writer():
                i = 0
                while not stop.is_set():
                    _, kv = await s.get(f"/registry/x/{i % 500:04d}")
                    await s.update(kv.key, kv.value + b"+", kv.mod_revision)
                    i += 1

            task = asyncio.create_task(writer())
            await asyncio.sleep(0.05)
            info = await s.backup(dest)
            await asyncio.sleep(0.05)
            stop.set()
            await task
            assert 500 < info.revision < await s.current_revision()  # writes went on around it
            expected = await s.list("", revision=info.revision)
        finally:
            await s.close()
        assert mode(dest) == 0o600
        assert sorted(p.name for p in dest.parent.iterdir()) == ["snap.db"]  # one file
        assert backup.verify(dest) == []
        async with SQLiteStore(str(dest), compact_interval=0) as b:
            assert await b.current_revision() == info.revision
            assert await b.list("") == expected

    asyncio.run(main())


def test_restore_sets_the_old_state_aside_and_refuses_while_a_server_runs(tmp_path):
    data, snap = tmp_path / "data", tmp_path / "snap.db"
    data.mkdir()
    db = data / "state.db"

    async def main():
        s = await SQLiteStore.open(str(db), compact_interval=0)
        for i in range(50):
            await s.create(f"/k/{i:02d}", b"v%d" % i)
        await s.backup(snap)
        snapshot = await s.list("")
        await s.delete("/k/00")
        await s.create("/k/after-backup", b"x")
        with pytest.raises(StorageError, match="in use by another process"):
            backup.restore(snap, data)  # the running store holds the lock
        await s.close()
        info = backup.restore(snap, data)
        assert info.revision == 50 and info.path == db
        assert info.previous.name.startswith("state.db.bak-") and mode(db) == 0o600
        async with SQLiteStore(str(db), compact_interval=0) as r:
            assert await r.list("") == snapshot
            assert await r.current_revision() == 50
        async with SQLiteStore(str(info.previous), compact_interval=0) as old:
            assert (await old.get("/k/after-backup"))[1] is not None

    asyncio.run(main())


def test_restore_keeps_the_wal_of_a_crashed_server_with_the_old_state(tmp_path):
    """After kill -9 the -wal holds committed writes: it moves aside with the file it belongs
    to, and is never replayed onto the restored backup."""
    data, snap = tmp_path / "data", tmp_path / "snap.db"
    data.mkdir()
    db = data / "state.db"
    asyncio.run(populate(db, 5, size=10))
    backup.backup_database(db, snap)
    conn = sqlite3.connect(db)  # stand-in for a crashed server: a WAL that was never folded in
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("INSERT INTO kine (name, created, deleted, create_revision, prev_revision, value)"
                 " VALUES ('/registry/x/late', 1, 0, 6, 0, x'00')")
    conn.commit()
    wal = (data / "state.db-wal").read_bytes()
    assert len(wal) > 0
    copy = tmp_path / "crashed"  # the data dir as a kill -9 leaves it
    copy.mkdir()
    for name in ("state.db", "state.db-wal"):
        (copy / name).write_bytes((data / name).read_bytes())
    conn.close()
    info = backup.restore(snap, copy)
    assert (copy / f"{info.previous.name}-wal").read_bytes() == wal
    # The copies were made 0644; what is set aside holds the same secrets, so it is narrowed.
    assert mode(info.previous) == mode(f"{info.previous}-wal") == 0o600
    assert not (copy / "state.db-wal").exists()
    assert backup.describe(copy / "state.db")["keys"] == 5
    assert backup.describe(info.previous)["keys"] == 6


def test_restore_refuses_a_damaged_backup_and_changes_nothing(tmp_path):
    data, snap = tmp_path / "data", tmp_path / "snap.db"
    asyncio.run(populate(data / "state.db", 3000))
    backup.backup_database(data / "state.db", snap)
    _damage(snap)
    before = sorted(p.name for p in data.iterdir())
    with pytest.raises(CorruptStoreError, match="refusing to restore"):
        backup.restore(snap, data)
    assert sorted(p.name for p in data.iterdir()) == before
    assert backup.verify(data / "state.db") == []


def test_cli_backup_runs_beside_a_live_store_restore_and_doctor(tmp_path, capsys):
    data = tmp_path / "data"
    snap, fresh = tmp_path / "snap.db", tmp_path / "fresh"
    data.mkdir()

    async def main():
        async with SQLiteStore(str(data / "state.db"), compact_interval=0) as s:
            for i in range(20):
                await s.create(f"/k/{i}", b"v")
            # The store holds the writer lock; the command only reads.
            assert cli(["backup", str(snap), "--data-dir", str(data)]) == 0
            out = capsys.readouterr()
            assert f"backed up {data / 'state.db'} at revision 20 to {snap}" in out.out
            assert cli(["restore", str(snap), "--data-dir", str(data)]) == 1
            err = capsys.readouterr().err.strip()
            assert err.startswith("kubeling restore: ") and "in use" in err and "\n" not in err
            assert cli(["doctor", "--data-dir", str(data)]) == 0  # reads beside the live store
            assert "integrity_check: ok" in capsys.readouterr().out

    asyncio.run(main())
    assert cli(["restore", str(snap), "--data-dir", str(fresh)]) == 0
    assert "at revision 20" in capsys.readouterr().out
    assert mode(fresh) == 0o700
    assert cli(["doctor", "--data-dir", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "integrity_check: ok" in out and "revision 20" in out
    _damage(fresh / "state.db", offset_fraction=0.0, length=4096 * 3)
    assert cli(["doctor", "--data-dir", str(fresh)]) == 1
    assert "state.db" in capsys.readouterr().out


@pytest.mark.parametrize("setup,expected", [
    pytest.param(lambda d: None, "does not exist", id="missing"),
    pytest.param(lambda d: (d / "state.db").write_bytes(b""), "is empty (0 bytes)", id="empty"),
    pytest.param(lambda d: (d / "state.db").write_bytes(b"nope" * 1000), "not a database",
                 id="not-a-database"),
])
def test_doctor_reports_unusable_state_files(tmp_path, capsys, setup, expected):
    setup(tmp_path)
    assert cli(["doctor", "--data-dir", str(tmp_path)]) == 1
    assert expected in capsys.readouterr().out
