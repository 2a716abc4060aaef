"""`Informer`: a list+watch-fed cache of one resource, with change notifications.

Modelled on client-go's shared informer (Reflector + DeltaFIFO + Indexer +
processor), folded into one asyncio object::

    API server ──list──▶ reflector ──apply──▶ Indexer (the cache, `informer.indexer`)
               ◀─watch──     │
                             └──notify──▶ per-handler queue ──▶ on_add / on_update / on_delete

Reflector behaviour:

- Lists (in pages of ``page_size``; a page token that expires mid-way restarts
  as one unpaginated list), then watches from the list's resourceVersion with
  ``allowWatchBookmarks=true``; bookmarks only advance the resourceVersion.
- When a watch ends (server timeout, disconnect) it re-watches from the last
  resourceVersion seen, after a backoff if the watch failed or ended at once.
- When the resourceVersion is too old (410 Gone / ``Expired``) it re-lists. A
  re-list reconciles the cache: new keys are added, present keys updated, and
  keys that disappeared are deleted with a `DeletedFinalStateUnknown` tombstone.
- List/watch failures are retried with exponential backoff (≈0.8s → 30s,
  jittered); they are logged, never raised out of ``run``.
- Items of a list get ``apiVersion``/``kind`` filled in from the list, so every
  object in the cache has them (watch events already do).

Ordering and concurrency guarantees:

1. The cache is updated *before* handlers are told, so a handler (or a worker
   reading the cache later) may see a newer object than the event it handles.
2. Each handler receives notifications in the order the cache applied them, one
   at a time: it is never called concurrently with itself. For one key that is
   resourceVersion order.
3. Handlers are independent: each has its own unbounded queue and task, so a
   slow handler delays neither the cache nor the other handlers.
4. ``on_add(obj)``; ``on_update(old, new)`` — on resync and re-list ``old``
   may equal ``new``; ``on_delete(obj)`` where obj is the final object or a
   tombstone (use `kubeling.client.store.object_of`). Handlers may be plain or
   async functions; an exception in one is logged and delivery continues.
   Resync is per handler: ``add_handler(..., resync_period=p)`` re-delivers
   every cached object to that handler as ``on_update(obj, obj)`` every ``p``
   seconds once synced; ``None`` takes the informer's ``resync_period`` (the
   default), ``0`` never resyncs, and anything shorter than
   `MINIMUM_RESYNC_PERIOD` is raised to it, as client-go does. (client-go
   checks all handlers on one ticker of the shortest period and so may stretch
   a late handler's period; here each handler has its own timer instead.)
5. A handler added after the cache synced first receives ``on_add`` for every
   cached object, then live changes.
6. ``has_synced()`` becomes true once the first complete list is in the cache
   and its notifications are queued; ``registration.has_synced()`` once that
   handler has *processed* them. ``wait_for_sync()`` and
   ``registration.wait_for_sync()`` await them. A controller waits for its
   registrations: then every object cached at sync time is in its workqueue.
8. Indexers may be added before or after the informer starts (existing objects
   are indexed at once); a name that is already taken raises ``ValueError``.
7. ``run(stop)`` returns after ``stop`` is set; queued notifications not yet
   delivered are dropped. Objects handed out are shared: never mutate them.

Test seam: ``client`` is anything with `RESTClient`'s ``list`` and ``watch``
(the `ListerWatcher` protocol), so tests script list results and watch events.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import random
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Protocol

from kubeling.api.errors import StatusError
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.exceptions import ResourceExpired, TransportError
from kubeling.client.store import DeletedFinalStateUnknown, Indexer, IndexFunc

log = logging.getLogger(__name__)

MINIMUM_RESYNC_PERIOD = 1.0  # seconds; client-go's floor for a handler's resync period

Handler = Callable[..., Any]


class ListerWatcher(Protocol):
    async def list(self, group: str, version: str, resource: str, **kw: Any) -> dict: ...

    def watch(self, group: str, version: str, resource: str, **kw: Any) -> AsyncContextManager[AsyncIterator]: ...


class Backoff:
    """Exponential backoff with jitter, reset after success."""

    def __init__(self, initial: float = 0.8, maximum: float = 30.0, factor: float = 2.0,
                 jitter: float = 1.0) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._next = initial

    def next(self) -> float:
        d = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return min(d * (1 + self.jitter * random.random()), self.maximum)

    def reset(self) -> None:
        self._next = self.initial


class HandlerRegistration:
    """One set of handlers and its delivery queue; returned by `Informer.add_handler`."""

    _SYNCED = object()  # queue marker: everything before it was the initial state

    def __init__(self, on_add: Handler | None, on_update: Handler | None, on_delete: Handler | None,
                 name: str, resync_period: float = 0) -> None:
        self.on_add, self.on_update, self.on_delete = on_add, on_update, on_delete
        self.resync_period = resync_period
        self._name = name
        self._queue: collections.deque = collections.deque()
        self._wakeup = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._resync_task: asyncio.Task | None = None

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait until this handler has processed the initial state; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def pending(self) -> int:
        return len(self._queue)

    def _push(self, fn: Handler | None, *args: Any) -> None:
        if fn is not None:
            self._queue.append((fn, args))
            self._wakeup.set()

    def _mark_synced(self) -> None:
        self._queue.append((self._SYNCED, ()))
        self._wakeup.set()

    async def _deliver(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            fn, args = self._queue.popleft()
            if fn is self._SYNCED:
                self._synced.set()
                continue
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("informer %s: handler %s failed", self._name, getattr(fn, "__qualname__", fn))


class Informer:
    """A cache of ``group/version/resource`` objects kept current by list+watch. See the module docstring."""

    def __init__(self, client: ListerWatcher, group: str, version: str, resource: str, *,
                 namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, resync_period: float = 0,
                 indexers: dict[str, IndexFunc] | None = None, page_size: int = 500,
                 min_watch_timeout: int = 300, clock: Clock | None = None) -> None:
        self.client = client
        self.group, self.version, self.resource = group, version, resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.min_watch_timeout = min_watch_timeout
        self.indexer = Indexer(indexers)
        self.name = f"{resource}.{group}" if group else resource
        self._clock = clock or REAL_CLOCK
        self._handlers: list[HandlerRegistration] = []
        self._synced = asyncio.Event()
        self._running = False
        self.last_sync_resource_version = ""

    # -- lister -----------------------------------------------------------

    def get(self, key: str) -> dict | None:
        return self.indexer.get(key)

    def list(self) -> list[dict]:
        return self.indexer.list()

    def by_index(self, index_name: str, value: str) -> list[dict]:
        return self.indexer.by_index(index_name, value)

    # -- handlers ---------------------------------------------------------

    def add_handler(self, on_add: Handler | None = None, on_update: Handler | None = None,
                    on_delete: Handler | None = None, *,
                    resync_period: float | None = None) -> HandlerRegistration:
        """Register handlers (see the module docstring, items 4–6, for resync and sync)."""
        period = self.resync_period if resync_period is None else resync_period
        if 0 < period < MINIMUM_RESYNC_PERIOD:
            log.warning("informer %s: resync period %.3fs is below the minimum; using %.0fs", self.name,
                        period, MINIMUM_RESYNC_PERIOD)
            period = MINIMUM_RESYNC_PERIOD
        reg = HandlerRegistration(on_add, on_update, on_delete, self.name, max(period, 0))
        self._handlers.append(reg)
        if self._synced.is_set():
            for obj in self.indexer.list():
                reg._push(reg.on_add, obj)
            reg._mark_synced()
        if self._running:
            self._start_handler(reg)
        return reg

    def remove_handler(self, reg: HandlerRegistration) -> None:
        if reg in self._handlers:
            self._handlers.remove(reg)
            for t in (reg._task, reg._resync_task):
                if t is not None:
                    t.cancel()
            reg._task = reg._resync_task = None

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        """Add named index functions; allowed after start too (the cache is re-indexed at once)."""
        self.indexer.add_indexers(indexers)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait until the first list is cached; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- running ----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """List, watch and notify until ``stop`` is set. Runs once per informer."""
        if self._running:
            raise RuntimeError(f"informer {self.name} is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        for reg in self._handlers:
            self._start_handler(reg)
        reflector = loop.create_task(self._reflect(), name=f"informer-{self.name}")
        stopper = loop.create_task(stop.wait())
        try:
            await asyncio.wait([stopper, reflector], return_when=asyncio.FIRST_COMPLETED)
            if reflector.done() and not reflector.cancelled() and reflector.exception():
                raise reflector.exception()  # a bug in the reflector escalates, never vanishes
        finally:
            tasks = [stopper, reflector]
            for r in self._handlers:
                tasks += [t for t in (r._task, r._resync_task) if t is not None]
                r._task = r._resync_task = None
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running = False

    def _start_handler(self, reg: HandlerRegistration) -> None:
        loop = asyncio.get_running_loop()
        reg._task = loop.create_task(reg._deliver(), name=f"informer-{self.name}-handler")
        if reg.resync_period > 0:
            reg._resync_task = loop.create_task(self._resync_loop(reg), name=f"informer-{self.name}-resync")

    def _selectors(self) -> dict:
        return {"namespace": self.namespace, "label_selector": self.label_selector,
                "field_selector": self.field_selector}

    async def _reflect(self) -> None:
        backoff = Backoff()
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                    backoff.reset()
                events, elapsed = await self._watch()
                if events == 0 and elapsed < 1.0:
                    # A watch that ends at once (and is not an error) would spin.
                    await self._clock.sleep(backoff.next())
                else:
                    backoff.reset()
            except ResourceExpired as e:
                log.info("informer %s: resourceVersion %s expired (%s); re-listing", self.name,
                         self.last_sync_resource_version, e.message)
                need_list = True
            except (StatusError, TransportError) as e:
                delay = backoff.next()
                log.warning("informer %s: %s failed: %s; retrying in %.1fs", self.name,
                            "list" if need_list else "watch", e, delay)
                await self._clock.sleep(delay)

    async def _list(self) -> tuple[list[dict], str]:
        items: list[dict] = []
        cont: str | None = None
        while True:
            try:
                page = await self.client.list(self.group, self.version, self.resource, limit=self.page_size,
                                              continue_=cont, **self._selectors())
            except ResourceExpired:
                if cont is None:
                    raise
                # The snapshot behind the continue token was compacted: take
                # one consistent, unpaginated list instead.
                page = await self.client.list(self.group, self.version, self.resource, **self._selectors())
                items = []
                cont = None
            api_version = page.get("apiVersion", "")
            kind = page.get("kind", "")
            kind = kind[:-4] if kind.endswith("List") else ""
            for item in page.get("items") or []:
                if api_version and "apiVersion" not in item:
                    item["apiVersion"] = api_version
                if kind and "kind" not in item:
                    item["kind"] = kind
                items.append(item)
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                return items, meta.get("resourceVersion", "")

    async def _list_and_replace(self) -> None:
        items, rv = await self._list()
        key_of = self.indexer.key_func
        fresh = {key_of(o): o for o in items}
        for key in [k for k in self.indexer.list_keys() if k not in fresh]:
            old = self.indexer.delete(key)
            self._notify("on_delete", DeletedFinalStateUnknown(key, old))
        for obj in items:
            old = self.indexer.add(obj)
            if old is None:
                self._notify("on_add", obj)
            else:
                self._notify("on_update", old, obj)
        self.last_sync_resource_version = rv
        if not self._synced.is_set():
            for reg in self._handlers:
                reg._mark_synced()
            self._synced.set()

    async def _watch(self) -> tuple[int, float]:
        """Watch from the last resourceVersion until the stream ends; return (events, seconds)."""
        started = self._clock.now()
        n = 0
        timeout = random.randint(self.min_watch_timeout, 2 * self.min_watch_timeout)
        async with self.client.watch(self.group, self.version, self.resource,
                                     resource_version=self.last_sync_resource_version,
                                     allow_watch_bookmarks=True, timeout_seconds=timeout,
                                     **self._selectors()) as w:
            async for typ, obj in w:
                n += 1
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if typ in ("ADDED", "MODIFIED"):
                    old = self.indexer.add(obj)
                    if old is None:
                        self._notify("on_add", obj)
                    else:
                        self._notify("on_update", old, obj)
                elif typ == "DELETED":
                    self.indexer.delete(obj)
                    self._notify("on_delete", obj)
                elif typ != "BOOKMARK":
                    log.warning("informer %s: ignoring watch event of type %r", self.name, typ)
                    continue
                if rv:
                    self.last_sync_resource_version = rv
        return n, self._clock.now() - started

    async def _resync_loop(self, reg: HandlerRegistration) -> None:
        # Pushing the cached state into the handler's own queue keeps order: every
        # later change is pushed after it, so the handler never sees an older object last.
        while True:
            await self._clock.sleep(reg.resync_period)
            if self._synced.is_set():
                for obj in self.indexer.list():
                    reg._push(reg.on_update, obj, obj)

    def _notify(self, which: str, *args: Any) -> None:
        for reg in self._handlers:
            reg._push(getattr(reg, which), *args)


async def wait_for_cache_sync(*informers: Informer, timeout: float | None = None) -> bool:
    """Wait until every informer has synced; False if ``timeout`` passed first."""
    try:
        await asyncio.wait_for(asyncio.gather(*(i.wait_for_sync() for i in informers)), timeout)
    except asyncio.TimeoutError:
        return False
    return True
