"""The shape every controller shares: informers feed keys into a workqueue; workers call
``sync(key)``.

`run_workers` runs ``n`` workers until ``stop``: a normal return from ``sync`` forgets the key,
an exception requeues it with backoff (logged; the worker goes on), and at ``stop`` the queue
shuts down and the workers drain in a shielded ``finally``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable

from kubeling.client.workqueue import RateLimitingQueue

log = logging.getLogger(__name__)


def key_of(obj: dict) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


async def run_workers(name: str, queue: RateLimitingQueue, sync: Callable[[Hashable], Awaitable[None]],
                      stop: asyncio.Event, workers: int = 2) -> None:
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

    tasks = [asyncio.create_task(worker(), name=f"{name}-worker-{i}") for i in range(workers)]
    try:
        await stop.wait()
    finally:
        queue.shutdown()
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))


async def run_controller(name: str, informers: list, queue: RateLimitingQueue,
                         sync: Callable[[Hashable], Awaitable[None]], stop: asyncio.Event, workers: int = 2) -> None:
    """Run the informers, wait for their caches, then the workers; stop everything at ``stop``."""
    tasks = [asyncio.create_task(inf.run(stop), name=f"{name}-informer") for inf in informers]
    try:
        for inf in informers:
            await inf.wait_for_sync()
        await run_workers(name, queue, sync, stop, workers)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
