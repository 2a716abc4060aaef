"""`Worker`: probes one container of one pod for one probe type, periodically.

Timing rules (upstream's ``prober/worker.go``):
- The first run is immediate, except that a worker created within one period of the manager's
  start (a kubelet restart re-creating every worker) first sleeps a random part of the period,
  so that probes do not all fire together.
- Then a run every ``periodSeconds`` on a fixed cadence; `trigger` asks for an extra run now
  (at most one pending; a run that starts after the trigger answers it).
- A run does nothing until the container has been running ``initialDelaySeconds`` (whole
  seconds, counted from its start time).
- Liveness and readiness do nothing until the container has *started* (its startup probe
  succeeded, or it has none); the startup probe does nothing once it has.
- A result is stored only after ``failureThreshold`` failures or ``successThreshold`` successes
  in a row; until then the previous result stands. The first value for a container id is
  FAILURE for readiness, SUCCESS for liveness and UNKNOWN for startup (not started, but no
  reason to kill either).
- After a liveness or startup FAILURE is stored the worker holds (no more runs) until it sees a
  new container id: the kubelet is restarting that container.
- A container that is not running is FAILURE; if it exited and the pod's restartPolicy is
  Never, the worker ends. When the pod is being deleted, liveness and startup store SUCCESS
  and end (a pod shutting down is never restarted for failing them).

The worker reads the container's state from its `ProbeManager` at each run; it never calls
the runtime except through the prober. `stop` is idempotent; the worker removes its results
and itself from the manager when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from kubeling.kubelet.prober import results
from kubeling.kubelet.prober.prober import LIVENESS, READINESS, SPEC_FIELD, STARTUP
from kubeling.kubelet.runtime import ContainerState

if TYPE_CHECKING:
    from kubeling.kubelet.prober.manager import ProbeManager

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, manager: ProbeManager, pod: dict, container: dict, probe_type: str) -> None:
        self.manager = manager
        self.pod = pod
        self.container = container
        self.probe_type = probe_type
        spec = container[SPEC_FIELD[probe_type]]
        self.period = float(spec.get("periodSeconds") or 10)
        self.initial_delay = int(spec.get("initialDelaySeconds") or 0)
        self.success_threshold = int(spec.get("successThreshold") or 1)
        self.failure_threshold = int(spec.get("failureThreshold") or 3)
        self.results: results.ResultsManager = manager.results_for(probe_type)
        self.initial = {READINESS: results.Result.FAILURE, LIVENESS: results.Result.SUCCESS,
                        STARTUP: results.Result.UNKNOWN}[probe_type]
        self.container_id = ""
        self.on_hold = False
        self.last_result: results.Result | None = None
        self.result_run = 0
        self.runs = 0                      # probes actually sent, for tests and metrics
        self._wake = asyncio.Event()
        self._stopped = False
        self.task: asyncio.Task | None = None

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def name(self) -> str:
        return self.container["name"]

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"probe-{self.probe_type}-{self.uid}-{self.name}")

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def trigger(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        clock = self.manager.clock
        try:
            if self.period > clock.now() - self.manager.started_at:
                await self._sleep_until(clock.now() + self.manager.rand() * self.period)
            next_tick = clock.now() + self.period
            while not self._stopped and await self._do_probe_safely():
                timed_out = await self._sleep_until(next_tick)
                if timed_out:
                    # A fixed cadence, like a Go ticker: ticks missed during a slow probe are dropped.
                    while next_tick <= clock.now():
                        next_tick += self.period
        finally:
            if self.container_id:
                self.results.remove(self.container_id)
            self.manager._worker_ended(self)

    async def _sleep_until(self, when: float) -> bool:
        """Wait until ``when``, a `trigger` or `stop`; True if the time came."""
        if self._stopped:
            return False
        fired = asyncio.Event()

        def due() -> None:
            fired.set()
            self._wake.set()

        handle = self.manager.clock.call_later(when - self.manager.clock.now(), due)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()
        self._wake.clear()
        return fired.is_set()

    async def _do_probe_safely(self) -> bool:
        # A trigger that arrived before this run is answered by it.
        if not self._stopped:
            self._wake.clear()
        try:
            return await self.do_probe()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("probe worker %s/%s %s failed", self.uid, self.name, self.probe_type)
            return True

    async def do_probe(self) -> bool:
        """Probe once if the rules allow; False when the worker should end."""
        status = self.manager.container_status(self.uid, self.name)
        if status is None or not status.id:
            return True                      # not created yet, or gone: wait for news
        if status.id != self.container_id:
            if self.container_id:
                self.results.remove(self.container_id)
            self.container_id = status.id
            self._set(self.initial)
            self.on_hold = False             # a new container: probe it afresh
        if self.on_hold:
            return True
        if status.state is not ContainerState.RUNNING:
            self._set(results.Result.FAILURE)
            return status.state is not ContainerState.EXITED or \
                (self.pod.get("spec") or {}).get("restartPolicy") != "Never"
        if (self.pod.get("metadata") or {}).get("deletionTimestamp") and \
                self.probe_type in (LIVENESS, STARTUP):
            self._set(results.Result.SUCCESS)
            return False
        if int(self.manager.clock.wall().timestamp() - status.started_at) < self.initial_delay:
            return True
        started = self.manager.started(self.uid, self.name)
        if started == (self.probe_type == STARTUP):
            return True                      # startup is done, or the others wait for it
        self.runs += 1
        result = await self.manager.prober.probe(self.probe_type, self.pod, self.container,
                                                 self.container_id, self.manager.pod_ip(self.pod))
        if result is None or self._stopped:
            return True                      # errored (thrown away, as upstream), or stopping
        if result == self.last_result:
            self.result_run += 1
        else:
            self.last_result, self.result_run = result, 1
        threshold = self.failure_threshold if result is results.Result.FAILURE else self.success_threshold
        if self.result_run < threshold:
            return True
        self._set(result)
        if self.probe_type in (LIVENESS, STARTUP) and result is results.Result.FAILURE:
            # The kubelet will restart the container; probing it meanwhile only races the kill.
            self.on_hold = True
            self.result_run = 0
        return True

    def _set(self, result: results.Result) -> None:
        self.results.set(self.container_id, result, self.uid, self.name)
