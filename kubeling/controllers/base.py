"""The one shape every controller has: informer handlers enqueue keys, workers call ``sync(key)``.

::

    shared informers ──handlers──▶ RateLimitingQueue ──get──▶ worker × N ──▶ sync(key)
    (ctx.informers)     (enqueue keys only)        ▲                 │
                                                   └─ add_rate_limited on exception, forget on return

A controller is a subclass of `Controller` with

- ``NAME`` (the name ``--controllers`` uses) and ``WORKERS`` (its default concurrency);
- ``__init__(ctx)``: take informers from ``ctx.informers`` (the process's
  `SharedInformerFactory`) and register handlers with `Controller.handle`, which only enqueue
  keys. An informer read only as a lister is registered with ``handle(informer)`` and no
  handlers, so that `run` waits for it too. Construction does no I/O; the manager starts the
  factory after constructing every controller, so each informer lists once for all of them;
- ``async def sync(key)``: level-triggered — read the informer caches (never mutate what they
  hand out), make the world match, and return. A normal return forgets the key's backoff; an
  exception requeues it with the queue's rate limit; a key whose object is gone is cleaned up
  and returns.

`Controller.run` (the same for all) keeps these promises:

1. It waits until every registered handler has processed its informer's initial list (so every
   object cached at sync time is in the queue), or returns if ``stop`` comes first.
2. It runs ``workers`` workers; the queue guarantees one key is never synced twice at once.
3. When ``stop`` is set the queue shuts down and the workers finish the key in hand, in a
   shielded ``finally``: cancelling ``run`` does not cut a sync short.
4. A worker that dies (an exception outside ``sync``: a bug) stops the others and is re-raised
   from ``run`` — a crashed worker escalates, it never vanishes. The manager then exits, and
   its supervisor restarts it.

`ControllerContext` is what every controller gets: the REST client (``RESTClient`` or the
test's ``FakeClient``), the shared informer factory, cluster facts (the CA), and the clock.
Under ``--use-service-account-credentials`` the manager gives each controller a context of its
own whose ``client`` writes as that controller's service account (``kube-system/<account>``,
`kubeling.apiserver.rbac.bootstrap_controllers`), while ``informers`` is the one factory every
controller shares, listing and watching as the manager itself; ``ctx.recorder`` writes Events
with the controller's client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Hashable

from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.events import EventRecorder
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.informer import Handler, HandlerRegistration, Informer
from kubeling.client.store import meta_namespace_key
from kubeling.client.workqueue import RateLimitingQueue

log = logging.getLogger(__name__)

key_of = meta_namespace_key


@dataclass
class ControllerContext:
    """What a controller is built from. ``client`` has `RESTClient`'s verbs."""

    client: object
    informers: SharedInformerFactory
    ca_pem: str = ""
    clock: Clock = field(default=REAL_CLOCK)
    # upstream's kube-controller-manager flags that some controllers read
    cluster_cidr: str = ""
    service_cidr: str = ""
    node_cidr_mask_size: int = 24
    service_account_private_key_file: str = ""
    # node lifecycle (seconds) and pod GC, as upstream's flags of the same names
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 50.0
    node_startup_grace_period: float = 60.0
    node_eviction_rate: float = 0.1  # nodes/s tainted NoExecute per healthy zone
    secondary_node_eviction_rate: float = 0.01  # ... per partially disrupted large zone
    large_cluster_size_threshold: int = 50
    unhealthy_zone_threshold: float = 0.55
    terminated_pod_gc_threshold: int = 12500
    # endpoints controllers (upstream's flags of the same names; batch periods in seconds)
    max_endpoints_per_slice: int = 100
    mirroring_max_endpoints_per_subset: int = 1000
    endpoint_updates_batch_period: float = 0.0
    endpointslice_updates_batch_period: float = 0.0
    # test seam (hidden flags): the CronJob controller's clock runs this many times faster, from
    # this RFC 3339 wall time if set, so end-to-end tests see minutes pass in seconds
    cronjob_clock_speed: float = 1.0
    cronjob_clock_start: str = ""
    # the csrsigning controller's CA (--cluster-signing-cert-file/-key-file) and its longest
    # validity (--cluster-signing-duration, seconds)
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    cluster_signing_duration: float = 8760 * 3600.0

    def recorder(self, component: str) -> EventRecorder:
        """An `EventRecorder` for ``component`` (upstream's names, e.g. ``replicaset-controller``)."""
        return EventRecorder(self.client, component, clock=self.clock)


class Controller:
    """Base of every controller. See the module docstring for the contract."""

    NAME: ClassVar[str] = ""
    WORKERS: ClassVar[int] = 2

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.clock = ctx.clock
        self.queue = RateLimitingQueue(name=self.NAME, clock=ctx.clock)
        self.registrations: list[tuple[Informer, HandlerRegistration]] = []

    def handle(self, informer: Informer, on_add: Handler | None = None, on_update: Handler | None = None,
               on_delete: Handler | None = None, *, resync_period: float | None = None) -> HandlerRegistration:
        """Register handlers on a shared informer; `run` waits for them to sync."""
        reg = informer.add_handler(on_add, on_update, on_delete, resync_period=resync_period)
        self.registrations.append((informer, reg))
        return reg

    async def sync(self, key: Hashable) -> None:
        raise NotImplementedError

    async def wait_for_caches(self, stop: asyncio.Event) -> bool:
        """Wait until every registration synced; False if ``stop`` came first."""
        return await wait_or_stop([reg.wait_for_sync() for _, reg in self.registrations], stop)

    async def run(self, workers: int, stop: asyncio.Event) -> None:
        try:
            if not await self.wait_for_caches(stop):
                return
            log.info("%s: caches synced; starting %d workers", self.NAME, workers)
            await run_workers(self.NAME, self.queue, self.sync, stop, workers)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop taking work: shut the queue down and unregister from the shared informers."""
        self.queue.shutdown()
        for informer, reg in self.registrations:
            informer.remove_handler(reg)
        self.registrations.clear()


async def wait_or_stop(waits: list, stop: asyncio.Event) -> bool:
    """Await every awaitable in ``waits``; False (and the rest cancelled) if ``stop`` is set first."""
    if stop.is_set():
        for w in waits:
            if asyncio.iscoroutine(w):
                w.close()  # never awaited: close it so Python does not warn
        return False
    everything = asyncio.ensure_future(asyncio.gather(*waits))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not everything.done():
            everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
    return everything.done() and not everything.cancelled() and everything.exception() is None


async def sleep_or_stop(clock: Clock, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock``; True if ``stop`` was set first (or already)."""
    if stop.is_set():
        return True
    return not await wait_or_stop([clock.sleep(seconds)], stop)


async def run_workers(name: str, queue: RateLimitingQueue, sync, stop: asyncio.Event, workers: int = 2) -> None:
    """Run ``workers`` workers on ``queue`` until ``stop``; promises 2–4 of the module docstring."""

    async def worker() -> None:
        while True:
            key, shutdown = await queue.get()
            if shutdown:
                return
            try:
                await sync(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one bad key never stops the controller
                log.warning("%s: sync %s failed (retry %d): %s", name, key, queue.num_requeues(key), e)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    tasks = [asyncio.create_task(worker(), name=f"{name}-worker-{i}") for i in range(max(workers, 1))]
    stopper = asyncio.create_task(stop.wait())
    crashed: BaseException | None = None
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper:
                crashed = t.exception() if not t.cancelled() else None
                crashed = crashed or RuntimeError(f"{name}: a worker returned before stop")
                break
    finally:
        stopper.cancel()
        queue.shutdown()
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
    if crashed is not None:
        raise crashed
