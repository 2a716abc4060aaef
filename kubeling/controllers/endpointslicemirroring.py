"""EndpointSliceMirroring controller: the Endpoints of Services *without* a selector, mirrored
into EndpointSlices (upstream's ``pkg/controller/endpointslicemirroring``; ``--controllers``
name ``endpointslice-mirroring``). kube-proxy, DNS and ingress read slices only, so a
hand-written Endpoints (an external database, say) reaches them through here.

::

    endpoints ───────▶ queue (Endpoints keys = Service keys) ──▶ sync(key) ──▶ slices
    services ────────▶   ▲   (added, deleted, or selector set/unset)
    endpointslices ──────┘   (managed by us, written by someone else)

``sync(key)``:

1. The mirrored slices (``endpointslice.kubernetes.io/managed-by:
   endpointslicemirroring-controller.k8s.io``, ``kubernetes.io/service-name: <name>``) are
   deleted when the Service is gone, has a selector (the EndpointSlice controller serves it),
   the Endpoints are gone, or the Endpoints must not be mirrored: labelled
   ``endpointslice.kubernetes.io/skip-mirror: "true"`` or carrying a leader-election
   annotation.
2. Otherwise the Endpoints' subsets, repacked, give one slice per (ports, address type): each
   address becomes an endpoint (``ready`` = in ``addresses``, ``hostname``, ``nodeName``,
   ``targetRef``); at most ``--mirroring-max-endpoints-per-subset`` (1000) addresses per subset
   are mirrored (``TooManyAddressesToMirror`` Event beyond), addresses that are no IP are
   skipped (``InvalidIPAddress`` Event). Slices are named ``<name>-xxxxx``, owned by the
   Endpoints, carry the Endpoints' labels and annotations (but the trigger time and kubectl's
   last-applied configuration) and are rewritten only when they differ.
"""

from __future__ import annotations

import copy
import logging

from kubeling.client import object_of, split_meta_namespace_key
from kubeling.client.events import WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.endpoints import repack_subsets
from kubeling.controllers.endpointslice_utils import (
    sync_with_retry_budget,
    write_slices,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    LABEL_SKIP_MIRROR,
    LAST_APPLIED,
    LAST_CHANGE_TRIGGER_TIME,
    LEADER_ANNOTATION,
    EndpointSliceTracker,
    StaleInformerCache,
    endpoint_hash,
    endpoint_slice_prefix,
    endpoints_equal_beyond_hash,
    ip_family,
    owner_reference,
    port_map_key,
)

log = logging.getLogger(__name__)

CONTROLLER_NAME = "endpointslicemirroring-controller.k8s.io"
MAX_ENDPOINTS_PER_SUBSET = 1000


def should_mirror(endpoints: dict | None) -> bool:
    if endpoints is None:
        return False
    meta = endpoints["metadata"]
    return (meta.get("labels") or {}).get(LABEL_SKIP_MIRROR) != "true" \
        and LEADER_ANNOTATION not in (meta.get("annotations") or {})


def address_to_endpoint(address: dict, ready: bool) -> dict:
    ep: dict = {"addresses": [address["ip"]], "conditions": {"ready": ready}}
    if address.get("hostname"):
        ep["hostname"] = address["hostname"]
    if address.get("targetRef"):
        ep["targetRef"] = copy.deepcopy(address["targetRef"])
    if address.get("nodeName"):
        ep["nodeName"] = address["nodeName"]
    return ep


def _mirrored_annotations(endpoints: dict) -> dict:
    return {k: v for k, v in (endpoints["metadata"].get("annotations") or {}).items()
            if k not in (LAST_CHANGE_TRIGGER_TIME, LAST_APPLIED)}


def _mirrored_labels(endpoints: dict) -> dict:
    labels = dict(endpoints["metadata"].get("labels") or {})
    labels[LABEL_SERVICE_NAME] = endpoints["metadata"]["name"]
    labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
    return labels


class EndpointSliceMirroringController(Controller):
    NAME = "endpointslice-mirroring"
    WORKERS = 5  # upstream's --mirroring-concurrent-service-endpoint-syncs
    COMPONENT = "endpoint-slice-mirroring-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.informer_for("", "v1", "services")
        self.endpoints = ctx.informers.informer_for("", "v1", "endpoints")
        self.slices = ctx.informers.informer_for("discovery.k8s.io", "v1", "endpointslices")
        self.recorder = ctx.recorder(self.COMPONENT)
        self.max_per_subset = max(1, int(ctx.mirroring_max_endpoints_per_subset or MAX_ENDPOINTS_PER_SUBSET))
        self.tracker = EndpointSliceTracker()
        self.handle(self.services, on_add=self.enqueue, on_update=self.update_service, on_delete=self.enqueue)
        self.handle(self.endpoints, on_add=self.add_endpoints, on_update=self.update_endpoints,
                    on_delete=self.delete_endpoints)
        self.handle(self.slices, on_add=self.add_slice, on_update=self.update_slice, on_delete=self.delete_slice)

    # -- handlers ------------------------------------------------------------------------

    def enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def update_service(self, old: dict, cur: dict) -> None:
        if bool((old.get("spec") or {}).get("selector")) != bool((cur.get("spec") or {}).get("selector")):
            self.enqueue(cur)

    def add_endpoints(self, ep: dict) -> None:
        if should_mirror(ep):
            self.enqueue(ep)

    def update_endpoints(self, old: dict, cur: dict) -> None:
        if should_mirror(old) or should_mirror(cur):
            self.enqueue(cur)

    def delete_endpoints(self, obj) -> None:
        ep = object_of(obj)
        if should_mirror(ep):
            self.enqueue(ep)

    @staticmethod
    def _managed(s: dict) -> bool:
        return (s["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == CONTROLLER_NAME

    def _queue_for_slice(self, s: dict) -> None:
        name = (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME)
        if name:
            self.queue.add(f"{s['metadata'].get('namespace', '')}/{name}")

    def add_slice(self, s: dict) -> None:
        if self._managed(s) and self.tracker.should_sync(s):
            self._queue_for_slice(s)

    def update_slice(self, old: dict, cur: dict) -> None:
        ol, cl = old["metadata"].get("labels") or {}, cur["metadata"].get("labels") or {}
        if ol.get(LABEL_SERVICE_NAME) != cl.get(LABEL_SERVICE_NAME):
            self._queue_for_slice(cur)
            self._queue_for_slice(old)
            return
        changed = self._managed(old) != self._managed(cur)
        if changed and not self._managed(cur):
            self.tracker.handle_deletion(cur)
        if changed or (self._managed(cur) and self.tracker.should_sync(cur)):
            self._queue_for_slice(cur)

    def delete_slice(self, obj) -> None:
        s = object_of(obj)
        if self._managed(s) and self.tracker.has(s) and not self.tracker.handle_deletion(s):
            self._queue_for_slice(s)

    # -- sync ----------------------------------------------------------------------------

    def _mirrored(self, namespace: str, name: str) -> list[dict]:
        return [s for s in self.slices.indexer.by_namespace(namespace)
                if self._managed(s) and (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == name]

    async def _delete_mirrored(self, key: str, namespace: str, name: str) -> None:
        self.tracker.delete_service(key)
        for s in self._mirrored(namespace, name):
            if s["metadata"].get("deletionTimestamp"):
                continue
            try:
                await self.client.delete("discovery.k8s.io", "v1", "endpointslices", s["metadata"]["name"],
                                         namespace=namespace)
            except Exception as e:
                if getattr(e, "code", None) != 404:
                    raise

    async def sync(self, key: str) -> None:
        await sync_with_retry_budget(self.NAME, self.queue, key, self.sync_key)

    async def sync_key(self, key: str) -> None:
        namespace, name = split_meta_namespace_key(key)
        service = self.services.get(key)
        endpoints = self.endpoints.get(key)
        if service is None or (service.get("spec") or {}).get("selector") or not should_mirror(endpoints):
            await self._delete_mirrored(key, namespace, name)
            return
        slices = [s for s in self._mirrored(namespace, name) if not s["metadata"].get("deletionTimestamp")]
        if self.tracker.stale(key, slices):
            raise StaleInformerCache("EndpointSlice informer cache is out of date")
        await self.reconcile(endpoints, slices)

    async def reconcile(self, endpoints: dict, existing: list[dict]) -> None:
        desired: dict[str, dict[str, dict]] = {}
        ports_of: dict[str, list[dict]] = {}
        type_of: dict[str, str] = {}
        invalid = skipped = 0
        for ss in repack_subsets(endpoints.get("subsets") or []):
            ports = [{"name": p.get("name") or "", "port": p.get("port"), "protocol": p.get("protocol") or "TCP",
                      **({"appProtocol": p["appProtocol"]} if p.get("appProtocol") else {})}
                     for p in ss.get("ports") or ()]
            total = len(ss.get("addresses") or ()) + len(ss.get("notReadyAddresses") or ())
            added = 0
            for ready, field in ((True, "addresses"), (False, "notReadyAddresses")):
                for a in ss.get(field) or ():
                    if added >= self.max_per_subset:
                        break
                    family = ip_family(a.get("ip") or "")
                    if family is None:
                        invalid += 1
                        continue
                    key = f"{family}|{port_map_key(ports)}"
                    ep = address_to_endpoint(a, ready)
                    desired.setdefault(key, {})[endpoint_hash(ep)] = ep
                    ports_of[key], type_of[key] = ports, family
                    added += 1
            skipped += total - added
        if invalid:
            self.recorder.eventf(endpoints, WARNING, "InvalidIPAddress",
                                 "Skipped %d invalid IP addresses when mirroring to EndpointSlices", invalid)
        if skipped > invalid:
            self.recorder.eventf(endpoints, WARNING, "TooManyAddressesToMirror",
                                 "A max of %d addresses can be mirrored to EndpointSlices per Endpoints subset. "
                                 "%d addresses were skipped", self.max_per_subset, skipped)
        existing_by_key: dict[str, list[dict]] = {}
        for s in sorted(existing, key=lambda s: s["metadata"]["name"]):
            existing_by_key.setdefault(f"{s.get('addressType')}|{port_map_key(s.get('ports'))}", []).append(s)
        to_create: list[dict] = []
        to_update: list[dict] = []
        to_delete: list[dict] = []
        labels, annotations = _mirrored_labels(endpoints), _mirrored_annotations(endpoints)
        for key, wanted in desired.items():
            have = existing_by_key.get(key, [])
            if have:
                to_delete += have[1:]
                first = have[0]
                current = {endpoint_hash(e): e for e in first.get("endpoints") or ()}
                same = current.keys() == wanted.keys() and all(
                    endpoints_equal_beyond_hash(wanted[h], current[h]) for h in wanted)
                if same and (first["metadata"].get("labels") or {}) == labels \
                        and (first["metadata"].get("annotations") or {}) == annotations:
                    continue
            new = self._new_slice(endpoints, ports_of[key], type_of[key], have[0]["metadata"]["name"] if have else "")
            new["endpoints"] = [wanted[h] for h in sorted(wanted)][:self.max_per_subset]
            if have:
                new["metadata"]["resourceVersion"] = have[0]["metadata"].get("resourceVersion")
                to_update.append(new)
            else:
                to_create.append(new)
        for key, have in existing_by_key.items():
            if key not in desired:
                to_delete += have
        await self._finalize(endpoints, to_create, to_update, to_delete)

    def _new_slice(self, endpoints: dict, ports: list[dict], address_type: str, name: str) -> dict:
        meta = {"namespace": endpoints["metadata"].get("namespace"), "labels": _mirrored_labels(endpoints),
                "annotations": _mirrored_annotations(endpoints),
                "ownerReferences": [owner_reference(endpoints, "Endpoints")]}
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = endpoint_slice_prefix(endpoints["metadata"]["name"])
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
                "addressType": address_type, "ports": copy.deepcopy(ports), "endpoints": []}

    async def _finalize(self, endpoints: dict, to_create: list[dict], to_update: list[dict],
                        to_delete: list[dict]) -> None:
        # recycle: a slice to delete becomes the slice to create of the same address type
        i = 0
        while i < len(to_delete):
            match = next((c for c in reversed(to_create) if c.get("addressType") == to_delete[i].get("addressType")),
                         None)
            if match is None:
                i += 1
                continue
            gone = to_delete.pop(i)
            to_create.remove(match)
            match["metadata"]["name"] = gone["metadata"]["name"]
            match["metadata"]["resourceVersion"] = gone["metadata"].get("resourceVersion")
            to_update.append(match)
        await write_slices(self.client, self.tracker, endpoints, "Endpoints", to_create, to_update, to_delete)
