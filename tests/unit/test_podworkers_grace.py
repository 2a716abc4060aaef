"""A shortened grace period reaches the kill in flight (upstream's pod_workers cancel the
terminating sync's context when a later kill asks for less time)."""

from __future__ import annotations

import asyncio
import time

from kubeling.kubelet.kuberuntime_container import grace_period
from kubeling.kubelet.podworkers import PodState, PodWorkers


def _pod(grace: int | None, *, spec_grace: int = 300) -> dict:
    meta = {"uid": "u", "name": "p", "namespace": "n"}
    if grace is not None:
        meta |= {"deletionTimestamp": "2026-12-03T00:00:00Z", "deletionGracePeriodSeconds": grace}
    return {"metadata": meta, "spec": {"terminationGracePeriodSeconds": spec_grace}}


def _workers(kills: list, events: list | None = None) -> PodWorkers:
    async def sync(p):
        return None

    async def terminating(p, removed):
        grace = grace_period(p, removed)
        kills.append(grace)
        await asyncio.sleep(grace)      # a container that ignores SIGTERM: the whole grace

    async def noop(p):
        if events is not None:
            events.append("terminated")

    return PodWorkers(sync, terminating, noop, noop, grace_period=grace_period)


async def _until(state, want, seconds: float) -> None:
    """Poll ``state()`` every 20 ms until it is ``want`` or ``seconds`` pass."""
    for _ in range(int(seconds / 0.02)):
        if state() == want:
            return
        await asyncio.sleep(0.02)


async def _terminating(kills: list, events: list | None = None) -> PodWorkers:
    """Workers whose pod is being killed with a 30 s grace period."""
    w = _workers(kills, events)
    w.update(_pod(None))
    await asyncio.sleep(0.01)
    w.update(_pod(30))                           # kubectl delete: 30 s
    await asyncio.sleep(0.05)
    return w


def test_a_second_delete_with_a_shorter_grace_stops_the_pod_sooner():
    async def main():
        kills: list[float] = []
        started = time.monotonic()
        w = await _terminating(kills)
        assert kills == [30.0] and w.state("u") == PodState.TERMINATING
        w.update(_pod(0.2))                      # kubectl delete --grace-period ...: shorter
        await _until(lambda: w.state("u"), PodState.TERMINATED, 2)
        assert w.state("u") == PodState.TERMINATED
        assert kills == [30.0, 0.2]
        assert time.monotonic() - started < 5
        await w.close()

    asyncio.run(main())


def test_a_longer_or_equal_grace_does_not_restart_the_kill():
    async def main():
        kills: list[float] = []
        w = _workers(kills)
        w.update(_pod(None))
        await asyncio.sleep(0.01)
        w.update(_pod(1))
        await asyncio.sleep(0.05)
        w.update(_pod(1))                        # the same grace (e.g. a status update)
        w.update(_pod(60))                       # the API never lengthens it; neither do we
        await _until(lambda: w.state("u"), PodState.TERMINATED, 3)
        assert w.state("u") == PodState.TERMINATED and kills == [1.0]
        await w.close()

    asyncio.run(main())


def test_removal_from_the_api_cuts_the_grace_to_the_minimum():
    async def main():
        kills: list[float] = []
        w = await _terminating(kills)
        w.update(_pod(30), removed=True)         # kubectl delete --force: gone at once
        await _until(lambda: w.state("u"), None, 4)
        assert w.state("u") is None and len(kills) == 2 and kills[1] < 30
        await w.close()

    asyncio.run(main())


def test_closing_the_workers_during_a_kill_cancels_it_and_does_not_restart_it():
    async def main():
        kills: list[float] = []
        events: list[str] = []
        w = await _terminating(kills, events)
        await asyncio.wait_for(w.close(), 2)
        assert kills == [30.0] and events == []

    asyncio.run(main())
