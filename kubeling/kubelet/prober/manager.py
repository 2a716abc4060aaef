"""`ProbeManager`: the probe workers of every pod on the node, and what the kubelet asks of them.

Usage by the kubelet (the pod worker / sync loop)::

    probes = ProbeManager(runtime, record_event, pod_ip=lambda pod: ip_of(pod))
    probes.add_pod(pod)                     # on every sync: creates missing workers, refreshes
                                            # the pod object (deletionTimestamp) of existing ones
    probes.update_container(uid, status)    # each runtime ContainerStatus seen for the pod
    probes.started(uid, name) / ready(uid, name)     # for containerStatuses[].started / ready
    probes.liveness.get(container_id)       # FAILURE: kill & restart (computePodActions)
    probes.startup.get(container_id)        # FAILURE: kill & restart as well
    update = await probes.next_update()     # a `results.Update` whenever a result changes
    probes.remove_pod(uid)                  # pod terminated or deleted
    await probes.close()

One `Worker` (an asyncio task) per (pod uid, container name, probe type), for app containers
and for sidecars (init containers with ``restartPolicy: Always``), as upstream. Workers read
container state from what `update_container` last stored, so the manager never polls the
runtime. All methods except `next_update` and `close` are synchronous and must be called on
the event loop thread; `add_pod`, `update_container` and `remove_pod` are idempotent.

Readiness follows upstream: not ready until the container has started and its readiness worker
stored SUCCESS; a container without a readiness probe is ready once started. ``started`` is true
for a running container whose startup probe succeeded, or which has none. Asking `ready` about
a container its readiness worker has not seen yet triggers an immediate run, so readiness does
not wait a whole period after a container starts; a startup SUCCESS triggers one too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.kubelet.prober import results
from kubeling.kubelet.prober.prober import (
    LIVENESS,
    READINESS,
    SPEC_FIELD,
    STARTUP,
    Prober,
)
from kubeling.kubelet.prober.worker import Worker
from kubeling.kubelet.runtime import ContainerState, ContainerStatus



def probed_containers(pod: dict) -> list[dict]:
    """Containers that can have probes: app containers and sidecar init containers."""
    spec = pod.get("spec") or {}
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return sidecars + list(spec.get("containers") or [])


class ProbeManager:
    def __init__(self, runtime, record_event: Callable[..., Any], *,
                 pod_ip: Callable[[dict], str], clock: Clock | None = None,
                 prober: Prober | None = None, rand: Callable[[], float] = random.random) -> None:
        self.clock = clock or REAL_CLOCK
        self.prober = prober or Prober(runtime, record_event)
        self.pod_ip = pod_ip
        self.rand = rand
        self.started_at = self.clock.now()
        self._updates: asyncio.Queue[results.Update] = asyncio.Queue()
        self.liveness = results.ResultsManager(LIVENESS, self._publish)
        self.readiness_results = results.ResultsManager(READINESS, self._publish)
        self.startup = results.ResultsManager(STARTUP, self._publish)
        self._workers: dict[tuple[str, str, str], Worker] = {}
        self._statuses: dict[tuple[str, str], ContainerStatus] = {}

    # -- what workers use ------------------------------------------------------------------

    def results_for(self, probe_type: str) -> results.ResultsManager:
        return {LIVENESS: self.liveness, READINESS: self.readiness_results,
                STARTUP: self.startup}[probe_type]

    def container_status(self, uid: str, name: str) -> ContainerStatus | None:
        return self._statuses.get((uid, name))

    def _worker_ended(self, worker: Worker) -> None:
        key = (worker.uid, worker.name, worker.probe_type)
        if self._workers.get(key) is worker:
            del self._workers[key]

    def _publish(self, update: results.Update) -> None:
        self._updates.put_nowait(update)
        if update.probe_type == STARTUP and update.result is results.Result.SUCCESS:
            self._trigger(update.pod_uid, update.container_name, READINESS)

    def _trigger(self, uid: str, name: str, probe_type: str) -> None:
        worker = self._workers.get((uid, name, probe_type))
        if worker is not None:
            worker.trigger()

    # -- the kubelet's API -----------------------------------------------------------------

    def add_pod(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        for container in probed_containers(pod):
            for probe_type in (LIVENESS, READINESS, STARTUP):
                if not container.get(SPEC_FIELD[probe_type]):
                    continue
                key = (uid, container["name"], probe_type)
                worker = self._workers.get(key)
                if worker is not None:
                    worker.pod = pod
                    continue
                worker = self._workers[key] = Worker(self, pod, container, probe_type)
                self._adopt(worker, pod)
                worker.start()

    def _adopt(self, worker: Worker, pod: dict) -> None:
        """A worker made for a container already running (the agent restarted) starts from what
        the pod's status says of it, not from the probe's initial result: a ready container stays
        ready until its own probe says otherwise. New containers are unaffected: no status has
        marked their id ready or started yet."""
        field = {READINESS: "ready", STARTUP: "started"}.get(worker.probe_type)
        if field is None:
            return
        for s in (pod.get("status") or {}).get("containerStatuses") or []:
            cid = s.get("containerID") or ""
            if s.get("name") == worker.name and s.get(field) and "running" in (s.get("state") or {}) \
                    and "://" in cid:
                worker.container_id = cid.split("://", 1)[1]   # "<runtime>://<id>"
                worker.results.set(worker.container_id, results.Result.SUCCESS, worker.uid, worker.name)

    def remove_pod(self, uid: str) -> None:
        for key, worker in list(self._workers.items()):
            if key[0] == uid:
                worker.stop()
        for key in [k for k in self._statuses if k[0] == uid]:
            del self._statuses[key]

    def cleanup_pods(self, desired_uids: set[str]) -> None:
        """Stop the workers of every pod not in ``desired_uids`` (after a resync)."""
        for uid in {key[0] for key in self._workers} - set(desired_uids):
            self.remove_pod(uid)

    def update_container(self, uid: str, status: ContainerStatus) -> None:
        """Record the runtime's latest status of one container of pod ``uid``."""
        key = (uid, status.name)
        old = self._statuses.get(key)
        self._statuses[key] = status
        changed = old is None or old.id != status.id or old.state != status.state
        if changed and status.state is ContainerState.RUNNING:
            # A container just started: let its workers look now rather than next period.
            for probe_type in (STARTUP, READINESS, LIVENESS):
                self._trigger(uid, status.name, probe_type)

    def has_worker(self, uid: str, name: str, probe_type: str) -> bool:
        return (uid, name, probe_type) in self._workers

    def started(self, uid: str, name: str) -> bool:
        status = self._statuses.get((uid, name))
        if status is None or status.state is not ContainerState.RUNNING:
            return False
        result = self.startup.get(status.id)
        if result is not None:
            return result is results.Result.SUCCESS
        return not self.has_worker(uid, name, STARTUP)

    def ready(self, uid: str, name: str) -> bool:
        if not self.started(uid, name):
            return False
        status = self._statuses[(uid, name)]
        result = self.readiness_results.get(status.id)
        if result is not None:
            return result is results.Result.SUCCESS
        if self.has_worker(uid, name, READINESS):
            self._trigger(uid, name, READINESS)
            return False
        return True

    async def next_update(self) -> results.Update:
        return await self._updates.get()

    async def close(self) -> None:
        """Stop every worker and wait for them to end."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
