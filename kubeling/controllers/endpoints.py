"""Endpoints controller: the legacy ``v1/Endpoints`` of every Service with a selector (upstream's
``pkg/controller/endpoint``; ``--controllers`` name ``endpoint``).

::

    services ─────────────▶ queue (Service keys) ──▶ sync(key): subsets → create / update Endpoints
    pods (memberships) ───▶   ▲
    endpoints (deleted) ──────┘  and, once at start, every Endpoints (leftovers whose Service is gone)

``sync(key)`` for one Service:

1. Gone: delete the Endpoints of the same name (a Service deleted while the controller was down
   is caught by the start-up pass over every Endpoints). ``type: ExternalName`` or no selector:
   nothing — those Endpoints are written by their users (or, for ``default/kubernetes``, by the
   API server), never touched here.
2. Each selected pod with an IP, not terminal, and not being deleted (unless the Service
   publishes not-ready addresses) gives an address (``ip``, ``nodeName``, ``targetRef``, and
   ``hostname`` when ``spec.subdomain`` is the Service's name) per Service port whose
   ``targetPort`` it resolves: in ``addresses`` when Ready (or ``publishNotReadyAddresses``),
   else in ``notReadyAddresses``. A headless Service without ports gets the addresses with no
   ports. Subsets are then repacked as upstream's ``RepackSubsets`` (addresses offering the same
   ports share a subset; not-ready wins; sorted).
3. Nothing changed (subsets, labels, capacity annotation): no write. Else the Endpoints get
   the subsets, the Service's labels (plus ``service.kubernetes.io/headless`` for a headless
   Service), the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation, and, beyond
   1000 addresses, upstream's proportional truncation with
   ``endpoints.kubernetes.io/over-capacity: truncated``. A failed write records
   ``FailedToCreateEndpoint`` / ``FailedToUpdateEndpoint`` and is retried.

Pod events enqueue at once (no batching period, as upstream's default).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math

import orjson

from kubeling.client import is_not_found, object_of, split_meta_namespace_key
from kubeling.client.events import WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of, run_workers
from kubeling.controllers.controller_utils import is_pod_ready, namespace_terminating
from kubeling.controllers.endpointslice import service_address_types
from kubeling.controllers.endpointslice_utils import (
    sync_with_retry_budget,
    LABEL_HEADLESS,
    LAST_CHANGE_TRIGGER_TIME,
    LEADER_ANNOTATION,
    OVER_CAPACITY,
    TriggerTimeTracker,
    find_port,
    format_trigger_time,
    ip_family,
    is_service_ip_set,
    pod_ips,
    pod_service_memberships,
    service_selects,
    services_to_update_on_pod_change,
    should_pod_be_in_endpoints,
    should_set_hostname,
)

log = logging.getLogger(__name__)

MAX_CAPACITY = 1000
TRUNCATED = "truncated"
_SENTINEL = ("", -1, "", "")


def _address_key(a: dict) -> tuple:
    return a.get("ip") or "", ((a.get("targetRef") or {}).get("uid") or "")


def _port_key(p: dict) -> tuple:
    return p.get("name") or "", p.get("port") or 0, p.get("protocol") or "TCP", p.get("appProtocol") or ""


def repack_subsets(subsets: list[dict]) -> list[dict]:
    """Upstream's ``RepackSubsets``: one subset per set of addresses offering the same ports."""
    addresses: dict[tuple, dict] = {}
    ports: dict[tuple, dict] = {}
    by_port: dict[tuple, dict[tuple, bool]] = {}
    for ss in subsets:
        keys = [_port_key(p) for p in ss.get("ports") or ()] or [_SENTINEL]
        for p in ss.get("ports") or ():
            ports.setdefault(_port_key(p), p)
        for pk in keys:
            m = by_port.setdefault(pk, {})
            for ready, field in ((True, "addresses"), (False, "notReadyAddresses")):
                for a in ss.get(field) or ():
                    ak = _address_key(a)
                    addresses.setdefault(ak, a)
                    if m.get(ak, True):  # not ready trumps ready
                        m[ak] = ready
    groups: dict[frozenset, list[dict]] = {}
    for pk, m in by_port.items():
        ports_of = groups.setdefault(frozenset(m.items()), [])
        if pk != _SENTINEL:
            ports_of.append(ports[pk])
    out = []
    for members, ps in groups.items():
        ready = sorted((ak for ak, r in members if r))
        not_ready = sorted((ak for ak, r in members if not r))
        ss: dict = {}
        if ready:
            ss["addresses"] = [addresses[k] for k in ready]
        if not_ready:
            ss["notReadyAddresses"] = [addresses[k] for k in not_ready]
        if ps:
            ss["ports"] = sorted(ps, key=_port_key)
        if ready or not_ready:
            out.append(ss)
    return sorted(out, key=lambda ss: orjson.dumps(ss, option=orjson.OPT_SORT_KEYS))


def _normalized(subsets: list[dict] | None) -> list:
    """Subsets for comparison: no targetRef resourceVersions, no empty fields."""
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v not in (None, "", [], {}) and k != "resourceVersion"}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    return clean(list(subsets or []))


def _count(subsets: list[dict] | None) -> int:
    return sum(len(ss.get("addresses") or ()) + len(ss.get("notReadyAddresses") or ()) for ss in subsets or ())


def capacity_annotation_set_correctly(annotations: dict | None, subsets: list[dict] | None) -> bool:
    if _count(subsets) > MAX_CAPACITY:
        return False
    return OVER_CAPACITY not in (annotations or {})


def truncate_endpoints(endpoints: dict) -> bool:
    """Upstream's ``truncateEndpoints``: at most 1000 addresses, ready ones first, each subset
    keeping its share."""
    subsets = endpoints.get("subsets") or []
    total_ready = sum(len(ss.get("addresses") or ()) for ss in subsets)
    total_not_ready = sum(len(ss.get("notReadyAddresses") or ()) for ss in subsets)
    if total_ready + total_not_ready <= MAX_CAPACITY:
        return False
    truncate_ready = total_ready > MAX_CAPACITY
    limit, total = (MAX_CAPACITY, total_ready) if truncate_ready else (MAX_CAPACITY - total_ready, total_not_ready)
    room = limit
    for ss in subsets:
        field = "addresses" if truncate_ready else "notReadyAddresses"
        n = len(ss.get(field) or ())
        take = min(int(math.ceil(n / total * limit)) if total else 0, room)
        ss[field] = (ss.get(field) or [])[:take]
        if truncate_ready:
            ss["notReadyAddresses"] = []
        room -= len(ss[field])
    return True


def pod_to_endpoint_address(service: dict, pod: dict) -> dict | None:
    """Upstream's ``podToEndpointAddressForService``: the pod's IP of the Service's family."""
    family = service_address_types(service)[0]
    ip = next((i for i in pod_ips(pod) if ip_family(i) == family), None)
    if ip is None:
        return None
    meta = pod["metadata"]
    return {"ip": ip, "nodeName": pod["spec"].get("nodeName"),
            "targetRef": {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"],
                          "uid": meta.get("uid")}}


def desired_subsets(service: dict, pods: list[dict]) -> list[dict]:
    spec = service.get("spec") or {}
    tolerate = bool(spec.get("publishNotReadyAddresses"))
    subsets: list[dict] = []
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, tolerate):
            continue
        epa = pod_to_endpoint_address(service, pod)
        if epa is None:
            continue
        if should_set_hostname(pod, service):
            epa = {"ip": epa["ip"], "hostname": pod["spec"]["hostname"], "nodeName": epa["nodeName"],
                   "targetRef": epa["targetRef"]}
        field = "addresses" if tolerate or is_pod_ready(pod) else "notReadyAddresses"
        if not spec.get("ports"):
            if spec.get("clusterIP") == "None":
                subsets.append({field: [epa]})
            continue
        for sp in spec["ports"]:
            num = find_port(pod, sp)
            if num is None:
                continue
            port = {"name": sp.get("name") or "", "port": num, "protocol": sp.get("protocol") or "TCP"}
            if sp.get("appProtocol"):
                port["appProtocol"] = sp["appProtocol"]
            subsets.append({field: [epa], "ports": [port]})
    return repack_subsets(subsets)


class EndpointController(Controller):
    NAME = "endpoint"
    WORKERS = 5  # upstream's --concurrent-endpoint-syncs
    COMPONENT = "endpoint-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.informer_for("", "v1", "services")
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.endpoints = ctx.informers.informer_for("", "v1", "endpoints")
        self.recorder = ctx.recorder(self.COMPONENT)
        self.batch_period = float(ctx.endpoint_updates_batch_period or 0.0)
        self.trigger_times = TriggerTimeTracker()
        self.stale_versions: dict[str, str] = {}  # upstream's staleEndpointsTracker
        self.handle(self.services, on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                    on_delete=self.enqueue)
        self.handle(self.pods, on_add=self.add_pod, on_update=self.update_pod, on_delete=self.delete_pod)
        self.handle(self.endpoints, on_delete=self.delete_endpoints)

    def enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def _add_keys(self, keys) -> None:
        for k in keys:
            if self.batch_period > 0:
                self.queue.add_after(k, self.batch_period)
            else:
                self.queue.add(k)

    def add_pod(self, pod: dict) -> None:
        ns = pod["metadata"].get("namespace", "")
        self._add_keys(pod_service_memberships(self.services.indexer.by_namespace(ns), pod))

    def update_pod(self, old: dict, cur: dict) -> None:
        ns = cur["metadata"].get("namespace", "")
        self._add_keys(services_to_update_on_pod_change(self.services.indexer.by_namespace(ns), old, cur))

    def delete_pod(self, obj) -> None:
        self.add_pod(object_of(obj))

    def delete_endpoints(self, obj) -> None:
        ep = object_of(obj)
        key = key_of(ep)
        if self.services.get(key) is not None:
            self.queue.add(key)  # deleted under a live Service: write it again

    def check_leftover_endpoints(self) -> None:
        """Queue every Endpoints once, so that those whose Service went away while the controller
        was down are deleted (leader-election records are no Service's: skipped)."""
        for ep in self.endpoints.list():
            if LEADER_ANNOTATION in (ep["metadata"].get("annotations") or {}):
                continue
            self.queue.add(key_of(ep))

    async def run(self, workers: int, stop) -> None:
        try:
            if not await self.wait_for_caches(stop):
                return
            self.check_leftover_endpoints()
            await run_workers(self.NAME, self.queue, self.sync, stop, workers)
        finally:
            self.shutdown()

    async def sync(self, key: str) -> None:
        await sync_with_retry_budget(self.NAME, self.queue, key, self.sync_key)

    async def sync_key(self, key: str) -> None:
        namespace, name = split_meta_namespace_key(key)
        service = self.services.get(key)
        if service is None:
            current = self.endpoints.get(key)
            if current is not None and LEADER_ANNOTATION not in (current["metadata"].get("annotations") or {}):
                try:
                    await self.client.delete("", "v1", "endpoints", name, namespace=namespace)
                except Exception as e:
                    if not is_not_found(e):
                        raise
            self.trigger_times.delete(key)
            self.stale_versions.pop(key, None)
            return
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or not spec.get("selector"):
            return
        pods = [p for p in self.pods.indexer.by_namespace(namespace)
                if service_selects(service, p["metadata"].get("labels"))]
        with self.trigger_times.computing(key, service, pods) as trigger:
            await self._write_endpoints(key, service, pods, trigger)

    async def _write_endpoints(self, key: str, service: dict, pods: list[dict],
                               trigger: dt.datetime | None) -> None:
        """Create or update the Service's Endpoints to hold ``pods`` (nothing if they do already)."""
        namespace, name = split_meta_namespace_key(key)
        subsets = desired_subsets(service, pods)
        current = self.endpoints.get(key)
        if current is not None and self.stale_versions.get(key) == current["metadata"].get("resourceVersion"):
            raise RuntimeError(f"endpoints informer cache is out of date, resource version "
                               f"{current['metadata'].get('resourceVersion')} already processed for endpoints {key}")
        svc_labels = service["metadata"].get("labels") or {}
        create = current is None
        if current is None:
            current = {"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": name, "namespace": namespace, "labels": dict(svc_labels)}}
        compare_labels = {k: v for k, v in (current["metadata"].get("labels") or {}).items() if k != LABEL_HEADLESS}
        if not create and _normalized(current.get("subsets")) == _normalized(subsets) \
                and compare_labels == svc_labels \
                and capacity_annotation_set_correctly(current["metadata"].get("annotations"), current.get("subsets")):
            return
        new = copy.deepcopy(current)
        new.setdefault("apiVersion", "v1")
        new.setdefault("kind", "Endpoints")
        new["subsets"] = subsets
        labels = dict(svc_labels)
        if not is_service_ip_set(service):
            labels[LABEL_HEADLESS] = ""
        new["metadata"]["labels"] = labels
        annotations = dict(new["metadata"].get("annotations") or {})
        if trigger is not None:
            annotations[LAST_CHANGE_TRIGGER_TIME] = format_trigger_time(trigger)
        else:
            annotations.pop(LAST_CHANGE_TRIGGER_TIME, None)
        if truncate_endpoints(new):
            annotations[OVER_CAPACITY] = TRUNCATED
        else:
            annotations.pop(OVER_CAPACITY, None)
        new["metadata"]["annotations"] = annotations
        try:
            if create:
                await self.client.create("", "v1", "endpoints", new, namespace=namespace)
            else:
                updated = await self.client.update("", "v1", "endpoints", new, namespace=namespace)
                if updated["metadata"].get("resourceVersion") != current["metadata"].get("resourceVersion"):
                    self.stale_versions[key] = current["metadata"].get("resourceVersion")
        except Exception as e:
            if create and namespace_terminating(e):
                return
            if create:
                self.recorder.eventf(new, WARNING, "FailedToCreateEndpoint",
                                     "Failed to create endpoint for service %s/%s: %s", namespace, name, e)
            else:
                self.recorder.eventf(new, WARNING, "FailedToUpdateEndpoint",
                                     "Failed to update endpoint %s/%s: %s", namespace, name, e)
            raise
