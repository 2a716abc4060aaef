"""What plugins read: upstream's ``pkg/scheduler/framework/types.go``.

- `Resource`: milli-CPU, memory, ephemeral storage, pod count and scalar (extended) resources,
  as integers, so Filter compares ints, not quantities.
- `PodInfo`: a pod plus what plugins would otherwise re-parse on every node: its requests
  (`compute_pod_resource_request`, with init containers, sidecars and overhead), the non-zero
  requests scoring uses (100m CPU / 200Mi memory for a container that asks nothing), and its
  pod (anti-)affinity terms with parsed selectors.
- `NodeInfo`: a node plus the pods on it (bound or assumed) and their sums: ``requested``,
  ``non_zero_requested``, ``used_ports``, pods with (anti-)affinity, and the images the node has.
  ``generation`` bumps on every change so the snapshot copies only changed nodes.
- `QueuedPodInfo`: a pod in the scheduling queue (attempts, timestamps, the plugins that
  rejected it last).

NodeInfo and PodInfo are shared between the cache and the cycle's snapshot: plugins must not
mutate them (preemption works on `NodeInfo.snapshot` copies).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal

from kubeling.api import quantity
from kubeling.api.labels import Selector, from_label_selector
from kubeling.api.resource import pod_requests

DEFAULT_MILLI_CPU_REQUEST = 100                  # upstream's schedutil.DefaultMilliCPURequest
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024       # schedutil.DefaultMemoryRequest

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
_generation = itertools.count(1)


def next_generation() -> int:
    return next(_generation)


def _to_int(name: str, v: Decimal) -> int:
    return int((v * 1000).to_integral_value(rounding="ROUND_CEILING")) if name == CPU else \
        int(v.to_integral_value(rounding="ROUND_CEILING"))


@dataclass
class Resource:
    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    allowed_pod_number: int = 0
    scalar_resources: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_list(cls, rl: dict | None) -> Resource:
        """From a ResourceList (``{"cpu": "2", "memory": "1Gi", ...}``); bad quantities count as 0."""
        r = cls()
        for name, q in (rl or {}).items():
            try:
                v = quantity._coerce(q).decimal
            except (ValueError, TypeError):
                continue
            r.set(name, _to_int(name, v))
        return r

    def set(self, name: str, value: int) -> None:
        if name == CPU:
            self.milli_cpu = value
        elif name == MEMORY:
            self.memory = value
        elif name == EPHEMERAL_STORAGE:
            self.ephemeral_storage = value
        elif name == PODS:
            self.allowed_pod_number = value
        elif is_scalar_resource_name(name):
            self.scalar_resources[name] = value

    def get(self, name: str) -> int:
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.allowed_pod_number
        return self.scalar_resources.get(name, 0)

    def add(self, other: Resource, sign: int = 1) -> None:
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        self.allowed_pod_number += sign * other.allowed_pod_number
        for k, v in other.scalar_resources.items():
            self.scalar_resources[k] = self.scalar_resources.get(k, 0) + sign * v

    def clone(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pod_number,
                        dict(self.scalar_resources))


def is_scalar_resource_name(name: str) -> bool:
    """Extended resources (``example.com/foo``), hugepages and attachable volumes."""
    return name.startswith("hugepages-") or name.startswith("attachable-volumes-") or (
        "/" in name and not name.startswith("kubernetes.io/") and not name.startswith("requests."))


def compute_pod_resource_request(pod: dict) -> Resource:
    """The pod's effective requests (upstream's ``PodRequests`` with overhead)."""
    r = Resource()
    for name, v in pod_requests(pod).items():
        r.set(name, _to_int(name, v))
    return r


def compute_non_zero_request(pod: dict) -> Resource:
    """Requests for scoring: a container without a CPU or memory request counts the default."""
    spec = pod.get("spec") or {}

    def one(c: dict) -> tuple[int, int]:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu = _to_int(CPU, quantity._coerce(req[CPU]).decimal) if CPU in req else DEFAULT_MILLI_CPU_REQUEST
        mem = _to_int(MEMORY, quantity._coerce(req[MEMORY]).decimal) if MEMORY in req else DEFAULT_MEMORY_REQUEST
        return cpu, mem

    cpu = mem = 0
    for c in spec.get("containers") or ():
        a, b = one(c)
        cpu, mem = cpu + a, mem + b
    side_cpu = side_mem = 0
    for c in spec.get("initContainers") or ():
        a, b = one(c)
        if c.get("restartPolicy") == "Always":
            cpu, mem = cpu + a, mem + b
            side_cpu, side_mem = side_cpu + a, side_mem + b
        else:
            cpu, mem = max(cpu, side_cpu + a), max(mem, side_mem + b)
    over = Resource.from_list(spec.get("overhead"))
    return Resource(milli_cpu=cpu + over.milli_cpu, memory=mem + over.memory)


# -- pod (anti-)affinity terms ----------------------------------------------------------------

@dataclass
class AffinityTerm:
    """A PodAffinityTerm with its selectors parsed and its namespaces resolved."""

    namespaces: frozenset[str]
    selector: Selector
    topology_key: str
    namespace_selector: Selector | None = None   # None: only ``namespaces``; else match by labels

    def matches(self, pod: dict, ns_labels: dict | None = None) -> bool:
        meta = pod.get("metadata") or {}
        if meta.get("namespace") in self.namespaces or self.namespace_selector is not None and ns_labels is not None and \
                self.namespace_selector.matches(ns_labels):
            pass
        else:
            return False
        return self.selector.matches(meta.get("labels") or {})


@dataclass
class WeightedAffinityTerm:
    term: AffinityTerm
    weight: int


def _terms(pod: dict, raw: list | None) -> list[AffinityTerm]:
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    out = []
    for t in raw or ():
        ns_sel = t.get("namespaceSelector")
        names = frozenset(t.get("namespaces") or ()) or (frozenset() if ns_sel is not None else frozenset([ns]))
        sel = from_label_selector(t.get("labelSelector")) if t.get("labelSelector") is not None else None
        # a nil labelSelector matches nothing; an empty one matches everything
        out.append(AffinityTerm(names, sel if sel is not None else _NOTHING, t.get("topologyKey", ""),
                                from_label_selector(ns_sel) if ns_sel is not None else None))
    return out


class _MatchNothing:
    def matches(self, labels: dict) -> bool:
        return False


_NOTHING = _MatchNothing()


@dataclass
class PodInfo:
    pod: dict
    requests: Resource = field(default_factory=Resource)
    non_zero_requests: Resource = field(default_factory=Resource)
    required_affinity_terms: list[AffinityTerm] = field(default_factory=list)
    required_anti_affinity_terms: list[AffinityTerm] = field(default_factory=list)
    preferred_affinity_terms: list[WeightedAffinityTerm] = field(default_factory=list)
    preferred_anti_affinity_terms: list[WeightedAffinityTerm] = field(default_factory=list)

    @classmethod
    def of(cls, pod: dict) -> PodInfo:
        aff = (pod.get("spec") or {}).get("affinity") or {}
        pa, paa = aff.get("podAffinity") or {}, aff.get("podAntiAffinity") or {}

        def weighted(raw):
            return [WeightedAffinityTerm(t, w.get("weight", 0))
                    for w in raw or () for t in _terms(pod, [w.get("podAffinityTerm") or {}])]

        return cls(pod, compute_pod_resource_request(pod), compute_non_zero_request(pod),
                   _terms(pod, pa.get("requiredDuringSchedulingIgnoredDuringExecution")),
                   _terms(pod, paa.get("requiredDuringSchedulingIgnoredDuringExecution")),
                   weighted(pa.get("preferredDuringSchedulingIgnoredDuringExecution")),
                   weighted(paa.get("preferredDuringSchedulingIgnoredDuringExecution")))

    @property
    def key(self) -> str:
        return pod_key(self.pod)

    @property
    def uid(self) -> str:
        return (self.pod.get("metadata") or {}).get("uid", "")


def pod_key(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# -- host ports -------------------------------------------------------------------------------

def host_ports(pod: dict) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) of every container port with a hostPort."""
    out = []
    spec = pod.get("spec") or {}
    for c in list(spec.get("containers") or ()) + list(spec.get("initContainers") or ()):
        for p in c.get("ports") or ():
            hp = p.get("hostPort") or 0
            if hp > 0:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", hp))
    return out


class HostPortInfo(dict):
    """{hostIP: {(protocol, port)}}; ``0.0.0.0`` conflicts with every IP (upstream's HostPortInfo)."""

    def add(self, ip: str, protocol: str, port: int) -> None:
        self.setdefault(ip, set()).add((protocol, port))

    def remove(self, ip: str, protocol: str, port: int) -> None:
        ports = self.get(ip)
        if ports is not None:
            ports.discard((protocol, port))
            if not ports:
                del self[ip]

    def check_conflict(self, ip: str, protocol: str, port: int) -> bool:
        pp = (protocol, port)
        if ip == "0.0.0.0":
            return any(pp in ports for ports in self.values())
        return pp in self.get(ip, ()) or pp in self.get("0.0.0.0", ())


# -- nodes ------------------------------------------------------------------------------------

@dataclass
class ImageStateSummary:
    size: int
    num_nodes: int


class NodeInfo:
    """A node and what is on it; see the module docstring."""

    __slots__ = (
        "_name",
        "allocatable",
        "generation",
        "image_states",
        "node",
        "non_zero_requested",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "requested",
        "used_ports",
    )

    def __init__(self, node: dict | None = None) -> None:
        self.node: dict | None = None
        self._name = ""
        self.pods: list[PodInfo] = []
        self.pods_with_affinity: list[PodInfo] = []
        self.pods_with_required_anti_affinity: list[PodInfo] = []
        self.used_ports = HostPortInfo()
        self.requested = Resource()
        self.non_zero_requested = Resource()
        self.allocatable = Resource()
        self.image_states: dict[str, ImageStateSummary] = {}
        self.generation = next_generation()
        if node is not None:
            self.set_node(node)

    @property
    def name(self) -> str:
        # kept, not derived: Filter and Score read it for every node of every cycle
        return self._name

    def set_node(self, node: dict) -> None:
        self.node = node
        self._name = (node.get("metadata") or {}).get("name", "")
        self.allocatable = Resource.from_list((node.get("status") or {}).get("allocatable"))
        self.generation = next_generation()

    def remove_node(self) -> None:
        self.node = None
        self._name = ""
        self.generation = next_generation()

    def add_pod_info(self, pi: PodInfo) -> None:
        self.pods.append(pi)
        if pi.required_affinity_terms or pi.required_anti_affinity_terms or pi.preferred_affinity_terms \
                or pi.preferred_anti_affinity_terms:
            self.pods_with_affinity.append(pi)
        if pi.required_anti_affinity_terms:
            self.pods_with_required_anti_affinity.append(pi)
        self._update(pi, 1)

    def add_pod(self, pod: dict) -> None:
        self.add_pod_info(PodInfo.of(pod))

    def remove_pod(self, pod: dict) -> bool:
        """Remove the pod with this UID (or namespace/name); False if it was not here."""
        uid = (pod.get("metadata") or {}).get("uid")
        key = pod_key(pod)
        for i, pi in enumerate(self.pods):
            if (uid and pi.uid == uid) or (not uid and pi.key == key):
                del self.pods[i]
                self.pods_with_affinity = [p for p in self.pods_with_affinity if p is not pi]
                self.pods_with_required_anti_affinity = [p for p in self.pods_with_required_anti_affinity
                                                         if p is not pi]
                self._update(pi, -1)
                return True
        return False

    def _update(self, pi: PodInfo, sign: int) -> None:
        self.requested.add(pi.requests, sign)
        self.non_zero_requested.add(pi.non_zero_requests, sign)
        for ip, proto, port in host_ports(pi.pod):
            (self.used_ports.add if sign > 0 else self.used_ports.remove)(ip, proto, port)
        self.generation = next_generation()

    def snapshot(self) -> NodeInfo:
        """A copy whose pod list and sums may be changed (preemption's "what if")."""
        c = NodeInfo.__new__(NodeInfo)
        c.node = self.node
        c._name = self._name
        c.pods = list(self.pods)
        c.pods_with_affinity = list(self.pods_with_affinity)
        c.pods_with_required_anti_affinity = list(self.pods_with_required_anti_affinity)
        c.used_ports = HostPortInfo({ip: set(p) for ip, p in self.used_ports.items()})
        c.requested = self.requested.clone()
        c.non_zero_requested = self.non_zero_requested.clone()
        c.allocatable = self.allocatable.clone()
        c.image_states = self.image_states
        c.generation = self.generation
        return c

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"


@dataclass
class QueuedPodInfo:
    """A pod waiting in the scheduling queue."""

    pod_info: PodInfo
    timestamp: float = 0.0                 # when it was last added to the queue
    attempts: int = 0
    initial_attempt_timestamp: float | None = None
    unschedulable_plugins: set[str] = field(default_factory=set)
    pending_plugins: set[str] = field(default_factory=set)
    gated: bool = False                     # a PreEnqueue plugin (SchedulingGates) holds it back

    @property
    def pod(self) -> dict:
        return self.pod_info.pod
