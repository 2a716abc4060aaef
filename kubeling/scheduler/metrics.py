"""The scheduler's metrics, named as upstream's ``pkg/scheduler/metrics`` (prometheus_client,
default registry; no HTTP endpoint yet).

- ``scheduler_scheduling_attempt_duration_seconds{result, profile}``: one scheduling cycle,
  ``result`` is ``scheduled`` | ``unschedulable`` | ``error``;
- ``scheduler_pending_pods{queue}``: pods in the ``active``, ``backoff``, ``unschedulable`` and
  ``gated`` sub-queues;
- ``scheduler_schedule_attempts_total{result, profile}``;
- ``scheduler_pod_scheduling_sli_duration_seconds``: from first entering the queue to bound.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))   # 1 ms .. 16 s, as upstream's exponential buckets

scheduling_attempt_duration = Histogram(
    "scheduler_scheduling_attempt_duration_seconds", "Scheduling attempt latency in seconds",
    ["result", "profile"], buckets=_BUCKETS)
schedule_attempts = Counter(
    "scheduler_schedule_attempts", "Number of attempts to schedule pods, by the result",
    ["result", "profile"])
pending_pods = Gauge("scheduler_pending_pods", "Number of pending pods, by the queue type", ["queue"])
pod_scheduling_sli_duration = Histogram(
    "scheduler_pod_scheduling_sli_duration_seconds",
    "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue",
    ["attempts"], buckets=_BUCKETS)

SCHEDULED, UNSCHEDULABLE, ERROR = "scheduled", "unschedulable", "error"


def observe_attempt(result: str, profile: str, seconds: float) -> None:
    scheduling_attempt_duration.labels(result, profile).observe(seconds)
    schedule_attempts.labels(result, profile).inc()


def set_pending(active: int, backoff: int, unschedulable: int, gated: int) -> None:
    pending_pods.labels("active").set(active)
    pending_pods.labels("backoff").set(backoff)
    pending_pods.labels("unschedulable").set(unschedulable)
    pending_pods.labels("gated").set(gated)
