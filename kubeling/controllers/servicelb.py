"""ServiceLB: the built-in load balancer for ``type: LoadBalancer`` Services, after k3s's
ServiceLB (``pkg/cloudprovider/servicelb.go``, formerly Klipper) — without its ``svclb-*``
DaemonSet pods: kube-proxy on every node sends traffic for the node addresses published here to
the Service (the LoadBalancer rules of each proxy mode), as MetalLB's L2 mode or k3s's
hostPort pods would.

::

    services (type LoadBalancer, no loadBalancerClass) ─┐
    nodes (Ready, addresses, labels) ───────────────────┴──▶ queue ──▶ sync: status.loadBalancer.ingress

``sync(key)`` for one Service:

- Not ``type: LoadBalancer`` (or ``spec.loadBalancerClass`` set: another implementation's):
  nothing, except that an ingress list left over from when it was our LoadBalancer is cleared.
- Port claims, as k3s's hostPorts: LoadBalancer Services claim their ``(port, protocol)`` pairs
  oldest first (creationTimestamp, then namespace/name); a Service one of whose ports an older
  one holds stays pending (no ingress) with a ``SyncLoadBalancerFailed`` Warning, and gets its
  addresses as soon as the older Service goes or changes its port.
- The nodes: Ready, not being deleted; when any node carries the label
  ``svccontroller.k3s.cattle.io/enablelb=true``, only those; when the Service carries the label
  ``svccontroller.k3s.cattle.io/lbpool=<pool>``, only nodes with the same label.
- ``status.loadBalancer.ingress``: each node's ExternalIP addresses when it has any, else its
  InternalIP addresses, of the Service's IP families, sorted and unique, with
  ``ipMode: VIP``. Written only when it changed (an ``UpdatedIngressIP`` Event says so).

Nodes coming, going, turning Ready or NotReady, or changing addresses or labels re-sync every
LoadBalancer Service. Turn it off as k3s does, with ``kubeling server --disable servicelb``, or
with ``--kube-controller-manager-arg=controllers=*,-servicelb``.
"""

from __future__ import annotations

import ipaddress
import logging

from kubeling.client import is_not_found, object_of, split_meta_namespace_key
from kubeling.client.events import NORMAL, WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of

log = logging.getLogger(__name__)

LABEL_ENABLE_LB = "svccontroller.k3s.cattle.io/enablelb"
LABEL_LB_POOL = "svccontroller.k3s.cattle.io/lbpool"


def is_ours(service: dict) -> bool:
    spec = service.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def node_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _family(ip: str) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def node_addresses(node: dict, families: list[str]) -> list[str]:
    addrs = (node.get("status") or {}).get("addresses") or ()
    for kind in ("ExternalIP", "InternalIP"):
        found = [a.get("address") for a in addrs if a.get("type") == kind and _family(a.get("address") or "") in families]
        if found:
            return found
    return []


def _ports(service: dict) -> set[tuple[int, str]]:
    return {(p.get("port"), p.get("protocol") or "TCP") for p in (service.get("spec") or {}).get("ports") or ()}


def _age_key(service: dict) -> tuple:
    meta = service["metadata"]
    return meta.get("creationTimestamp") or "", meta.get("namespace") or "", meta["name"]


class ServiceLBController(Controller):
    NAME = "servicelb"
    WORKERS = 2
    COMPONENT = "service-lb-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = ctx.informers.informer_for("", "v1", "services")
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.recorder = ctx.recorder(self.COMPONENT)
        self.handle(self.services, on_add=self.add_service, on_update=self.update_service,
                    on_delete=self.delete_service)
        self.handle(self.nodes, on_add=self.node_changed, on_update=self.update_node, on_delete=self.node_changed)

    # -- handlers --------------------------------------------------------------------------

    def enqueue_all(self) -> None:
        for s in self.services.list():
            if is_ours(s):
                self.queue.add(key_of(s))

    def add_service(self, service: dict) -> None:
        if is_ours(service):
            self.queue.add(key_of(service))

    def update_service(self, old: dict, cur: dict) -> None:
        if not is_ours(old) and not is_ours(cur):
            return
        self.queue.add(key_of(cur))
        if is_ours(old) != is_ours(cur) or _ports(old) != _ports(cur):
            self.enqueue_all()  # port claims moved: the others may be freed or blocked

    def delete_service(self, obj) -> None:
        if is_ours(object_of(obj)):
            self.enqueue_all()

    def node_changed(self, _obj=None) -> None:
        self.enqueue_all()

    def update_node(self, old: dict, cur: dict) -> None:
        if node_ready(old) != node_ready(cur) \
                or (old.get("status") or {}).get("addresses") != (cur.get("status") or {}).get("addresses") \
                or (old["metadata"].get("labels") or {}) != (cur["metadata"].get("labels") or {}) \
                or bool(old["metadata"].get("deletionTimestamp")) != bool(cur["metadata"].get("deletionTimestamp")):
            self.enqueue_all()

    # -- sync ------------------------------------------------------------------------------

    def blocker(self, service: dict) -> tuple[tuple[int, str], dict] | None:
        """The (port, older Service) that keeps ``service`` pending, or None."""
        claimed: dict[tuple[int, str], dict] = {}
        for s in sorted((s for s in self.services.list() if is_ours(s)), key=_age_key):
            ports = _ports(s)
            clash = next((p for p in sorted(ports, key=str) if p in claimed), None)
            if s["metadata"].get("uid") == service["metadata"].get("uid"):
                return (clash, claimed[clash]) if clash is not None else None
            if clash is None:
                claimed.update({p: s for p in ports})
        return None

    def eligible_nodes(self, service: dict) -> list[dict]:
        nodes = [n for n in self.nodes.list() if not n["metadata"].get("deletionTimestamp")]
        if any((n["metadata"].get("labels") or {}).get(LABEL_ENABLE_LB) == "true" for n in nodes):
            nodes = [n for n in nodes if (n["metadata"].get("labels") or {}).get(LABEL_ENABLE_LB) == "true"]
        pool = (service["metadata"].get("labels") or {}).get(LABEL_LB_POOL)
        if pool is not None:
            nodes = [n for n in nodes if (n["metadata"].get("labels") or {}).get(LABEL_LB_POOL) == pool]
        return [n for n in nodes if node_ready(n)]

    def desired_ingress(self, service: dict) -> list[dict]:
        families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
        ips: set[str] = set()
        for n in self.eligible_nodes(service):
            ips.update(node_addresses(n, families))
        return [{"ip": ip, "ipMode": "VIP"}
                for ip in sorted(ips, key=lambda i: (_family(i) != "IPv4", ipaddress.ip_address(i)))]

    async def sync(self, key: str) -> None:
        namespace, name = split_meta_namespace_key(key)
        service = self.services.get(key)
        if service is None:
            return
        current = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        spec = service.get("spec") or {}
        if not is_ours(service):
            if spec.get("type") != "LoadBalancer" and not spec.get("loadBalancerClass") and current:
                await self._write(service, [])  # it stopped being a LoadBalancer: no address is left
            return
        blocked = self.blocker(service)
        if blocked is not None:
            (port, protocol), other = blocked
            self.recorder.eventf(service, WARNING, "SyncLoadBalancerFailed",
                                 "Error syncing load balancer: port %s/%s is already used by LoadBalancer "
                                 "Service %s/%s", port, protocol, other["metadata"].get("namespace"),
                                 other["metadata"]["name"])
            want: list[dict] = []
        else:
            want = self.desired_ingress(service)
        if _norm(current) == _norm(want):
            return
        if await self._write(service, want) and want:
            self.recorder.eventf(service, NORMAL, "UpdatedIngressIP", "LoadBalancer Ingress IP addresses updated: %s",
                                 ", ".join(i["ip"] for i in want))

    async def _write(self, service: dict, ingress: list[dict]) -> bool:
        obj = {"apiVersion": "v1", "kind": "Service", "metadata": dict(service["metadata"]),
               "spec": service.get("spec") or {},
               "status": {**(service.get("status") or {}), "loadBalancer": {"ingress": ingress} if ingress else {}}}
        try:
            await self.client.update_status("", "v1", "services", obj, namespace=service["metadata"].get("namespace"))
        except Exception as e:
            if is_not_found(e):
                return False
            raise
        return True


def _norm(ingress: list[dict]) -> list[tuple]:
    return [(i.get("ip"), i.get("hostname"), i.get("ipMode") or "VIP") for i in ingress]
