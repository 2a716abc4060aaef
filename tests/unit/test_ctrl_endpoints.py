"""The Endpoints controller against the FakeClient: subsets and notReadyAddresses, repacking,
labels and annotations, truncation, leftovers, and the objects it must leave alone."""

from __future__ import annotations

import asyncio

from controller_testing import NS, ControllerHarness
from ctrl_endpoint_objects import clock, pod, service, ts

from kubeling.controllers.endpoints import EndpointController, repack_subsets, truncate_endpoints


def harness(*objs) -> ControllerHarness:
    return ControllerHarness(EndpointController, NS, *objs, clock=clock())


def ep(h, name="web"):
    return h.client.object("", "v1", "endpoints", name, "default")


def addr(name, ip, node="n1"):
    return {"ip": ip, "nodeName": node, "targetRef": {"kind": "Pod", "namespace": "default", "name": name,
                                                      "uid": f"uid-{name}"}}


def test_ready_and_not_ready_addresses_in_one_subset_with_labels_and_trigger_time():
    async def main():
        async with harness(service(labels={"tier": "front"}), pod("b", "10.42.0.6"), pod("a", "10.42.0.5"),
                           pod("slow", "10.42.0.7", ready=False), pod("bye", "10.42.0.8", deleting=True),
                           pod("done", "10.42.0.9", phase="Failed")) as h:
            e = ep(h)
            assert e["subsets"] == [{"addresses": [addr("a", "10.42.0.5"), addr("b", "10.42.0.6")],
                                     "notReadyAddresses": [addr("slow", "10.42.0.7")],
                                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
            assert e["metadata"]["labels"] == {"tier": "front"}
            assert e["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == ts(0)
    run(main())


def test_publish_not_ready_addresses_keeps_unready_and_terminating_pods_ready():
    async def main():
        async with harness(service(publish_not_ready=True), pod("slow", "10.42.0.7", ready=False),
                           pod("bye", "10.42.0.8", deleting=True)) as h:
            (ss,) = ep(h)["subsets"]
            assert [a["ip"] for a in ss["addresses"]] == ["10.42.0.7", "10.42.0.8"]
            assert "notReadyAddresses" not in ss
    run(main())


def test_named_ports_repack_into_subsets_per_port_set_and_headless_gets_its_label():
    async def main():
        svc = service(cluster_ip="None", ports=(("http", 80, "http"),))
        async with harness(svc, pod("a", "10.42.0.1", ports=(("http", 8080),)),
                           pod("b", "10.42.0.2", ports=(("http", 8080),)),
                           pod("c", "10.42.0.3", ports=(("http", 9090),)),
                           pod("d", "10.42.0.4", ports=(("other", 1),))) as h:
            e = ep(h)
            got = sorted(([a["ip"] for a in ss["addresses"]], [p["port"] for p in ss["ports"]]) for ss in e["subsets"])
            assert got == [(["10.42.0.1", "10.42.0.2"], [8080]), (["10.42.0.3"], [9090])]
            assert e["metadata"]["labels"] == {"service.kubernetes.io/headless": ""}
    run(main())


def test_hostname_for_the_services_subdomain():
    async def main():
        svc = service("nginx", cluster_ip="None", selector={"app": "nginx"}, ports=())
        async with harness(svc, pod("web-0", "10.42.0.1", labels={"app": "nginx"}, hostname="web-0",
                                    subdomain="nginx")) as h:
            (ss,) = ep(h, "nginx")["subsets"]
            assert ss["addresses"][0]["hostname"] == "web-0" and "ports" not in ss
    run(main())


def test_readiness_moves_an_address_and_nothing_is_written_when_nothing_changed():
    async def main():
        async with harness(service(), pod("a", "10.42.0.1")) as h:
            p = await h.client.get("", "v1", "pods", "a", namespace="default")
            p["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": ts(30)}]
            await h.client.update_status("", "v1", "pods", p, namespace="default")
            await h.settle()
            (ss,) = ep(h)["subsets"]
            assert "addresses" not in ss and ss["notReadyAddresses"][0]["ip"] == "10.42.0.1"
            assert ep(h)["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == ts(30)
            writes = len(h.client.filter_actions("update", "endpoints"))
            p = await h.client.get("", "v1", "pods", "a", namespace="default")
            p["metadata"]["annotations"] = {"note": "irrelevant"}
            await h.client.update("", "v1", "pods", p, namespace="default")
            await h.settle()
            assert len(h.client.filter_actions("update", "endpoints")) == writes
    run(main())


def test_selectorless_services_and_the_apiservers_kubernetes_endpoints_are_left_alone():
    kubernetes = {"apiVersion": "v1", "kind": "Endpoints",
                  "metadata": {"name": "kubernetes", "namespace": "default",
                               "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                  "subsets": [{"addresses": [{"ip": "10.44.0.1"}],
                               "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}
    svc = service("kubernetes", selector=False, ports=(("https", 443, 6443),))

    async def main():
        async with harness(svc, kubernetes) as h:
            assert ep(h, "kubernetes")["subsets"] == kubernetes["subsets"]
            assert not h.client.filter_actions("update", "endpoints")
            assert not h.client.filter_actions("delete", "endpoints")
    run(main())


def test_endpoints_of_a_deleted_service_go_and_leftovers_are_swept_at_start():
    leftover = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "gone", "namespace": "default"}}
    lease = {"apiVersion": "v1", "kind": "Endpoints",
             "metadata": {"name": "lock", "namespace": "default",
                          "annotations": {"control-plane.alpha.kubernetes.io/leader": "{}"}}}

    async def main():
        async with harness(service(), pod("a", "10.42.0.1"), leftover, lease) as h:
            assert ep(h, "gone") is None and ep(h, "lock") is not None
            assert ep(h) is not None
            await h.client.delete("", "v1", "services", "web", namespace="default")
            await h.settle()
            assert ep(h) is None
    run(main())


def test_repack_not_ready_wins_and_ports_group():
    subsets = [{"addresses": [addr("a", "1.1.1.1")], "ports": [{"name": "p", "port": 1, "protocol": "TCP"}]},
               {"notReadyAddresses": [addr("a", "1.1.1.1")], "ports": [{"name": "p", "port": 1, "protocol": "TCP"}]},
               {"addresses": [addr("b", "1.1.1.2")], "ports": [{"name": "q", "port": 2, "protocol": "TCP"}]},
               {"addresses": [addr("b", "1.1.1.2")], "ports": [{"name": "p2", "port": 3, "protocol": "UDP"}]}]
    out = repack_subsets(subsets)
    assert {"notReadyAddresses": [addr("a", "1.1.1.1")], "ports": [subsets[0]["ports"][0]]} in out
    assert {"addresses": [addr("b", "1.1.1.2")], "ports": [subsets[3]["ports"][0], subsets[2]["ports"][0]]} in out
    assert len(out) == 2


def test_truncation_keeps_1000_ready_first_in_proportion():
    def ips(n, base):
        return [{"ip": f"10.{base}.{i // 250}.{i % 250}"} for i in range(n)]
    e = {"subsets": [{"addresses": ips(600, 1), "notReadyAddresses": ips(10, 2)},
                     {"addresses": ips(300, 3), "notReadyAddresses": ips(300, 4)}]}
    assert truncate_endpoints(e)
    ready = [len(ss["addresses"]) for ss in e["subsets"]]
    not_ready = [len(ss["notReadyAddresses"]) for ss in e["subsets"]]
    assert ready == [600, 300] and sum(not_ready) == 100 and not_ready[0] <= 4
    e = {"subsets": [{"addresses": ips(900, 1)}, {"addresses": ips(300, 2), "notReadyAddresses": ips(5, 3)}]}
    assert truncate_endpoints(e)
    assert [len(ss["addresses"]) for ss in e["subsets"]] == [750, 250]
    assert e["subsets"][1]["notReadyAddresses"] == []
    assert not truncate_endpoints({"subsets": [{"addresses": ips(1000, 1)}]})


def test_over_capacity_annotation_on_a_large_service():
    async def main():
        pods = [pod(f"p{i}", f"10.42.{i // 250}.{i % 250 + 1}") for i in range(1003)]
        async with harness(service(), *pods) as h:
            e = ep(h)
            assert e["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"] == "truncated"
            assert sum(len(ss.get("addresses") or ()) for ss in e["subsets"]) == 1000
    run(main())


def run(coro):
    return asyncio.run(coro)
