"""What the Endpoints, EndpointSlice and EndpointSliceMirroring controllers share: upstream's
``pkg/controller/util/endpoint``, ``pkg/controller/util/endpointslice`` and
``staging/.../endpointslice/util``.

- Labels and annotations with upstream's names (`LABEL_SERVICE_NAME`, `LABEL_MANAGED_BY`,
  `LAST_CHANGE_TRIGGER_TIME`, ...).
- `should_pod_be_in_endpoints`: not terminal, has an IP, and (unless terminating pods are
  wanted) not being deleted. A pod without an IP has never been bound and started.
- `find_port`: a Service port's ``targetPort`` on one pod — a number as is, a name looked up
  in the pod's containers (and sidecars: init containers with ``restartPolicy: Always``) with the
  port's protocol; ``None`` when the pod does not offer it (the pod is then skipped for that
  port, as upstream's ``FindPort`` error).
- `should_set_hostname`: ``spec.hostname`` set and ``spec.subdomain`` is the Service's name.
- `pod_service_memberships` / `services_to_update_on_pod_change`: the Services whose selector
  picks a pod, and which of them a pod update concerns (labels, hostname/subdomain, deletion,
  readiness, IPs, phase); a resync (same resourceVersion) concerns none.
- `TriggerTimeTracker`: upstream's ``ComputeEndpointLastChangeTriggerTime``: the earliest
  trigger time (a pod's Ready transition, the Service's creation) that changed since the last
  sync of the Service; the Service's creation time on its first sync; ``None`` when nothing
  changed (the annotation is then removed). Used as ``with tracker.computing(key, svc, pods) as
  trigger:``, its state moves on only when the sync's body ends without an exception: a sync
  that failed and is retried still carries the trigger time (upstream's tracker moves on at
  compute time, so the retry's write drops the annotation).
- `EndpointSliceTracker`: the slices a controller wrote, by resourceVersion, and those it
  deleted, so that a sync working from an informer cache that has not caught up with its own
  writes fails (``StaleInformerCache``) instead of creating a duplicate slice; and so that
  the events of its own writes do not resync the Service.
- Endpoint identity and comparison: `endpoint_hash` (addresses, hostname, targetRef
  namespace/name: upstream's ``hashEndpoint``) and `port_map_key` (the sorted ports).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Iterable, Iterator

import orjson

import logging
from collections.abc import Awaitable, Callable

from kubeling.api.labels import from_set
from kubeling.controllers.controller_utils import is_pod_ready, namespace_terminating, parse_time

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
LABEL_TOPOLOGY_ZONE = "topology.kubernetes.io/zone"

MAX_RETRIES = 15  # upstream's maxRetries: a Service is dropped from the queue after this many failures


class StaleInformerCache(Exception):
    """The EndpointSlice cache is older than this controller's own writes: retry later."""


# -- pods ---------------------------------------------------------------------------------------

def is_pod_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_ips(pod: dict) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or () if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


def should_pod_be_in_endpoints(pod: dict, include_terminating: bool) -> bool:
    if is_pod_terminal(pod):
        return False
    if not pod_ips(pod) or not (pod.get("spec") or {}).get("nodeName"):
        return False
    if not include_terminating and pod["metadata"].get("deletionTimestamp"):
        return False
    return True


def ip_family(ip: str) -> str | None:
    """``IPv4``, ``IPv6`` or None for a string that is no IP."""
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def find_port(pod: dict, service_port: dict) -> int | None:
    """The container port ``service_port``'s targetPort names on ``pod`` (upstream ``FindPort``)."""
    target = service_port.get("targetPort")
    if target is None or target == "" or target == 0:
        target = service_port.get("port")
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or ())
    containers += [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or ():
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return p.get("containerPort")
    return None


def should_set_hostname(pod: dict, service: dict) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == service["metadata"]["name"] \
        and pod["metadata"].get("namespace") == service["metadata"].get("namespace")


def is_service_ip_set(service: dict) -> bool:
    ip = (service.get("spec") or {}).get("clusterIP")
    return bool(ip) and ip != "None"


# -- which Services a pod concerns -------------------------------------------------------------

def service_selects(service: dict, labels: dict | None) -> bool:
    selector = (service.get("spec") or {}).get("selector")
    if not selector:  # nil (and, after a round trip through Go, empty): selects nothing
        return False
    return from_set(selector).matches(labels or {})


def pod_service_memberships(services: Iterable[dict], pod: dict) -> set[str]:
    """Keys of the Services (of the pod's namespace, in ``services``) whose selector picks ``pod``."""
    ns = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    return {f"{ns}/{s['metadata']['name']}" for s in services if service_selects(s, labels)}


def _pod_endpoints_changed(old: dict, cur: dict) -> tuple[bool, bool]:
    om, cm, os_, cs = old["metadata"], cur["metadata"], old.get("spec") or {}, cur.get("spec") or {}
    labels_changed = (om.get("labels") or {}) != (cm.get("labels") or {}) or \
        os_.get("hostname") != cs.get("hostname") or os_.get("subdomain") != cs.get("subdomain")
    if om.get("deletionTimestamp") != cm.get("deletionTimestamp"):
        return True, labels_changed
    if is_pod_ready(old) != is_pod_ready(cur):
        return True, labels_changed
    if pod_ips(old) != pod_ips(cur) or os_.get("nodeName") != cs.get("nodeName"):
        return True, labels_changed
    if is_pod_terminal(old) != is_pod_terminal(cur):
        return True, labels_changed
    return False, labels_changed


def services_to_update_on_pod_change(services_in_ns: list[dict], old: dict, cur: dict) -> set[str]:
    """Upstream's ``GetServicesToUpdateOnPodChange``."""
    if old["metadata"].get("resourceVersion") == cur["metadata"].get("resourceVersion"):
        return set()  # a resync
    pod_changed, labels_changed = _pod_endpoints_changed(old, cur)
    if not pod_changed and not labels_changed:
        return set()
    now = pod_service_memberships(services_in_ns, cur)
    if not labels_changed:
        return now
    before = pod_service_memberships(services_in_ns, old)
    if pod_changed:
        return now | before
    return now ^ before  # only the Services the pod joined or left


# -- trigger times ------------------------------------------------------------------------------

def _pod_trigger_time(pod: dict) -> dt.datetime | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return parse_time(c.get("lastTransitionTime"))
    return None


def format_trigger_time(t: dt.datetime) -> str:
    """RFC 3339 with fractional seconds when there are any (Go's ``time.RFC3339Nano``)."""
    t = t.astimezone(dt.timezone.utc)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        base += ("." + f"{t.microsecond:06d}").rstrip("0")
    return base + "Z"


class TriggerTimeTracker:
    """Upstream's ``TriggerTimeTracker`` (see the module docstring)."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[dict[str, dt.datetime], dt.datetime | None]] = {}

    @contextlib.contextmanager
    def computing(self, key: str, service: dict, pods: Iterable[dict]) -> Iterator[dt.datetime | None]:
        """The trigger time for this sync of ``key``; the tracker remembers this sync's state
        only if the body ends without an exception (a return is fine)."""
        trigger, state = self._compute(key, service, pods)
        yield trigger
        self._states[key] = state

    def _compute(self, key: str, service: dict, pods: Iterable[dict]) -> tuple[dt.datetime | None, tuple]:
        known = key in self._states
        last_pods, last_service = self._states.get(key, ({}, None))
        earliest: dt.datetime | None = None
        now_pods: dict[str, dt.datetime] = {}
        for pod in pods:
            t = _pod_trigger_time(pod)
            if t is None:
                continue
            name = pod["metadata"]["name"]
            now_pods[name] = t
            if name not in last_pods or t > last_pods[name]:
                earliest = t if earliest is None else min(earliest, t)
        created = parse_time(service["metadata"].get("creationTimestamp"))
        if created is not None and (last_service is None or created > last_service):
            earliest = created if earliest is None else min(earliest, created)
        state = (now_pods, created)
        if not known:
            return created, state
        return earliest, state

    def delete(self, key: str) -> None:
        self._states.pop(key, None)


# -- the slices a controller wrote ----------------------------------------------------------------

def _rv(obj: dict) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class EndpointSliceTracker:
    """Upstream's ``EndpointSliceTracker``, by resourceVersion (kubeling's are ordered integers;
    upstream uses ``generation``, which kubeling moves only with ``spec``)."""

    DELETED = -1

    def __init__(self) -> None:
        self._by_service: dict[str, dict[str, int]] = {}

    @staticmethod
    def _service_key(slice_: dict) -> str | None:
        name = (slice_["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME)
        return f"{slice_['metadata'].get('namespace', '')}/{name}" if name else None

    def has(self, slice_: dict) -> bool:
        key = self._service_key(slice_)
        return key is not None and slice_["metadata"].get("uid") in self._by_service.get(key, {})

    def should_sync(self, slice_: dict) -> bool:
        """True unless this is (at most) the version this controller wrote itself."""
        key = self._service_key(slice_)
        if key is None:
            return True
        seen = self._by_service.get(key, {}).get(slice_["metadata"].get("uid"))
        return seen is None or seen == self.DELETED or _rv(slice_) > seen

    def stale(self, service_key: str, slices: list[dict]) -> bool:
        tracked = dict(self._by_service.get(service_key, {}))
        for s in slices:
            seen = tracked.pop(s["metadata"].get("uid"), None)
            if seen is None:
                continue
            if seen == self.DELETED or _rv(s) < seen:
                return True
        # a slice written but not in the cache yet (deleted ones may be gone: that is their point)
        return any(v != self.DELETED for v in tracked.values())

    def update(self, slice_: dict) -> None:
        key = self._service_key(slice_)
        if key is not None:
            self._by_service.setdefault(key, {})[slice_["metadata"]["uid"]] = _rv(slice_)

    def expect_deletion(self, slice_: dict) -> None:
        key = self._service_key(slice_)
        if key is not None:
            self._by_service.setdefault(key, {})[slice_["metadata"]["uid"]] = self.DELETED

    def handle_deletion(self, slice_: dict) -> bool:
        """Forget a deleted slice; True if the deletion was expected (ours)."""
        key = self._service_key(slice_)
        tracked = self._by_service.get(key or "", {})
        seen = tracked.pop(slice_["metadata"].get("uid"), None)
        return seen == self.DELETED

    def delete_service(self, key: str) -> None:
        self._by_service.pop(key, None)


# -- endpoints and ports ------------------------------------------------------------------------

def endpoint_hash(ep: dict) -> str:
    ref = ep.get("targetRef") or {}
    return orjson.dumps([sorted(ep.get("addresses") or ()), ep.get("hostname") or "",
                         ref.get("namespace") or "", ref.get("name") or ""]).decode()


def _norm_ref(ref: dict | None) -> dict | None:
    if not ref:
        return None
    return {k: v for k, v in ref.items() if k != "resourceVersion" and v not in (None, "")}


def endpoints_equal_beyond_hash(a: dict, b: dict) -> bool:
    """Upstream's ``EndpointsEqualBeyondHash``: conditions, zone, nodeName, hints, targetRef."""
    ca, cb = a.get("conditions") or {}, b.get("conditions") or {}
    return all(ca.get(k) == cb.get(k) for k in ("ready", "serving", "terminating")) \
        and a.get("zone") == b.get("zone") and a.get("nodeName") == b.get("nodeName") \
        and a.get("hints") == b.get("hints") and _norm_ref(a.get("targetRef")) == _norm_ref(b.get("targetRef"))


def normalize_port(p: dict) -> dict:
    out = {"name": p.get("name") or "", "port": p.get("port"), "protocol": p.get("protocol") or "TCP"}
    if p.get("appProtocol"):
        out["appProtocol"] = p["appProtocol"]
    return out


def port_map_key(ports: Iterable[dict] | None) -> str:
    return orjson.dumps(sorted((normalize_port(p) for p in ports or ()),
                               key=lambda p: (p["name"], p["port"] or 0, p["protocol"])),
                        option=orjson.OPT_SORT_KEYS).decode()


def endpoint_slice_prefix(name: str) -> str:
    """``<name>-`` for generateName, or the bare name when the dash would make it too long."""
    return f"{name}-" if len(name) < 253 - 5 else name[:253 - 6] + "-"


def owned_by(obj: dict, owner: dict) -> bool:
    uid = owner["metadata"].get("uid")
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or ())


def owner_reference(owner: dict, kind: str) -> dict:
    meta = owner["metadata"]
    return {"apiVersion": "v1", "kind": kind, "name": meta["name"], "uid": meta.get("uid"),
            "controller": True, "blockOwnerDeletion": True}


log = logging.getLogger(__name__)


async def write_slices(client, tracker, owner: dict, kind: str, to_create: list[dict], to_update: list[dict],
                       to_delete: list[dict], *, before_write: Callable[[dict], None] | None = None) -> None:
    """A reconcile's result, as upstream's ``finalize``: the creates (none while ``owner`` is being
    deleted, and none once its namespace is going), the updates, then the deletes (a 404 is
    fine), each recorded in ``tracker``. A failure names the slice and its owner
    ("... EndpointSlice for Service ns/name") and stops there; the sync is retried."""
    ns, owner_name = owner["metadata"].get("namespace"), owner["metadata"]["name"]
    of = f"{kind} {ns}/{owner_name}"
    if not owner["metadata"].get("deletionTimestamp"):
        for s in to_create:
            if before_write:
                before_write(s)
            try:
                created = await client.create("discovery.k8s.io", "v1", "endpointslices", s, namespace=ns)
            except Exception as e:
                if namespace_terminating(e):
                    return
                raise RuntimeError(f"failed to create EndpointSlice for {of}: {e}") from e
            tracker.update(created)
    for s in to_update:
        if before_write:
            before_write(s)
        try:
            updated = await client.update("discovery.k8s.io", "v1", "endpointslices", s, namespace=ns)
        except Exception as e:
            raise RuntimeError(f"failed to update {s['metadata']['name']} EndpointSlice for {of}: {e}") from e
        tracker.update(updated)
    for s in to_delete:
        try:
            await client.delete("discovery.k8s.io", "v1", "endpointslices", s["metadata"]["name"], namespace=ns)
        except Exception as e:
            if getattr(e, "code", None) != 404:
                raise RuntimeError(f"failed to delete {s['metadata']['name']} EndpointSlice for {of}: {e}") from e
        tracker.expect_deletion(s)


async def sync_with_retry_budget(name: str, queue, key: str, sync_key: Callable[[str], Awaitable[None]]) -> None:
    """``sync_key(key)``; after `MAX_RETRIES` failures in a row the key is given up (upstream's
    maxRetries: its next event brings it back) instead of raising for another requeue."""
    try:
        await sync_key(key)
    except Exception as e:
        if queue.num_requeues(key) + 1 >= MAX_RETRIES:
            log.warning("%s: retry budget exceeded, dropping %s out of the queue: %s", name, key, e)
            return
        raise
