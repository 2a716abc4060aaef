"""In-process watch fan-out: subscribe first, backfill from the log, dedupe by revision.

A backend that commits writes itself (the SQLite store) calls :meth:`Broadcaster.publish` on its
event loop after every COMMIT with that commit's events, in revision order. Watchers never poll
the database: N watchers on a prefix cost one ``startswith`` per prefix per event plus N deque
appends, whatever N is.

How a watch from revision R is gap-free and duplicate-free
----------------------------------------------------------
1. ``watch()`` subscribes at once, so every event published from now on reaches the watcher.
2. At its first iteration the watcher reads the log from R (``backfill``) in one snapshot. Every
   event published *before* step 1 was committed before step 1, so it is in that snapshot.
3. It yields the backfill, then the live events, skipping any revision below the next one it
   owes. An event can sit in both sources, never in neither.

Slow consumers
--------------
Each watcher buffers at most ``buffer`` live events. ``publish`` never waits: when a buffer is
full, that watcher is unsubscribed; its consumer still receives what was buffered, then
:class:`WatchOverflowError` (a ``CompactedError``, which the apiserver reports as 410 Gone, so
the client relists and watches again). Writers and other watchers are unaffected.

Everything here runs on one event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from kubeling.storage.interface import Event, StorageError, WatchOverflowError

# backfill(prefix, start_revision) -> events under prefix with revision >= start, in order;
# raises CompactedError if start_revision is compacted.
Backfill = Callable[[str, int], Awaitable[list[Event]]]


class BufferedWatch:
    """One watch; see ``interface.Watch`` for the contract.

    ``_next`` is the smallest revision not yet yielded: it dedupes backfill against live events.
    """

    def __init__(self, hub: Broadcaster, prefix: str, start_revision: int) -> None:
        self._hub = hub
        self.prefix = prefix
        self._next = start_revision if start_revision > 0 else hub.revision + 1
        self._needs_backfill = start_revision > 0
        self._backfill: collections.deque[Event] = collections.deque()
        self._live: collections.deque[Event] = collections.deque()
        self._overflowed = False
        self._error: BaseException | None = None
        self._closed = False
        self._backfilling = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def next_revision(self) -> int:
        """The smallest revision this watch has not yielded yet."""
        return self._next

    def pending(self) -> int:
        """Events buffered and ready to yield without waiting (lets consumers batch their writes).

        Exact once the backfill is loaded: the buffers never hold an event that would be skipped.
        """
        return len(self._backfill) + len(self._live)

    def progress(self) -> int:
        """A revision P such that every event under the prefix with revision <= P has been
        yielded or is buffered here (etcd's progress notification).

        Commits that touch no key under the prefix advance P without an event, which lets a
        consumer that has drained `pending` know it is current up to the store's revision.
        """
        if self._needs_backfill or self._backfilling or self._overflowed or self._closed \
                or self._error is not None:
            return self._next - 1
        return max(self._next - 1, self._hub.revision)

    def __aiter__(self) -> BufferedWatch:
        return self

    async def __anext__(self) -> Event:
        if self._needs_backfill and not self._closed and self._error is None:
            self._needs_backfill = False
            self._backfilling = True
            try:
                events = await self._hub._backfill(self.prefix, self._next)
            except BaseException:
                self.close()
                raise
            finally:
                self._backfilling = False
            self._backfill.extend(events)
            # Live events the backfill already holds (or older than the start) would never be
            # yielded; dropping them now keeps `pending` exact.
            floor = max(self._next, events[-1].kv.mod_revision + 1) if events else self._next
            while self._live and self._live[0].kv.mod_revision < floor:
                self._live.popleft()
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._backfill:
                event = self._backfill.popleft()
            elif self._live:
                event = self._live.popleft()
            elif self._overflowed or self._error is not None:
                self._fail()
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                continue
            if event.kv.mod_revision >= self._next:
                self._next = event.kv.mod_revision + 1
                return event

    def _fail(self) -> None:
        err = self._error
        if self._overflowed:
            hub = self._hub
            err = WatchOverflowError(hub.compact_revision, hub.revision, self._next - 1)
        self.close()
        raise err  # type: ignore[misc]

    def _push(self, event: Event) -> None:
        if event.kv.mod_revision < self._next and not (self._needs_backfill or self._backfilling):
            return  # before a start revision that is still in the future
        if len(self._live) >= self._hub.buffer:
            # Dropping this watcher, rather than blocking the writer or growing without bound,
            # is what keeps every other watcher and every writer on time.
            self._overflowed = True
            self._hub._unsubscribe(self)
        else:
            self._live.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Idempotent; the iteration ends (StopAsyncIteration) at its next step."""
        if self._closed:
            return
        self._closed = True
        self._backfill.clear()
        self._live.clear()
        self._hub._unsubscribe(self)
        self._wake()


class Broadcaster:
    """Subscribers by prefix, plus the revision and compact revision last published."""

    def __init__(self, backfill: Backfill, *, revision: int, compact_revision: int,
                 buffer: int) -> None:
        self._backfill = backfill
        self.revision = revision
        self.compact_revision = compact_revision
        self.buffer = buffer
        self._watchers: dict[str, set[BufferedWatch]] = {}
        self._closed = False

    def watch(self, prefix: str, start_revision: int) -> BufferedWatch:
        if start_revision < 0:
            raise ValueError("start_revision must not be negative")
        w = BufferedWatch(self, prefix, start_revision)
        if self._closed:
            w._error = StorageError("store is closed")
        else:
            self._watchers.setdefault(prefix, set()).add(w)  # subscribe before backfilling
        return w

    def publish(self, events: list[Event], revision: int, compact_revision: int) -> None:
        """Deliver one commit's events (in revision order) to every matching watcher."""
        self.revision = max(self.revision, revision)
        self.compact_revision = max(self.compact_revision, compact_revision)
        if not events or not self._watchers:
            return
        for prefix, watchers in list(self._watchers.items()):
            matching = [e for e in events if e.kv.key.startswith(prefix)]
            if matching:
                for w in list(watchers):
                    for e in matching:
                        w._push(e)

    def close(self) -> None:
        """End every watch; later watches fail at their first iteration."""
        self._closed = True
        for watchers in list(self._watchers.values()):
            for w in list(watchers):
                w.close()

    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())

    def _unsubscribe(self, w: BufferedWatch) -> None:
        ws = self._watchers.get(w.prefix)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self._watchers[w.prefix]
