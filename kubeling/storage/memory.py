"""An in-memory :class:`~kubeling.storage.interface.Store`: the test seam for in-process tests.

It keeps the same append-only revision log as the SQLite backend, so reads at old revisions,
compaction and watches behave exactly alike (``tests/unit/test_storage_contract.py`` runs the
same contract tests on both). Nothing is persisted.

Data model
----------
Each successful mutation appends one :class:`_Row` (the SQLite table's columns) to two views of
the log:

* ``_log``: every row in revision order, for watch backfill (a bisect finds ``start_revision``);
* ``_history[key]``: the rows of one key in revision order, for point reads and reads at a
  revision (a bisect finds the newest row ``<= revision``); ``_keys`` keeps the keys sorted so
  a prefix range is a bisect too.

Compacting to C drops every row superseded at or before C and every tombstone at or before C,
as the SQLite backend does, so ``list`` accepts revisions ``>= C`` and ``watch`` needs
``start_revision > C``. The revision counter never goes back, even when compaction drops the
newest rows.

Concurrency model
-----------------
Everything runs on the caller's event loop; there is no thread. A mutation applies and fans its
event out (through :class:`~kubeling.storage.broadcaster.Broadcaster`) before the awaiting caller
resumes, without yielding to the loop in between, so writes are linearizable in call order and
the write-acknowledged-after-fan-out promise holds. The acknowledgement then yields once, so
watch consumers keep up with a writer that loops (as they do behind a real backend), and a
cancelled write has happened anyway, as the contract says. Construction is free: ``MemoryStore()``
is ready to use; ``await MemoryStore.open(...)`` is only needed for periodic compaction.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from typing import Any

from kubeling.storage.broadcaster import Broadcaster, BufferedWatch
from kubeling.storage.interface import (
    as_bytes as _as_bytes,
    check_key as _check_key,
    DELETE,
    PUT,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    StorageError,
    prefix_end,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Row:
    """One revision of one key; the columns of the SQLite backend's ``kine`` table."""

    revision: int
    key: str
    created: bool
    deleted: bool
    create_revision: int
    prev_revision: int
    value: bytes
    old_value: bytes | None

    def kv(self) -> KeyValue:
        return KeyValue(self.key, self.value, self.create_revision, self.revision)

    def event(self) -> Event:
        kv = self.kv()
        if self.deleted:
            return Event(DELETE, kv, KeyValue(self.key, self.value, self.create_revision,
                                             self.prev_revision))
        if self.created:
            return Event(PUT, kv, None)
        assert self.old_value is not None
        return Event(PUT, kv, KeyValue(self.key, self.old_value, self.create_revision,
                                       self.prev_revision))


class MemoryStore:
    """A :class:`~kubeling.storage.interface.Store` held in memory (see the module docstring).

    Options mirror :class:`~kubeling.storage.sqlite.SQLiteStore`: ``compact_interval`` seconds
    between automatic compactions (0, the default, disables them; they start with ``open()``),
    keeping the last ``compact_keep`` revisions; ``watch_buffer`` events a watcher may lag
    before it is dropped.
    """

    def __init__(self, *, compact_interval: float = 0, compact_keep: int = 1000,
                 watch_buffer: int = 10000) -> None:
        self.compact_interval = compact_interval
        self.compact_keep = compact_keep
        self._log: list[_Row] = []
        self._log_revisions: list[int] = []  # parallel to _log, for bisect
        self._history: dict[str, list[_Row]] = {}
        self._keys: list[str] = []  # sorted keys of _history
        self._revision = 0
        self._hub = Broadcaster(self._read_backfill, revision=0, compact_revision=0,
                                buffer=watch_buffer)
        self._compactor: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle --

    @classmethod
    async def open(cls, **kwargs: Any) -> MemoryStore:
        """A new store; starts the periodic compactor on the running loop if one is configured."""
        store = cls(**kwargs)
        if store.compact_interval > 0:
            store._compactor = asyncio.create_task(store._compact_loop(), name="memory-compactor")
        return store

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        self._hub.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError("store is closed")

    async def check(self) -> None:
        """Healthy unless closed: memory has no disk to fill and nothing to corrupt."""
        self._ensure_open()

    # -- reads --

    def _latest(self, key: str, revision: int | None = None) -> _Row | None:
        """The newest row of ``key`` at ``revision`` (None = now), tombstones included."""
        rows = self._history.get(key)
        if not rows:
            return None
        if revision is None or revision >= rows[-1].revision:
            return rows[-1]
        i = bisect.bisect_right(rows, revision, key=lambda r: r.revision)
        return rows[i - 1] if i else None

    def _key_range(self, prefix: str, start_after: str) -> list[str]:
        lo = bisect.bisect_left(self._keys, prefix)
        if start_after:
            lo = max(lo, bisect.bisect_right(self._keys, start_after))
        end = prefix_end(prefix)
        hi = len(self._keys) if end is None else bisect.bisect_left(self._keys, end)
        return self._keys[lo:hi]

    async def get(self, key: str) -> tuple[int, KeyValue | None]:
        self._ensure_open()
        row = self._latest(key)
        return self._revision, (None if row is None or row.deleted else row.kv())

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        if revision < 0 or limit < 0:
            raise ValueError("revision and limit must not be negative")
        self._ensure_open()
        current, compact = self._revision, self._hub.compact_revision
        if revision == 0:
            revision = current
        elif revision > current:
            raise FutureRevisionError(revision, current)
        elif revision < compact:
            raise CompactedError(compact, current)
        live = []
        for key in self._key_range(prefix, start_after):
            row = self._latest(key, revision)
            if row is not None and not row.deleted:
                live.append(row.kv())
        more = 0 < limit < len(live)
        return ListResult(revision=revision, kvs=live[:limit] if more else live, more=more,
                          count=len(live))

    async def count(self, prefix: str) -> int:
        self._ensure_open()
        return sum(1 for key in self._key_range(prefix, "") if not self._history[key][-1].deleted)

    async def current_revision(self) -> int:
        self._ensure_open()
        return self._revision

    @property
    def compact_revision(self) -> int:
        return self._hub.compact_revision

    async def _read_backfill(self, prefix: str, start: int) -> list[Event]:
        self._ensure_open()
        if start <= self._hub.compact_revision:
            raise CompactedError(self._hub.compact_revision, self._revision)
        i = bisect.bisect_left(self._log_revisions, start)
        return [r.event() for r in self._log[i:] if r.key.startswith(prefix)]

    # -- writes --

    async def _commit(self, row: _Row) -> tuple[bool, KeyValue]:
        """Commit ``row`` at the next revision, fan its event out, then acknowledge.

        The acknowledgement yields to the loop once, as a real backend's would: a caller that
        writes in a loop lets watch consumers run between its writes instead of starving them.
        """
        self._revision = row.revision
        self._log.append(row)
        self._log_revisions.append(row.revision)
        rows = self._history.get(row.key)
        if rows is None:
            self._history[row.key] = [row]
            bisect.insort(self._keys, row.key)
        else:
            rows.append(row)
        self._hub.publish([row.event()], self._revision, self._hub.compact_revision)
        await asyncio.sleep(0)
        return True, row.kv()

    async def create(self, key: str, value: bytes) -> tuple[bool, KeyValue | None]:
        key, value = _check_key(key), _as_bytes(value)
        self._ensure_open()
        row = self._latest(key)
        if row is not None and not row.deleted:
            return False, row.kv()
        rev = self._revision + 1
        return await self._commit(_Row(rev, key, True, False, rev, row.revision if row else 0,
                                 value, None))

    async def update(
        self, key: str, value: bytes, expected_mod_revision: int
    ) -> tuple[bool, KeyValue | None]:
        key, value = _check_key(key), _as_bytes(value)
        self._ensure_open()
        row = self._latest(key)
        if row is None or row.deleted:
            return False, None
        if row.revision != expected_mod_revision:
            return False, row.kv()
        return await self._commit(_Row(self._revision + 1, key, False, False, row.create_revision,
                                 row.revision, value, row.value))

    async def delete(
        self, key: str, expected_mod_revision: int = 0
    ) -> tuple[bool, KeyValue | None]:
        key = _check_key(key)
        self._ensure_open()
        row = self._latest(key)
        if row is None or row.deleted:
            return False, None
        if expected_mod_revision not in (0, row.revision):
            return False, row.kv()
        # The tombstone keeps the last value so the DELETE event can carry it.
        return await self._commit(_Row(self._revision + 1, key, False, True, row.create_revision,
                                 row.revision, row.value, None))

    async def compact(self, revision: int) -> int:
        """Compact to ``revision`` (see ``Store.compact``); at or below the one in force is a no-op."""
        self._ensure_open()
        if revision > self._revision:
            raise FutureRevisionError(revision, self._revision)
        compact = self._hub.compact_revision
        if revision <= compact:
            return compact
        # Rows superseded by a row at or below `revision`, and tombstones at or below it.
        lo = bisect.bisect_right(self._log_revisions, compact)
        window = self._log[lo:bisect.bisect_right(self._log_revisions, revision)]
        dropped = {r.prev_revision for r in window if r.prev_revision}
        dropped.update(r.revision for r in window if r.deleted)
        if dropped:
            gone_keys = {r.key for r in self._log if r.revision in dropped}
            self._log = [r for r in self._log if r.revision not in dropped]
            self._log_revisions = [r.revision for r in self._log]
            for key in gone_keys:
                rows = [r for r in self._history[key] if r.revision not in dropped]
                if rows:
                    self._history[key] = rows
                else:
                    del self._history[key]
                    self._keys.pop(bisect.bisect_left(self._keys, key))
        self._hub.publish([], self._revision, revision)
        return revision

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.compact_interval)
            target = self._revision - self.compact_keep
            if target > self._hub.compact_revision:
                try:
                    await self.compact(target)
                except StorageError:
                    log.exception("periodic compaction to revision %d failed", target)

    # -- watches --

    def watch(self, prefix: str, start_revision: int) -> BufferedWatch:
        return self._hub.watch(prefix, start_revision)

    def watcher_count(self) -> int:
        """Number of subscribed watchers (for metrics and leak tests)."""
        return self._hub.watcher_count()
