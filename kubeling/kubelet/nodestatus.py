"""`NodeStatus`: registration of the Node and its status (upstream's ``kubelet_node_status.go`` and
``nodestatus/setters.go``, plus the eviction manager's pressure conditions).

Registration (`register`): create the Node with default labels (``kubernetes.io/hostname``,
``kubernetes.io/os``, ``kubernetes.io/arch`` and their ``beta.`` forms), the
controller-managed-attach-detach annotation and a full status. If a Node of that name exists
(the agent restarted), adopt it: its default labels and the annotation are reconciled with a
patch and everything else (``spec.podCIDR``, taints, other labels) is left alone. Failures are
retried with backoff (100 ms doubling to 7 s) until ``stop``.

Status (`run`): every 10 s (nodeStatusUpdateFrequency, jittered 4 %) read the Node and the host,
compute the status, and patch ``nodes/<name>/status`` only when something other than heartbeat
times changed or 5 min (nodeStatusReportFrequency) passed since the last patch; the Lease is the
frequent heartbeat. A round that fails is retried up to 5 times at once. The patch is a strategic
merge patch of the changed fields: conditions merge by type (others' conditions survive),
addresses are replaced whole (their merge key is not unique), ``images`` is atomic.

What the status holds:
- capacity: cpu = online cpus, memory = MemTotal, pods = 110, ephemeral-storage = the size of
  the filesystem of ``root``, hugepages-<size> = the pages reserved; allocatable = capacity minus
  the hard eviction thresholds (memory.available, nodefs.available) and hugepages (from memory);
- conditions MemoryPressure, DiskPressure, PIDPressure from readings against the hard eviction
  thresholds (upstream's defaults: memory.available<100Mi, nodefs.available<10%,
  nodefs.inodesFree<5%, imagefs.available<15%, imagefs.inodesFree<5%; pid.available has no
  default and counts when given). A pressure condition stays True for 5 min after the last
  reading under the threshold (evictionPressureTransitionPeriod), so it does not flap;
- Ready: True ``KubeletReady`` unless the runtime's ``version()`` fails or a health check
  reports an error: then False ``KubeletNotReady`` with the errors as the message;
- lastHeartbeatTime is the time of the computation; lastTransitionTime moves only when the
  status does;
- nodeInfo, addresses (InternalIP, Hostname), daemonEndpoints, and the 50 largest images with up
  to 5 names each (digests first, as upstream).

Seams: ``host`` (`stats.Host` or `stats.FixedHost`), ``clock`` (`kubeling.client.clock.Clock`),
``health_checks`` (callables, plain or async, returning an error string or None), ``images`` may
be None (hollow nodes).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import random
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kubeling.api import quantity
from kubeling.api.errors import StatusError
from kubeling.api.schema import KUBE_VERSION
from kubeling.client.clock import REAL_CLOCK, Clock, sleep_or_stop
from kubeling.client.exceptions import TransportError
from kubeling.kubelet.stats import FsStats, Host, MachineInfo

log = logging.getLogger(__name__)

KUBELET_VERSION = f"v{KUBE_VERSION}-kubeling"
MAX_PODS = 110
UPDATE_FREQUENCY = 10.0
REPORT_FREQUENCY = 300.0
PRESSURE_TRANSITION_PERIOD = 300.0
UPDATE_RETRIES = 5
MAX_IMAGES, MAX_NAMES_PER_IMAGE = 50, 5
CMAD_ANNOTATION = "volumes.kubernetes.io/controller-managed-attach-detach"

DEFAULT_EVICTION_HARD = {"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
                         "imagefs.available": "15%", "imagefs.inodesFree": "5%"}

# (type, (reason, message) when fine, (reason, message) under pressure), in kubectl's order.
PRESSURE_CONDITIONS = [
    ("MemoryPressure", ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
     ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available")),
    ("DiskPressure", ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
     ("KubeletHasDiskPressure", "kubelet has disk pressure")),
    ("PIDPressure", ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
     ("KubeletHasInsufficientPID", "kubelet has insufficient PID available")),
]
SIGNAL_CONDITION = {"memory": "MemoryPressure", "nodefs": "DiskPressure", "imagefs": "DiskPressure",
                    "pid": "PIDPressure"}
OUR_CONDITIONS = [t for t, _, _ in PRESSURE_CONDITIONS] + ["Ready"]
STATUS_FIELDS = ("capacity", "allocatable", "conditions", "addresses", "daemonEndpoints", "nodeInfo", "images")

_FAULTS = (StatusError, TransportError, OSError, asyncio.TimeoutError)


def _float32(x: float) -> float:
    # Upstream keeps threshold percentages as float32: 10% is 0.10000000149..., which shows in
    # allocatable ephemeral-storage; computing it the same way gives the same bytes.
    return struct.unpack("f", struct.pack("f", x))[0]


def _threshold(value: str, capacity: int) -> int:
    if value.endswith("%"):
        return int(capacity * _float32(float(value[:-1]) / 100))
    return quantity.value(value)


def _aggregate(errors: list[str]) -> str:
    """apimachinery's aggregate error text: one message alone, several in brackets."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


class Observation:
    """One round of readings."""

    def __init__(self, machine: MachineInfo, memory_available: int, nodefs: FsStats, imagefs: FsStats,
                 pids: tuple[int, int], images: list, runtime_version: str, errors: list[str]) -> None:
        self.machine, self.memory_available = machine, memory_available
        self.nodefs, self.imagefs, self.pids = nodefs, imagefs, pids
        self.images, self.runtime_version, self.errors = images, runtime_version, errors


class NodeStatus:
    """Register one Node and keep its status. See the module docstring."""

    def __init__(self, client: Any, node_name: str, *, root: str | Path, runtime: Any, images: Any,
                 address: str, kubelet_port: int, labels: dict[str, str] | None = None,
                 hostname: str | None = None, clock: Clock | None = None, host: Any = None,
                 eviction_hard: dict[str, str] | None = None, health_checks: Iterable[Callable] = (),
                 max_pods: int = MAX_PODS, update_frequency: float = UPDATE_FREQUENCY,
                 report_frequency: float = REPORT_FREQUENCY,
                 pressure_transition_period: float = PRESSURE_TRANSITION_PERIOD) -> None:
        self.client = client
        self.node_name = node_name
        self.root = Path(root)
        self.runtime, self.images = runtime, images
        self.address, self.kubelet_port = address, kubelet_port
        self.hostname = hostname or node_name
        self.labels = dict(labels or {})
        self.clock = clock or REAL_CLOCK
        self.host = host or Host()
        self.eviction_hard = dict(DEFAULT_EVICTION_HARD if eviction_hard is None else eviction_hard)
        self.health_checks = list(health_checks)
        self.max_pods = max_pods
        self.update_frequency, self.report_frequency = update_frequency, report_frequency
        self.pressure_transition_period = pressure_transition_period
        self.pod_cidr = ""                       # spec.podCIDR as last read
        self._last_report: float | None = None  # monotonic time of the last status patch
        self._pressure_seen: dict[str, float] = {}  # condition type -> last time a threshold was met

    def get_pod_cidr(self) -> str:
        """The node's podCIDR ("" until the IPAM controller assigns one): the hollow runtime's getter."""
        return self.pod_cidr

    # -- registration ------------------------------------------------------------------------------

    def default_labels(self, machine: MachineInfo) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.hostname, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": machine.architecture, "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": machine.architecture}

    async def initial_node(self) -> dict:
        obs = await self.observe()
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": {**self.default_labels(obs.machine), **self.labels},
                             "annotations": {CMAD_ANNOTATION: "true"}},
                "spec": {}, "status": self.build_status({}, obs)}

    async def register(self, stop: asyncio.Event | None = None) -> dict | None:
        """Create or adopt the Node and return it; retry until that succeeds, or return None
        once ``stop`` is set."""
        delay = 0.1
        while True:
            try:
                node = await self._try_register()
                self.pod_cidr = (node.get("spec") or {}).get("podCIDR", "")
                return node
            except _FAULTS as e:
                delay = min(2 * delay, 7.0)
                log.error("node %s: registration failed, retrying in %.1fs: %s", self.node_name, delay, e)
            if await self._sleep(delay, stop):
                return None

    async def _try_register(self) -> dict:
        node = await self.initial_node()
        try:
            created = await self.client.create("", "v1", "nodes", node)
            log.info("node %s: registered", self.node_name)
            return created
        except StatusError as e:
            if e.code != 409:
                raise
        existing = await self.client.get("", "v1", "nodes", self.node_name)
        log.info("node %s: was registered before; adopting it", self.node_name)
        meta = existing.get("metadata") or {}
        have_labels, have_annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        labels = {k: v for k, v in node["metadata"]["labels"].items() if have_labels.get(k) != v}
        patch: dict = {"metadata": {}}
        if labels:
            patch["metadata"]["labels"] = labels
        if have_annotations.get(CMAD_ANNOTATION) != "true":
            patch["metadata"]["annotations"] = {CMAD_ANNOTATION: "true"}
        if patch["metadata"]:
            existing = await self.client.patch("", "v1", "nodes", self.node_name, patch, patch_type="merge")
        return existing

    # -- status loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for attempt in range(UPDATE_RETRIES):
                try:
                    await self.update()
                    break
                except _FAULTS as e:
                    log.error("node %s: status update failed (attempt %d): %s", self.node_name, attempt + 1, e)
            if await self._sleep(self.update_frequency * (1 + 0.04 * random.random()), stop):
                return

    async def update(self) -> bool:
        """One round: read the Node and the host, patch the status if it is due. True if patched."""
        node = await self.client.get("", "v1", "nodes", self.node_name)
        self.pod_cidr = (node.get("spec") or {}).get("podCIDR", "")
        old = node.get("status") or {}
        new = self.build_status(old, await self.observe())
        now = self.clock.now()
        changed = _comparable(old) != _comparable(new)
        if not changed and self._last_report is not None and now - self._last_report < self.report_frequency:
            return False
        await self.client.patch("", "v1", "nodes", self.node_name, {"status": _patch(old, new)},
                                subresource="status", patch_type="strategic")
        self._last_report = now
        return True

    async def observe(self) -> Observation:
        host = self.host

        def read() -> tuple:
            return host.machine_info(), host.memory(), host.fs(self.root), host.pids()

        machine, memory, nodefs, pids = await asyncio.to_thread(read)
        errors: list[str] = []
        runtime_version = ""
        try:
            v = await self.runtime.version()
            runtime_version = f"{v.get('runtime_name', self.runtime.name)}://{v.get('runtime_version', '')}"
        except Exception as e:  # noqa: BLE001 - any failure of the runtime means "down"
            errors.append(f"container runtime is down: {e}" if str(e) else "container runtime is down")
        for check in self.health_checks:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                errors.append(str(result))
        images, imagefs = [], nodefs
        if self.images is not None:
            try:
                images = await self.images.list_images()
                info = await self.images.fs_info()
                imagefs = FsStats(capacity_bytes=info["capacity_bytes"], available_bytes=info["available_bytes"],
                                  used_bytes=info.get("used_bytes", 0), inodes=nodefs.inodes,
                                  inodes_free=info.get("inodes_free", nodefs.inodes_free))
            except Exception as e:  # noqa: BLE001 - an image store fault must not stop the heartbeat
                log.warning("node %s: image store not readable: %s", self.node_name, e)
        return Observation(machine, memory.available_bytes, nodefs, imagefs, pids, images, runtime_version, errors)

    # -- the status ----------------------------------------------------------------------------------

    def build_status(self, old: dict, obs: Observation) -> dict:
        """The status this round, against the Node's current one (for transition times)."""
        wall = self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        capacity, allocatable = self._resources(obs)
        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": self._conditions(old.get("conditions") or [], obs, wall),
            "addresses": [{"type": "InternalIP", "address": self.address},
                          {"type": "Hostname", "address": self.hostname}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": self._node_info(obs),
            "images": _images(obs.images),
        }

    def _resources(self, obs: Observation) -> tuple[dict, dict]:
        m = obs.machine
        capacity = {"cpu": str(m.num_cores), "ephemeral-storage": quantity.format(obs.nodefs.capacity_bytes,
                                                                                  quantity.BINARY_SI),
                    "memory": quantity.format(m.memory_capacity, quantity.BINARY_SI), "pods": str(self.max_pods)}
        for name, size in m.hugepages.items():
            capacity[name] = quantity.format(size, quantity.BINARY_SI)
        hugepages = sum(m.hugepages.values())
        memory = m.memory_capacity - hugepages
        storage = obs.nodefs.capacity_bytes
        if "memory.available" in self.eviction_hard:
            memory -= _threshold(self.eviction_hard["memory.available"], m.memory_capacity)
        if "nodefs.available" in self.eviction_hard:
            storage -= _threshold(self.eviction_hard["nodefs.available"], obs.nodefs.capacity_bytes)
        allocatable = dict(capacity)
        allocatable["memory"] = quantity.format(max(memory, 0), quantity.BINARY_SI)
        allocatable["ephemeral-storage"] = quantity.format(max(storage, 0), quantity.BINARY_SI)
        return capacity, allocatable

    def _pressure(self, obs: Observation) -> set[str]:
        """Conditions under pressure now, counting the transition period."""
        readings = {
            "memory.available": (obs.memory_available, obs.machine.memory_capacity),
            "nodefs.available": (obs.nodefs.available_bytes, obs.nodefs.capacity_bytes),
            "nodefs.inodesFree": (obs.nodefs.inodes_free, obs.nodefs.inodes),
            "imagefs.available": (obs.imagefs.available_bytes, obs.imagefs.capacity_bytes),
            "imagefs.inodesFree": (obs.imagefs.inodes_free, obs.imagefs.inodes),
            "pid.available": (obs.pids[0] - obs.pids[1], obs.pids[0]),
        }
        now = self.clock.now()
        for signal, value in self.eviction_hard.items():
            available, capacity = readings.get(signal, (None, 0))
            if available is not None and capacity > 0 and available < _threshold(value, capacity):
                self._pressure_seen[SIGNAL_CONDITION[signal.split(".")[0]]] = now
        return {c for c, seen in self._pressure_seen.items() if now - seen < self.pressure_transition_period}

    def _conditions(self, old: list[dict], obs: Observation, wall: str) -> list[dict]:
        by_type = {c.get("type"): c for c in old}
        pressure = self._pressure(obs)
        wanted = []
        for ctype, fine, bad in PRESSURE_CONDITIONS:
            under = ctype in pressure
            reason, message = bad if under else fine
            wanted.append((ctype, "True" if under else "False", reason, message))
        if obs.errors:
            wanted.append(("Ready", "False", "KubeletNotReady", _aggregate(obs.errors)))
        else:
            wanted.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
        out = []
        for ctype, status, reason, message in wanted:
            prev = by_type.get(ctype) or {}
            moved = prev.get("status") != status or not prev.get("lastTransitionTime")
            out.append({"type": ctype, "status": status, "lastHeartbeatTime": wall,
                        "lastTransitionTime": wall if moved else prev["lastTransitionTime"],
                        "reason": reason, "message": message})
        return out

    def _node_info(self, obs: Observation) -> dict:
        m = obs.machine
        return {"machineID": m.machine_id, "systemUUID": m.system_uuid, "bootID": m.boot_id,
                "kernelVersion": m.kernel_version, "osImage": m.os_image,
                "containerRuntimeVersion": obs.runtime_version, "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": m.architecture}

    async def _sleep(self, delay: float, stop: asyncio.Event | None) -> bool:
        """Sleep ``delay`` on the clock; True if ``stop`` was set first."""
        return await sleep_or_stop(self.clock, delay, stop)


def _images(images: list) -> list[dict]:
    """The largest images first, at most 50, each with at most 5 names (digests, then tags)."""
    out = []
    for image in sorted(images, key=lambda i: -i.size)[:MAX_IMAGES]:
        names = (list(image.repo_digests) + list(image.repo_tags))[:MAX_NAMES_PER_IMAGE]
        out.append({"names": names, "sizeBytes": image.size})
    return out


def _comparable(status: dict) -> dict:
    """The status fields we own, without heartbeat times (they change every round)."""
    out = {k: copy.deepcopy(status.get(k)) for k in STATUS_FIELDS}
    # The server stores quantities in canonical form ("96636764000" comes back "96636764k"):
    # compare values, or every round would look like a change and patch the Node.
    for key in ("capacity", "allocatable"):
        out[key] = {k: _milli(v) for k, v in (out[key] or {}).items()}
    conditions = [c for c in out["conditions"] or [] if c.get("type") in OUR_CONDITIONS]
    for c in conditions:
        c.pop("lastHeartbeatTime", None)
    out["conditions"] = sorted(conditions, key=lambda c: c["type"])
    out["images"] = out["images"] or []
    return out


def _milli(q: Any) -> Any:
    try:
        return quantity.milli_value(q)
    except Exception:  # noqa: BLE001 - not a quantity: compare it as it is
        return q


def _patch(old: dict, new: dict) -> dict:
    """A strategic merge patch taking ``old`` to ``new`` for the fields we own."""
    patch: dict = {"conditions": new["conditions"]}
    for key in ("capacity", "allocatable"):
        was = old.get(key) or {}
        diff = {k: v for k, v in new[key].items() if k not in was or _milli(was[k]) != _milli(v)}
        diff.update({k: None for k in was if k not in new[key]})
        if diff:
            patch[key] = diff
    if old.get("addresses") != new["addresses"]:
        # The merge key (type) is not unique among addresses: replace the list whole.
        patch["addresses"] = [{"$patch": "replace"}] + new["addresses"]
    for key in ("daemonEndpoints", "nodeInfo", "images"):
        if (old.get(key) or ([] if key == "images" else {})) != new[key]:
            patch[key] = new[key]
    return patch
