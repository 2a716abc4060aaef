"""The pod-failure back-off: upstream's ``pkg/controller/job/backoff_utils.go``.

A Job's replacement pods are created after ``10 s · 2^(n-1)`` (capped at 6 minutes), where
``n`` is the number of pod failures since the last success, counted from the last failure's
finish time. The record per Job key lives in memory only (a restarted controller starts with
no back-off, as upstream's does) and is updated only after the status holding those pods was
written, so a failed write never counts a pod twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from kubeling.controllers.controller_utils import parse_time

DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0


@dataclass(frozen=True)
class BackoffRecord:
    key: str
    failures_after_last_success: int = 0
    last_failure_time: dt.datetime | None = None

    def remaining(self, now: dt.datetime, initial: float = DEFAULT_BACKOFF, cap: float = MAX_BACKOFF) -> float:
        """Seconds left before a replacement may be created (0: now)."""
        if self.failures_after_last_success == 0 or self.last_failure_time is None:
            return 0.0
        delay = initial
        for _ in range(1, self.failures_after_last_success):
            delay *= 2
            if delay >= cap:
                delay = cap
                break
        elapsed = (now - self.last_failure_time).total_seconds()
        return max(delay - elapsed, 0.0)


def finish_time(pod: dict, now: dt.datetime) -> dt.datetime:
    """When a pod finished: its last container's finishedAt, else its deletion, else ``now``."""
    status = pod.get("status") or {}
    times = [parse_time((cs.get("state") or {}).get("terminated", {}).get("finishedAt"))
             for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])]
    times = [t for t in times if t is not None]
    if times:
        return max(times)
    return parse_time(pod["metadata"].get("deletionTimestamp")) or now


class BackoffStore:
    def __init__(self) -> None:
        self._records: dict[str, BackoffRecord] = {}

    def get(self, key: str) -> BackoffRecord:
        return self._records.get(key) or BackoffRecord(key)

    def update(self, record: BackoffRecord) -> None:
        self._records[record.key] = record

    def remove(self, key: str) -> None:
        self._records.pop(key, None)

    def new_record(self, key: str, succeeded: list[dict], failed: list[dict], now: dt.datetime) -> BackoffRecord:
        """The record once the newly finished pods are counted."""
        rec = self.get(key)
        if not succeeded and not failed:
            return rec
        failed_times = sorted(finish_time(p, now) for p in failed)
        if not succeeded:
            return BackoffRecord(key, rec.failures_after_last_success + len(failed), failed_times[-1])
        last_success = max(finish_time(p, now) for p in succeeded)
        after = [t for t in failed_times if t > last_success]
        return BackoffRecord(key, len(after), after[-1] if after else None)
