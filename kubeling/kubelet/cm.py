"""The container manager's pure half (upstream's ``pkg/kubelet/cm`` and ``pkg/kubelet/qos``):
a pod's QoS class, its cgroup parent, and the cgroup values of pods and containers.

Everything here is a function of the pod object (a plain dict, as on the wire) and, for the OOM
score, of the node's memory capacity. Nothing touches cgroupfs: the runtime writes what these
functions compute, so the same numbers serve runc and the hollow runtime.

Cgroup layout (relative to the runtime's ``cgroup_root``), as upstream's QoS container manager::

    kubepods/                      node allocatable; Guaranteed pods sit directly below
    kubepods/pod<uid>/             a Guaranteed pod
    kubepods/burstable/pod<uid>/   a Burstable pod
    kubepods/besteffort/pod<uid>/  a BestEffort pod

Contracts:
- `compute_qos` is upstream's ``ComputePodQOS``: only cpu and memory count, init containers
  included, ephemeral containers not; `pod_qos` prefers ``status.qosClass`` once set, because a
  pod's class never changes after admission.
- `container_resources` is ``generateLinuxContainerResources``: shares from the cpu request (a
  limit alone stands for the request, as the API server would have defaulted it), minimum 2;
  CFS period always 100000 us, quota from the cpu limit (minimum 1000 us, 0 = unlimited); memory
  limit in bytes; ``oom_score_adj`` from `oom_score_adj`.
- `pod_resources` is ``ResourceConfigForPod``: the pod cgroup gets shares from the effective pod
  requests (init containers and sidecars counted as upstream's ``PodRequests``), quota and
  memory only when every container declares that limit (always for Guaranteed), and the minimum
  shares for BestEffort.
- Quantities that do not parse are treated as absent: validation rejected them long before a
  pod reaches a node, so this only guards against hand-made test objects.
"""

from __future__ import annotations

from decimal import Decimal

from kubeling.api import quantity
from kubeling.api.resource import (
    BEST_EFFORT,
    BURSTABLE,
    GUARANTEED,
    compute_qos,
    pod_limits,
    pod_requests,
)
from kubeling.kubelet.runtime import LinuxResources

ROOT = "kubepods"
MIN_SHARES, MAX_SHARES, SHARES_PER_CPU = 2, 262144, 1024
QUOTA_PERIOD, MIN_QUOTA_PERIOD = 100_000, 1000

# OOM score adjustments (qos/policy.go): the kubelet itself sits at -999, so a Guaranteed
# container (-997) is killed before it but after every Burstable one (3..999).
GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
NODE_CRITICAL_CLASS = "system-node-critical"


def _decimal(value) -> Decimal | None:
    try:
        return quantity._coerce(value).decimal
    except (ValueError, TypeError):
        return None


def _milli(value) -> int:
    try:
        return quantity.milli_value(value)
    except (ValueError, TypeError):
        return 0


def _bytes(value) -> int:
    try:
        return quantity.value(value)
    except (ValueError, TypeError):
        return 0


def _ceil(v: Decimal) -> int:
    """Round up, as ``Quantity.MilliValue``/``Value`` do."""
    return int(v.to_integral_value(rounding="ROUND_CEILING"))


def _resources(container: dict, kind: str) -> dict:
    return (container.get("resources") or {}).get(kind) or {}


def _is_sidecar(container: dict) -> bool:
    return container.get("restartPolicy") == "Always"


# -- QoS -------------------------------------------------------------------------------------

def pod_qos(pod: dict) -> str:
    """``status.qosClass`` when the API server has set it, else `compute_qos`."""
    return (pod.get("status") or {}).get("qosClass") or compute_qos(pod)


def cgroup_parent(pod: dict, root: str = ROOT) -> str:
    """The pod's cgroup, relative to the runtime's cgroup root: ``kubepods/burstable/pod<uid>``."""
    uid = (pod.get("metadata") or {}).get("uid", "")
    qos = pod_qos(pod)
    if qos == GUARANTEED:
        return f"{root}/pod{uid}"
    return f"{root}/{'burstable' if qos == BURSTABLE else 'besteffort'}/pod{uid}"


# -- cpu conversions ---------------------------------------------------------------------------

def milli_cpu_to_shares(milli_cpu: int) -> int:
    """cpu.shares for a request: 1024 per cpu, clamped to [2, 262144]."""
    if milli_cpu == 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli_cpu * SHARES_PER_CPU // 1000))


def milli_cpu_to_quota(milli_cpu: int, period: int = QUOTA_PERIOD) -> int:
    """cfs_quota_us for a limit over ``period``; 0 (no limit) for 0, at least 1 ms otherwise
    (the kernel refuses smaller quotas)."""
    if milli_cpu == 0:
        return 0
    return max(MIN_QUOTA_PERIOD, milli_cpu * period // 1000)


# -- containers ---------------------------------------------------------------------------------

def is_critical(pod: dict) -> bool:
    """Static, mirror, or system-critical-priority pods (``kubelettypes.IsCriticalPod``)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get("kubernetes.io/config.mirror") is not None:
        return True
    source = annotations.get("kubernetes.io/config.source")
    if source is not None and source != "api":
        return True
    priority = (pod.get("spec") or {}).get("priority")
    return priority is not None and priority >= SYSTEM_CRITICAL_PRIORITY


def is_node_critical(pod: dict) -> bool:
    return is_critical(pod) and (pod.get("spec") or {}).get("priorityClassName") == NODE_CRITICAL_CLASS


def oom_score_adj(pod: dict, container: dict, memory_capacity: int) -> int:
    """The container's oom_score_adj (upstream's ``GetContainerOOMScoreAdjust``)."""
    if is_node_critical(pod):
        return GUARANTEED_OOM_SCORE_ADJ
    qos = pod_qos(pod)
    if qos == GUARANTEED:
        return GUARANTEED_OOM_SCORE_ADJ
    if qos == BEST_EFFORT:
        return BEST_EFFORT_OOM_SCORE_ADJ
    capacity = max(memory_capacity, 1)
    # A container asking for 10% of the node's memory scores 900: using more than it asked
    # for makes its processes the kernel's first choice among Burstable ones.
    adj = 1000 - (1000 * _bytes(_resources(container, "requests").get("memory", 0))) // capacity
    regular = (pod.get("spec") or {}).get("containers") or []
    if _is_sidecar(container) and regular:
        # A sidecar must not outlive the containers it serves: never score below the most
        # protected regular container.
        smallest = min(_bytes(_resources(c, "requests").get("memory", 0)) for c in regular)
        adj = min(adj, 1000 - (1000 * smallest) // capacity)
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if adj == BEST_EFFORT_OOM_SCORE_ADJ:
        return adj - 1
    return adj


def container_resources(pod: dict, container: dict, memory_capacity: int, *,
                        cfs_quota: bool = True, period: int = QUOTA_PERIOD) -> LinuxResources:
    """The container's cgroup values from its requests and limits."""
    requests, limits = _resources(container, "requests"), _resources(container, "limits")
    cpu_limit = _milli(limits.get("cpu", 0))
    # An absent request with a limit means "request = limit" (the API server defaults it so,
    # but objects written before that default must behave the same).
    cpu_request = _milli(requests["cpu"]) if "cpu" in requests else cpu_limit
    res = LinuxResources(cpu_shares=milli_cpu_to_shares(cpu_request),
                         memory_limit_bytes=_bytes(limits.get("memory", 0)),
                         oom_score_adj=oom_score_adj(pod, container, memory_capacity))
    if cfs_quota:
        res.cpu_period = period
        res.cpu_quota = milli_cpu_to_quota(cpu_limit, period)
    return res


# -- pods ------------------------------------------------------------------------------------------
# pod_requests / pod_limits live in kubeling.api.resource (upstream's component-helpers/resource).

def _all_declare(pod: dict, name: str) -> bool:
    spec = pod.get("spec") or {}
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        v = _decimal(_resources(c, "limits").get(name, 0))
        if not v:
            return False
    return True


def pod_resources(pod: dict, *, cfs_quota: bool = True, period: int = QUOTA_PERIOD,
                  pids_limit: int = 0) -> LinuxResources:
    """The pod cgroup's values (upstream's ``ResourceConfigForPod``); 0 means "leave unset"."""
    qos = pod_qos(pod)
    res = LinuxResources(pids_limit=pids_limit)
    if qos == BEST_EFFORT:
        res.cpu_shares = MIN_SHARES
        return res
    requests, limits = pod_requests(pod), pod_limits(pod)
    cpu_req = _ceil(requests.get("cpu", Decimal(0)) * 1000)
    cpu_lim = _ceil(limits.get("cpu", Decimal(0)) * 1000)
    mem_lim = _ceil(limits.get("memory", Decimal(0)))
    res.cpu_shares = milli_cpu_to_shares(cpu_req)
    if cfs_quota and (qos == GUARANTEED or _all_declare(pod, "cpu")):
        res.cpu_period, res.cpu_quota = period, milli_cpu_to_quota(cpu_lim, period)
    if qos == GUARANTEED or _all_declare(pod, "memory"):
        res.memory_limit_bytes = mem_lim
    return res
