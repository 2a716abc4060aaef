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
  short delay. A newer update that shortens the grace period is seen on the retry.
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


SyncPod = Callable[[dict], Awaitable[float | None]]
SyncTerminating = Callable[[dict, bool], Awaitable[None]]
SyncTerminated = Callable[[dict], Awaitable[None]]


class PodWorkers:
    """See the module docstring. The four callables are the kubelet's."""

    def __init__(self, sync_pod: SyncPod, sync_terminating_pod: SyncTerminating,
                 sync_terminated_pod: SyncTerminated, sync_removed_pod: SyncTerminated) -> None:
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
        if w.task is None or w.task.done():
            w.task = asyncio.create_task(self._run(w), name=f"pod-worker-{uid}")
        w.wake.set()

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
            await self._sync_terminating(w.pod, w.removed)
            w.state = PodState.TERMINATED
        if w.state == PodState.TERMINATED:
            if not w.cleaned:
                await self._sync_terminated(w.pod)
                w.cleaned = True
            if w.removed:
                await self._sync_removed(w.pod)
                return -1
        return None
