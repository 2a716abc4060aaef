"""The ``kube-system/kube-dns`` Service and the endpoints that point it at this DNS server.

As k3s's CoreDNS manifest: labels ``k8s-app=kube-dns``, ``kubernetes.io/cluster-service=true``,
``kubernetes.io/name=CoreDNS``; clusterIP the cluster DNS IP (default 10.43.0.10, the 10th
address of the service CIDR); ports ``dns`` 53/UDP, ``dns-tcp`` 53/TCP, ``metrics`` 9153/TCP.
Unlike k3s there is no pod: the DNS server runs beside the API server, so the Service has **no
selector** and the DNS process writes its endpoints itself:

- an EndpointSlice ``kube-dns`` (``kubernetes.io/service-name=kube-dns``, managed by
  ``kubeling-dns``, which the endpointslice controller leaves alone) with one ready endpoint,
  the address the server listens on, and the real ports (a test's high port shows there);
- an Endpoints ``kube-dns`` with the same, labelled ``endpointslice.kubernetes.io/skip-mirror``
  so that the mirroring controller does not copy it into a second slice.

kube-proxy on every node then DNATs ``10.43.0.10:53`` to that address. `ensure` is idempotent:
it creates what is missing and rewrites endpoints that name another address or port; a
Service that already exists with another clusterIP is left as it is and reported, and one with
a selector (some other DNS's) keeps its endpoints.
"""

from __future__ import annotations

import ipaddress
import logging

from kubeling.client import is_already_exists, is_conflict, is_not_found

log = logging.getLogger(__name__)

NAMESPACE, NAME = "kube-system", "kube-dns"
MANAGED_BY = "kubeling-dns"
LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}


def service_object(cluster_ip: str, dns_port: int, metrics_port: int) -> dict:
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns_port},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns_port}]
    if metrics_port:
        ports.append({"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": metrics_port})
    family = "IPv6" if ":" in cluster_ip else "IPv4"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS),
                         "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ipFamilies": [family], "ipFamilyPolicy": "SingleStack", "ports": ports}}


def _ports(dns_port: int, metrics_port: int) -> list[dict]:
    out = [{"name": "dns", "port": dns_port, "protocol": "UDP"}, {"name": "dns-tcp", "port": dns_port, "protocol": "TCP"}]
    if metrics_port:
        out.append({"name": "metrics", "port": metrics_port, "protocol": "TCP"})
    return out


def slice_object(address: str, dns_port: int, metrics_port: int, node_name: str = "") -> dict:
    endpoint = {"addresses": [address], "conditions": {"ready": True, "serving": True, "terminating": False}}
    if node_name:
        endpoint["nodeName"] = node_name
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, "kubernetes.io/service-name": NAME,
                                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
            "addressType": "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4",
            "endpoints": [endpoint], "ports": _ports(dns_port, metrics_port)}


def endpoints_object(address: str, dns_port: int, metrics_port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, "endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}], "ports": _ports(dns_port, metrics_port)}]}


async def _ensure(client, group: str, version: str, resource: str, want: dict, same) -> None:
    for _ in range(5):
        try:
            have = await client.get(group, version, resource, NAME, namespace=NAMESPACE)
        except Exception as e:  # noqa: BLE001 - StatusError; is_not_found tells
            if not is_not_found(e):
                raise
            try:
                await client.create(group, version, resource, want, namespace=NAMESPACE, field_manager=MANAGED_BY)
                log.info("created %s %s/%s", resource, NAMESPACE, NAME)
                return
            except Exception as e2:  # noqa: BLE001
                if is_already_exists(e2):
                    continue
                raise
        if same(have, want):
            return
        merged = dict(want)
        merged["metadata"] = {**have["metadata"], "labels": {**(have["metadata"].get("labels") or {}),
                                                             **want["metadata"]["labels"]}}
        try:
            await client.update(group, version, resource, merged, namespace=NAMESPACE, field_manager=MANAGED_BY)
            log.info("updated %s %s/%s", resource, NAMESPACE, NAME)
            return
        except Exception as e:  # noqa: BLE001
            if not is_conflict(e):
                raise
    raise RuntimeError(f"{resource} {NAMESPACE}/{NAME}: too many conflicts")


async def ensure(client, *, cluster_ip: str, address: str, dns_port: int, metrics_port: int,
                 node_name: str = "") -> None:
    """Create or repair the Service, its EndpointSlice and its Endpoints (see the module docstring)."""
    svc = service_object(cluster_ip, dns_port, metrics_port)
    try:
        have = await client.get("", "v1", "services", NAME, namespace=NAMESPACE)
    except Exception as e:  # noqa: BLE001
        if not is_not_found(e):
            raise
        try:
            await client.create("", "v1", "services", svc, namespace=NAMESPACE, field_manager=MANAGED_BY)
            log.info("created Service %s/%s with clusterIP %s", NAMESPACE, NAME, cluster_ip)
        except Exception as e2:  # noqa: BLE001
            if not is_already_exists(e2):
                raise
    else:
        spec = have.get("spec") or {}
        if spec.get("clusterIP") != cluster_ip:
            log.error("Service %s/%s has clusterIP %s, not the cluster DNS IP %s: pods' resolv.conf names %s; "
                      "delete the Service to let it be recreated", NAMESPACE, NAME, spec.get("clusterIP"),
                      cluster_ip, cluster_ip)
        elif spec.get("selector"):
            # another DNS (a CoreDNS Deployment) owns it: its endpoints are the controllers'
            log.warning("Service %s/%s has a selector: leaving its endpoints to the endpoint controllers",
                        NAMESPACE, NAME)
            return

    def same_slice(have: dict, want: dict) -> bool:
        return (have.get("endpoints") == want["endpoints"] and have.get("ports") == want["ports"]
                and have.get("addressType") == want["addressType"])

    def same_endpoints(have: dict, want: dict) -> bool:
        return have.get("subsets") == want["subsets"]

    await _ensure(client, "discovery.k8s.io", "v1", "endpointslices",
                  slice_object(address, dns_port, metrics_port, node_name), same_slice)
    await _ensure(client, "", "v1", "endpoints", endpoints_object(address, dns_port, metrics_port), same_endpoints)
