"""EndpointSliceMirroring against the FakeClient: selector-less Services' Endpoints become
slices; skip-mirror, selectors and deletions remove them; bad addresses are reported."""

from __future__ import annotations

import asyncio

from controller_testing import NS, ControllerHarness
from ctrl_endpoint_objects import clock, service

from kubeling.controllers.endpointslicemirroring import CONTROLLER_NAME, EndpointSliceMirroringController


def endpoints(name="db", subsets=None, labels=None, annotations=None) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-ep-{name}", "labels": labels or {},
                         "annotations": annotations or {}},
            "subsets": subsets if subsets is not None else [
                {"addresses": [{"ip": "192.0.2.10", "hostname": "db-a"}, {"ip": "192.0.2.11", "nodeName": "n1"}],
                 "notReadyAddresses": [{"ip": "192.0.2.12"}],
                 "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}


def harness(*objs) -> ControllerHarness:
    return ControllerHarness(EndpointSliceMirroringController, NS, *objs, clock=clock())


def slices(h, name="db"):
    return [s for s in h.list("endpointslices", group="discovery.k8s.io")
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == name]


def run(coro):
    return asyncio.run(coro)


def test_endpoints_of_a_selectorless_service_are_mirrored():
    async def main():
        async with harness(service("db", selector=False, ports=(("pg", 5432, 5432),)),
                           endpoints(labels={"team": "data"},
                                     annotations={"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}",
                                                  "endpoints.kubernetes.io/last-change-trigger-time": "t"})) as h:
            (s,) = slices(h)
            meta = s["metadata"]
            assert meta["generateName"] == "db-"
            assert meta["labels"] == {"team": "data", "kubernetes.io/service-name": "db",
                                      "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME}
            assert meta["annotations"] == {"note": "x"}
            assert meta["ownerReferences"][0]["kind"] == "Endpoints"
            assert meta["ownerReferences"][0]["uid"] == "uid-ep-db"
            assert s["addressType"] == "IPv4"
            assert s["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]
            eps = {e["addresses"][0]: e for e in s["endpoints"]}
            assert eps["192.0.2.10"] == {"addresses": ["192.0.2.10"], "conditions": {"ready": True}, "hostname": "db-a"}
            assert eps["192.0.2.11"]["nodeName"] == "n1"
            assert eps["192.0.2.12"]["conditions"] == {"ready": False}
            # a change of the Endpoints is mirrored into the same slice
            cur = await h.client.get("", "v1", "endpoints", "db", namespace="default")
            cur["subsets"][0]["addresses"] = cur["subsets"][0]["addresses"][:1]
            await h.client.update("", "v1", "endpoints", cur, namespace="default")
            await h.settle()
            (s2,) = slices(h)
            assert s2["metadata"]["name"] == meta["name"] and len(s2["endpoints"]) == 2
    run(main())


def test_skip_mirror_and_selectors_and_missing_services_mean_no_slices():
    async def main():
        async with harness(service("db", selector=False),
                           endpoints(),
                           endpoints("kubernetes", labels={"endpointslice.kubernetes.io/skip-mirror": "true"}),
                           service("kubernetes", selector=False),
                           endpoints("orphan"),
                           service("web"), endpoints("web")) as h:
            assert len(slices(h)) == 1
            assert slices(h, "kubernetes") == [] and slices(h, "orphan") == [] and slices(h, "web") == []
            # labelling skip-mirror later removes the mirrored slice
            cur = await h.client.get("", "v1", "endpoints", "db", namespace="default")
            cur["metadata"]["labels"] = {"endpointslice.kubernetes.io/skip-mirror": "true"}
            await h.client.update("", "v1", "endpoints", cur, namespace="default")
            await h.settle()
            assert slices(h) == []
    run(main())


def test_a_service_that_gains_a_selector_loses_its_mirrored_slices():
    async def main():
        async with harness(service("db", selector=False), endpoints()) as h:
            assert len(slices(h)) == 1
            svc = await h.client.get("", "v1", "services", "db", namespace="default")
            svc["spec"]["selector"] = {"app": "db"}
            await h.client.update("", "v1", "services", svc, namespace="default")
            await h.settle()
            assert slices(h) == []
    run(main())


def test_several_port_sets_and_invalid_addresses():
    subsets = [{"addresses": [{"ip": "192.0.2.1"}, {"ip": "not-an-ip"}], "ports": [{"name": "a", "port": 1}]},
               {"addresses": [{"ip": "192.0.2.2"}, {"ip": "2001:db8::2"}], "ports": [{"name": "b", "port": 2}]}]

    async def main():
        async with harness(service("db", selector=False), endpoints(subsets=subsets)) as h:
            got = sorted((s["addressType"], s["ports"][0]["port"], sorted(e["addresses"][0] for e in s["endpoints"]))
                         for s in slices(h))
            assert got == [("IPv4", 1, ["192.0.2.1"]), ("IPv4", 2, ["192.0.2.2"]), ("IPv6", 2, ["2001:db8::2"])]
            events = await h.events()
            assert ("InvalidIPAddress", "Skipped 1 invalid IP addresses when mirroring to EndpointSlices") in events
    run(main())
