"""The ``default/kubernetes`` endpoints, written by the API server itself (upstream's
``pkg/controlplane/reconcilers`` with its ``EndpointsAdapter``).

The ``kubernetes`` Service has no selector, so no controller computes its endpoints: the API
servers write, for the addresses of every live server (`kubeling.apiserver.endpointreconciler`
keeps that list, upstream's lease reconciler),

- the Endpoints ``default/kubernetes`` (labelled ``endpointslice.kubernetes.io/skip-mirror:
  "true"``, so the mirroring controller leaves it alone), one subset: the servers' advertise
  addresses, sorted, and the secure port, named ``https``;
- the EndpointSlice ``default/kubernetes``, labelled only ``kubernetes.io/service-name:
  kubernetes`` (no managed-by: it is the API server's, as upstream), ``addressType`` of the
  addresses, one endpoint ``ready: true`` per address, the same port. kube-proxy reads slices
  only, so this is what makes ``10.43.0.1:443`` reach the API servers from pods.

Both are created when missing and rewritten when they name other addresses or another port;
otherwise untouched.
"""

from __future__ import annotations

import ipaddress
import logging

from kubeling.api import errors
from kubeling.apiserver.registry import Context

log = logging.getLogger(__name__)

NAME = "kubernetes"
NAMESPACE = "default"
SKIP_MIRROR = {"endpointslice.kubernetes.io/skip-mirror": "true"}


def _ips(ips: str | list[str]) -> list[str]:
    """One address or several: the distinct ones in numeric order (upstream repacks them sorted)."""
    return sorted(set([ips] if isinstance(ips, str) else ips), key=lambda i: ipaddress.ip_address(i))


def desired_endpoints(ips: str | list[str], port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(SKIP_MIRROR)},
            "subsets": [{"addresses": [{"ip": ip} for ip in _ips(ips)],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def desired_endpoint_slice(ips: str | list[str], port: int) -> dict:
    ips = _ips(ips)
    family = "IPv6" if ipaddress.ip_address(ips[0]).version == 6 else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


def _endpoints_match(cur: dict, want: dict) -> bool:
    subsets = cur.get("subsets") or []
    if len(subsets) != 1:
        return False
    ss = subsets[0]
    return [a.get("ip") for a in ss.get("addresses") or ()] == [a["ip"] for a in want["subsets"][0]["addresses"]] \
        and not ss.get("notReadyAddresses") \
        and [(p.get("name"), p.get("port"), p.get("protocol")) for p in ss.get("ports") or ()] \
        == [("https", want["subsets"][0]["ports"][0]["port"], "TCP")] \
        and all((cur["metadata"].get("labels") or {}).get(k) == v for k, v in SKIP_MIRROR.items())


def _slice_match(cur: dict, want: dict) -> bool:
    return cur.get("addressType") == want["addressType"] \
        and [(e.get("addresses"), (e.get("conditions") or {}).get("ready")) for e in cur.get("endpoints") or ()] \
        == [(e["addresses"], True) for e in want["endpoints"]] \
        and [(p.get("name"), p.get("port"), p.get("protocol")) for p in cur.get("ports") or ()] \
        == [("https", want["ports"][0]["port"], "TCP")] \
        and (cur["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == NAME


async def reconcile_kubernetes_endpoints(api, ip: str | list[str], port: int) -> None:
    """Create or correct ``default/kubernetes``'s Endpoints and EndpointSlice for the address
    ``ip`` or the addresses in it (see the module docstring)."""
    for group, version, resource, want, match in (
            ("", "v1", "endpoints", desired_endpoints(ip, port), _endpoints_match),
            ("discovery.k8s.io", "v1", "endpointslices", desired_endpoint_slice(ip, port), _slice_match)):
        served = api.resources.get(group, version, resource)
        ctx = Context(user="system:apiserver", field_manager="kube-apiserver", namespace=NAMESPACE)
        try:
            cur = await api.registry.get_raw(served, NAMESPACE, NAME)
        except errors.StatusError as e:
            if e.code != 404:
                raise
            cur = None
        if cur is None:
            try:
                await api.registry.create(served, want, ctx)
            except errors.StatusError as e:
                if e.reason != "AlreadyExists":
                    raise
            continue
        if match(cur, want):
            continue
        log.info("%s %s/%s named other addresses or another port: rewriting it for %s port %d", resource, NAMESPACE,
                 NAME, ", ".join(_ips(ip)), port)
        new = dict(want, metadata={**want["metadata"], "resourceVersion": cur["metadata"].get("resourceVersion"),
                                   "labels": {**(cur["metadata"].get("labels") or {}), **want["metadata"]["labels"]}})
        await api.registry.update(served, NAMESPACE, NAME, new, ctx)
