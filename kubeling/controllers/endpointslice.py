"""EndpointSlice controller: the slices of every Service with a selector (upstream's
``pkg/controller/endpointslice`` and its reconciler, ``staging/.../endpointslice/reconciler.go``).

::

    services ─────────────▶ queue (Service keys) ──▶ sync(key) ──▶ Reconciler.reconcile
    pods (memberships) ───▶   ▲                                     create / update / delete slices
    endpointslices ───────────┘ (managed by us, written by someone else: after 1 s)
    nodes (lister: zone)

``sync(key)`` for one Service:

1. Gone: forget its trackers (its slices are owned by it: the garbage collector deletes them).
   ``type: ExternalName`` or no selector: nothing (a selector-less Service's slices are the
   user's, or the mirroring controller's).
2. Its pods are the namespace's pods its selector picks; its slices are those labelled
   ``kubernetes.io/service-name: <svc>`` and ``endpointslice.kubernetes.io/managed-by:
   endpointslice-controller.k8s.io`` and not being deleted. When the slice cache has not caught
   up with what this controller wrote (`EndpointSliceTracker`), the sync fails and is retried:
   acting on it would create duplicates.
3. The reconciler, per address type of the Service (``spec.ipFamilies``; IPv4 by default):
   - desired endpoints, grouped by their port list: every pod with an IP that is not terminal
     (terminating pods stay, ``ready: false``); its ports are the Service ports whose
     ``targetPort`` the pod resolves (a named port the pod lacks leaves that port out for it).
     An endpoint carries ``addresses``, ``conditions`` (``serving`` = pod Ready, ``terminating`` =
     deletionTimestamp set, ``ready`` = serving and not terminating, or always true with
     ``publishNotReadyAddresses``), ``hostname`` (``spec.hostname`` when ``spec.subdomain`` is
     the Service's name), ``targetRef``, ``nodeName`` and ``zone`` (the node's
     ``topology.kubernetes.io/zone`` label). A pod whose node is not in the cache is left out
     (and the sync retried) unless the Service publishes not-ready addresses.
   - upstream's packing (``reconcileByPortMapping``): endpoints kept in the slice that holds
     them, changed ones rewritten in place, removed ones dropped (an emptied slice is deleted);
     new endpoints fill the slices being updated anyway (fullest first), then the unchanged
     slice they fit best, then new slices of at most ``--max-endpoints-per-slice`` (100);
     a create and a delete become one update. A Service without endpoints keeps one empty
     placeholder slice.
   - slices are created with ``generateName: <svc>-``, the Service's labels plus
     ``kubernetes.io/service-name``, ``endpointslice.kubernetes.io/managed-by`` and, for a
     headless Service, ``service.kubernetes.io/headless``; a controller ownerReference to the
     Service; and the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation
     (`TriggerTimeTracker`), which kube-proxy turns into network-programming latency.
4. A failed write records a ``FailedToUpdateEndpointSlices`` Warning on the Service and the key
   is retried with backoff.

Pod events enqueue at once (``--endpoint-updates-batch-period`` 0, as upstream's default), so
a pod turning unready leaves the ready endpoints within one API round trip.
"""

from __future__ import annotations

import copy
import logging

from kubeling.client import object_of, split_meta_namespace_key
from kubeling.client.events import WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import is_pod_ready
from kubeling.controllers.endpointslice_utils import (
    sync_with_retry_budget,
    write_slices,
    LABEL_HEADLESS,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    LABEL_TOPOLOGY_ZONE,
    LAST_CHANGE_TRIGGER_TIME,
    EndpointSliceTracker,
    StaleInformerCache,
    TriggerTimeTracker,
    endpoint_hash,
    endpoint_slice_prefix,
    endpoints_equal_beyond_hash,
    find_port,
    format_trigger_time,
    ip_family,
    is_service_ip_set,
    owned_by,
    owner_reference,
    pod_ips,
    pod_service_memberships,
    port_map_key,
    service_selects,
    services_to_update_on_pod_change,
    should_pod_be_in_endpoints,
    should_set_hostname,
)

log = logging.getLogger(__name__)

CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100
ENDPOINT_SLICE_CHANGE_MIN_SYNC_DELAY = 1.0  # upstream's endpointSliceChangeMinSyncDelay
RESERVED_LABELS = (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS)


def service_address_types(service: dict) -> list[str]:
    families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
    return [f for f in families if f in ("IPv4", "IPv6")] or ["IPv4"]


def slice_labels(service: dict, controller_name: str) -> dict:
    """The labels a slice of ``service`` carries (upstream's ``setEndpointSliceLabels``)."""
    labels = {k: v for k, v in (service["metadata"].get("labels") or {}).items() if k not in RESERVED_LABELS}
    if not is_service_ip_set(service):
        labels[LABEL_HEADLESS] = ""
    labels[LABEL_SERVICE_NAME] = service["metadata"]["name"]
    labels[LABEL_MANAGED_BY] = controller_name
    return labels


def endpoint_ports(service: dict, pod: dict) -> list[dict]:
    """The slice ports ``pod`` offers for ``service`` (upstream's ``getEndpointPorts``)."""
    out: list[dict] = []
    spec = service.get("spec") or {}
    for sp in spec.get("ports") or ():
        num = find_port(pod, sp)
        if num is None:
            continue
        port = {"name": sp.get("name") or "", "port": num, "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def pod_to_endpoint(pod: dict, node: dict | None, service: dict, address_type: str) -> dict:
    """Upstream's ``podToEndpoint``."""
    serving = is_pod_ready(pod)
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    ep: dict = {"addresses": [ip for ip in pod_ips(pod) if ip_family(ip) == address_type],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    if should_set_hostname(pod, service):
        ep["hostname"] = pod["spec"]["hostname"]
    meta = pod["metadata"]
    ep["targetRef"] = {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid")}
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        ep["nodeName"] = node_name
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(LABEL_TOPOLOGY_ZONE)
    if zone:
        ep["zone"] = zone
    return ep


def _same_placeholder(a: dict, b: dict) -> bool:
    """Upstream's ``placeholderSliceCompare``: namespace, labels, owners, ports, endpoints."""
    ma, mb = a["metadata"], b["metadata"]
    return (ma.get("namespace") == mb.get("namespace") and (ma.get("labels") or {}) == (mb.get("labels") or {})
            and [r.get("uid") for r in ma.get("ownerReferences") or ()] == [r.get("uid") for r in mb.get("ownerReferences") or ()]
            and a.get("addressType") == b.get("addressType") and not (a.get("ports") or b.get("ports"))
            and not (a.get("endpoints") or b.get("endpoints")))


class Reconciler:
    """Upstream's endpointslice ``Reconciler``: desired endpoints → slice creates/updates/deletes."""

    def __init__(self, client, nodes, tracker: EndpointSliceTracker, *, max_endpoints_per_slice: int,
                 controller_name: str = CONTROLLER_NAME) -> None:
        self.client = client
        self.nodes = nodes
        self.tracker = tracker
        self.max = max(1, int(max_endpoints_per_slice))
        self.controller_name = controller_name

    def new_slice(self, service: dict, ports: list[dict], address_type: str) -> dict:
        meta = service["metadata"]
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": endpoint_slice_prefix(meta["name"]), "namespace": meta.get("namespace"),
                             "labels": slice_labels(service, self.controller_name),
                             "ownerReferences": [owner_reference(service, "Service")]},
                "addressType": address_type, "endpoints": [], "ports": copy.deepcopy(ports)}

    async def reconcile(self, service: dict, pods: list[dict], existing: list[dict], trigger) -> None:
        types = service_address_types(service)
        errors: list[str] = []
        to_delete = []
        by_type: dict[str, list[dict]] = {t: [] for t in types}
        for s in existing:
            if owned_by(s, service) and s.get("addressType") in by_type:
                by_type[s["addressType"]].append(s)
            else:
                to_delete.append(s)
        ns = service["metadata"].get("namespace")
        for s in to_delete:
            try:
                await self.client.delete("discovery.k8s.io", "v1", "endpointslices", s["metadata"]["name"],
                                         namespace=ns)
                self.tracker.expect_deletion(s)
            except Exception as e:  # noqa: BLE001 - gathered and raised below
                if getattr(e, "code", None) != 404:
                    errors.append(str(e))
        for t in types:
            try:
                await self._reconcile_by_address_type(service, pods, by_type[t], trigger, t)
            except Exception as e:  # noqa: BLE001 - gathered and raised below
                errors.append(str(e))
        if errors:
            raise RuntimeError("; ".join(errors))

    async def _reconcile_by_address_type(self, service: dict, pods: list[dict], existing: list[dict], trigger,
                                         address_type: str) -> None:
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        existing_by_ports: dict[str, list[dict]] = {}
        for s in existing:
            existing_by_ports.setdefault(port_map_key(s.get("ports")), []).append(s)
        desired: dict[str, dict[str, dict]] = {}
        desired_ports: dict[str, list[dict]] = {}
        skipped: list[str] = []
        for pod in pods:
            if not should_pod_be_in_endpoints(pod, True):
                continue
            ports = endpoint_ports(service, pod)  # none resolved: the pod appears with no ports, as upstream
            key = port_map_key(ports)
            node_name = pod["spec"].get("nodeName")
            node = self.nodes.get(node_name) if node_name else None
            if node is None and not publish_not_ready:
                skipped.append(f"skipping Pod {pod['metadata']['name']} for Service "
                               f"{service['metadata'].get('namespace')}/{service['metadata']['name']}: "
                               f"Node {node_name} Not Found")
                continue
            ep = pod_to_endpoint(pod, node, service, address_type)
            if ep["addresses"]:
                desired.setdefault(key, {})[endpoint_hash(ep)] = ep
                desired_ports[key] = ports
        to_create: list[dict] = []
        to_update: list[dict] = []
        to_delete: list[dict] = []
        for key, wanted in desired.items():
            c, u, d = self._reconcile_by_port_mapping(service, existing_by_ports.get(key, []), wanted,
                                                      desired_ports[key], address_type)
            to_create += c
            to_update += u
            to_delete += d
        for key, slices in existing_by_ports.items():
            if key not in desired:
                to_delete += slices
        if len(existing) == len(to_delete) and not to_create:
            placeholder = self.new_slice(service, [], address_type)
            if len(to_delete) == 1 and _same_placeholder(to_delete[0], placeholder):
                to_delete = []
            else:
                to_create.append(placeholder)
        await self.finalize(service, to_create, to_update, to_delete, trigger)
        if skipped:
            raise RuntimeError("; ".join(skipped))

    def _reconcile_by_port_mapping(self, service: dict, existing: list[dict], wanted: dict[str, dict],
                                   ports: list[dict], address_type: str):
        wanted = dict(wanted)
        labels = slice_labels(service, self.controller_name)
        by_name: dict[str, dict] = {}
        unchanged: list[str] = []
        updating: list[str] = []
        deleting: list[str] = []
        # 1. keep what is still wanted where it is; rewrite what changed; drop what went
        for s in existing:
            name = s["metadata"]["name"]
            by_name[name] = s
            kept = []
            changed = False
            for ep in s.get("endpoints") or ():
                got = wanted.pop(endpoint_hash(ep), None)
                if got is not None:
                    kept.append(got)
                    if not endpoints_equal_beyond_hash(got, ep):
                        changed = True
            labels_changed = (s["metadata"].get("labels") or {}) != labels
            if changed or len(kept) != len(s.get("endpoints") or ()):
                if not kept:
                    deleting.append(name)
                else:
                    new = copy.deepcopy(s)
                    new["endpoints"] = kept
                    new["metadata"]["labels"] = dict(labels)
                    by_name[name] = new
                    updating.append(name)
            elif labels_changed:
                new = copy.deepcopy(s)
                new["endpoints"] = list(new.get("endpoints") or [])
                new["metadata"]["labels"] = dict(labels)
                by_name[name] = new
                updating.append(name)
            else:
                unchanged.append(name)
        pending = [wanted[k] for k in sorted(wanted, key=lambda h: (wanted[h]["addresses"], h))]
        # 2. fill the slices being written anyway, fullest first
        if pending and updating:
            for name in sorted(updating, key=lambda n: -len(by_name[n]["endpoints"])):
                s = by_name[name]
                while pending and len(s["endpoints"]) < self.max:
                    s["endpoints"].append(pending.pop(0))
        # 3. the rest: into the unchanged slice it fits best, else new slices
        to_create: list[dict] = []
        while pending:
            fill = None
            if len(pending) < self.max and unchanged:
                fill = self._slice_to_fill([by_name[n] for n in unchanged], len(pending))
            if fill is None:
                fill = self.new_slice(service, ports, address_type)
            else:
                fill = copy.deepcopy(fill)
                fill["endpoints"] = list(fill.get("endpoints") or [])
                by_name[fill["metadata"]["name"]] = fill
            while pending and len(fill["endpoints"]) < self.max:
                fill["endpoints"].append(pending.pop(0))
            name = fill["metadata"].get("name")
            if name:
                if name not in updating:
                    updating.append(name)
                if name in unchanged:
                    unchanged.remove(name)
            else:
                to_create.append(fill)
        return to_create, [by_name[n] for n in updating], [by_name[n] for n in deleting]

    def _slice_to_fill(self, slices: list[dict], count: int) -> dict | None:
        closest, best = self.max, None
        for s in slices:
            diff = self.max - (count + len(s.get("endpoints") or ()))
            if 0 <= diff < closest:
                closest, best = diff, s
                if diff == 0:
                    break
        return best

    async def finalize(self, service: dict, to_create: list[dict], to_update: list[dict], to_delete: list[dict],
                       trigger) -> None:
        # a create and a delete become one update of the slice that would go
        i = 0
        while i < len(to_delete) and to_create:
            gone, new = to_delete[i], to_create[-1]
            if gone.get("addressType") == new.get("addressType") and owned_by(gone, service):
                new["metadata"]["name"] = gone["metadata"]["name"]  # generateName stays, as upstream's
                new["metadata"]["resourceVersion"] = gone["metadata"].get("resourceVersion")
                new["metadata"]["uid"] = gone["metadata"].get("uid")
                for k in ("annotations",):
                    if gone["metadata"].get(k):
                        new["metadata"][k] = dict(gone["metadata"][k])
                to_create.pop()
                to_update.append(new)
                to_delete.pop(i)
            else:
                i += 1
        await write_slices(self.client, self.tracker, service, "Service", to_create, to_update, to_delete,
                           before_write=lambda s: _set_trigger_time(s, trigger))


def _set_trigger_time(s: dict, trigger) -> None:
    ann = s["metadata"].setdefault("annotations", {}) or {}
    s["metadata"]["annotations"] = ann
    if trigger is not None:
        ann[LAST_CHANGE_TRIGGER_TIME] = format_trigger_time(trigger)
    else:
        ann.pop(LAST_CHANGE_TRIGGER_TIME, None)


class EndpointSliceController(Controller):
    NAME = "endpointslice"
    WORKERS = 5  # upstream's --concurrent-service-endpoint-syncs
    COMPONENT = "endpoint-slice-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.informer_for("", "v1", "services")
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.slices = ctx.informers.informer_for("discovery.k8s.io", "v1", "endpointslices")
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.recorder = ctx.recorder(self.COMPONENT)
        self.batch_period = float(ctx.endpointslice_updates_batch_period or 0.0)
        self.tracker = EndpointSliceTracker()
        self.trigger_times = TriggerTimeTracker()
        self.reconciler = Reconciler(self.client, self.nodes, self.tracker,
                                     max_endpoints_per_slice=ctx.max_endpoints_per_slice or MAX_ENDPOINTS_PER_SLICE)
        self.handle(self.services, on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                    on_delete=self.enqueue)
        self.handle(self.pods, on_add=self.add_pod, on_update=self.update_pod, on_delete=self.delete_pod)
        self.handle(self.slices, on_add=self.add_slice, on_update=self.update_slice, on_delete=self.delete_slice)
        self.handle(self.nodes)

    # -- handlers -------------------------------------------------------------------------

    def enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def _add_keys(self, keys) -> None:
        for k in keys:
            if self.batch_period > 0:
                self.queue.add_after(k, self.batch_period)
            else:
                self.queue.add(k)

    def _services_in(self, ns: str) -> list[dict]:
        return self.services.indexer.by_namespace(ns)

    def add_pod(self, pod: dict) -> None:
        self._add_keys(pod_service_memberships(self._services_in(pod["metadata"].get("namespace", "")), pod))

    def update_pod(self, old: dict, cur: dict) -> None:
        self._add_keys(services_to_update_on_pod_change(self._services_in(cur["metadata"].get("namespace", "")),
                                                        old, cur))

    def delete_pod(self, obj) -> None:
        self.add_pod(object_of(obj))

    def _managed(self, s: dict) -> bool:
        return (s["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == CONTROLLER_NAME

    def _queue_for_slice(self, s: dict) -> None:
        name = (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME)
        if name:
            self.queue.add_after(f"{s['metadata'].get('namespace', '')}/{name}",
                                 max(ENDPOINT_SLICE_CHANGE_MIN_SYNC_DELAY, self.batch_period))

    def add_slice(self, s: dict) -> None:
        if self._managed(s) and self.tracker.should_sync(s):
            self._queue_for_slice(s)

    def update_slice(self, old: dict, cur: dict) -> None:
        ol, cl = old["metadata"].get("labels") or {}, cur["metadata"].get("labels") or {}
        if ol.get(LABEL_SERVICE_NAME) != cl.get(LABEL_SERVICE_NAME):
            self._queue_for_slice(cur)
            self._queue_for_slice(old)
            return
        managed_changed = (ol.get(LABEL_MANAGED_BY) == CONTROLLER_NAME) != (cl.get(LABEL_MANAGED_BY) == CONTROLLER_NAME)
        if managed_changed and not self._managed(cur):
            self.tracker.handle_deletion(cur)  # no longer ours: never wait for it again
        if managed_changed or (self._managed(cur) and self.tracker.should_sync(cur)):
            self._queue_for_slice(cur)

    def delete_slice(self, obj) -> None:
        s = object_of(obj)
        if self._managed(s) and self.tracker.has(s) and not self.tracker.handle_deletion(s):
            self._queue_for_slice(s)

    # -- sync ---------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        await sync_with_retry_budget(self.NAME, self.queue, key, self.sync_key)

    async def sync_key(self, key: str) -> None:
        namespace, name = split_meta_namespace_key(key)
        service = self.services.get(key)
        if service is None:
            self.trigger_times.delete(key)
            self.tracker.delete_service(key)
            return
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or not spec.get("selector"):
            return
        pods = [p for p in self.pods.indexer.by_namespace(namespace)
                if service_selects(service, p["metadata"].get("labels"))]
        slices = [s for s in self.slices.indexer.by_namespace(namespace)
                  if (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == name
                  and self._managed(s) and not s["metadata"].get("deletionTimestamp")]
        if self.tracker.stale(key, slices):
            raise StaleInformerCache("EndpointSlice informer cache is out of date")
        with self.trigger_times.computing(key, service, pods) as trigger:
            try:
                await self.reconciler.reconcile(service, pods, slices, trigger)
            except Exception as e:
                self.recorder.eventf(service, WARNING, "FailedToUpdateEndpointSlices",
                                     "Error updating Endpoint Slices for Service %s/%s: %s", namespace, name, e)
                raise
