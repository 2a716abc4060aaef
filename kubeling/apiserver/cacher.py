"""The cacher (upstream's ``cacher.go``): LIST and WATCH served from memory, kept by one store watch.

What it serves, and what it leaves to the store (upstream's ``shouldDelegateList``, 1.33)
------------------------------------------------------------------------------------------
==================================================  ===========================================
LIST request                                        served by
==================================================  ===========================================
``resourceVersion=""`` (with or without ``limit``)  the cache, as a *consistent read*: read the
                                                    store's current revision, wait (at most
                                                    ``fresh_timeout``) until the cache has it;
                                                    on timeout, the store
``resourceVersion="0"``                             the cache as it is (``limit`` ignored)
``resourceVersion=R`` (NotOlderThan, or no match    the cache once it has R; after
and no ``limit``)                                   ``fresh_timeout``, 504 "Too large resource
                                                    version"
``resourceVersionMatch=Exact``; ``limit`` with      the store (a snapshot at R)
``resourceVersion=R``; any ``continue`` token
==================================================  ===========================================

A page cut from the cache carries a continue token at the cache's revision, so the next pages
come from the store's snapshot at that revision (410 once it is compacted), as upstream's do.

WATCH is always served from the cache: initial events come from the cached objects, a resume
from R replays the resource's history window (`watch_cache.WatchCache`), and a start older than
the window *or* than the store's compaction gets ``410 Expired`` as an ERROR event. Refusing what
the store has compacted keeps the answer the same whichever API server a client reaches.

One store watch for the whole keyspace
--------------------------------------
The cacher watches everything under ``/registry/`` with one store watch, not one per resource:

- every revision of the apiserver's keyspace passes through it, in order, so the cache's
  revision is exact and a consistent read only has to wait for the revision the store reports;
- resources that come and go with CRDs need no watch management: a resource's cache is created
  when its first object (or first reader) appears, with the window starting at the cacher's base;
- with several API servers over one etcd (issue 11), each runs its own cacher with its own watch
  (a store whose watch reports ``progress()`` — etcd's progress notifications — also covers
  revisions written outside the prefix).

At start the cacher lists the store at ``base = max(compact revision, current - replay)`` and
replays the log from there, so watches can resume across a restart from any revision the store
still holds (up to each resource's window). If the store watch fails, every watch is ended (the
clients resume by resourceVersion or relist) and the cache is rebuilt.

Fan-out
-------
One task consumes the store watch. For each batch of events it updates the caches, offers each
event to the watchers of that resource and namespace (selectors matched against attributes
computed once per object), then writes each watcher's output once. Live plain-JSON watchers get
the same pre-encoded, pre-framed bytes straight on their transport: no task wakes per watcher
per event (see `watchstream.CacheWatcher`). A second task sends bookmarks and notices clients
that went away.

Concurrency: one event loop; everything that reads or changes the caches runs without awaiting,
so a list or a watch registration sees the cache at one revision.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubeling.api import errors
from kubeling.apiserver import listwatch
from kubeling.apiserver.registry.codec import decode
from kubeling.apiserver.resources import Served
from kubeling.apiserver.watch_cache import (
    DEFAULT_CAPACITY,
    CachedObject,
    CacheEvent,
    SelectionPredicate,
    WatchCache,
    matching,
    split_key,
    too_old,
)
from kubeling.apiserver.watchstream import BOOKMARK_INTERVAL, CacheWatcher, Render
from kubeling.storage.interface import DELETE, Event, KeyValue, Store

log = logging.getLogger(__name__)

REGISTRY = "/registry/"
FRESH_TIMEOUT = 3.0          # upstream's blockTimeout for waiting until the cache is fresh
DEFAULT_REPLAY = 10_000      # revisions of the store's log replayed into the windows at start
SEND_BUFFER_LIMIT = 4 << 20  # bytes a watcher's transport may hold before the watch is dropped
PENDING_LIMIT = 10_000       # events a watcher still sending its backlog may queue
PROGRESS_POLL = 0.05         # seconds between looks at the store watch's progress while a read waits


def resource_prefix(key: str) -> str | None:
    """``/registry/<group>/<resource>/`` of a key, or None for keys of another shape."""
    parts = key.split("/", 4)
    if len(parts) < 5 or parts[1] != "registry" or not parts[2] or not parts[3]:
        return None
    return f"/registry/{parts[2]}/{parts[3]}/"


def too_large(revision: int, current: int) -> errors.StatusError:
    return errors.StatusError(504, "Timeout", f"Too large resource version: {revision}, current: {current}",
                              details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                   "message": "Too large resource version"}],
                                       "retryAfterSeconds": 1})


@dataclass
class ListPage:
    """One LIST answer, from the cache (``entries``) or the store (``objects``).

    `items` and `body` give plain dicts for any encoder; `json` builds the JSON body from each
    cached object's encoded bytes (a join, not an encode). Cached entries are shared: the dicts
    `items` returns are shallow copies whose nested values must not be mutated.
    """

    served: Served
    revision: int
    entries: list[CachedObject] | None = None
    objects: list[dict] | None = None
    continue_token: str = ""
    remaining: int | None = None

    @property
    def from_cache(self) -> bool:
        return self.entries is not None

    def metadata(self) -> dict:
        meta: dict = {"resourceVersion": str(self.revision)}
        if self.continue_token:
            meta["continue"] = self.continue_token
            if self.remaining is not None:
                meta["remainingItemCount"] = self.remaining
        return meta

    def items(self) -> list[dict]:
        """Items as the response carries them (built-in kinds without apiVersion and kind)."""
        crd = self.served.res.crd
        if self.entries is not None:
            objs = [e.converted(self.served) for e in self.entries]
            return objs if crd else [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
                                     for o in objs]
        items = self.objects or []
        if not crd:
            for it in items:
                it.pop("apiVersion", None)
                it.pop("kind", None)
        return items

    def body(self) -> dict:
        res = self.served.res
        return {"kind": res.list_kind, "apiVersion": res.group_version, "metadata": self.metadata(),
                "items": self.items()}

    def json(self) -> bytes:
        """The body as `errors.encode_json` writes ``self.body()`` (upstream's bytes), byte for
        byte; from the cache it is a join of each object's encoded bytes."""
        if self.entries is None:
            return errors.encode_json(self.body())
        res = self.served.res
        head = errors.encode_json({"kind": res.list_kind, "apiVersion": res.group_version,
                                   "metadata": self.metadata()})
        items = b",".join([e.item_json(self.served) for e in self.entries])
        return b"%b,\"items\":[%b]}\n" % (head[:-2], items)


# Upstream's cacher "triggers": a watch whose field selector pins one of these fields is told only
# of events whose object (before or after) has that value, instead of filtering every event. The
# agents' pod watches (`spec.nodeName=<node>`) are the reason: with N nodes, each pod event would
# otherwise be offered to N watchers.
TRIGGERS = {("", "pods"): "spec.nodeName"}


def _node_name(cached) -> str:
    return ((cached.obj.get("spec") or {}).get("nodeName") or "") if cached is not None else ""


class _Subscribers:
    """The watchers of one resource: cluster-wide ones, per namespace, and per trigger value."""

    __slots__ = ("all", "by_namespace", "by_trigger")

    def __init__(self) -> None:
        self.all: set[CacheWatcher] = set()
        self.by_namespace: dict[str, set[CacheWatcher]] = {}
        self.by_trigger: dict[str, set[CacheWatcher]] = {}

    def for_event(self, cev) -> tuple[CacheWatcher, ...]:
        scoped = self.by_namespace.get(cev.namespace)
        out = (*self.all, *scoped) if scoped else tuple(self.all)
        if self.by_trigger:
            values = {_node_name(cev.cur), _node_name(cev.prev)}
            for v in values:
                hit = self.by_trigger.get(v)
                if hit:
                    out = (*out, *hit)
        return out

    def empty(self) -> bool:
        return not self.all and not self.by_namespace and not self.by_trigger


class Cacher:
    """The watch cache of every resource under ``prefix``; see the module docstring.

    Lifecycle: ``await start()`` (returns once the cache holds the store's state at the moment
    of the call, or raises the store's error), then `list`/`watch` from request handlers, then
    ``await stop()`` (ends every watch; idempotent).
    """

    def __init__(self, store: Store, *, prefix: str = REGISTRY, capacity: int = DEFAULT_CAPACITY,
                 replay: int = DEFAULT_REPLAY, fresh_timeout: float = FRESH_TIMEOUT,
                 bookmark_interval: float = BOOKMARK_INTERVAL, send_buffer_limit: int = SEND_BUFFER_LIMIT,
                 pending_limit: int = PENDING_LIMIT) -> None:
        self.store = store
        self.prefix = prefix
        self.capacity = capacity
        self.replay = replay
        self.fresh_timeout = fresh_timeout
        self.bookmark_interval = bookmark_interval
        self.send_buffer_limit = send_buffer_limit
        self.pending_limit = pending_limit
        self.revision = 0          # every event up to here is in the caches and was dispatched
        self.decode_errors = 0     # stored values skipped because they do not decode
        self.undecodable: dict[str, str] = {}  # key -> why, for keys whose latest value is damaged
        self.on_decode_error: Callable[[str, str], None] | None = None  # the API server records an Event
        self._base = 0             # revision the caches were built at
        self._caches: dict[str, WatchCache] = {}
        self._subs: dict[str, _Subscribers] = {}
        self._watchers: set[CacheWatcher] = set()
        self._watch = None
        self._ready = asyncio.Event()
        self._ready_at = 0
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self._holding = False

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def start(self) -> None:
        await self._sync()
        self._tasks = [asyncio.create_task(self._run(), name="cacher"),
                       asyncio.create_task(self._sweep(), name="cacher-bookmarks")]
        while not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), 0.1)
            except TimeoutError:  # the replayed revisions may hold no event under the prefix
                self._progress()
                self._check_ready()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reset()

    async def _sync(self) -> None:
        """(Re)build every cache from a store list at the base revision and watch from there."""
        current = await self.store.current_revision()
        base = max(self.store.compact_revision, current - self.replay, 0)
        kvs: list[KeyValue] = []
        if base > 0:
            kvs = (await self.store.list(self.prefix, revision=base)).kvs
        self._caches = {}
        self._base = self.revision = base
        for kv in kvs:
            prefix = resource_prefix(kv.key)
            obj = self._decode(kv)
            if prefix is not None and obj is not None:
                ns, name = split_key(prefix, kv.key)
                self._cache(prefix).load(CachedObject(kv.key, ns, name, kv.mod_revision, obj))
        self._ready_at = current
        self._watch = self.store.watch(self.prefix, base + 1)
        self._check_ready()

    async def _run(self) -> None:
        """Consume the store watch; on failure end every watch and rebuild."""
        delay = 0.1
        while not self._stopped:
            try:
                if self._watch is None:
                    await self._sync()
                await self._pump(self._watch)
                raise ConnectionError("the store watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure means: rebuild from the store
                if self._stopped:
                    return
                log.warning("watch cache: %s; ending %d watches and rebuilding", e, len(self._watchers))
                self._reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.1

    def _reset(self) -> None:
        self._ready.clear()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for w in list(self._watchers):
            w.terminate()

    async def _pump(self, w) -> None:
        while True:
            try:
                ev = await w.__anext__()
            except StopAsyncIteration:
                return
            batch = [ev]
            self._holding = True  # events taken but not applied: progress must not run ahead
            try:
                while w.pending():
                    batch.append(await w.__anext__())  # buffered: returns without suspending
                self._process(batch)
            finally:
                self._holding = False
            self._progress()  # commits outside the prefix since the last event
            self._wake_waiters()

    # -- applying events -----------------------------------------------------------------------

    def _decode(self, kv: KeyValue) -> dict | None:
        try:
            obj = decode(kv)
            if not isinstance(obj.get("metadata"), dict):
                raise TypeError("metadata is not an object")
            self.undecodable.pop(kv.key, None)
            return obj
        except Exception as e:  # noqa: BLE001 - one damaged value must not break the cache
            self.decode_errors += 1
            why = f"{type(e).__name__}: {e}"
            self.undecodable[kv.key] = why
            log.warning("watch cache: skipping %s at revision %d: stored value does not decode: %s",
                        kv.key, kv.mod_revision, why)
            if self.on_decode_error is not None:
                try:
                    self.on_decode_error(kv.key, why)
                except Exception:  # noqa: BLE001 - reporting must never break the cache
                    log.exception("watch cache: reporting %s", kv.key)
            return None

    def skipped(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` left out of the cache because their stored value does not decode."""
        return sorted(k for k in self.undecodable if k.startswith(prefix))

    def _cache(self, prefix: str) -> WatchCache:
        cache = self._caches.get(prefix)
        if cache is None:
            # No event of this resource since the base: its window starts there.
            cache = self._caches[prefix] = WatchCache(prefix, self._base, self.capacity)
        return cache

    def _process(self, batch: list[Event]) -> None:
        touched: list[CacheWatcher] = []
        for ev in batch:
            prefix = resource_prefix(ev.kv.key)
            if prefix is not None:
                cev = self._cache(prefix).apply(ev, lambda e: self._decode(e.kv))
                subs = self._subs.get(prefix)
                if cev is not None and subs is not None:
                    self._dispatch(subs, cev, touched)
            if ev.type == DELETE:
                self.undecodable.pop(ev.kv.key, None)  # a deleted damaged value is gone for good
            self.revision = ev.kv.mod_revision
        for w in touched:
            try:
                w.flush()
            except Exception:  # one broken stream must not stop the others
                log.exception("watch cache: ending a watch of %s that failed to write", w.served.res.resource)
                w.terminate()
        self._check_ready()

    def _check_ready(self) -> None:
        if not self._ready.is_set() and self.revision >= self._ready_at and self._watch is not None:
            self._ready.set()

    @staticmethod
    def _dispatch(subs: _Subscribers, cev: CacheEvent, touched: list[CacheWatcher]) -> None:
        for w in subs.for_event(cev):
            try:
                if w.offer(cev):
                    touched.append(w)
            except Exception:  # e.g. a renderer bug: that watch ends, not the cache
                log.exception("watch cache: ending a watch of %s that failed on revision %d",
                              w.served.res.resource, cev.revision)
                w.terminate()

    # -- freshness -----------------------------------------------------------------------------

    def _progress(self) -> None:
        """Take a store progress notification into account: nothing under the prefix happened
        between the last event and the watch's progress revision."""
        w = self._watch
        progress = getattr(w, "progress", None)
        if progress is not None and not self._holding and not w.pending():
            self.revision = max(self.revision, progress())

    async def wait_fresh(self, revision: int, timeout: float | None = None) -> bool:
        """Wait until the cache has seen ``revision``; False after ``timeout`` (default
        ``fresh_timeout``)."""
        self._progress()
        if self.revision >= revision:
            return True
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (revision, next(self._seq), fut)
        heapq.heappush(self._waiters, entry)
        deadline = loop.time() + (self.fresh_timeout if timeout is None else timeout)
        try:
            while True:
                try:
                    # A revision written outside the prefix comes as progress, not as an event
                    # that would wake us: look at the watch's progress now and then.
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, min(PROGRESS_POLL, deadline - loop.time())))
                    return True
                except TimeoutError:
                    self._progress()
                    if self.revision >= revision:
                        self._wake_waiters()
                        return True
                    if loop.time() >= deadline:
                        return False
        finally:
            if not fut.done() or fut.cancelled():
                try:  # a revision that never came must not pin its waiter (rare: O(n) is fine)
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                except ValueError:
                    pass

    def _wake_waiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.revision:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    # -- LIST ----------------------------------------------------------------------------------

    def serves(self, served: Served) -> bool:
        """Whether ``served``'s objects live under a prefix this cacher keeps."""
        return served.prefix.startswith(self.prefix) and resource_prefix(served.prefix + "x") == served.prefix

    async def list(self, served: Served, namespace: str | None, pred: SelectionPredicate, *,
                   limit: int = 0, continue_token: str = "", resource_version: str = "",
                   rv_match: str = "") -> ListPage:
        """One LIST, from the cache or the store as the module docstring's table says.

        Raises `errors.StatusError` as the store path does (400 for bad options, 410 for an
        expired continue token or snapshot, 504 for a resourceVersion the cache does not reach).
        """
        if self._delegate(served, limit, continue_token, resource_version, rv_match):
            return await self._store_list(served, namespace, pred, limit, continue_token, resource_version,
                                          rv_match)
        if resource_version in ("", None):
            current = await self.store.current_revision()
            if not await self.wait_fresh(current):
                log.warning("watch cache: not at revision %d after %.1fs; listing from the store",
                            current, self.fresh_timeout)
                return await self._store_list(served, namespace, pred, limit, "", "", rv_match)
        elif resource_version != "0":
            want = listwatch.parse_rv(resource_version)
            if not await self.wait_fresh(want):
                raise too_large(want, self.revision)
        else:
            limit = 0  # upstream's watch cache ignores limit for resourceVersion=0
        return self._cached_list(served, namespace, pred, limit)

    def _delegate(self, served: Served, limit: int, continue_token: str, resource_version: str,
                  rv_match: str) -> bool:
        if not self.ready or not self.serves(served):
            return True
        if rv_match not in ("", "NotOlderThan"):
            return True  # Exact reads a snapshot; anything else is refused by the store path
        if continue_token:
            return True
        return rv_match == "" and limit > 0 and resource_version not in ("", "0", None)

    async def _store_list(self, served, namespace, pred, limit, continue_token, resource_version,
                          rv_match) -> ListPage:
        match = listwatch.MATCH_ALL if pred.everything else pred.match_object
        items, rv, token, remaining = await listwatch.list_objects(
            self.store, served, namespace, match, limit=limit, continue_token=continue_token,
            resource_version=resource_version, rv_match=rv_match)
        return ListPage(served, rv, objects=items, continue_token=token, remaining=remaining)

    def _cached_list(self, served: Served, namespace: str | None, pred: SelectionPredicate,
                     limit: int) -> ListPage:
        cache = self._cache(served.prefix)
        entries = matching(cache.list(self._scope(served, namespace)), pred)
        page = ListPage(served, self.revision, entries=entries)
        if limit and len(entries) > limit:
            page.entries = entries[:limit]
            page.continue_token = listwatch.encode_continue(self.revision, entries[limit - 1].key)
            if pred.everything:
                page.remaining = len(entries) - limit
        return page

    @staticmethod
    def _scope(served: Served, namespace: str | None) -> str | None:
        return namespace if served.res.namespaced and namespace else None

    # -- WATCH ---------------------------------------------------------------------------------

    async def watch(self, served: Served, namespace: str | None, pred: SelectionPredicate, *,
                    resource_version: str = "", send_initial: bool | None = None, rv_match: str = "",
                    bookmarks: bool = False, render: Render | None = None) -> CacheWatcher:
        """Register a watch and return it; the handler then runs ``watcher.serve(...)``.

        Option errors (400/422) are raised here, before any response is started. A start the
        cache cannot serve (410, 504) becomes the watcher's single ERROR event, as upstream's
        error watcher does. Semantics of ``resourceVersion`` and ``sendInitialEvents``: see
        `listwatch` (they are the same whichever path serves the watch).
        """
        if not self.serves(served):
            raise ValueError(f"{served.prefix} is not under the cacher's prefix {self.prefix}")
        rv = listwatch.parse_rv(resource_version)
        initial = listwatch.check_watch_options(resource_version, send_initial, rv_match)
        watcher = CacheWatcher(served, pred, bookmarks=bookmarks, render=render,
                               send_buffer_limit=self.send_buffer_limit, pending_limit=self.pending_limit,
                               on_done=self._unregister)
        if not self.ready:
            try:
                await asyncio.wait_for(self._ready.wait(), self.fresh_timeout)
            except TimeoutError:
                watcher.fail(errors.StatusError(503, "ServiceUnavailable",
                                                "the watch cache is being rebuilt; retry"))
                return watcher
        if send_initial:  # a streaming list: its initial state is not older than rv (or "now")
            want = rv if resource_version not in ("", None) else await self.store.current_revision()
            if not await self.wait_fresh(want):
                watcher.fail(too_large(want, self.revision))
                return watcher
        # From here on nothing awaits: the watcher's start and its registration see one revision.
        cache = self._cache(served.prefix)
        scope = self._scope(served, namespace)
        if initial:
            watcher.start_initial(matching(cache.list(scope), pred), self.revision,
                                  end_bookmark=bool(send_initial))
        elif send_initial is False and rv == 0:
            watcher.start_events((), self.revision)
        else:
            if rv < self.store.compact_revision:
                watcher.fail(too_old(rv, self.store.compact_revision))
                return watcher
            try:
                events = cache.events_since(rv, scope)
            except errors.StatusError as e:
                watcher.fail(e)
                return watcher
            watcher.start_events(events, max(rv, self.revision))
        self._register(served.prefix, scope, watcher)
        return watcher

    def _register(self, prefix: str, scope: str | None, w: CacheWatcher) -> None:
        subs = self._subs.get(prefix)
        if subs is None:
            subs = self._subs[prefix] = _Subscribers()
        trigger = self._trigger_value(w) if scope is None else None
        if trigger is not None:
            subs.by_trigger.setdefault(trigger, set()).add(w)
        else:
            (subs.all if scope is None else subs.by_namespace.setdefault(scope, set())).add(w)
        w.scope = (prefix, scope, trigger)
        self._watchers.add(w)

    @staticmethod
    def _trigger_value(w: CacheWatcher) -> str | None:
        field = TRIGGERS.get((w.served.res.group, w.served.res.resource))
        if field is None or w.pred.field is None or w.pred.name:
            return None
        return w.pred.field.requires_exact_match(field)

    def _unregister(self, w: CacheWatcher) -> None:
        self._watchers.discard(w)
        if w.scope is None:
            return
        prefix, scope, trigger = w.scope
        subs = self._subs.get(prefix)
        if subs is None:
            return
        if trigger is not None:
            _discard(subs.by_trigger, trigger, w)
        elif scope is None:
            subs.all.discard(w)
        else:
            _discard(subs.by_namespace, scope, w)
        if subs.empty():
            del self._subs[prefix]

    def watcher_count(self) -> int:
        return len(self._watchers)

    async def _sweep(self) -> None:
        """Bookmarks for idle watchers that asked for them, and watchers whose client left."""
        period = max(0.05, min(1.0, self.bookmark_interval / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for w in list(self._watchers):
                try:
                    if not w.connected():
                        w.terminate()
                    elif w.bookmarks and w.live and now - w.last_write >= self.bookmark_interval \
                            and self.revision >= w.min_rev:
                        w.bookmark(self.revision)
                except Exception:  # the sweep goes on for the others
                    log.exception("watch cache: ending a watch that failed to take a bookmark")
                    w.terminate()


def _discard(groups: dict[str, set], key: str, w) -> None:
    group = groups.get(key)
    if group is not None:
        group.discard(w)
        if not group:
            del groups[key]
