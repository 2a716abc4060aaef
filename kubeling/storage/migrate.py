"""Migration of a SQLite cluster into etcd, as k3s does it, with resourceVersions kept monotonic.

When ``kubeling server`` starts with ``--datastore-endpoint``, the etcd holds no ``/registry/``
keys, and ``<data-dir>/state.db`` exists, :func:`migrate_sqlite` copies every live key of the
SQLite state into etcd before anything else uses the store, then renames the file
``state.db.migrated-<UTC time>`` so that the next start does not migrate again. k3s does the same
(``migrateFromSQLite``: list ``/registry/`` from kine, put each key, rename the file to
``state.db.migrated``), but its puts start again from etcd's revision 1; here the revisions of
the migrated cluster stay monotonic:

1. **Claim.** ``/kubeling/migration`` is created (create-if-absent) with ``state: copying``, the
   source file and its revision. A second server starting against the same etcd meanwhile sees
   the claim and refuses, instead of serving a half-copied cluster.
2. **Raise etcd's revision above SQLite's.** Stored objects carry no ``resourceVersion``: it is
   the key's ``mod_revision``, set on every read. A client holding resourceVersion ``X`` from the
   SQLite era must never be shown an object with a smaller one, so etcd's revision is first
   raised to at least SQLite's current revision ``R``. etcd has no "set revision" RPC (only the
   offline ``etcdutl snapshot restore --bump-revision`` of etcd 3.6), and every mutation adds
   exactly one, so the store makes ``R - current`` mutations: ``BUMP_WORKERS`` concurrent
   create/delete pairs on scratch keys ``/kubeling/migration-bump/<i>`` (order does not matter
   here; raft batches the concurrent proposals), deleted again, so nothing is left behind.
3. **Compact** at that revision: the scratch history is dropped, and a client that resumes a
   watch or a list at a SQLite-era resourceVersion gets ``410 Gone`` and relists, as after an
   etcd restore, rather than a replay of every migrated object as new.
4. **Copy in mod_revision order**, one create at a time, each awaited before the next: every
   key gets a new ``mod_revision`` greater than ``R``, and the order of resourceVersions is the
   order of the SQLite ones. The copy is sequential on purpose: concurrent puts land in raft in
   any order, and one etcd transaction with several puts would give them all the same revision.
   Values are copied byte for byte (Secrets encrypted at rest stay encrypted with the same key).
5. **Commit.** The claim becomes ``state: done`` (with the object count and the new revision
   range), then the SQLite file (and its ``-wal``/``-shm``, and the lock file) is renamed.

Interruption: if the process dies during 2-4, the etcd holds a ``copying`` claim and part of the
data, and ``state.db`` is still in place. Every later start refuses with :class:`MigrationError`,
naming the ``etcdctl`` commands that clear the partial copy, so that the next start migrates
again from the untouched SQLite file. A crash between 5's two steps (claim ``done``, file not yet
renamed) is finished by the next start: it sees the ``done`` claim for this very file and renames.

If the etcd already holds a cluster (``/registry/`` keys and no claim, or a ``done`` claim for
another file) the SQLite file is left alone and a warning says it was not migrated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from kubeling.storage.interface import KeyValue, Store, StorageError

log = logging.getLogger(__name__)

STATE_FILE = "state.db"
REGISTRY = "/registry/"
MARKER = "/kubeling/migration"
BUMP_PREFIX = "/kubeling/migration-bump/"
BUMP_WORKERS = 64
PAGE = 1000
PROGRESS_EVERY = 5.0  # seconds between progress lines in the log


class MigrationError(StorageError):
    """The migration cannot start, or an earlier one was interrupted; the message says what to do."""


def _clear_hint(endpoint_hint: str) -> str:
    where = f" --endpoints {endpoint_hint}" if endpoint_hint else ""
    return (f"clear the partial copy with `etcdctl{where} del --prefix /registry/ && etcdctl{where} "
            f"del --prefix {MARKER}` and start the server again to migrate from the SQLite file "
            f"again (it is untouched), or start it without --datastore-endpoint to keep using SQLite")


async def migrate_sqlite(store: Store, data_dir: str | os.PathLike, *, endpoint_hint: str = "") -> dict | None:
    """Migrate ``<data_dir>/state.db`` into ``store`` (an etcd store) if it should be.

    ``store`` is the raw store (no encryption transformer): values are copied as stored. Returns
    a summary dict when a migration ran (or a finished one was completed), None otherwise. Raises
    :class:`MigrationError` when the etcd holds an unfinished migration. ``endpoint_hint`` is
    only used in messages.
    """
    data = Path(data_dir)
    db = data / STATE_FILE
    _, marker_kv = await store.get(MARKER)
    marker = _decode_marker(marker_kv)
    if marker is not None and marker.get("state") != "done":
        raise MigrationError(
            f"the etcd datastore holds an unfinished migration from SQLite (started "
            f"{marker.get('startedAt', '?')} from {marker.get('source', '?')}, revision "
            f"{marker.get('sqliteRevision', '?')}): it was interrupted, so the etcd is incomplete and "
            f"is not served; {_clear_hint(endpoint_hint)}")
    if not db.exists():
        return None
    if marker is not None:  # a finished migration: of this file (crash before the rename)?
        if marker.get("source") == str(db.resolve()) and marker.get("sqliteRevision") == _sqlite_revision(db):
            dest = _rename_sqlite(db)
            log.warning("the migration of %s into etcd had finished before the last stop; the SQLite "
                        "file is now renamed %s", db, dest.name)
            return {**marker, "renamedTo": str(dest)}
        log.warning("not migrating %s into etcd: the etcd already holds a cluster (migrated from %s "
                    "at %s); the SQLite file is ignored", db, marker.get("source"), marker.get("finishedAt"))
        return None
    if await store.count(REGISTRY) > 0:
        log.warning("not migrating %s into etcd: the etcd already holds a cluster (keys under %s); the "
                    "SQLite file is ignored", db, REGISTRY)
        return None
    return await _migrate(store, db, endpoint_hint)


def _decode_marker(kv: KeyValue | None) -> dict | None:
    if kv is None:
        return None
    try:
        value = json.loads(kv.value)
        return value if isinstance(value, dict) else {"state": "unknown"}
    except ValueError:
        return {"state": "unknown"}


def _sqlite_revision(db: Path) -> int:
    from kubeling.storage import backup

    return backup.describe(db).get("revision", -1)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _read_sqlite(db: Path) -> tuple[int, list[KeyValue]]:
    """Every live key of the SQLite file at one revision, in mod_revision order."""
    from kubeling.storage.sqlite import SQLiteStore

    # opening takes the file's lock (no server may be using it) and checks its integrity
    src = await SQLiteStore.open(str(db), compact_interval=0)
    try:
        revision = await src.current_revision()
        kvs: list[KeyValue] = []
        after = ""
        while True:
            page = await src.list("", revision=revision, start_after=after, limit=PAGE)
            kvs.extend(page.kvs)
            if not page.more or not page.kvs:
                break
            after = page.kvs[-1].key
    finally:
        await src.close()
    kvs.sort(key=lambda kv: kv.mod_revision)
    return revision, kvs


async def _migrate(store: Store, db: Path, endpoint_hint: str) -> dict:
    started = time.monotonic()
    sqlite_rev, kvs = await _read_sqlite(db)
    marker = {"state": "copying", "source": str(db.resolve()), "sqliteRevision": sqlite_rev,
              "objects": len(kvs), "startedAt": _now()}
    log.warning("migrating %s into etcd: %d keys at SQLite revision %d (the file is renamed "
                "afterwards; do not stop the server until it says the migration is done)",
                db, len(kvs), sqlite_rev)
    ok, cur = await store.create(MARKER, json.dumps(marker).encode())
    if not ok:
        raise MigrationError(f"another server started migrating into this etcd at the same time "
                             f"({cur.value[:200]!r}); {_clear_hint(endpoint_hint)}")
    marker_rev = cur.mod_revision

    bumped = await _raise_revision(store, sqlite_rev)
    if bumped > 1:
        await store.compact(bumped)  # SQLite-era resourceVersions: 410 Gone, clients relist
    first = 0
    last_log = time.monotonic()
    for i, kv in enumerate(kvs):
        if kv.key == MARKER or kv.key.startswith(BUMP_PREFIX):
            continue
        ok, new = await store.create(kv.key, kv.value)
        if not ok:
            raise MigrationError(f"{kv.key} appeared in etcd during the migration (another writer?); "
                                 f"{_clear_hint(endpoint_hint)}")
        first = first or new.mod_revision
        if time.monotonic() - last_log > PROGRESS_EVERY:
            last_log = time.monotonic()
            log.warning("migrating into etcd: %d of %d keys copied", i + 1, len(kvs))
    final = await store.current_revision()
    marker.update(state="done", finishedAt=_now(), firstRevision=first, lastRevision=final)
    ok, _ = await store.update(MARKER, json.dumps(marker).encode(), marker_rev)
    if not ok:
        raise MigrationError(f"the migration claim {MARKER} changed under this server; "
                             f"{_clear_hint(endpoint_hint)}")
    dest = _rename_sqlite(db)
    seconds = time.monotonic() - started
    log.warning("migration into etcd done: %d keys in %.1f s (SQLite revision %d; etcd revisions "
                "%d..%d); %s renamed %s, so it is not migrated again", len(kvs), seconds, sqlite_rev,
                first, final, db.name, dest.name)
    return {**marker, "renamedTo": str(dest), "seconds": seconds}


async def _raise_revision(store: Store, target: int) -> int:
    """Make etcd's current revision at least ``target``; return the revision reached."""
    current = await store.current_revision()
    if current >= target:
        return current
    need = target - current
    log.warning("raising the etcd revision from %d to %d (above SQLite's) with %d scratch writes",
                current, target, need)
    reached = current
    last_log = time.monotonic()

    async def worker(i: int) -> None:
        nonlocal reached, last_log
        key = f"{BUMP_PREFIX}{i}"
        while reached < target:
            ok, kv = await store.create(key, b"")
            try:
                if ok:
                    reached = max(reached, kv.mod_revision)
            finally:  # never leave a scratch key behind, even when cancelled
                ok, kv = await store.delete(key)
            if ok:
                reached = max(reached, kv.mod_revision)
            if time.monotonic() - last_log > PROGRESS_EVERY:
                last_log = time.monotonic()
                log.warning("raising the etcd revision: %d of %d", reached, target)

    await asyncio.gather(*(worker(i) for i in range(min(BUMP_WORKERS, max(1, need // 2)))))
    return await store.current_revision()


def _rename_sqlite(db: Path) -> Path:
    """``state.db`` (and -wal, -shm) -> ``state.db.migrated-<UTC time>``; the lock file goes."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest, n = db.with_name(f"{db.name}.migrated-{stamp}"), 1
    while dest.exists():
        dest, n = db.with_name(f"{db.name}.migrated-{stamp}.{n}"), n + 1
    os.replace(db, dest)  # from here on a restart no longer sees state.db
    for suffix in ("-wal", "-shm"):  # a cleanly closed database has none; keep them with it if any
        side = db.with_name(db.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))
    try:
        os.unlink(db.with_name(db.name + ".lock"))
    except FileNotFoundError:
        pass
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dest
