"""Effective pod resources: upstream's ``k8s.io/component-helpers/resource``.

`pod_requests` is what the scheduler fits, quota charges and the kubelet sizes the pod cgroup by:
regular containers and sidecars (init containers with ``restartPolicy: Always``) add up; a plain
init container runs alone beside the sidecars started before it, so it counts as a maximum;
``spec.overhead`` is added. Values are exact decimals keyed by resource name.

`compute_qos` is the pod's QoS class, which the API server reports, the kubelet sizes cgroups
and OOM scores by, and quota scopes (BestEffort) match on.
"""

from __future__ import annotations

from decimal import Decimal

from kubeling.api import quantity

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
QOS_RESOURCES = ("cpu", "memory")


def _decimal(value) -> Decimal | None:
    try:
        return quantity._coerce(value).decimal
    except (ValueError, TypeError):
        return None


def compute_qos(pod: dict) -> str:
    """The QoS class from the pod's containers (upstream's ``ComputePodQOS``: only cpu and memory count)."""
    spec = pod.get("spec") or {}
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for name, q in _resources(c, "requests").items():
            v = _decimal(q) if name in QOS_RESOURCES else None
            if v is not None and v > 0:
                requests[name] = requests.get(name, Decimal(0)) + v
        found = set()
        for name, q in _resources(c, "limits").items():
            v = _decimal(q) if name in QOS_RESOURCES else None
            if v is not None and v > 0:
                found.add(name)
                limits[name] = limits.get(name, Decimal(0)) + v
        if not found.issuperset(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return BEST_EFFORT
    if guaranteed and all(limits.get(n) == v for n, v in requests.items()) and len(requests) == len(limits):
        return GUARANTEED
    return BURSTABLE


def _resources(container: dict, kind: str) -> dict:
    return (container.get("resources") or {}).get(kind) or {}


def _is_sidecar(container: dict) -> bool:
    return container.get("restartPolicy") == "Always"


def _add(total: dict[str, Decimal], resources: dict) -> None:
    for name, q in resources.items():
        v = _decimal(q)
        if v is not None:
            total[name] = total.get(name, Decimal(0)) + v


def _max_into(total: dict[str, Decimal], other: dict[str, Decimal]) -> None:
    for name, v in other.items():
        if v > total.get(name, Decimal(-1)):
            total[name] = v


def _pod_sum(pod: dict, kind: str) -> dict[str, Decimal]:
    """Effective pod requests or limits: regular containers and sidecars add up; a plain init
    container runs alone beside the sidecars started before it, so it counts as the maximum."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        _add(total, _resources(c, kind))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for c in spec.get("initContainers") or []:
        if _is_sidecar(c):
            _add(total, _resources(c, kind))
            _add(sidecars, _resources(c, kind))
            running = dict(sidecars)
        else:
            running = dict(sidecars)
            _add(running, _resources(c, kind))
        _max_into(init_peak, running)
    _max_into(total, init_peak)
    overhead = spec.get("overhead") or {}
    if kind == "requests":
        _add(total, overhead)
    else:
        # Overhead raises a limit only where one is set: it must not invent a limit.
        _add(total, {k: v for k, v in overhead.items() if k in total})
    return total


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """Upstream's ``resource.PodRequests`` (with overhead), as exact decimals."""
    return _pod_sum(pod, "requests")


def pod_limits(pod: dict) -> dict[str, Decimal]:
    """Upstream's ``resource.PodLimits`` (overhead only on declared limits)."""
    return _pod_sum(pod, "limits")
