"""Streaming one watch to one client: a JSON line per event, bookmarks, timeout.

Concurrency: two tasks per watch, not per event. The *pump* takes events from
`listwatch.watch_objects` and writes them; the *ticker* writes a BOOKMARK when the
watch has been idle for `BOOKMARK_INTERVAL` (if the client allows bookmarks). The
stream ends at ``timeoutSeconds``, when the client goes away, or after an ERROR event
(a 410 for a compacted start revision or a watcher that fell too far behind). Whole
lines are written with one ``write`` each, so the two writers never interleave.

Encoding is shared: every watcher of one event in plain JSON gets the same bytes, from
an LRU keyed by (key, revision, event type, served version), so 100 watchers cost one
encode per event.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import orjson
from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver import tables
from kubeling.apiserver.resources import Served

log = logging.getLogger(__name__)

BOOKMARK_INTERVAL = 5.0
BATCH_MAX = 256
_LINES: collections.OrderedDict = collections.OrderedDict()
_LINES_MAX = 4096


def _line(etype: str, obj: dict, cache_key: tuple | None, gv: str) -> bytes:
    if cache_key is None:
        return orjson.dumps({"type": etype, "object": obj}) + b"\n"
    key = (*cache_key, gv)
    line = _LINES.get(key)
    if line is None:
        line = orjson.dumps({"type": etype, "object": obj}) + b"\n"
        _LINES[key] = line
        if len(_LINES) > _LINES_MAX:
            _LINES.popitem(last=False)
    return line


def bookmark(served: Served, rv: str, initial_end: bool = False) -> bytes:
    meta: dict = {"resourceVersion": rv}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return orjson.dumps({"type": "BOOKMARK", "object": {"kind": served.res.kind, "apiVersion": served.res.group_version,
                                                         "metadata": meta}}) + b"\n"


class WatchStream:
    def __init__(self, served: Served, resp: web.StreamResponse, events, *, bookmarks: bool, start_rv: str,
                 as_kind: str = "", as_version: str = "v1", include_object: str = "Metadata",
                 state: dict | None = None) -> None:
        self.served = served
        self.resp = resp
        self.events = events
        self.bookmarks = bookmarks
        self.last_rv = start_rv or "0"
        self.as_kind = as_kind
        self.as_version = as_version
        self.include_object = include_object
        self.last_write = time.monotonic()
        self.state = state if state is not None else {}
        self._batch: list[bytes] = []

    def _more_ready(self) -> bool:
        w = self.state.get("watch")
        pending = getattr(w, "pending", None)
        return bool(pending and pending() and len(self._batch) < BATCH_MAX)

    async def _write(self, data: bytes) -> None:
        self.last_write = time.monotonic()
        await self.resp.write(data)

    def _render(self, etype: str, obj: dict, cache_key: tuple | None) -> bytes:
        if self.as_kind == "Table":
            table = tables.table(self.served, [obj], self.last_rv, self.include_object, self.as_version)
            return orjson.dumps({"type": etype, "object": table}) + b"\n"
        if self.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            meta = tables.partial_metadata(obj, False, self.as_version)
            return orjson.dumps({"type": etype, "object": meta}) + b"\n"
        return _line(etype, obj, cache_key, self.served.res.group_version)

    async def _pump(self) -> None:
        try:
            async for etype, obj, cache_key in self.events:
                if etype == "INITIAL_END":
                    self.last_rv = str(obj["revision"])
                    if self.bookmarks:
                        await self._write(bookmark(self.served, self.last_rv, initial_end=True))
                    continue
                self.last_rv = obj["metadata"].get("resourceVersion", self.last_rv)
                # Events already buffered go out in one write: one TLS record and syscall, not N.
                self._batch.append(self._render(etype, obj, cache_key))
                if not self._more_ready():
                    batch, self._batch = b"".join(self._batch), []
                    await self._write(batch)
        except errors.StatusError as e:
            self._batch.append(orjson.dumps({"type": "ERROR", "object": e.to_status()}) + b"\n")
        if self._batch:
            batch, self._batch = b"".join(self._batch), []
            await self._write(batch)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(BOOKMARK_INTERVAL)
            idle = time.monotonic() - self.last_write
            if self.bookmarks and self.last_rv != "0" and idle >= BOOKMARK_INTERVAL * 0.9:
                await self._write(bookmark(self.served, self.last_rv))

    async def run(self, timeout: float) -> None:
        pump = asyncio.create_task(self._pump())
        ticker = asyncio.create_task(self._ticker())
        try:
            await asyncio.wait([pump, ticker], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for t in (pump, ticker):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    if not isinstance(exc, (ConnectionResetError, ConnectionError)):
                        log.error("watch stream of %s failed", self.served.res.resource, exc_info=exc)
        finally:
            for t in (pump, ticker):
                t.cancel()
            await asyncio.gather(pump, ticker, return_exceptions=True)
            await self.events.aclose()
