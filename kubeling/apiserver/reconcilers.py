"""The ``default/kubernetes`` endpoints, written by the API server itself (upstream's
``pkg/controlplane/reconcilers`` with its ``EndpointsAdapter``).

The ``kubernetes`` Service has no selector, so no controller computes its endpoints: the API
server writes, at every start,

- the Endpoints ``default/kubernetes`` (labelled ``endpointslice.kubernetes.io/skip-mirror:
  "true"``, so the mirroring controller leaves it alone), one subset: the advertise address and
  the secure port, named ``https``;
- the EndpointSlice ``default/kubernetes``, labelled only ``kubernetes.io/service-name:
  kubernetes`` (no managed-by: it is the API server's, as upstream), ``addressType`` of the
  address, one endpoint ``ready: true``, the same port. kube-proxy reads slices only, so this is
  what makes ``10.43.0.1:443`` reach the API server from pods.

Both are created when missing and rewritten when they name another address or port (a server
started again with another ``--advertise-address`` or ``--secure-port``); otherwise untouched.
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


def desired_endpoints(ip: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(SKIP_MIRROR)},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def desired_endpoint_slice(ip: str, port: int) -> dict:
    family = "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


def _endpoints_match(cur: dict, want: dict) -> bool:
    subsets = cur.get("subsets") or []
    if len(subsets) != 1:
        return False
    ss = subsets[0]
    return [a.get("ip") for a in ss.get("addresses") or ()] == [want["subsets"][0]["addresses"][0]["ip"]] \
        and not ss.get("notReadyAddresses") \
        and [(p.get("name"), p.get("port"), p.get("protocol")) for p in ss.get("ports") or ()] \
        == [("https", want["subsets"][0]["ports"][0]["port"], "TCP")] \
        and all((cur["metadata"].get("labels") or {}).get(k) == v for k, v in SKIP_MIRROR.items())


def _slice_match(cur: dict, want: dict) -> bool:
    return cur.get("addressType") == want["addressType"] \
        and [(e.get("addresses"), (e.get("conditions") or {}).get("ready")) for e in cur.get("endpoints") or ()] \
        == [(want["endpoints"][0]["addresses"], True)] \
        and [(p.get("name"), p.get("port"), p.get("protocol")) for p in cur.get("ports") or ()] \
        == [("https", want["ports"][0]["port"], "TCP")] \
        and (cur["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == NAME


async def reconcile_kubernetes_endpoints(api, ip: str, port: int) -> None:
    """Create or correct ``default/kubernetes``'s Endpoints and EndpointSlice (see the module docstring)."""
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
        log.info("%s %s/%s named another address or port: rewriting it for %s:%d", resource, NAMESPACE, NAME, ip, port)
        new = dict(want, metadata={**want["metadata"], "resourceVersion": cur["metadata"].get("resourceVersion"),
                                   "labels": {**(cur["metadata"].get("labels") or {}), **want["metadata"]["labels"]}})
        await api.registry.update(served, NAMESPACE, NAME, new, ctx)
