"""EndpointSlices -> {ServicePortName: [Endpoint]} (upstream ``pkg/proxy/endpointschangetracker.go``
and ``endpointslicecache.go``).

kube-proxy reads only ``discovery.k8s.io/v1`` EndpointSlices. The slices of one Service (label
``kubernetes.io/service-name``) are merged: an endpoint listed by two slices appears once (a
ready copy wins, as upstream's cache does). Conditions default as the API documents them:
``ready`` nil means ready, ``serving`` nil means ``ready``, ``terminating`` nil means false.
Only IPv4 slices are read (the modes are IPv4). ``is_local`` is ``nodeName == this node``.

Network-programming latency: when a slice changes and carries the annotation
``endpoints.kubernetes.io/last-change-trigger-time`` (set by the EndpointSlice controller), its
time is kept until the next successful sync, which observes ``now - trigger`` for each
(`take_trigger_times`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import datetime

from kubeling.proxy.types import Endpoint, ServicePortName

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def parse_time(text: str) -> float | None:
    """RFC 3339 (nanoseconds allowed) -> POSIX seconds; None if it does not parse."""
    if not text:
        return None
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text.strip())
    if not m:
        return None
    frac = (m.group(2) or "")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac + tz).timestamp()
    except ValueError:
        return None


def slice_service(sl: dict) -> str:
    """``namespace/name`` of the Service a slice belongs to ("" if none)."""
    meta = sl.get("metadata") or {}
    svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace', '')}/{svc}" if svc else ""


def slice_endpoints(sl: dict, node_name: str) -> dict[ServicePortName, list[Endpoint]]:
    """One slice's endpoints, by the service port they serve."""
    meta = sl.get("metadata") or {}
    svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not svc or (sl.get("addressType") or "IPv4") != "IPv4":
        return {}
    out: dict[ServicePortName, list[Endpoint]] = {}
    eps = []
    for e in sl.get("endpoints") or ():
        addrs = e.get("addresses") or ()
        if not addrs:
            continue
        try:
            ip = str(ipaddress.IPv4Address(addrs[0]))
        except (ipaddress.AddressValueError, ValueError):
            continue
        cond = e.get("conditions") or {}
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        terminating = bool(cond.get("terminating") or False)
        node = e.get("nodeName") or ""
        eps.append((ip, ready, serving, terminating, node, e.get("zone") or ""))
    for p in sl.get("ports") or ():
        port = p.get("port")
        if port is None:
            continue
        spn = ServicePortName(meta.get("namespace", ""), svc, p.get("name") or "", p.get("protocol") or "TCP")
        out[spn] = [Endpoint(ip, int(port), ready=r, serving=s, terminating=t, node_name=n, zone=z,
                             is_local=bool(node_name) and n == node_name) for ip, r, s, t, n, z in eps]
    return out


def _ep_sort_key(e: Endpoint):
    return int(ipaddress.IPv4Address(e.ip)), e.port


class EndpointsChangeTracker:
    """The current endpoints map, kept by `update`, and what changed since `take_changes`."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.map: dict[ServicePortName, list[Endpoint]] = {}
        self._slices: dict[str, dict[str, dict]] = {}              # service -> slice name -> slice
        self._by_service: dict[str, set[ServicePortName]] = {}
        self._changed: set[ServicePortName] = set()
        self._trigger_times: list[float] = []

    def update(self, old: dict | None, new: dict | None) -> bool:
        """A slice was added (``old`` None), updated, or deleted (``new`` None). True when the
        merged endpoints of some service port changed."""
        obj = new if new is not None else old
        if obj is None:
            return False
        svc = slice_service(obj)
        if not svc:
            return False
        name = (obj.get("metadata") or {}).get("name", "")
        slices = self._slices.setdefault(svc, {})
        if new is None:
            slices.pop(name, None)
        else:
            slices[name] = new
            t = parse_time(((new.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION, ""))
            old_t = None if old is None else parse_time(
                ((old.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_TIME_ANNOTATION, ""))
            if t is not None and t != old_t:
                self._trigger_times.append(t)
        if not slices:
            self._slices.pop(svc, None)
        return self._rebuild(svc)

    def _rebuild(self, svc: str) -> bool:
        merged: dict[ServicePortName, dict[str, Endpoint]] = {}
        for sl_name in sorted(self._slices.get(svc, {})):
            try:
                per_port = slice_endpoints(self._slices[svc][sl_name], self.node_name)
            except Exception:  # noqa: BLE001 - one bad object never stops the proxy
                log.exception("endpointslice %s/%s: cannot read it; ignoring it", svc.split("/")[0], sl_name)
                continue
            for spn, eps in per_port.items():
                seen = merged.setdefault(spn, {})
                for e in eps:
                    if str(e) not in seen or (e.ready and not seen[str(e)].ready):
                        seen[str(e)] = e
        new = {spn: sorted(d.values(), key=_ep_sort_key) for spn, d in merged.items()}
        before = self._by_service.get(svc, set())
        changed = {spn for spn in before | new.keys() if self.map.get(spn) != new.get(spn)}
        for spn in before - new.keys():
            self.map.pop(spn, None)
        self.map.update(new)
        if new:
            self._by_service[svc] = set(new)
        else:
            self._by_service.pop(svc, None)
        self._changed |= changed
        return bool(changed)

    def pending(self) -> int:
        return len(self._changed)

    def take_changes(self) -> set[ServicePortName]:
        out, self._changed = self._changed, set()
        return out

    def take_trigger_times(self) -> list[float]:
        out, self._trigger_times = self._trigger_times, []
        return out
