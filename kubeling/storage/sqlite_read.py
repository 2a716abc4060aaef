"""The SQLite store's reads: each function runs inside one read transaction on a reader
connection (`SQLiteStore._read_txn`), so it sees one consistent snapshot. Reading at revision R
is "for every key, the row with the largest id <= R, unless it is a tombstone" (see ``sqlite``'s
data model)."""

from __future__ import annotations

import sqlite3
from typing import Any

from kubeling.storage.interface import (DELETE, PUT, CompactedError, Event, FutureRevisionError, KeyValue,
                                        ListResult, prefix_end)

MAX_LIMIT = 2**62  # list limits beyond this are "no limit" (SQLite integers are int64)
_LATEST = (
    "SELECT id, deleted, create_revision, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1"
)


def _range_sql(prefix: str, start_after: str) -> tuple[str, list[Any]]:
    """SQL condition and args selecting names under ``prefix`` and greater than ``start_after``."""
    cond, args = ["name >= ?"], [prefix]
    end = prefix_end(prefix)
    if end is not None:
        cond.append("name < ?")
        args.append(end)
    if start_after:
        cond.append("name > ?")
        args.append(start_after)
    return " AND ".join(cond), args


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    """(current revision, compact revision) as seen by this read transaction."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
    comp = conn.execute("SELECT value FROM meta WHERE key = 'compact_revision'").fetchone()
    return (row[0] if row else 0), (comp[0] if comp else 0)


def _read_get(conn: sqlite3.Connection, key: str) -> tuple[int, KeyValue | None]:
    current, _ = _state(conn)
    row = conn.execute(_LATEST, (key,)).fetchone()
    if row is None or row[1]:
        return current, None
    return current, KeyValue(key, row[3], row[2], row[0])


def _read_list(
    conn: sqlite3.Connection, prefix: str, revision: int, start_after: str, limit: int
) -> ListResult:
    current, compact = _state(conn)
    if revision == 0:
        revision = current
    elif revision > current:
        raise FutureRevisionError(revision, current)
    elif revision < compact:
        raise CompactedError(compact, current)
    limit = min(limit, MAX_LIMIT)  # larger limits mean the same, and would overflow SQL's int64
    cond, args = _range_sql(prefix, start_after)
    latest = (
        f"FROM kine AS k JOIN (SELECT MAX(id) AS mid FROM kine WHERE {cond} AND id <= ?"
        " GROUP BY name) AS m ON k.id = m.mid WHERE k.deleted = 0"
    )
    args.append(revision)
    sql = f"SELECT k.name, k.value, k.create_revision, k.id {latest} ORDER BY k.name"
    if limit > 0:
        rows = conn.execute(sql + " LIMIT ?", (*args, limit + 1)).fetchall()
    else:
        rows = conn.execute(sql, args).fetchall()
    more = limit > 0 and len(rows) > limit
    if more:
        rows = rows[:limit]
        count = conn.execute(f"SELECT COUNT(*) {latest}", args).fetchone()[0]
    else:
        count = len(rows)
    kvs = [KeyValue(r[0], r[1], r[2], r[3]) for r in rows]
    return ListResult(revision=revision, kvs=kvs, more=more, count=count)


def _read_count(conn: sqlite3.Connection, prefix: str) -> int:
    cond, args = _range_sql(prefix, "")
    sql = (
        "SELECT COUNT(*) FROM kine AS k JOIN (SELECT MAX(id) AS mid FROM kine WHERE "
        f"{cond} GROUP BY name) AS m ON k.id = m.mid WHERE k.deleted = 0"
    )
    return conn.execute(sql, args).fetchone()[0]


def _read_revision(conn: sqlite3.Connection) -> int:
    return _state(conn)[0]


def _row_event(row: tuple[Any, ...]) -> Event:
    rid, name, created, deleted, create_rev, prev_rev, value, old_value = row
    if deleted:
        kv = KeyValue(name, value, create_rev, rid)
        return Event(DELETE, kv, KeyValue(name, value, create_rev, prev_rev))
    kv = KeyValue(name, value, create_rev, rid)
    if created:
        return Event(PUT, kv, None)
    return Event(PUT, kv, KeyValue(name, old_value, create_rev, prev_rev))


def _read_backfill(conn: sqlite3.Connection, prefix: str, start: int) -> list[Event]:
    current, compact = _state(conn)
    if start <= compact:
        raise CompactedError(compact, current)
    if start > current:  # a future start (perhaps beyond int64): nothing to backfill, it waits
        return []
    cond, args = _range_sql(prefix, "")
    rows = conn.execute(
        "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value"
        f" FROM kine WHERE id >= ? AND {cond} ORDER BY id",
        (start, *args),
    ).fetchall()
    return [_row_event(r) for r in rows]


# --- the store ------------------------------------------------------------------------------
