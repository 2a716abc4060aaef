"""The API server writes ``default/kubernetes``'s Endpoints and EndpointSlice itself (upstream's
endpoint reconciler): created at bootstrap, corrected when the address or port changes."""

from __future__ import annotations

import asyncio

from inprocess import api_server

from kubeling.apiserver.reconcilers import reconcile_kubernetes_endpoints


async def _get(api, group, resource):
    return await api.registry.get(api.lookup(group, "v1", resource), "default", "kubernetes")


def test_bootstrap_writes_the_kubernetes_endpointslice_and_rewrites_it_when_the_address_moves():
    async def main():
        api = await api_server(advertise_address="10.44.0.1", secure_port=6443)
        s = await _get(api, "discovery.k8s.io", "endpointslices")
        assert s["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
        assert s["addressType"] == "IPv4"
        assert s["endpoints"] == [{"addresses": ["10.44.0.1"], "conditions": {"ready": True}}]
        assert s["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
        e = await _get(api, "", "endpoints")
        assert e["metadata"]["labels"] == {"endpointslice.kubernetes.io/skip-mirror": "true"}
        assert e["subsets"] == [{"addresses": [{"ip": "10.44.0.1"}],
                                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
        rv = s["metadata"]["resourceVersion"]
        await reconcile_kubernetes_endpoints(api, "10.44.0.1", 6443)  # unchanged: untouched
        assert (await _get(api, "discovery.k8s.io", "endpointslices"))["metadata"]["resourceVersion"] == rv
        await reconcile_kubernetes_endpoints(api, "10.44.0.9", 7443)  # a restart elsewhere
        s = await _get(api, "discovery.k8s.io", "endpointslices")
        assert s["endpoints"][0]["addresses"] == ["10.44.0.9"] and s["ports"][0]["port"] == 7443
        e = await _get(api, "", "endpoints")
        assert e["subsets"][0]["addresses"] == [{"ip": "10.44.0.9"}] and e["subsets"][0]["ports"][0]["port"] == 7443
    asyncio.run(main())
