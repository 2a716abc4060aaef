"""Pod workers: one asyncio task per pod UID drives that pod through its life.

::

                 update (pod seen)            pod deleted / terminal phase / gone from API
    (no worker) ──────────────────▶ SYNCING ─────────────────────────────────▶ TERMINATING
                                     │  ▲  sync_pod(pod) after every update,        │
                                     └──┘  and again when it asks (back-off ends)    │
                                                                 sync_terminating_pod(pod, grace)
                                                                 (preStop, SIGTERM, SIGKILL)
                                                                                     ▼
    (worker ends, pod forgotten) ◀───── gone from API ◀────── sync_terminated_pod ─ TERMINATED
                                        sync_removed_pod      (volumes, sandbox, IP released)

Guarantees (as upstream's ``pod_workers.go``):
- At most one of ``sync_*`` runs for a UID at any time; updates that arrive meanwhile are
  coalesced and the newest pod wins.
- A pod never goes back from TERMINATING to SYNCING: a UID that started terminating is never
  started again (a new pod with the same name has a new UID).
- ``sync_terminating_pod`` runs until it returns normally; an exception retries it after a
  short delay. An update that shortens the grace period (a second delete with a smaller
  ``--grace-period``, or the pod gone from the API) cancels the one in flight, which starts again
  with the shorter grace, as upstream cancels the terminating sync's context.
- ``sync_pod`` returning a number asks for another sync after that many seconds (CrashLoop
  back-off, image pull back-off, probe-driven restarts); an exception retries after 1 s.
- A worker that crashes in a way the ``sync_*`` functions did not catch is logged and restarted
  on the next update: one bad pod never stops the others.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0


class PodState(str, enum.Enum):
    SYNCING = "syncing"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def wants_termination(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp")) or is_terminal(pod)


@dataclass
class _Worker:
    uid: str
    pod: dict
    removed: bool = False               # gone from the API
    state: PodState = PodState.SYNCING
    cleaned: bool = False               # sync_terminated_pod has run
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    kill: asyncio.Task | None = None    # the sync_terminating_pod in flight
    kill_grace: float | None = None     # ... and the grace period it was started with


SyncPod = Callable[[dict], Awaitable[float | None]]
SyncTerminating = Callable[[dict, bool], Awaitable[None]]
SyncTerminated = Callable[[dict], Awaitable[None]]
GracePeriod = Callable[[dict, bool], float]   # (pod, removed) -> seconds its containers get


class PodWorkers:
    """See the module docstring. The four callables are the kubelet's; ``grace_period`` tells
    the grace a terminating pod gets (without it, a shortened grace waits for the kill in flight)."""

    def __init__(self, sync_pod: SyncPod, sync_terminating_pod: SyncTerminating,
                 sync_terminated_pod: SyncTerminated, sync_removed_pod: SyncTerminated,
                 grace_period: GracePeriod | None = None) -> None:
        self._grace_period = grace_period
        self._sync_pod = sync_pod
        self._sync_terminating = sync_terminating_pod
        self._sync_terminated = sync_terminated_pod
        self._sync_removed = sync_removed_pod
        self._workers: dict[str, _Worker] = {}
        self._closing = False

    # -- the kubelet's side ---------------------------------------------------------------

    def update(self, pod: dict, *, removed: bool = False) -> None:
        """A pod was added/changed (``removed=False``) or is gone from the API."""
        uid = pod["metadata"]["uid"]
        w = self._workers.get(uid)
        if w is None:
            if removed and not self._closing:
                # never seen alive by this process (e.g. deleted while the agent was down):
                # still clean up whatever the runtime holds for it
                w = _Worker(uid, pod, removed=True, state=PodState.TERMINATING)
            elif self._closing:
                return
            else:
                w = _Worker(uid, pod)
            self._workers[uid] = w
        else:
            w.pod = pod if not removed else w.pod
            w.removed = w.removed or removed
            self._shorten_grace(w)
        if w.task is None or w.task.done():
            w.task = asyncio.create_task(self._run(w), name=f"pod-worker-{uid}")
        w.wake.set()

    def _shorten_grace(self, w: _Worker) -> None:
        """Cancel the kill in flight when the newest pod gives a shorter grace period: `_step`
        starts it again with that one."""
        if w.kill is None or w.kill.done() or self._grace_period is None or w.kill_grace is None:
            return
        grace = self._grace_period(w.pod, w.removed)
        if grace < w.kill_grace:
            log.info("pod %s/%s: grace period shortened from %gs to %gs: stopping it again",
                     w.pod["metadata"].get("namespace"), w.pod["metadata"].get("name"), w.kill_grace, grace)
            w.kill_grace = grace
            w.kill.cancel()

    def refresh(self, pod: dict) -> None:
        """Keep the newest copy of a pod without waking its worker (a status-only change)."""
        w = self._workers.get(pod["metadata"]["uid"])
        if w is not None and not w.removed:
            w.pod = pod

    def state(self, uid: str) -> PodState | None:
        w = self._workers.get(uid)
        return w.state if w else None

    def known(self) -> dict[str, dict]:
        return {uid: w.pod for uid, w in self._workers.items()}

    def syncing(self) -> list[dict]:
        return [w.pod for w in self._workers.values() if w.state == PodState.SYNCING]

    async def close(self) -> None:
        """Stop every worker after the ``sync_*`` in hand (containers keep running)."""
        self._closing = True
        tasks = [w.task for w in self._workers.values() if w.task and not w.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one worker ----------------------------------------------------------------------------

    async def _run(self, w: _Worker) -> None:
        delay: float | None = None
        while not self._closing:
            if delay is None:
                await w.wake.wait()
            else:
                try:
                    await asyncio.wait_for(w.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            w.wake.clear()
            try:
                delay = await self._step(w)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one pod's fault must not stop its worker
                log.exception("pod worker %s (%s/%s)", w.uid, w.pod["metadata"].get("namespace"),
                              w.pod["metadata"].get("name"))
                delay = RETRY_DELAY
            if delay == -1:
                self._workers.pop(w.uid, None)
                return

    async def _step(self, w: _Worker) -> float | None:
        """One transition; returns the delay before the next (None: wait for an update; -1: done)."""
        if w.state == PodState.SYNCING:
            if w.removed or wants_termination(w.pod):
                w.state = PodState.TERMINATING
            else:
                return await self._sync_pod(w.pod)
        if w.state == PodState.TERMINATING:
            await self._terminate(w)
            w.state = PodState.TERMINATED
        if w.state == PodState.TERMINATED:
            if not w.cleaned:
                await self._sync_terminated(w.pod)
                w.cleaned = True
            if w.removed:
                await self._sync_removed(w.pod)
                return -1
        return None

    async def _terminate(self, w: _Worker) -> None:
        """``sync_terminating_pod`` as a task of its own, so that `_shorten_grace` can cancel it;
        then it runs again, with the newest pod."""
        while True:
            w.kill_grace = self._grace_period(w.pod, w.removed) if self._grace_period else None
            w.kill = asyncio.create_task(self._sync_terminating(w.pod, w.removed), name=f"pod-kill-{w.uid}")
            try:
                await w.kill
                return
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not w.kill.cancelled() or (current is not None and current.cancelling()):
                    raise     # the worker itself is being stopped
            finally:
                w.kill = None
