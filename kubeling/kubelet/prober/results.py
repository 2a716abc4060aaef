"""The probe results cache (upstream's ``prober/results``): the latest result per container id.

One `ResultsManager` per probe type. Workers `set` results; the kubelet reads them with `get`
(computePodActions asks the liveness and startup caches whether to kill a container; the status
manager asks the readiness cache whether a container is ready).

Contract:
- `set` publishes an `Update` through the ``publish`` callable only when the stored value
  *changes* (a first value counts as a change), so a steady state is silent.
- `remove` forgets a container id without publishing: its container is gone.
- All calls are synchronous and happen on the event loop thread; no locking is needed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Result(str, enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"      # a startup probe that has not decided yet: neither kill nor started


@dataclass(frozen=True)
class Update:
    pod_uid: str
    container_name: str
    probe_type: str          # "liveness" | "readiness" | "startup"
    container_id: str
    result: Result


class ResultsManager:
    def __init__(self, probe_type: str, publish: Callable[[Update], None] | None = None) -> None:
        self.probe_type = probe_type
        self._publish = publish
        self._results: dict[str, Result] = {}

    def get(self, container_id: str) -> Result | None:
        return self._results.get(container_id)

    def set(self, container_id: str, result: Result, pod_uid: str, container_name: str) -> None:
        if self._results.get(container_id) == result:
            return
        self._results[container_id] = result
        if self._publish is not None:
            self._publish(Update(pod_uid, container_name, self.probe_type, container_id, result))

    def remove(self, container_id: str) -> None:
        self._results.pop(container_id, None)

    def __len__(self) -> int:
        return len(self._results)
