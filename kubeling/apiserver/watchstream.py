"""Streaming watches to clients: `CacheWatcher`, fed by the cacher.

`CacheWatcher` is upstream's cacheWatcher: one client's watch, registered with the
`cacher.Cacher`, which offers it every event of its resource and namespace. Its lifecycle::

    registered --serve()--> catching up --backlog and queued events written--> live --> done
                            (aiohttp writes, awaiting the                  (the cacher writes each
                             transport's flow control)                      event straight to the
                                                                            transport, framed once)

While catching up it sends its backlog (initial ADDED events and the initial-events-end
BOOKMARK, or the history it resumes from) and queues the events that arrive meanwhile (at most
``pending_limit``). Once live, the cacher writes each batch of events with one
``transport.write``: plain-JSON watchers of one served version get the very same pre-encoded,
pre-framed bytes, and no task wakes up per watcher per event. Table and PartialObjectMetadata
watchers render per watcher (``render``). A watch is done at ``timeoutSeconds``, when the
client leaves, after an ERROR event, when the cacher stops or rebuilds, when it queues too many
events while catching up, or when its transport holds more than ``send_buffer_limit`` bytes
unsent (the connection is then aborted: a client that does not read must not pin memory; it
resumes by resourceVersion). `serve` returns when the watch is done; the handler then ends the
chunked body.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver import tables
from kubeling.apiserver.resources import Served
from kubeling.apiserver.watch_cache import CachedObject, CacheEvent, event_line, frame

if TYPE_CHECKING:
    from kubeling.apiserver.watch_cache import SelectionPredicate

log = logging.getLogger(__name__)

BOOKMARK_INTERVAL = 5.0
BACKLOG_SLICE = 256  # events per write while catching up (bounds the bytes built at once)

# render(event type, object in the served version) -> one watch event line (with its newline)
Render = Callable[[str, dict], bytes]
def bookmark(served: Served, rv: str, initial_end: bool = False) -> bytes:
    """A BOOKMARK event line: only the resourceVersion (and the initial-events-end mark) matter."""
    meta: dict = {"resourceVersion": rv}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return orjson.dumps({"type": "BOOKMARK", "object": {"kind": served.res.kind, "apiVersion": served.res.group_version,
                                                         "metadata": meta}}) + b"\n"


async def respond(request: web.BaseRequest, watcher: CacheWatcher, timeout: float | None) -> web.StreamResponse:
    """The HTTP side of a cached watch: start a 200 chunked JSON stream, serve the watcher until
    it is done, end the body. Connection errors end it quietly (the client is gone)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Cache-Control": "no-cache, private"})
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        await watcher.serve(request, resp, timeout)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        watcher.terminate()
    return resp


def renderer(served: Served, as_kind: str, as_version: str, include_object: str) -> Render | None:
    """The per-watcher renderer for Table and PartialObjectMetadata watches; None for plain JSON
    (whose event bytes the cacher shares between watchers)."""
    if as_kind == "Table":
        tables.table(served, [], "", include_object, as_version)  # an unsupported includeObject is a 400 now

        def table_line(etype: str, obj: dict) -> bytes:
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            return orjson.dumps({"type": etype, "object": tables.table(served, [obj], rv, include_object,
                                                                        as_version)}) + b"\n"
        return table_line
    if as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
        def metadata_line(etype: str, obj: dict) -> bytes:
            return orjson.dumps({"type": etype, "object": tables.partial_metadata(obj, False, as_version)}) + b"\n"
        return metadata_line
    return None


class CacheWatcher:
    """One client's watch served by the cacher; see the module docstring for its lifecycle.

    The cacher calls `start_initial`/`start_events`/`fail` once, synchronously, before it
    registers the watcher, then `offer` and `flush` for every batch of events and `bookmark`
    when the watch is idle. The handler calls `serve` once.
    """

    def __init__(self, served: Served, pred: SelectionPredicate, *, bookmarks: bool, render: Render | None,
                 send_buffer_limit: int, pending_limit: int, on_done: Callable[[CacheWatcher], None]) -> None:
        self.served = served
        self.pred = pred
        self.bookmarks = bookmarks
        self.render = render
        self.send_buffer_limit = send_buffer_limit
        self.pending_limit = pending_limit
        self.min_rev = 0          # events at or below this revision are already covered
        self.scope: tuple | None = None  # where the cacher registered it
        self.live = False
        self.last_write = time.monotonic()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_done = on_done
        self._backlog: collections.deque = collections.deque()  # bytes lines or (etype, entry, event)
        self._pending: list[bytes] = []  # lines of events offered while catching up
        self._out: list[bytes] = []      # what this dispatch round has for a live watcher
        self._end_after_backlog = False
        self._protocol = None
        self._framed = True

    # -- set-up by the cacher ------------------------------------------------------------------

    def start_initial(self, entries: Iterable[CachedObject], revision: int, end_bookmark: bool) -> None:
        """Initial ADDED events for ``entries`` (the state at ``revision``), then, for a
        streaming list with bookmarks, the BOOKMARK that marks their end."""
        self._backlog.extend(("ADDED", e, None) for e in entries)
        if end_bookmark and self.bookmarks:
            self._backlog.append(bookmark(self.served, str(revision), initial_end=True))
        self.min_rev = revision

    def start_events(self, events: Iterable[CacheEvent], revision: int) -> None:
        """Replay ``events`` (already after the requested revision), then live events after
        ``revision``."""
        for ev in events:
            got = ev.for_predicate(self.pred)
            if got is not None:
                self._backlog.append((got[0], got[1], ev))
        self.min_rev = revision

    def fail(self, err: errors.StatusError) -> None:
        """The watch is one ERROR event carrying ``err``'s Status."""
        self._backlog.append(orjson.dumps({"type": "ERROR", "object": err.to_status()}) + b"\n")
        self._end_after_backlog = True

    # -- fed by the cacher ---------------------------------------------------------------------

    def offer(self, ev: CacheEvent) -> bool:
        """Take one event; True when this is the first output of the round (flush me)."""
        if ev.revision <= self.min_rev or self.done.done():
            return False
        got = ev.for_predicate(self.pred)
        if got is None:
            return False
        etype, entry = got
        if not self.live:
            self._pending.append(self._line(etype, entry, ev))
            if len(self._pending) > self.pending_limit:
                # The client reads slower than events come: drop the connection (serve may be
                # waiting for it to drain), as for a live watcher over its send buffer.
                self._drop(f"{len(self._pending)} events queued while sending its backlog")
            return False
        if self.render is None:
            self._out.append(ev.chunk(etype, entry, self.served) if self._framed else ev.line(etype, entry, self.served))
        else:
            line = self.render(etype, entry.converted(self.served))
            self._out.append(frame(line) if self._framed else line)
        return len(self._out) == 1

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.done.done():
            self._write(out[0] if len(out) == 1 else b"".join(out))

    def bookmark(self, revision: int) -> None:
        line = bookmark(self.served, str(revision))
        self._write(frame(line) if self._framed else line)

    def connected(self) -> bool:
        """False once the client's connection is gone (before `serve`: True)."""
        if self._protocol is None:
            return True
        t = self._protocol.transport
        return t is not None and not t.is_closing()

    def terminate(self) -> None:
        """End the watch (idempotent); `serve` returns and the cacher forgets it."""
        self.live = False
        if not self.done.done():
            self.done.set_result(None)
            self._on_done(self)

    def _write(self, data: bytes) -> None:
        t = self._protocol.transport if self._protocol is not None else None
        if t is None or t.is_closing():
            self.terminate()
            return
        t.write(data)
        self.last_write = time.monotonic()
        if t.get_write_buffer_size() > self.send_buffer_limit:
            self._drop(f"{t.get_write_buffer_size()} bytes unsent (limit {self.send_buffer_limit})")

    def _drop(self, why: str) -> None:
        """End a watch whose client does not keep up, aborting its connection: a client that
        does not read must not pin memory. It resumes by resourceVersion."""
        log.info("watch of %s dropped: %s; the client resumes by resourceVersion", self.served.res.resource, why)
        t = self._protocol.transport if self._protocol is not None else None
        if t is not None:
            t.abort()
        self.terminate()

    def _line(self, etype: str, entry: CachedObject, ev: CacheEvent | None) -> bytes:
        if self.render is not None:
            return self.render(etype, entry.converted(self.served))
        if ev is not None:
            return ev.line(etype, entry, self.served)
        return event_line(etype, entry, self.served)

    # -- run by the handler --------------------------------------------------------------------

    async def serve(self, request: web.BaseRequest, resp: web.StreamResponse, timeout: float | None) -> None:
        """Send the backlog, go live, and return when the watch is done. ``resp`` must be
        prepared; the caller ends the body afterwards (``write_eof``)."""
        self._protocol = request.protocol
        self._framed = resp.chunked
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self.terminate) \
            if timeout is not None and math.isfinite(timeout) and timeout > 0 else None
        try:
            while not self.done.done():
                if self._backlog:
                    n = min(len(self._backlog), BACKLOG_SLICE)
                    lines = [x if isinstance(x, bytes) else self._line(*x)
                             for x in (self._backlog.popleft() for _ in range(n))]
                elif self._pending:
                    lines, self._pending = self._pending, []
                else:
                    break
                await resp.write(b"".join(lines))
                self.last_write = time.monotonic()
            if self._end_after_backlog:
                self.terminate()
            if not self.done.done():
                self.live = True  # no await since the queues were seen empty: nothing is lost
                await self.done
        except ConnectionError:
            pass
        finally:
            if timer is not None:
                timer.cancel()
            self._backlog.clear()
            self._pending.clear()
            self.terminate()
