"""Node and pod statistics: the host readings (the part of cAdvisor the kubelet needs), the
``/stats/summary`` document (``statsapi.Summary``) and ``/metrics/resource`` (Prometheus text).

Host readings (`Host`): machine info (online cpus, MemTotal, machine-id, boot id, kernel,
os-release), memory from the root memory cgroup (working set = usage - inactive file, as
cAdvisor; /proc/meminfo when there is no cgroup v1 memory controller), cpu from the root
``cpuacct.usage`` (/proc/stat otherwise), filesystems by ``statvfs`` and pids from
``pid_max``/``threads-max`` and /proc/loadavg. `FixedHost` returns set numbers: for tests that
simulate pressure and for hollow nodes, which must not each read the host.

Pods (`StatsProvider`): built from the runtime, as upstream's CRI stats provider: every READY
sandbox is a pod (``podRef`` from the sandbox), every RUNNING container in it a container; cpu and
memory from ``container_stats``/``sandbox_stats``; logs from
``logs/pods/<ns>_<name>_<uid>/<container>/``; the pod network from ``/proc/<pid>/net/dev`` of one
of its containers (they share the sandbox's network namespace).

``usageNanoCores`` is a rate: it needs the previous cumulative reading of the same object, so a
`StatsProvider` keeps one sample per node/pod/container id and reports the rate from the second
call on (upstream's summary omits it at first too). Host reads and directory walks run in a
thread; a runtime error for one container leaves that container out and sets
``resource_scrape_error 1``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubeling.kubelet.runtime import ContainerState, RuntimeError_, SandboxState

USER_HZ = 100
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
                 "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


@dataclass
class FsStats:
    capacity_bytes: int = 0
    available_bytes: int = 0
    used_bytes: int = 0
    inodes: int = 0
    inodes_free: int = 0


@dataclass
class MemoryStats:
    capacity_bytes: int = 0
    usage_bytes: int = 0
    working_set_bytes: int = 0
    rss_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0

    @property
    def available_bytes(self) -> int:
        return max(0, self.capacity_bytes - self.working_set_bytes)


@dataclass
class MachineInfo:
    num_cores: int = 1
    memory_capacity: int = 0
    hugepages: dict[str, int] = field(default_factory=dict)   # "hugepages-2Mi" -> bytes reserved
    machine_id: str = ""
    system_uuid: str = ""
    boot_id: str = ""
    boot_time: float = 0.0
    kernel_version: str = ""
    os_image: str = ""
    architecture: str = "amd64"


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _count_cpus(spec: str) -> int:
    """Count a cpu list such as ``0-3,6``."""
    n = 0
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            n += int(hi) - int(lo) + 1
        elif part.strip():
            n += 1
    return n


def _kv(text: str, sep: str | None = None) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(sep) if sep else line.partition(" ")
        out[key.strip()] = value.strip()
    return out


def fs_stats(path: str | Path) -> FsStats:
    st = os.statvfs(path)
    return FsStats(capacity_bytes=st.f_blocks * st.f_frsize, available_bytes=st.f_bavail * st.f_frsize,
                   used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize, inodes=st.f_files, inodes_free=st.f_ffree)


class Host:
    """Readings of the real host. Methods block briefly (file reads): call them in a thread."""

    def __init__(self, proc: str = "/proc", sys: str = "/sys", etc: str = "/etc") -> None:
        self.proc, self.sys, self.etc = Path(proc), Path(sys), Path(etc)
        self._machine: MachineInfo | None = None

    def machine_info(self) -> MachineInfo:
        if self._machine is None:  # nothing in it changes while the machine is up
            self._machine = self._read_machine()
        return self._machine

    def _read_machine(self) -> MachineInfo:
        online = _read(self.sys / "devices/system/cpu/online")
        meminfo = _kv(_read(self.proc / "meminfo"), ":")
        os_release = {k: v.strip('"') for k, v in _kv(_read(self.etc / "os-release"), "=").items()}
        btime = next((int(line.split()[1]) for line in _read(self.proc / "stat").splitlines()
                      if line.startswith("btime ")), 0)
        hugepages = {}
        base = self.sys / "kernel/mm/hugepages"
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            kib = int(d.name.removeprefix("hugepages-").removesuffix("kB"))
            name = f"hugepages-{kib // (1024 * 1024)}Gi" if kib >= 1024 * 1024 else f"hugepages-{kib // 1024}Mi"
            hugepages[name] = int(_read(d / "nr_hugepages", "0")) * kib * 1024
        return MachineInfo(
            num_cores=_count_cpus(online) if online else (os.cpu_count() or 1),
            memory_capacity=int(meminfo.get("MemTotal", "0 kB").split()[0]) * 1024,
            hugepages=hugepages,
            machine_id=_read(self.etc / "machine-id"),
            system_uuid=_read(self.sys / "class/dmi/id/product_uuid").lower(),
            boot_id=_read(self.proc / "sys/kernel/random/boot_id"),
            boot_time=float(btime),
            kernel_version=platform.release(),
            os_image=os_release.get("PRETTY_NAME", "Linux"),
            architecture=ARCHITECTURES.get(platform.machine(), platform.machine()))

    def memory(self) -> MemoryStats:
        capacity = self.machine_info().memory_capacity
        cgroup = self.sys / "fs/cgroup/memory"
        usage = _read(cgroup / "memory.usage_in_bytes")
        if usage:
            stat = {k: int(v) for k, v in _kv(_read(cgroup / "memory.stat")).items() if v.isdigit()}
            used = int(usage)
            return MemoryStats(capacity_bytes=capacity, usage_bytes=used,
                               working_set_bytes=max(0, used - stat.get("total_inactive_file", 0)),
                               rss_bytes=stat.get("total_rss", 0), page_faults=stat.get("total_pgfault", 0),
                               major_page_faults=stat.get("total_pgmajfault", 0))
        info = {k: int(v.split()[0]) * 1024 for k, v in _kv(_read(self.proc / "meminfo"), ":").items() if v}
        used = info.get("MemTotal", 0) - info.get("MemFree", 0)
        return MemoryStats(capacity_bytes=capacity, usage_bytes=used,
                           working_set_bytes=max(0, used - info.get("Inactive(file)", 0)),
                           rss_bytes=info.get("AnonPages", 0))

    def cpu_usage_ns(self) -> int:
        usage = _read(self.sys / "fs/cgroup/cpuacct/cpuacct.usage")
        if usage:
            return int(usage)
        line = next(line for line in _read(self.proc / "stat").splitlines() if line.startswith("cpu "))
        # user nice system idle iowait irq softirq steal: busy time is everything but idle and iowait.
        ticks = [int(x) for x in line.split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) * (1_000_000_000 // USER_HZ)

    def fs(self, path: str | Path) -> FsStats:
        return fs_stats(path)

    def pids(self) -> tuple[int, int]:
        """(the most processes the node can have, how many there are)."""
        limits = [int(v) for v in (_read(self.proc / "sys/kernel/pid_max"), _read(self.proc / "sys/kernel/threads-max"))
                  if v.isdigit()]
        total = _read(self.proc / "loadavg").split()
        current = int(total[3].split("/")[1]) if len(total) > 3 else 0
        return (min(limits) if limits else 32768), current

    def network(self, pid: int | None = None) -> dict[str, tuple[int, int, int, int]]:
        """Interfaces of the host's (or ``pid``'s) network namespace: rx bytes, rx errors,
        tx bytes, tx errors; loopback left out."""
        text = _read(self.proc / (f"{pid}/net/dev" if pid else "net/dev"))
        out = {}
        for line in text.splitlines()[2:]:
            name, _, rest = line.partition(":")
            values = rest.split()
            if name.strip() != "lo" and len(values) >= 11:
                out[name.strip()] = (int(values[0]), int(values[2]), int(values[8]), int(values[10]))
        return out


class FixedHost:
    """Set readings, changed by assigning attributes: the seam for pressure tests and hollow nodes."""

    def __init__(self, *, cpus: int = 4, memory: int = 16 << 30, memory_working_set: int = 1 << 30,
                 fs_capacity: int = 100 << 30, fs_available: int = 80 << 30, inodes: int = 6_000_000,
                 inodes_free: int = 5_000_000, pid_max: int = 4_194_304, processes: int = 300,
                 machine: MachineInfo | None = None) -> None:
        self.machine = machine or MachineInfo(
            num_cores=cpus, memory_capacity=memory, machine_id="0" * 32, boot_id="00000000-0000-0000-0000-000000000000",
            boot_time=time.time(), kernel_version=platform.release(), os_image="Linux (kubeling hollow)")
        self.machine.num_cores, self.machine.memory_capacity = cpus, memory
        self.memory_working_set = memory_working_set
        self.fs_capacity, self.fs_available = fs_capacity, fs_available
        self.inodes, self.inodes_free = inodes, inodes_free
        self.pid_max, self.processes = pid_max, processes
        self.cpu_ns = 0

    def machine_info(self) -> MachineInfo:
        return self.machine

    def memory(self) -> MemoryStats:
        return MemoryStats(capacity_bytes=self.machine.memory_capacity, usage_bytes=self.memory_working_set,
                           working_set_bytes=self.memory_working_set, rss_bytes=self.memory_working_set // 2)

    def cpu_usage_ns(self) -> int:
        return self.cpu_ns

    def fs(self, path: str | Path) -> FsStats:
        return FsStats(capacity_bytes=self.fs_capacity, available_bytes=self.fs_available,
                       used_bytes=self.fs_capacity - self.fs_available, inodes=self.inodes,
                       inodes_free=self.inodes_free)

    def pids(self) -> tuple[int, int]:
        return self.pid_max, self.processes

    def network(self, pid: int | None = None) -> dict[str, tuple[int, int, int, int]]:
        return {}


# -- formatting helpers --------------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_float(v: float) -> str:
    """A float as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` writes it (Prometheus' text format):
    shortest digits, in exponent form from 1e6 up and below 1e-4 ("1.234567e+06")."""
    if v == 0:
        return "0"
    d = Decimal(repr(float(v))).normalize()
    sign, digits, exponent = d.as_tuple()
    exp = len(digits) + exponent - 1
    text = "".join(map(str, digits))
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        out = f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    else:
        out = format(d, "f")
    return ("-" if sign else "") + out


def _fs_json(fs: FsStats, ts: float, used: int | None = None) -> dict:
    return {"time": ts, "availableBytes": fs.available_bytes, "capacityBytes": fs.capacity_bytes,
            "usedBytes": fs.used_bytes if used is None else used, "inodesFree": fs.inodes_free,
            "inodes": fs.inodes, "inodesUsed": max(0, fs.inodes - fs.inodes_free)}


def _dir_usage(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
            elif entry.is_dir(follow_symlinks=False):
                total += _dir_usage(Path(entry.path))
    except OSError:
        pass
    return total


def _network_json(ifaces: dict[str, tuple[int, int, int, int]], ts: float) -> dict | None:
    if not ifaces:
        return None
    items = [{"name": n, "rxBytes": v[0], "rxErrors": v[1], "txBytes": v[2], "txErrors": v[3]}
             for n, v in sorted(ifaces.items())]
    default = next((i for i in items if i["name"] == "eth0"), items[0])
    return {"time": ts, **default, "interfaces": items}


def _render_times(doc: Any) -> Any:
    """Times are kept as UNIX floats while collecting (metrics want milliseconds); the JSON
    document carries them as metav1.Time strings."""
    if isinstance(doc, dict):
        return {k: rfc3339(v) if k in ("time", "startTime") and isinstance(v, (int, float)) else _render_times(v)
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [_render_times(v) for v in doc]
    return doc


# -- the provider ------------------------------------------------------------------------------------

class StatsProvider:
    """Builds ``/stats/summary`` and ``/metrics/resource`` for one node. See the module docstring.

    Not safe for concurrent collections: the server handler serializes them (one at a time per
    node is what upstream's cached summary amounts to, too)."""

    def __init__(self, node_name: str, runtime: Any, *, root: str | Path, images: Any = None,
                 host: Host | FixedHost | None = None, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.runtime = runtime
        self.root = Path(root)
        self.images = images
        self.host = host or Host()
        self.clock = clock
        self._samples: dict[str, tuple[float, int]] = {}   # key -> (time, cumulative cpu ns)
        self._seen: set[str] = set()
        self.errors = 0  # failures in the last collection

    async def summary(self, only_cpu_and_memory: bool = False) -> dict:
        """The ``statsapi.Summary`` document (``only_cpu_and_memory`` leaves fs and network out)."""
        return _render_times(await self.collect(only_cpu_and_memory))

    async def collect(self, only_cpu_and_memory: bool = False) -> dict:
        """The summary with times as UNIX floats."""
        self.errors = 0
        self._seen = set()
        node = await asyncio.to_thread(self._node_readings)
        imagefs = node["nodefs"]
        if self.images is not None and not only_cpu_and_memory:
            try:
                info = await self.images.fs_info()
                imagefs = FsStats(capacity_bytes=info["capacity_bytes"], available_bytes=info["available_bytes"],
                                  used_bytes=info["used_bytes"], inodes=imagefs.inodes,
                                  inodes_free=info.get("inodes_free", imagefs.inodes_free))
            except (OSError, KeyError):
                self.errors += 1  # the node fs stands in for it
        pods = await self._pods(imagefs, only_cpu_and_memory)
        ts, machine, memory = node["time"], node["machine"], node["memory"]
        out = {
            "nodeName": self.node_name,
            "systemContainers": [self._pods_container(pods, machine.boot_time, ts)],
            "startTime": machine.boot_time,
            "cpu": self._cpu_json("node", ts, node["cpu"]),
            "memory": {"time": ts, "availableBytes": memory.available_bytes, "usageBytes": memory.usage_bytes,
                       "workingSetBytes": memory.working_set_bytes, "rssBytes": memory.rss_bytes,
                       "pageFaults": memory.page_faults, "majorPageFaults": memory.major_page_faults},
        }
        if not only_cpu_and_memory:
            network = _network_json(node["network"], ts)
            if network:
                out["network"] = network
            out["fs"] = _fs_json(node["nodefs"], ts)
            out["runtime"] = {"imageFs": _fs_json(imagefs, ts), "containerFs": _fs_json(imagefs, ts)}
            out["rlimit"] = {"time": ts, "maxpid": node["pids"][0], "curproc": node["pids"][1]}
        # Rates of containers and pods that are gone are dropped, so the map never grows.
        self._samples = {k: v for k, v in self._samples.items() if k in self._seen}
        return {"node": out, "pods": pods}

    def _cpu_json(self, key: str, ts: float, cumulative: int) -> dict:
        out = {"time": ts, "usageCoreNanoSeconds": cumulative}
        prev = self._samples.get(key)
        if prev is not None and ts > prev[0] and cumulative >= prev[1]:
            out["usageNanoCores"] = int((cumulative - prev[1]) / (ts - prev[0]))
        self._samples[key] = (ts, cumulative)
        self._seen.add(key)
        return out

    def _node_readings(self) -> dict:
        return {"time": self.clock(), "machine": self.host.machine_info(), "memory": self.host.memory(),
                "cpu": self.host.cpu_usage_ns(), "nodefs": self.host.fs(self.root),
                "pids": self.host.pids(), "network": self.host.network()}

    def _pods_container(self, pods: list[dict], start: float, ts: float) -> dict:
        """The ``pods`` system container: what the pods use together."""
        cpu = sum(p["cpu"]["usageCoreNanoSeconds"] for p in pods if "cpu" in p)
        keys = ("usageBytes", "workingSetBytes", "rssBytes")
        return {"name": "pods", "startTime": start, "cpu": self._cpu_json("system:pods", ts, cpu),
                "memory": {"time": ts, **{k: sum(p["memory"][k] for p in pods if "memory" in p) for k in keys}}}

    async def _pods(self, imagefs: FsStats, only_cpu_and_memory: bool) -> list[dict]:
        try:
            sandboxes = await self.runtime.list_pod_sandboxes()
            containers = await self.runtime.list_containers()
        except RuntimeError_:
            self.errors += 1
            return []
        latest: dict[str, Any] = {}
        for sb in sandboxes:
            if sb.state is SandboxState.READY and (sb.uid not in latest or sb.created_at > latest[sb.uid].created_at):
                latest[sb.uid] = sb
        by_sandbox: dict[str, list] = {}
        for c in containers:
            if c.state is ContainerState.RUNNING:
                by_sandbox.setdefault(c.sandbox_id, []).append(c)
        return [await self._pod(sb, by_sandbox.get(sb.id, []), imagefs, only_cpu_and_memory)
                for sb in sorted(latest.values(), key=lambda s: (s.namespace, s.name))]

    async def _pod(self, sb, containers: list, imagefs: FsStats, only_cpu_and_memory: bool) -> dict:
        logs_dir = self.root / "logs" / "pods" / f"{sb.namespace}_{sb.name}_{sb.uid}"
        pod = {"podRef": {"name": sb.name, "namespace": sb.namespace, "uid": sb.uid},
               "startTime": sb.created_at, "containers": []}
        rootfs_total = logs_total = 0
        for c in sorted(containers, key=lambda c: c.name):
            try:
                s = await self.runtime.container_stats(c.id)
            except RuntimeError_:
                self.errors += 1
                continue
            entry = {"name": c.name, "startTime": c.started_at,
                     "cpu": self._cpu_json(c.id, s.timestamp, s.cpu_usage_core_nanoseconds),
                     "memory": _memory_json(s)}
            if not only_cpu_and_memory:
                logs = await asyncio.to_thread(_dir_usage, logs_dir / c.name)
                entry["rootfs"] = _fs_json(imagefs, s.timestamp, s.writable_layer_bytes)
                entry["logs"] = _fs_json(imagefs, s.timestamp, logs)
                rootfs_total += s.writable_layer_bytes
                logs_total += logs
            pod["containers"].append(entry)
        now = self.clock()
        try:
            s = await self.runtime.sandbox_stats(sb.id)
            pod["cpu"] = self._cpu_json("pod:" + sb.id, s.timestamp, s.cpu_usage_core_nanoseconds)
            pod["memory"] = _memory_json(s)
        except RuntimeError_:
            self.errors += 1
        if not only_cpu_and_memory:
            pid = next((c.pid for c in containers if c.pid), 0)
            network = _network_json(await asyncio.to_thread(self.host.network, pid), now) if pid else None
            if network:
                pod["network"] = network
            pod["ephemeral-storage"] = _fs_json(imagefs, now, rootfs_total + logs_total)
        return pod

    async def metrics_resource(self) -> str:
        """``/metrics/resource`` in the Prometheus text format, from a cpu-and-memory collection."""
        try:
            doc = await self.collect(only_cpu_and_memory=True)
        except (OSError, RuntimeError_, ValueError):
            doc, self.errors = {"node": {}, "pods": []}, 1
        out = _Families()
        node = doc["node"]
        if node.get("cpu"):
            out.add("node_cpu_usage_seconds_total", {}, node["cpu"]["usageCoreNanoSeconds"] / 1e9, node["cpu"]["time"])
        if node.get("memory"):
            out.add("node_memory_working_set_bytes", {}, node["memory"]["workingSetBytes"], node["memory"]["time"])
        for pod in doc["pods"]:
            ref = pod["podRef"]
            for c in pod["containers"]:
                labels = {"container": c["name"], "pod": ref["name"], "namespace": ref["namespace"]}
                if c["startTime"] > 0:
                    out.add("container_start_time_seconds", labels, c["startTime"], None)
                out.add("container_cpu_usage_seconds_total", labels, c["cpu"]["usageCoreNanoSeconds"] / 1e9,
                        c["cpu"]["time"])
                out.add("container_memory_working_set_bytes", labels, c["memory"]["workingSetBytes"],
                        c["memory"]["time"])
            labels = {"pod": ref["name"], "namespace": ref["namespace"]}
            if "cpu" in pod:
                out.add("pod_cpu_usage_seconds_total", labels, pod["cpu"]["usageCoreNanoSeconds"] / 1e9,
                        pod["cpu"]["time"])
            if "memory" in pod:
                out.add("pod_memory_working_set_bytes", labels, pod["memory"]["workingSetBytes"], pod["memory"]["time"])
        out.add("resource_scrape_error", {}, 1 if self.errors else 0, None)
        return out.text()


def _memory_json(s) -> dict:
    return {"time": s.timestamp, "usageBytes": s.memory_usage_bytes,
            "workingSetBytes": s.memory_working_set_bytes, "rssBytes": s.memory_rss_bytes}


# name -> (type, help); all are STABLE in upstream's resource metrics collector.
RESOURCE_METRICS = {
    "container_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the container in core-seconds"),
    "container_memory_working_set_bytes": ("gauge", "Current working set of the container in bytes"),
    "container_start_time_seconds": ("gauge", "Start time of the container since unix epoch in seconds"),
    "node_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the node in core-seconds"),
    "node_memory_working_set_bytes": ("gauge", "Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the pod in core-seconds"),
    "pod_memory_working_set_bytes": ("gauge", "Current working set of the pod in bytes"),
    "resource_scrape_error": ("gauge", "1 if there was an error while getting container metrics, 0 otherwise"),
}


class _Families:
    """Samples grouped by metric, written as the Prometheus registry does: families sorted by
    name, samples by labels, labels by name; families without samples are left out."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[str, str]]] = {}

    def add(self, name: str, labels: dict[str, str], value: float, ts: float | None) -> None:
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        stamp = "" if ts is None else f" {int(ts * 1000)}"
        self.samples.setdefault(name, []).append((label, f"{go_float(value)}{stamp}"))

    def text(self) -> str:
        lines = []
        for name in sorted(self.samples):
            kind, help_ = RESOURCE_METRICS[name]
            lines += [f"# HELP {name} [STABLE] {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{{{label}}} {rest}" if label else f"{name} {rest}"
                      for label, rest in sorted(self.samples[name])]
        return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
