"""Per-kind behaviour of the one generic registry: upstream's "strategies".

A `Strategy` says what the generic `Registry` cannot know: whether a kind has a
status subresource (so that spec writes keep the old status and status writes
keep the old spec), whether ``metadata.generation`` tracks spec changes, what a
new object's status starts as, and how deletion is graceful.

Every hook mutates the new object in place and must be idempotent: the
registry may call it again when it retries a compare-and-swap.
"""

from __future__ import annotations

import copy
import functools
import random
import uuid
from typing import Any

from kubeling.api import quantity, schema


def _qty(v: Any) -> Any:
    try:
        return quantity.parse(str(v))
    except Exception:  # noqa: BLE001 - validation reports bad quantities; here they just differ
        return v


def _spec_changed(new: dict, old: dict) -> bool:
    """Everything but metadata and status: what upstream compares to bump generation."""
    skip = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}


class Strategy:
    generation = False          # maintain metadata.generation (1 on create, +1 per spec change)
    status_subresource = False  # writes to the main resource keep the old status
    reset_status_on_create = True
    allow_create_on_update = False
    default_gc_policy = "Background"

    def prepare_for_create(self, obj: dict) -> None:
        if self.status_subresource and self.reset_status_on_create:
            obj.pop("status", None)
            status = self.initial_status(obj)
            if status is not None:
                obj["status"] = status
        if self.generation:
            obj["metadata"]["generation"] = 1

    def initial_status(self, obj: dict) -> dict | None:
        return None

    def prepare_for_update(self, new: dict, old: dict) -> None:
        if self.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if self.generation:
            gen = old["metadata"].get("generation", 1)
            new["metadata"]["generation"] = gen + 1 if _spec_changed(new, old) else gen

    def prepare_for_status_update(self, new: dict, old: dict) -> None:
        """A write to /status changes only status (and, as upstream, not metadata beyond labels and
        annotations)."""
        status = new.get("status")
        keep_meta = new["metadata"]
        merged = copy.deepcopy(old)
        if status is None:
            merged.pop("status", None)
        else:
            merged["status"] = status
        for k in ("labels", "annotations", "resourceVersion", "managedFields"):
            if k in keep_meta:
                merged["metadata"][k] = keep_meta[k]
            else:
                merged["metadata"].pop(k, None)
        new.clear()
        new.update(merged)

    def grace_period(self, obj: dict, requested: int | None) -> int:
        """Seconds of graceful deletion; 0 deletes at once (unless finalizers hold it)."""
        return 0


class WorkloadStrategy(Strategy):
    generation = True
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return zero_status(obj)


_ZERO = {"integer": 0, "number": 0, "string": "", "boolean": False}


@functools.lru_cache(maxsize=None)
def _zero_status(api_version: str, kind: str) -> tuple:
    group, _, version = api_version.rpartition("/")
    schemas = schema.get()
    node = schemas.for_gvk(group, version, kind)
    status = schemas.resolve(((node or {}).get("properties") or {}).get("status"))
    out = []
    for prop in status.get("required") or ():
        t = schema.type_of(schemas.resolve(status["properties"][prop]))
        if t in _ZERO:
            out.append((prop, _ZERO[t]))
    return tuple(out)


def zero_status(obj: dict) -> dict:
    """A new object's status as upstream serializes its zero value: the required (non-omitempty)
    scalar fields, e.g. ``{"replicas": 0}`` for a ReplicaSet."""
    return dict(_zero_status(obj.get("apiVersion", ""), obj.get("kind", "")))


class PodStrategy(Strategy):
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec", {}))}

    def grace_period(self, obj: dict, requested: int | None) -> int:
        spec = obj.get("spec", {})
        phase = obj.get("status", {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(requested, 0)
        return int(spec.get("terminationGracePeriodSeconds", 30) or 0)


def qos_class(spec: dict) -> str:
    """Guaranteed when every container has equal cpu and memory requests and limits; BestEffort
    when none sets any; Burstable otherwise (upstream's GetPodQOS, simplified to cpu/memory)."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r in req or r in lim:
                any_set = True
            if r not in lim:
                guaranteed = False
            elif r in req and _qty(req[r]) != _qty(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


class NamespaceStrategy(Strategy):
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return {"phase": "Active"}

    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        spec = obj.setdefault("spec", {})
        fins = spec.setdefault("finalizers", [])
        if "kubernetes" not in fins:
            fins.append("kubernetes")

    def prepare_for_update(self, new: dict, old: dict) -> None:
        super().prepare_for_update(new, old)
        # spec.finalizers change only through the finalize subresource.
        new["spec"] = copy.deepcopy(old.get("spec", {}))


class ServiceStrategy(Strategy):
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return {"loadBalancer": {}}

    def prepare_for_update(self, new: dict, old: dict) -> None:
        super().prepare_for_update(new, old)
        # Allocated values the client left out are kept, as upstream's patchAllocatedValues.
        ns, os_ = new.setdefault("spec", {}), old.get("spec", {})
        for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if not ns.get(k) and os_.get(k) and ns.get("type", "ClusterIP") != "ExternalName":
                ns[k] = copy.deepcopy(os_[k])
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in os_.get("ports") or []}
        for p in ns.get("ports") or []:
            prev = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
            if prev and not p.get("nodePort") and prev.get("nodePort") and ns.get("type") in ("NodePort",
                                                                                             "LoadBalancer"):
                p["nodePort"] = prev["nodePort"]


class VolumeStrategy(Strategy):
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return {"phase": "Pending"}


class JobStrategy(WorkloadStrategy):
    def prepare_for_create(self, obj: dict) -> None:
        super().prepare_for_create(obj)
        spec = obj.setdefault("spec", {})
        if spec.get("manualSelector"):
            return
        # Upstream's generateSelector: the job's uid labels its pods.
        uid = obj["metadata"]["uid"]
        name = obj["metadata"].get("name", "")
        labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                  "controller-uid": uid, "job-name": name}
        tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
        tlabels = tmeta.setdefault("labels", {})
        for k, v in labels.items():
            tlabels.setdefault(k, v)
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}


class CustomResourceStrategy(Strategy):
    generation = True

    def __init__(self, has_status: bool) -> None:
        self.status_subresource = has_status


class CRDStrategy(Strategy):
    generation = True
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return {"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []}


_WORKLOAD = WorkloadStrategy()
STRATEGIES: dict[tuple[str, str], Strategy] = {
    ("", "pods"): PodStrategy(),
    ("", "namespaces"): NamespaceStrategy(),
    ("", "services"): ServiceStrategy(),
    ("", "nodes"): type("NodeStrategy", (Strategy,), {"status_subresource": True,
                                                        "reset_status_on_create": False})(),
    ("", "persistentvolumes"): VolumeStrategy(),
    ("", "persistentvolumeclaims"): VolumeStrategy(),
    ("", "replicationcontrollers"): _WORKLOAD,
    ("", "resourcequotas"): type("QuotaStrategy", (Strategy,), {"status_subresource": True})(),
    ("", "endpoints"): type("EndpointsStrategy", (Strategy,), {"allow_create_on_update": True})(),
    ("", "events"): type("EventStrategy", (Strategy,), {"allow_create_on_update": True})(),
    ("coordination.k8s.io", "leases"): type("LeaseStrategy", (Strategy,), {"allow_create_on_update": True})(),
    ("apps", "deployments"): _WORKLOAD,
    ("apps", "replicasets"): _WORKLOAD,
    ("apps", "daemonsets"): _WORKLOAD,
    ("apps", "statefulsets"): _WORKLOAD,
    ("batch", "jobs"): JobStrategy(),
    ("batch", "cronjobs"): _WORKLOAD,
    ("autoscaling", "horizontalpodautoscalers"): _WORKLOAD,
    ("policy", "poddisruptionbudgets"): _WORKLOAD,
    ("networking.k8s.io", "ingresses"): type("IngressStrategy", (Strategy,), {"status_subresource": True,
                                                                              "generation": True})(),
    ("networking.k8s.io", "networkpolicies"): type("NPStrategy", (Strategy,), {"generation": True})(),
    ("apiextensions.k8s.io", "customresourcedefinitions"): CRDStrategy(),
    ("scheduling.k8s.io", "priorityclasses"): Strategy(),
}
DEFAULT = Strategy()


def for_resource(group: str, resource: str, crd_status: bool | None = None) -> Strategy:
    if crd_status is not None:
        return CustomResourceStrategy(crd_status)
    return STRATEGIES.get((group, resource), DEFAULT)


_UID_RANDOM = random.Random()  # seeded from os.urandom once


def new_uid() -> str:
    """A random (version 4) UUID. UIDs need uniqueness, not secrecy, and ``uuid4()`` reads
    ``os.urandom`` on every call, which showed as 15% of a create's CPU here."""
    return str(uuid.UUID(int=_UID_RANDOM.getrandbits(128), version=4))

