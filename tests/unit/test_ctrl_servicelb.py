"""ServiceLB against the FakeClient: node addresses as LoadBalancer ingress, kept current;
enablelb and lbpool labels; port clashes pending with an Event; other classes left alone."""

from __future__ import annotations

import asyncio

from controller_testing import NS, ControllerHarness
from ctrl_endpoint_objects import clock, node, service

from kubeling.controllers.servicelb import ServiceLBController

NODES = [node("n1", internal="10.44.0.11"), node("n2", internal="10.44.0.12", external="198.51.100.2"),
         node("n3", internal="10.44.0.13", ready=False)]


def lb(name="web", port=80, created=0, **kw) -> dict:
    return service(name, type_="LoadBalancer", ports=(("http", port, 8080),), created=created, **kw)


def harness(*objs) -> ControllerHarness:
    return ControllerHarness(ServiceLBController, NS, *objs, clock=clock())


def ingress(h, name="web"):
    svc = h.client.object("", "v1", "services", name, "default")
    return [(i["ip"], i.get("ipMode")) for i in (svc["status"].get("loadBalancer") or {}).get("ingress") or ()]


def run(coro):
    return asyncio.run(coro)


def test_ready_nodes_external_ip_first_else_internal():
    async def main():
        async with harness(*NODES, lb()) as h:
            assert ingress(h) == [("10.44.0.11", "VIP"), ("198.51.100.2", "VIP")]
            events = await h.events()
            assert ("UpdatedIngressIP", "LoadBalancer Ingress IP addresses updated: 10.44.0.11, 198.51.100.2") in events
    run(main())


def test_nodes_coming_and_going_keep_the_ingress_current():
    async def main():
        async with harness(*NODES, lb()) as h:
            n3 = await h.client.get("", "v1", "nodes", "n3")
            n3["status"]["conditions"][0]["status"] = "True"
            await h.client.update_status("", "v1", "nodes", n3)
            await h.settle()
            assert [ip for ip, _ in ingress(h)] == ["10.44.0.11", "10.44.0.13", "198.51.100.2"]
            await h.client.delete("", "v1", "nodes", "n1")
            await h.settle()
            assert [ip for ip, _ in ingress(h)] == ["10.44.0.13", "198.51.100.2"]
    run(main())


def test_enablelb_label_restricts_and_lbpool_matches():
    nodes = [node("n1", internal="10.44.0.11", labels={"svccontroller.k3s.cattle.io/enablelb": "true"}),
             node("n2", internal="10.44.0.12",
                  labels={"svccontroller.k3s.cattle.io/enablelb": "true", "svccontroller.k3s.cattle.io/lbpool": "b"}),
             node("n3", internal="10.44.0.13")]

    async def main():
        async with harness(*nodes, lb(), lb("pooled", port=81, labels={"svccontroller.k3s.cattle.io/lbpool": "b"})) as h:
            assert [ip for ip, _ in ingress(h)] == ["10.44.0.11", "10.44.0.12"]
            assert [ip for ip, _ in ingress(h, "pooled")] == ["10.44.0.12"]
    run(main())


def test_a_port_already_taken_stays_pending_until_freed():
    async def main():
        async with harness(*NODES, lb("first", port=80, created=0), lb("second", port=80, created=10),
                           lb("third", port=443, created=20)) as h:
            assert ingress(h, "first") and ingress(h, "third")
            assert ingress(h, "second") == []
            events = await h.events()
            assert ("SyncLoadBalancerFailed", "Error syncing load balancer: port 80/TCP is already used by "
                    "LoadBalancer Service default/first") in events
            await h.client.delete("", "v1", "services", "first", namespace="default")
            await h.settle()
            assert [ip for ip, _ in ingress(h, "second")] == ["10.44.0.11", "198.51.100.2"]
    run(main())


def test_other_load_balancer_classes_and_other_types_are_not_ours():
    async def main():
        async with harness(*NODES, lb("metallb", loadBalancerClass="metallb.io/metallb"),
                           service("plain"), lb("was-lb")) as h:
            assert ingress(h, "metallb") == [] and ingress(h, "plain") == []
            assert ingress(h, "was-lb")
            svc = await h.client.get("", "v1", "services", "was-lb", namespace="default")
            svc["spec"]["type"] = "ClusterIP"
            await h.client.update("", "v1", "services", svc, namespace="default")
            await h.settle()
            assert ingress(h, "was-lb") == []
    run(main())
