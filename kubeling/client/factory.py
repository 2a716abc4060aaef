"""`SharedInformerFactory`: one informer per watched collection, shared by every component of a process.

Modelled on client-go's ``informers/factory.go``. Every controller in the controller manager asks
the factory for the informers it needs instead of building its own, so three controllers that
all look at namespaces cost one list and one watch, and one cache.

Identity: an informer is identified by `InformerKey` — ``(group, version, resource, namespace,
label_selector, field_selector)``. Asking twice for the same key returns the same `Informer`
object; a different selector or namespace is a different collection and gets its own informer.
(client-go keys by Go type and fixes namespace and selectors per factory; keying by the
collection itself lets one factory serve a cheap ``metadata.name=...`` informer next to the
full one.)

Contracts:

1. ``informer_for(...)`` may be called at any time. Before ``start`` it only registers; the
   caller adds handlers (and indexers) to the returned informer.
2. ``start(stop)`` starts every informer requested so far that is not already running and
   returns at once; informers requested later start on the next ``start`` call (the garbage
   collector does this when discovery finds new resources). Each runs until ``stop`` is set.
   ``start`` is idempotent.
3. ``await wait_for_cache_sync(timeout)`` waits until every *started* informer has synced (or
   ``timeout`` passed) and returns ``{key: synced}`` for them; it never raises on a timeout.
4. Indexers: ``informer_for(..., indexers={name: fn})`` adds them to the shared informer,
   before or after it started (the cache is re-indexed, as client-go allows since 1.30).
   Asking again with the same name and the same function is a no-op; the same name with a
   different function raises ``ValueError``, because two users would read each other's
   index. Define index functions at module level so that they compare equal.
5. Resync: ``default_resync`` becomes every informer's default per-handler resync period
   (``0``: none); a handler can choose its own with ``add_handler(..., resync_period=p)``.
6. An informer that crashes (a bug: list and watch failures are retried inside it) is logged
   and reported by ``failure()``; the owner of the factory decides what to do (the controller
   manager exits, so that its supervisor restarts it — a crash never vanishes).
7. ``await shutdown()``, after ``stop`` is set, waits until every informer has returned.

Concurrency: one asyncio event loop; nothing here is thread-safe (see `kubeling.client`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kubeling.client.clock import Clock
from kubeling.client.informer import Informer, ListerWatcher
from kubeling.client.store import IndexFunc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InformerKey:
    """The collection an informer watches."""

    group: str
    version: str
    resource: str
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None

    def __str__(self) -> str:
        name = f"{self.resource}.{self.version}.{self.group}" if self.group else f"{self.resource}.{self.version}"
        extra = [f"{k}={v}" for k, v in (("namespace", self.namespace), ("labels", self.label_selector),
                                         ("fields", self.field_selector)) if v]
        return f"{name}[{','.join(extra)}]" if extra else name


class SharedInformerFactory:
    """Shared informers keyed by `InformerKey`. See the module docstring for the contracts."""

    def __init__(self, client: ListerWatcher, *, default_resync: float = 0.0, clock: Clock | None = None,
                 page_size: int = 500) -> None:
        self.client = client
        self.default_resync = default_resync
        self._clock = clock
        self._page_size = page_size
        self._informers: dict[InformerKey, Informer] = {}
        self._tasks: dict[InformerKey, asyncio.Task] = {}
        self._failure: asyncio.Future | None = None

    def informer_for(self, group: str, version: str, resource: str, *, namespace: str | None = None,
                     label_selector: str | None = None, field_selector: str | None = None,
                     indexers: dict[str, IndexFunc] | None = None) -> Informer:
        """The shared informer for this collection, created on first request."""
        key = InformerKey(group, version, resource, namespace or None, label_selector or None,
                          field_selector or None)
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(self.client, group, version, resource, namespace=key.namespace,
                           label_selector=key.label_selector, field_selector=key.field_selector,
                           resync_period=self.default_resync, page_size=self._page_size, clock=self._clock)
            self._informers[key] = inf
        if indexers:
            fresh = {}
            for name, fn in indexers.items():
                have = inf.indexer.indexer_func(name)
                if have is None:
                    fresh[name] = fn
                elif have is not fn:
                    raise ValueError(f"informer {key}: indexer {name!r} already exists with another function")
            if fresh:
                inf.add_indexers(fresh)
        return inf

    @property
    def informers(self) -> dict[InformerKey, Informer]:
        """Every informer requested so far (a copy)."""
        return dict(self._informers)

    def started(self, key: InformerKey) -> bool:
        return key in self._tasks

    def start(self, stop: asyncio.Event) -> None:
        """Start every requested informer that is not running yet; they run until ``stop``."""
        loop = asyncio.get_running_loop()
        if self._failure is None:
            self._failure = loop.create_future()
        for key, inf in self._informers.items():
            if key in self._tasks:
                continue
            task = loop.create_task(inf.run(stop), name=f"informer-{key}")
            task.add_done_callback(lambda t, k=key: self._ended(k, t, stop))
            self._tasks[key] = task

    def _ended(self, key: InformerKey, task: asyncio.Task, stop: asyncio.Event) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None and stop.is_set():
            return
        exc = exc or RuntimeError(f"informer {key} returned before stop")
        log.error("informer %s crashed: %r", key, exc, exc_info=exc)
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(exc)

    def failure(self) -> asyncio.Future:
        """A future that fails with the first informer crash (it never succeeds). Needs ``start`` first."""
        if self._failure is None:
            raise RuntimeError("the factory has not been started")
        return self._failure

    async def wait_for_cache_sync(self, timeout: float | None = None) -> dict[InformerKey, bool]:
        """Wait until every started informer synced, at most ``timeout`` seconds; ``{key: synced}``."""
        started = {k: self._informers[k] for k in self._tasks}
        pending = [asyncio.ensure_future(inf.wait_for_sync()) for inf in started.values() if not inf.has_synced()]
        if pending:
            try:
                await asyncio.wait(pending, timeout=timeout)
            finally:
                for f in pending:
                    f.cancel()
        return {k: inf.has_synced() for k, inf in started.items()}

    async def shutdown(self) -> None:
        """Wait for every started informer to return (call after setting their ``stop``)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._failure is not None and self._failure.done() and not self._failure.cancelled():
            self._failure.exception()  # retrieved: a crash already reported is not "never retrieved"
