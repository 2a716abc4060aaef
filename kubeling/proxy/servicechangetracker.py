"""Services -> {ServicePortName: ServicePort} (upstream ``pkg/proxy/servicechangetracker.go`` and
``serviceport.go``).

`service_ports(svc)` is what one Service contributes. Not proxied, as upstream: headless
Services (``clusterIP: None``), ExternalName Services, Services without a cluster IP, and
Services labelled ``service.kubernetes.io/service-proxy-name`` (another proxy owns them; the
informer filters them out too). Only the IPv4 cluster IP is used (the modes are IPv4).

`ServiceChangeTracker` keeps the current map and the names of the ports that changed since the
last `take_changes` (what the runner passes as ``changed``).
"""

from __future__ import annotations

import ipaddress
import logging

from kubeling.proxy.types import ServicePort, ServicePortName

log = logging.getLogger(__name__)

SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
DEFAULT_CLIENT_IP_TIMEOUT = 10800     # upstream's DefaultClientIPServiceAffinitySeconds


def _ipv4(text) -> str:
    try:
        return str(ipaddress.IPv4Address(str(text).strip()))
    except (ipaddress.AddressValueError, ValueError):
        return ""


def service_key(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def externally_accessible(spec: dict) -> bool:
    """Upstream's ``ExternallyAccessible``: NodePort, LoadBalancer, or any externalIPs."""
    return spec.get("type") in ("NodePort", "LoadBalancer") or bool(spec.get("externalIPs"))


def service_ports(svc: dict) -> dict[ServicePortName, ServicePort]:
    """The ports of one Service that kube-proxy programs ({} for one it ignores)."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    if SERVICE_PROXY_NAME_LABEL in (meta.get("labels") or {}):
        return {}
    stype = spec.get("type") or "ClusterIP"
    if stype == "ExternalName":
        return {}
    cluster_ip = ""
    for ip in [spec.get("clusterIP") or "", *(spec.get("clusterIPs") or [])]:
        if ip and ip != "None" and _ipv4(ip):
            cluster_ip = _ipv4(ip)
            break
    if not cluster_ip:
        return {}
    ext = externally_accessible(spec)
    external_ips = tuple(ip for ip in (_ipv4(x) for x in spec.get("externalIPs") or ()) if ip)
    lb_ips: tuple[str, ...] = ()
    if stype == "LoadBalancer":
        # ipMode Proxy: the load balancer itself proxies to the nodes; it is not a VIP to capture here
        lb_ips = tuple(ip for ip in (_ipv4(i.get("ip", "")) for i in ((svc.get("status") or {}).get("loadBalancer") or {})
                                     .get("ingress") or () if (i.get("ipMode") or "VIP") == "VIP") if ip)
    ranges = []
    for r in spec.get("loadBalancerSourceRanges") or ():
        try:
            ranges.append(str(ipaddress.IPv4Network(str(r).strip(), strict=False)))
        except (ValueError, ipaddress.AddressValueError):
            log.warning("service %s: ignoring loadBalancerSourceRange %r", service_key(svc), r)
    affinity = spec.get("sessionAffinity") or "None"
    timeout = DEFAULT_CLIENT_IP_TIMEOUT
    if affinity == "ClientIP":
        timeout = int((((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds"))
                      or DEFAULT_CLIENT_IP_TIMEOUT)
    etp_local = ext and spec.get("externalTrafficPolicy") == "Local"
    itp_local = spec.get("internalTrafficPolicy") == "Local"
    hc = int(spec.get("healthCheckNodePort") or 0) if stype == "LoadBalancer" and etp_local else 0
    out: dict[ServicePortName, ServicePort] = {}
    for p in spec.get("ports") or ():
        try:
            port = int(p.get("port") or 0)
        except (TypeError, ValueError):
            continue
        if not port:
            continue
        protocol = p.get("protocol") or "TCP"
        spn = ServicePortName(meta.get("namespace", ""), meta.get("name", ""), p.get("name") or "", protocol)
        node_port = int(p.get("nodePort") or 0) if stype in ("NodePort", "LoadBalancer") else 0
        out[spn] = ServicePort(cluster_ip=cluster_ip, port=port, protocol=protocol, node_port=node_port,
                               external_ips=external_ips, load_balancer_ips=lb_ips,
                               load_balancer_source_ranges=tuple(ranges), session_affinity=affinity,
                               sticky_max_age_seconds=timeout, external_policy_local=etp_local,
                               internal_policy_local=itp_local, health_check_node_port=hc)
    return out


class ServiceChangeTracker:
    """The current service map, kept by `update`, and what changed since `take_changes`."""

    def __init__(self) -> None:
        self.map: dict[ServicePortName, ServicePort] = {}
        self._by_service: dict[str, dict[ServicePortName, ServicePort]] = {}
        self._changed: set[ServicePortName] = set()

    def update(self, old: dict | None, new: dict | None) -> bool:
        """A Service was added (``old`` None), updated, or deleted (``new`` None). True when
        a proxied port changed."""
        obj = new if new is not None else old
        if obj is None:
            return False
        key = service_key(obj)
        try:
            ports = service_ports(new) if new is not None else {}
        except Exception:  # noqa: BLE001 - one bad object never stops the proxy
            log.exception("service %s: cannot read its ports; ignoring it", key)
            ports = {}
        before = self._by_service.get(key, {})
        changed = {spn for spn in before.keys() | ports.keys() if before.get(spn) != ports.get(spn)}
        if not changed:
            return False
        for spn in before:
            self.map.pop(spn, None)
        self.map.update(ports)
        if ports:
            self._by_service[key] = ports
        else:
            self._by_service.pop(key, None)
        self._changed |= changed
        return True

    def pending(self) -> int:
        return len(self._changed)

    def take_changes(self) -> set[ServicePortName]:
        out, self._changed = self._changed, set()
        return out
