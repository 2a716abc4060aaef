"""Backups of the SQLite state file (like k3s ``etcd-snapshot``), and the file-level safety that
the store and its backups share.

==============================  ===============================================================
``backup_database(db, dest)``   online: a consistent copy by SQLite's backup API, in one read
                                transaction of a read-only connection. It takes no writer lock,
                                so it runs beside a live server, whose writes go on (WAL).
``restore(backup, data_dir)``   offline: verify the backup, set the current state aside as
                                ``state.db.bak-<time>``, put the backup in its place.
``verify(path, full=...)``      ``integrity_check`` (full) or ``quick_check``: the problems found.
``lock(db)``                    the one-process-per-file ``flock`` on ``<db>.lock``.
``create_database(db, init)``   a new state file that appears whole (built aside, fsynced,
                                renamed), so a state file that exists is never legitimately empty.
``storage_error(e, ...)``       a ``sqlite3.Error`` translated into the storage exception tree.
==============================  ===============================================================

Every file made here is 0600: the state holds Secrets in plain text. A backup is one
self-contained file (no ``-wal`` beside it) that is itself a valid state file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubeling.storage.interface import CorruptStoreError, InsufficientStorageError, StorageError

STATE_FILE = "state.db"
# Sidecar files SQLite keeps next to a database in WAL mode; they belong to that database.
SIDECARS = ("-wal", "-shm")
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_OUT_OF_SPACE = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
LOW_SPACE = 1 << 20  # an I/O error with less free space than this is taken for a full disk


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds: the store's revision at the copy, and its size in bytes."""

    path: Path
    revision: int
    size: int


@dataclass(frozen=True)
class RestoreInfo:
    """Where the backup went, and where the state it replaced was set aside (None if none)."""

    path: Path
    revision: int
    previous: Path | None


def restore_hint(db_path: str | os.PathLike) -> str:
    data_dir = Path(db_path).parent
    return (f"restore the last backup with `kubeling restore BACKUP_FILE --data-dir {data_dir}`"
            f" (run `kubeling doctor --data-dir {data_dir}` for a full check)")


def storage_error(e: sqlite3.Error, what: str, db_path: str | os.PathLike, *,
                  writing: bool = False) -> StorageError:
    """Translate a sqlite3 error into the storage exception tree.

    Damage -> CorruptStoreError. SQLITE_FULL, or an I/O error while writing or on a nearly full
    disk -> InsufficientStorageError (SQLite reports ENOSPC as SQLITE_FULL when a file grows, but
    as an I/O error when it makes its shared-memory file, e.g. at open). Else StorageError.
    """
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    if code in _CORRUPT:
        return CorruptStoreError(f"{what}: {db_path} is damaged ({e}); {restore_hint(db_path)}")
    if code in _OUT_OF_SPACE:
        free = _free_bytes(db_path)
        if code == sqlite3.SQLITE_FULL or writing or (free is not None and free < LOW_SPACE):
            space = "" if free is None else f", {free} bytes free"
            then = ("writes resume by themselves once there is room" if writing
                    else "free some space and try again")
            return InsufficientStorageError(
                f"{what}: {e} (out of space on the disk holding {db_path}{space}); {then}")
    return StorageError(f"{what}: {e}")


def lock(db_path: str | os.PathLike) -> int:
    """Take the exclusive, non-blocking ``flock`` on ``<db>.lock``; return its fd (close to unlock).

    Raises StorageError if another process holds it: one process owns a state file, as an etcd
    member owns its data dir.
    """
    path = f"{db_path}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StorageError(f"cannot create lock file {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise StorageError(f"{db_path} is in use by another process (a running kubeling server"
                           f" holds {path})") from e
    return fd


def create_database(db_path: str | os.PathLike, init: Callable[[sqlite3.Connection], None]) -> None:
    """Create a new state file with ``init(conn)`` applied, all or nothing.

    The file is built as ``<db>.new`` (0600), checkpointed into one file, fsynced and renamed into
    place, so a crash or a full disk never leaves a half-made or empty ``<db>`` behind.
    """
    db = str(db_path)
    tmp = db + ".new"
    _remove(tmp, *(tmp + s for s in SIDECARS))  # a previous attempt that died half-way
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            init(conn)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()  # the last connection folds the WAL into the file and removes it
        _fsync_file(tmp)
        os.rename(tmp, db)
        _fsync_dir(db)
    except sqlite3.Error as e:
        _remove(tmp, *(tmp + s for s in SIDECARS))
        raise storage_error(e, f"cannot create {db}", db, writing=True) from e
    except OSError as e:
        _remove(tmp, *(tmp + s for s in SIDECARS))
        raise StorageError(f"cannot create {db}: {e.strerror}") from e


def restrict_permissions(db_path: str | os.PathLike) -> None:
    """Make the state file and its sidecars 0600 (older releases left them 0644)."""
    for path in (str(db_path), *(f"{db_path}{s}" for s in SIDECARS)):
        try:
            os.chmod(path, 0o600)
        except FileNotFoundError:
            pass


def verify(path: str | os.PathLike, *, full: bool = True, immutable: bool = False) -> list[str]:
    """Check a state file: ``integrity_check`` when ``full``, else ``quick_check``; returns the
    problems, [] if none. It only reads, and it may run beside a live server (WAL); pass
    ``immutable`` for a private file nobody else can know about.

    A missing, empty or non-SQLite file, or one without the store's tables, is a problem too.
    """
    p = Path(path)
    if not p.exists():
        return [f"{p} does not exist"]
    if p.stat().st_size == 0:
        return [f"{p} is empty (0 bytes)"]
    try:
        conn = _connect_readonly(p, immutable=immutable)
    except sqlite3.Error as e:
        return [f"{p} cannot be opened: {e}"]
    try:
        return check_connection(conn, full=full)
    finally:
        conn.close()


def check_connection(conn: sqlite3.Connection, *, full: bool) -> list[str]:
    """Problems ``integrity_check``/``quick_check`` and the store's tables report on ``conn``."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}(20)").fetchall()
        problems = [r[0] for r in rows if r[0] != "ok"]
        if not problems:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            problems = [f"table {t} is missing: not a kubeling state file"
                        for t in ("kine", "meta") if t not in tables]
    except sqlite3.Error as e:
        problems = [str(e)]
    return problems


def describe(path: str | os.PathLike) -> dict[str, int]:
    """Facts about a healthy state file: revision, compact revision, rows and live keys."""
    conn = _connect_readonly(Path(path))
    try:
        conn.execute("BEGIN")
        return {"revision": _revision(conn),
                "compact_revision": _meta(conn, "compact_revision"),
                "rows": conn.execute("SELECT COUNT(*) FROM kine").fetchone()[0],
                "keys": conn.execute(
                    "SELECT COUNT(*) FROM kine AS k JOIN (SELECT MAX(id) AS mid FROM kine"
                    " GROUP BY name) AS m ON k.id = m.mid WHERE k.deleted = 0").fetchone()[0]}
    finally:
        conn.close()


def backup_database(db_path: str | os.PathLike, dest: str | os.PathLike) -> BackupInfo:
    """Copy the live state file ``db_path`` to ``dest`` consistently, beside a running server.

    One read transaction on a read-only connection (WAL: the writer never waits for it); the copy
    is written to a temp file next to ``dest``, verified with ``quick_check``, fsynced and renamed,
    so ``dest`` is either the old file or a whole backup. Blocking: run it in a thread.
    """
    db, dest = Path(db_path), Path(dest)
    if not db.exists() or db.stat().st_size == 0:
        raise StorageError(f"nothing to back up: {db} " +
                           ("does not exist" if not db.exists() else "is empty"))
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        src = _connect_readonly(db)
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(target)  # all pages in one step: one snapshot of the source
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                problems = check_connection(target, full=False)
                if problems:
                    raise CorruptStoreError(f"the copy of {db} is damaged: {'; '.join(problems)}")
                revision = _revision(target)
            finally:
                target.close()
        finally:
            src.close()
        _fsync_file(tmp)
        os.rename(tmp, dest)
        _fsync_dir(dest)
    except sqlite3.Error as e:
        _remove(tmp, *(f"{tmp}{s}" for s in (*SIDECARS, "-journal")))
        raise storage_error(e, f"backup of {db} to {dest} failed", db) from e
    except OSError as e:
        _remove(tmp, *(f"{tmp}{s}" for s in (*SIDECARS, "-journal")))
        raise StorageError(f"backup of {db} to {dest} failed: {e.strerror or e}") from e
    except BaseException:
        _remove(tmp, *(f"{tmp}{s}" for s in (*SIDECARS, "-journal")))
        raise
    return BackupInfo(dest, revision, dest.stat().st_size)


def restore(backup_file: str | os.PathLike, data_dir: str | os.PathLike) -> RestoreInfo:
    """Put ``backup_file`` in place as ``<data_dir>/state.db``, with no server running.

    Refuses (StorageError) while a server holds the lock, and (CorruptStoreError) a backup that
    fails ``integrity_check``. The current state file, with its ``-wal`` (which may hold committed
    writes of a crashed server), is renamed ``state.db.bak-<UTC time>`` (+ ``-wal``), never
    deleted; the stale ``-shm`` goes. The data dir is created (0700) if missing.
    """
    src, data = Path(backup_file), Path(data_dir)
    if not src.is_file():
        raise StorageError(f"cannot restore {src}: no such file")
    try:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create data directory {data}: {e.strerror}") from e
    db = data / STATE_FILE
    fd = lock(db)
    tmp = data / f".{STATE_FILE}.restore-{os.getpid()}"
    try:
        _copy(src, tmp)
        # Verify the copy, not the source: it is exactly what goes in place (a source with a
        # stray -wal beside it would read differently from the bytes copied).
        problems = verify(tmp, full=True, immutable=True)
        if problems:
            raise CorruptStoreError(f"refusing to restore {src}: {'; '.join(problems)}")
        previous = None
        if db.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            previous = data / f"{STATE_FILE}.bak-{stamp}"
            n = 1
            while previous.exists():
                previous, n = data / f"{STATE_FILE}.bak-{stamp}.{n}", n + 1
            os.rename(db, previous)
            wal = Path(f"{db}-wal")
            if wal.exists():
                os.rename(wal, f"{previous}-wal")
            restrict_permissions(previous)  # it holds the same secrets
        _remove(f"{db}-wal", f"{db}-shm")  # never apply the old state's log to the backup
        os.rename(tmp, db)
        _fsync_dir(db)
    except OSError as e:
        raise StorageError(f"restore of {src} into {data} failed: {e.strerror or e}") from e
    finally:
        _remove(tmp)
        os.close(fd)
    conn = _connect_readonly(db)
    try:
        revision = _revision(conn)
    finally:
        conn.close()
    return RestoreInfo(db, revision, previous)


# --- helpers --------------------------------------------------------------------------------


def _connect_readonly(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection. It takes SQLite's shared locks, so it reads a consistent snapshot
    of a file a server is writing. ``immutable`` skips them: only for files nobody else sees."""
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem (None if unknown)."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
    return row[0] if row else 0


def _meta(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0


def _copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to a new 0600 file ``dest``, fsynced."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
        os.fchmod(fd, 0o600)
        while chunk := f.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(fd)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path``'s directory durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(*paths: str | os.PathLike) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
