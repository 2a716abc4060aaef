"""The embedded SQLite backend of :class:`kubeling.storage.interface.Store`, modelled on kine.

Data model
----------
One append-only table, ``kine``. Each row is one revision of one key::

    id               INTEGER PRIMARY KEY AUTOINCREMENT -- the revision; mod_revision of the row
    name             the key
    created          1 if this row (re)creates the key (then create_revision == id)
    deleted          1 if this row is a tombstone; ``value`` then holds the deleted value
    create_revision  the revision that created this incarnation of the key
    prev_revision    id of the row this one supersedes (0 for the first create of a key)
    value            the value written at this revision
    old_value        the superseded value (updates only; NULL on creates and tombstones)

``UNIQUE(name, prev_revision)`` is the compare-and-swap guard: two writes that read the same
latest row can never both append a successor. The current revision is ``sqlite_sequence``'s
counter, so it keeps climbing even when compaction deletes the newest rows, and a reopened file
continues where it stopped. ``meta.compact_revision`` persists the compaction point.

Reading at a revision R is "for every key, the row with the largest id <= R, unless it is a
tombstone", served by the ``(name, id)`` index. Compacting to C deletes every row superseded by a
row with id <= C and every tombstone with id <= C, which never touches the newest row of a live
key and leaves the snapshot at C (and every later one) intact. So ``list`` accepts revisions
``>= C`` while ``watch`` needs ``start_revision > C`` (the events at and below C are gone).

Concurrency model
-----------------
* **One writer thread** owns the only write connection. ``create``/``update``/``delete``/``compact``
  put an operation and an asyncio future on a queue and await the future. The writer takes
  everything queued (group commit), applies it in queue order inside one ``BEGIN IMMEDIATE``
  transaction, COMMITs, and only then hands the whole batch back to the event loop with a single
  ``call_soon_threadsafe``. There the loop first fans the batch's events out to watchers, then
  resolves the callers' futures. Writes are therefore linearizable in queue order, revisions have
  no gaps, and an acknowledged write is committed.
* **Reads** run on a small thread pool; each thread has its own read-only connection and every
  read is one read transaction, i.e. one consistent snapshot (WAL lets it run beside the writer).
  A read started after a write was acknowledged sees that write.
* **Watches** never poll. They are served by :mod:`kubeling.storage.broadcaster`: subscribe to
  the in-process fan-out first, then backfill ``id >= start_revision`` from the log in one read
  snapshot, then drop live events already yielded. A watcher more than ``watch_buffer`` events
  behind is dropped with :class:`WatchOverflowError` (a ``CompactedError`` -> 410 Gone, so the
  client relists); the writer never waits for a watcher.
* The event loop never blocks on SQLite. The store belongs to the loop it was opened on, and one
  process owns a database file at a time (enforced with an ``flock`` on ``<path>.lock``), as an
  etcd member owns its data dir: another process's writes would bypass the fan-out.

Durability
----------
WAL mode. ``synchronous="FULL"`` (the default) fsyncs the WAL at every COMMIT, so an acknowledged
write survives power loss and kernel crashes, which is the promise etcd makes (it fsyncs before
acknowledging). Group commit pays one fsync per batch, not per write, so the cost is small.
``synchronous="NORMAL"`` skips that fsync: a COMMIT has still written the WAL frames to the OS
before it returns, so an acknowledged write survives ``kill -9`` of the process, but not a power
cut. Checkpoints run automatically on the writer connection.

Integrity and health
--------------------
A new state file is created whole (``backup.create_database``: built aside, renamed into place),
so a state file that exists but is empty, or is not a SQLite database, was damaged: ``open``
refuses it with :class:`CorruptStoreError` rather than start a new, empty cluster over it. Every
open runs ``PRAGMA quick_check`` and refuses a damaged file the same way; the message says how
to restore a backup. The file, its ``-wal``/``-shm`` and the lock file are 0600.

A write that fails for lack of space (SQLITE_FULL) or an I/O error changes nothing and raises
:class:`InsufficientStorageError`; from then on ``check()`` raises it too, until a probe write to
``meta`` (which does not bump the revision) or any other write succeeds, so the store heals by
itself once space is freed. Damage met at run time (SQLITE_CORRUPT) raises
:class:`CorruptStoreError` and stays in ``check()``: it does not heal. Numbers larger than
SQLite's int64 never reach SQL: a future revision is rejected (list) or waited for (watch)
before, and a list limit is clamped.

Compaction
----------
Every ``compact_interval`` seconds the store compacts to ``current_revision - compact_keep``. A
compaction is split into steps of ``COMPACT_STEP`` revisions, each its own short transaction
queued behind user writes, so it never stalls the writer for long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from kubeling.storage import backup
from kubeling.storage.interface import (
    as_bytes as _as_bytes,
    check_key as _check_key,
    DELETE,
    PUT,
    CorruptStoreError,
    Event,
    FutureRevisionError,
    InsufficientStorageError,
    KeyValue,
    ListResult,
    StorageError,
)
from kubeling.storage.broadcaster import Broadcaster, BufferedWatch
from kubeling.storage.sqlite_read import (_LATEST, _read_backfill, _read_count, _read_get, _read_list,
                                          _read_revision, _state)

log = logging.getLogger(__name__)

MAX_BATCH = 512  # writes per group commit; bounds the latency one batch adds to the next
COMPACT_STEP = 1000  # revisions per compaction transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision ON kine (name, prev_revision);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_INSERT = (
    "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, value,"
    " old_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STOP = object()

# Operation kinds queued to the writer. A probe is the health check's write (see check()).
_CREATE, _UPDATE, _DELETE, _COMPACT, _PROBE = "create", "update", "delete", "compact", "probe"


class _hybridmethod:
    """Lets ``open`` be called both as ``await SQLiteStore.open(path)`` and ``await s.open()``."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __get__(self, obj: Any, cls: type) -> Callable[..., Any]:
        return self.func.__get__(cls if obj is None else obj)


# --- read transactions (run on reader threads) ----------------------------------------------


class SQLiteStore:
    """A :class:`~kubeling.storage.interface.Store` on one SQLite file.

    ``await SQLiteStore.open(path)`` (or ``s = SQLiteStore(path); await s.open()``, or
    ``async with SQLiteStore(path) as s``) starts it; ``await s.close()`` finishes queued writes,
    ends every watch and releases the file. Options: ``compact_interval`` seconds between
    automatic compactions (0 disables them), keeping the last ``compact_keep`` revisions;
    ``synchronous`` "FULL" (power-loss safe, default) or "NORMAL" (process-crash safe);
    ``watch_buffer`` events a watcher may lag before it is dropped; ``readers`` threads
    (0 = one per core, 2..4).
    """

    def __init__(
        self,
        path: str,
        *,
        compact_interval: float = 300,
        compact_keep: int = 1000,
        synchronous: str = "FULL",
        watch_buffer: int = 10000,
        readers: int = 0,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = str(path)
        self.compact_interval = compact_interval
        self.compact_keep = compact_keep
        self._synchronous = synchronous.upper()
        # One reader thread per core (2..4): more threads only fight over the GIL.
        self._n_readers = readers or max(2, min(4, os.cpu_count() or 2))
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._wconn: sqlite3.Connection | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._rconns: list[sqlite3.Connection] = []
        self._rconns_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._compactor: asyncio.Task[None] | None = None
        # Loop-side view (revision last fanned out, compact revision in force) lives in the hub.
        self._hub = Broadcaster(
            self._read_backfill, revision=0, compact_revision=0, buffer=watch_buffer
        )
        # Writer-side state, touched only by the writer thread once it runs.
        self._wrev = 0
        self._wcompact = 0
        # The fault check() reports; set by the writer thread (or a read that met damage) and
        # read on the loop. A single attribute store, so no lock is needed.
        self._fault: StorageError | None = None
        self._opened = False
        self._closed = False

    # -- lifecycle --

    @_hybridmethod
    async def open(self_or_cls: Any, *args: Any, **kwargs: Any) -> SQLiteStore:
        store = self_or_cls(*args, **kwargs) if isinstance(self_or_cls, type) else self_or_cls
        await store._start()
        return store

    async def __aenter__(self) -> SQLiteStore:
        if not self._opened:
            await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _start(self) -> None:
        if self._opened:
            raise StorageError("store already opened")
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._init_db)
        except BaseException:
            self._release_files()
            raise
        self._hub.revision, self._hub.compact_revision = self._wrev, self._wcompact
        self._readers = ThreadPoolExecutor(self._n_readers, thread_name_prefix="sqlite-read")
        self._writer = threading.Thread(target=self._writer_main, name="sqlite-write", daemon=True)
        self._writer.start()
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_loop(), name="sqlite-compactor")
        self._opened = True

    def _init_db(self) -> None:
        self._lock_fd = backup.lock(self.path)
        if not os.path.exists(self.path):
            backup.create_database(self.path, lambda conn: conn.executescript(_SCHEMA))
        elif os.path.getsize(self.path) == 0:
            # A state file is never created empty, so this one lost its contents: starting a new
            # cluster over it would silently drop every object.
            raise CorruptStoreError(
                f"cannot open {self.path}: the file is empty (0 bytes), so the cluster state is"
                f" lost; {backup.restore_hint(self.path)}, or move it away to start a new cluster")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._wconn = conn
            conn.execute("PRAGMA journal_mode=WAL")
            problems = backup.check_connection(conn, full=False)
            if problems:
                raise CorruptStoreError(
                    f"cannot open {self.path}: the database is damaged (quick_check: "
                    f"{'; '.join(problems[:3])}); {backup.restore_hint(self.path)}")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA cache_size=-32000")
            conn.execute("PRAGMA journal_size_limit=67108864")
            self._wrev, self._wcompact = _state(conn)
        except sqlite3.Error as e:
            raise backup.storage_error(e, f"cannot open {self.path}", self.path) from e
        backup.restrict_permissions(self.path)

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA cache_size=-16000")
            self._local.conn = conn
            with self._rconns_lock:
                self._rconns.append(conn)
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._opened:
            return
        try:
            if self._compactor is not None:
                self._compactor.cancel()
                await asyncio.gather(self._compactor, return_exceptions=True)
            self._queue.put(_STOP)
            # Shielded: even if close() is cancelled, teardown finishes in its thread, in order.
            await asyncio.shield(asyncio.to_thread(self._shutdown))
            # The writer's last call_soon_threadsafe ran before to_thread's own wake-up (FIFO),
            # so every queued write has been acknowledged and fanned out by now.
        finally:
            self._hub.close()

    def _shutdown(self) -> None:
        """Thread side of close(): drain the writer, then the readers, then release the files."""
        self._writer.join()  # type: ignore[union-attr]
        self._readers.shutdown(wait=True)  # type: ignore[union-attr]
        with self._rconns_lock:
            for conn in self._rconns:
                conn.close()
            self._rconns.clear()
        self._release_files()

    def _release_files(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- reads --

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed or not self._opened:
            raise StorageError("store is closed" if self._closed else "store is not open")
        return await self._loop.run_in_executor(self._readers, self._read_txn, fn, args)

    def _read_txn(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            conn = self._reader_conn()
            conn.execute("BEGIN")  # one snapshot for every statement of this read
            try:
                return fn(conn, *args)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as e:
            err = backup.storage_error(e, "sqlite read failed", self.path)
            if isinstance(err, CorruptStoreError):
                self._fault = err  # damage does not heal: report it until a restore
            raise err from e

    def _read_now(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A point read on the event loop's own thread: an indexed lookup costs tens of
        microseconds, less than handing it to a reader thread (a GIL handoff); WAL readers never
        wait for the writer."""
        if self._closed or not self._opened:
            raise StorageError("store is closed" if self._closed else "store is not open")
        return self._read_txn(fn, args)

    async def get(self, key: str) -> tuple[int, KeyValue | None]:
        return self._read_now(_read_get, key)

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        if revision < 0 or limit < 0:
            raise ValueError("revision and limit must not be negative")
        return await self._read(_read_list, prefix, revision, start_after, limit)

    async def count(self, prefix: str) -> int:
        return await self._read(_read_count, prefix)

    async def current_revision(self) -> int:
        return self._read_now(_read_revision)

    async def check(self) -> None:
        """See ``Store.check``. Healthy: one point read. After a failed write: a probe write."""
        fault = self._fault
        if fault is None or isinstance(fault, CorruptStoreError):
            if fault is not None:
                raise fault
            self._read_now(_read_revision)  # raises if the file became unreadable
            return
        await self._submit((_PROBE, "", None, 0))  # raises the probe's error; clears on success

    async def backup(self, path: str | os.PathLike) -> backup.BackupInfo:
        """Write a consistent copy of the store to ``path`` while it keeps serving (one read
        snapshot on a reader thread; writes go on). See :func:`backup.backup_database`."""
        if self._closed or not self._opened:
            raise StorageError("store is closed" if self._closed else "store is not open")
        return await self._loop.run_in_executor(
            self._readers, backup.backup_database, self.path, Path(path))

    @property
    def compact_revision(self) -> int:
        return self._hub.compact_revision

    async def _read_backfill(self, prefix: str, start: int) -> list[Event]:
        return await self._read(_read_backfill, prefix, start)

    # -- writes --

    async def _submit(self, op: tuple[Any, ...]) -> Any:
        if self._closed or not self._opened:
            raise StorageError("store is closed" if self._closed else "store is not open")
        fut = self._loop.create_future()
        self._queue.put((op, fut))
        return await fut

    async def create(self, key: str, value: bytes) -> tuple[bool, KeyValue | None]:
        return await self._submit((_CREATE, _check_key(key), _as_bytes(value), 0))

    async def update(
        self, key: str, value: bytes, expected_mod_revision: int
    ) -> tuple[bool, KeyValue | None]:
        op = (_UPDATE, _check_key(key), _as_bytes(value), expected_mod_revision)
        return await self._submit(op)

    async def delete(
        self, key: str, expected_mod_revision: int = 0
    ) -> tuple[bool, KeyValue | None]:
        return await self._submit((_DELETE, _check_key(key), None, expected_mod_revision))

    async def compact(self, revision: int) -> int:
        """Compact to ``revision``; raises FutureRevisionError if it has not happened yet.

        Unlike etcd, compacting to a revision at or below the one in force is not an error: it
        returns the compact revision in force, so periodic compactors need no coordination.
        """
        while True:
            step = min(revision, self._hub.compact_revision + COMPACT_STEP)
            done = await self._submit((_COMPACT, "", None, (step, revision)))
            if done >= revision or done < step:
                return done

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.compact_interval)
            target = self._hub.revision - self.compact_keep
            if target > self._hub.compact_revision:
                try:
                    await self.compact(target)
                except StorageError:
                    log.exception("periodic compaction to revision %d failed", target)

    # -- writer thread --

    def _writer_main(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                results, events = self._commit_batch(batch)
            except BaseException as e:  # never leave a caller waiting forever
                log.exception("sqlite writer failed")
                err = StorageError(f"sqlite writer failed: {e}")
                results, events = [(fut, err) for _, fut in batch], []
            try:
                self._loop.call_soon_threadsafe(
                    self._deliver, results, events, self._wrev, self._wcompact
                )
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                log.warning("event loop closed; dropping %d write acknowledgements", len(batch))

    def _commit_batch(self, batch: list[Any]) -> tuple[list[tuple[Any, Any]], list[Event]]:
        """Writes in one transaction, then each compaction step and probe in its own."""
        writes = [b for b in batch if b[0][0] not in (_COMPACT, _PROBE)]
        results: list[tuple[Any, Any]] = []  # (future, result or exception)
        events: list[Event] = []
        if writes:
            results += self._commit_writes(writes, events)
        for op, fut in batch:
            if op[0] == _COMPACT:
                results.append((fut, self._commit_compact(*op[3])))
            elif op[0] == _PROBE:
                results.append((fut, self._commit_probe()))
        return results, events

    def _failed(self, e: BaseException, what: str) -> StorageError:
        """The error for a failed write transaction (rolled back), remembered for check()."""
        if isinstance(e, sqlite3.Error):
            err = backup.storage_error(e, what, self.path, writing=True)
        else:
            err = StorageError(f"{what}: {e}")
        if isinstance(err, (InsufficientStorageError, CorruptStoreError)):
            self._fault = err
        return err

    def _succeeded(self) -> None:
        """A write reached the disk: a full disk has been relieved (damage stays reported)."""
        if isinstance(self._fault, InsufficientStorageError):
            self._fault = None

    def _commit_probe(self) -> Any:
        """check()'s write: tiny, to ``meta``, no new revision. None, or the failure."""
        conn = self._wconn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('health_probe', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (time.time_ns(),),
            )
            conn.execute("COMMIT")
        except BaseException as e:
            _rollback(conn)
            return self._failed(e, "sqlite health probe write failed")
        self._succeeded()
        return None

    def _commit_writes(self, batch: list[Any], events: list[Event]) -> list[tuple[Any, Any]]:
        conn = self._wconn
        assert conn is not None
        start_rev = self._wrev
        out: list[tuple[Any, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                result, event = self._apply(conn, op)
                out.append((fut, result))
                if event is not None:
                    events.append(event)
            conn.execute("COMMIT")
        except BaseException as e:  # I/O error, disk full, ...: nothing of this batch happened
            log.error("sqlite write transaction failed: %s", e,
                      exc_info=not isinstance(e, sqlite3.Error))
            _rollback(conn)
            self._wrev = start_rev
            events.clear()
            err = self._failed(e, "sqlite write failed")
            return [(fut, err) for _, fut in batch]
        self._succeeded()
        return out

    def _apply(
        self, conn: sqlite3.Connection, op: tuple[Any, ...]
    ) -> tuple[tuple[bool, KeyValue | None], Event | None]:
        kind, key, value, expected = op
        row = conn.execute(_LATEST, (key,)).fetchone()
        live = row is not None and not row[1]
        current = KeyValue(key, row[3], row[2], row[0]) if live else None
        rev = self._wrev + 1
        if kind == _CREATE:
            if live:
                return (False, current), None
            args = (rev, key, 1, 0, rev, row[0] if row else 0, value, None)
            kv = KeyValue(key, value, rev, rev)
        elif not live or (expected != row[0] and (kind == _UPDATE or expected != 0)):
            return (False, current), None
        elif kind == _UPDATE:
            args = (rev, key, 0, 0, row[2], row[0], value, row[3])
            kv = KeyValue(key, value, row[2], rev)
        else:  # delete: the tombstone keeps the last value so the DELETE event can carry it
            args = (rev, key, 0, 1, row[2], row[0], row[3], None)
            kv = KeyValue(key, row[3], row[2], rev)
        try:
            conn.execute(_INSERT, args)
        except sqlite3.IntegrityError:
            # The UNIQUE(name, prev_revision) guard fired: someone else appended first.
            return (False, current), None
        self._wrev = rev
        if kind == _CREATE:
            event = Event(PUT, kv, None)
        else:
            event = Event(DELETE if kind == _DELETE else PUT, kv, current)
        return (True, kv), event

    def _commit_compact(self, step: int, final: int) -> Any:
        if final > self._wrev:
            return FutureRevisionError(final, self._wrev)
        if step <= self._wcompact:
            return self._wcompact
        conn = self._wconn
        assert conn is not None
        lo = self._wcompact
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Superseded rows first: a tombstone's prev row is found through the tombstone.
            conn.execute(
                "DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine"
                " WHERE id > ? AND id <= ? AND prev_revision != 0)",
                (lo, step),
            )
            conn.execute("DELETE FROM kine WHERE deleted = 1 AND id > ? AND id <= ?", (lo, step))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('compact_revision', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (step,),
            )
            conn.execute("COMMIT")
        except BaseException as e:
            log.error("sqlite compaction failed: %s", e,
                      exc_info=not isinstance(e, sqlite3.Error))
            _rollback(conn)
            return self._failed(e, "sqlite compaction failed")
        self._succeeded()
        self._wcompact = step
        return step

    # -- fan-out (event loop) --

    def _deliver(
        self, results: list[tuple[Any, Any]], events: list[Event], revision: int, compact: int
    ) -> None:
        """Runs on the loop after a COMMIT. Fans out first, so that by the time a writer resumes,
        its event is already queued for every watcher."""
        self._hub.publish(events, revision, compact)
        for fut, result in results:
            if fut.done():  # the caller was cancelled; the write happened anyway (like etcd)
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def watch(self, prefix: str, start_revision: int) -> BufferedWatch:
        return self._hub.watch(prefix, start_revision)

    def watcher_count(self) -> int:
        """Number of subscribed watchers (for metrics and leak tests)."""
        return self._hub.watcher_count()


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction. SQLite may already have rolled it back (it does on SQLITE_FULL)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("sqlite rollback failed")
