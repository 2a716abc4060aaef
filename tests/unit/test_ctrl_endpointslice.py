"""The EndpointSlice controller against the FakeClient: slices, packing, conditions, named
ports, publishNotReadyAddresses, hostnames, placeholders, trigger times and failures."""

from __future__ import annotations

import asyncio

import pytest

from controller_testing import NS, ControllerHarness
from ctrl_endpoint_objects import clock, node, pod, service, ts

from kubeling.controllers.endpointslice import CONTROLLER_NAME, EndpointSliceController
from kubeling.controllers.endpointslice_utils import TriggerTimeTracker, format_trigger_time

NODES = [node("n1", labels={"topology.kubernetes.io/zone": "zone-a"}), node("n2")]


class Harness(ControllerHarness):
    def slices(self, svc="web") -> list[dict]:
        return [s for s in self.list("endpointslices", group="discovery.k8s.io")
                if s["metadata"]["labels"].get("kubernetes.io/service-name") == svc]

    def endpoints_of(self, svc="web") -> dict[str, dict]:
        return {e["targetRef"]["name"]: e for s in self.slices(svc) for e in s.get("endpoints") or ()}

    async def set_pod(self, name, fn, status=False) -> None:
        p = await self.client.get("", "v1", "pods", name, namespace="default")
        fn(p)
        write = self.client.update_status if status else self.client.update
        await write("", "v1", "pods", p, namespace="default")
        await self.settle()


def harness(*objs, **kw) -> Harness:
    return Harness(EndpointSliceController, NS, *NODES, *objs, clock=clock(), **kw)


def run(coro):
    return asyncio.run(coro)


def test_a_service_gets_one_slice_with_upstreams_labels_owner_and_endpoints():
    async def main():
        async with harness(service(labels={"tier": "front"}), pod("a", "10.42.0.5"),
                           pod("b", "10.42.1.5", node="n2"), pod("other", "10.42.0.9", labels={"app": "db"})) as h:
            (s,) = h.slices()
            meta = s["metadata"]
            assert meta["name"].startswith("web-") and meta["generateName"] == "web-"
            assert meta["labels"] == {"tier": "front", "kubernetes.io/service-name": "web",
                                      "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME}
            assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                                "uid": "uid-svc-web", "controller": True,
                                                "blockOwnerDeletion": True}]
            # first sync: the Service's creation is the trigger
            assert meta["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == ts(0)
            assert s["addressType"] == "IPv4"
            assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
            eps = h.endpoints_of()
            assert set(eps) == {"a", "b"}
            assert eps["a"] == {"addresses": ["10.42.0.5"], "conditions": {"ready": True, "serving": True,
                                                                           "terminating": False},
                                "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"},
                                "nodeName": "n1", "zone": "zone-a"}
            assert "zone" not in eps["b"] and eps["b"]["nodeName"] == "n2"
    run(main())


def test_conditions_ready_serving_terminating_and_who_is_left_out():
    async def main():
        async with harness(service(),
                           pod("ready", "10.42.0.1"),
                           pod("unready", "10.42.0.2", ready=False),
                           pod("terminating", "10.42.0.3", deleting=True),
                           pod("terminating-unready", "10.42.0.4", deleting=True, ready=False),
                           pod("done", "10.42.0.5", phase="Succeeded", ready=False),
                           pod("no-ip", None),
                           pod("unbound", "10.42.0.7", node="")) as h:
            eps = h.endpoints_of()
            assert set(eps) == {"ready", "unready", "terminating", "terminating-unready"}
            cond = {n: e["conditions"] for n, e in eps.items()}
            assert cond["ready"] == {"ready": True, "serving": True, "terminating": False}
            assert cond["unready"] == {"ready": False, "serving": False, "terminating": False}
            assert cond["terminating"] == {"ready": False, "serving": True, "terminating": True}
            assert cond["terminating-unready"] == {"ready": False, "serving": False, "terminating": True}
    run(main())


def test_publish_not_ready_addresses_makes_every_endpoint_ready():
    async def main():
        async with harness(service(publish_not_ready=True), pod("unready", "10.42.0.2", ready=False),
                           pod("terminating", "10.42.0.3", deleting=True)) as h:
            cond = {n: e["conditions"] for n, e in h.endpoints_of().items()}
            assert cond["unready"] == {"ready": True, "serving": False, "terminating": False}
            assert cond["terminating"] == {"ready": True, "serving": True, "terminating": True}
    run(main())


def test_named_target_ports_resolve_per_pod_and_split_slices_by_port_set():
    async def main():
        svc = service(ports=(("http", 80, "http"), ("metrics", 9100, 9100)))
        async with harness(svc, pod("a", "10.42.0.1", ports=(("http", 8080),)),
                           pod("b", "10.42.0.2", ports=(("http", 9090),)),
                           pod("c", "10.42.0.3", ports=(("web", 8080),))) as h:
            by_ports = {tuple((p["name"], p["port"]) for p in s["ports"]):
                        sorted(e["targetRef"]["name"] for e in s["endpoints"]) for s in h.slices()}
            assert by_ports == {(("http", 8080), ("metrics", 9100)): ["a"],
                                (("http", 9090), ("metrics", 9100)): ["b"],
                                (("metrics", 9100),): ["c"]}  # c lacks the named port: skipped for it only
    run(main())


def test_packing_fills_slices_up_to_max_and_reuses_room():
    async def main():
        pods = [pod(f"p{i}", f"10.42.0.{10 + i}") for i in range(5)]
        async with harness(service(), *pods, max_endpoints_per_slice=2) as h:
            assert sorted(len(s["endpoints"]) for s in h.slices()) == [1, 2, 2]
            names = {s["metadata"]["name"] for s in h.slices()}
            # one more pod goes into the slice with room, not into a new slice
            await h.client.create("", "v1", "pods", pod("p5", "10.42.0.20"), namespace="default")
            await h.settle()
            assert sorted(len(s["endpoints"]) for s in h.slices()) == [2, 2, 2]
            assert {s["metadata"]["name"] for s in h.slices()} == names
            # removing both endpoints of one slice deletes that slice
            full = next(s for s in h.slices() if len(s["endpoints"]) == 2)
            for e in full["endpoints"]:
                await h.client.delete("", "v1", "pods", e["targetRef"]["name"], namespace="default")
            await h.settle()
            assert sorted(len(s["endpoints"]) for s in h.slices()) == [2, 2]
            assert len(h.endpoints_of()) == 4
    run(main())


def test_a_service_without_endpoints_keeps_one_placeholder_slice():
    async def main():
        async with harness(service()) as h:
            (s,) = h.slices()
            assert not s.get("endpoints") and not s.get("ports")
            created = h.client.filter_actions("create", "endpointslices")
            await h.client.create("", "v1", "pods", pod("a", "10.42.0.1"), namespace="default")
            await h.settle()
            (s2,) = h.slices()  # the placeholder became the real slice: an update, no churn
            assert s2["metadata"]["name"] == s["metadata"]["name"] and len(s2["endpoints"]) == 1
            assert s2["metadata"]["generateName"] == "web-"
            assert len(h.client.filter_actions("create", "endpointslices")) == len(created)
            await h.client.delete("", "v1", "pods", "a", namespace="default")
            await h.settle()
            (s3,) = h.slices()
            assert not s3.get("endpoints")
    run(main())


def test_services_without_selector_or_externalname_are_left_alone():
    async def main():
        async with harness(service("manual", selector=False),
                           service("ext", type_="ExternalName", cluster_ip="", externalName="example.com"),
                           pod("a", "10.42.0.1", labels={"app": "ext"})) as h:
            assert h.list("endpointslices", group="discovery.k8s.io") == []
    run(main())


def test_hostname_only_when_subdomain_is_the_service():
    async def main():
        svc = service("nginx", cluster_ip="None", selector={"app": "nginx"})
        async with harness(svc, pod("web-0", "10.42.0.1", labels={"app": "nginx"}, hostname="web-0",
                                    subdomain="nginx"),
                           pod("web-1", "10.42.0.2", labels={"app": "nginx"}, hostname="web-1",
                               subdomain="other")) as h:
            eps = h.endpoints_of("nginx")
            assert eps["web-0"]["hostname"] == "web-0" and "hostname" not in eps["web-1"]
            (s,) = h.slices("nginx")
            assert s["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    run(main())


def test_readiness_flip_updates_in_place_with_the_transition_as_trigger_time():
    async def main():
        async with harness(service(), pod("a", "10.42.0.1"), pod("b", "10.42.0.2")) as h:
            (s,) = h.slices()

            def unready(p):
                p["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": ts(42)}]
            await h.set_pod("a", unready, status=True)
            (s2,) = h.slices()
            assert s2["metadata"]["name"] == s["metadata"]["name"]
            assert h.endpoints_of()["a"]["conditions"]["ready"] is False
            assert h.endpoints_of()["b"]["conditions"]["ready"] is True
            assert s2["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] == ts(42)
            # an annotation-only pod change writes nothing
            writes = len(h.client.filter_actions("update", "endpointslices"))
            await h.set_pod("b", lambda p: p["metadata"].setdefault("annotations", {}).update(x="y"))
            assert len(h.client.filter_actions("update", "endpointslices")) == writes
    run(main())


def test_a_failed_sync_keeps_its_trigger_time_for_the_retry():
    """The tracker moves on only once a sync's write succeeded: the retry of a failed write still
    carries the pod's transition (upstream's moves on at compute time and drops it)."""
    svc = service()
    p = pod("a", "10.42.0.1")
    p["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ts(1)}]
    t = TriggerTimeTracker()
    with t.computing("default/web", svc, [p]) as first:
        pass
    p["status"]["conditions"][0].update(status="False", lastTransitionTime=ts(42))
    with pytest.raises(RuntimeError), t.computing("default/web", svc, [p]) as trigger:
        assert format_trigger_time(trigger) == ts(42)
        raise RuntimeError("409 Conflict")   # the write failed: the key is retried
    with t.computing("default/web", svc, [p]) as trigger:
        assert format_trigger_time(trigger) == ts(42)
    with t.computing("default/web", svc, [p]) as trigger:
        assert trigger is None                # written: nothing changed since
    assert first is not None                  # the Service's creation, on its first sync


def test_labels_follow_the_service():
    async def main():
        async with harness(service(labels={"v": "1"}), pod("a", "10.42.0.1")) as h:
            svc = await h.client.get("", "v1", "services", "web", namespace="default")
            svc["metadata"]["labels"] = {"v": "2", "kubernetes.io/service-name": "spoof"}
            await h.client.update("", "v1", "services", svc, namespace="default")
            await h.settle()
            (s,) = h.slices()
            assert s["metadata"]["labels"] == {"v": "2", "kubernetes.io/service-name": "web",
                                               "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME}
    run(main())


def test_a_slice_deleted_by_someone_else_comes_back():
    async def main():
        async with harness(service(), pod("a", "10.42.0.1")) as h:
            (s,) = h.slices()
            await h.client.delete("discovery.k8s.io", "v1", "endpointslices", s["metadata"]["name"],
                                  namespace="default")
            await h.settle()
            assert h.slices() == []
            await h.step(1.5)  # upstream's endpointSliceChangeMinSyncDelay
            (s2,) = h.slices()
            assert s2["metadata"]["name"] != s["metadata"]["name"] and len(s2["endpoints"]) == 1
    run(main())


def test_a_failed_write_records_an_event_and_is_retried():
    async def main():
        h = harness(service(), pod("a", "10.42.0.1"))
        calls = []

        def fail_once(action):
            if not calls:
                calls.append(action)
                raise RuntimeError("etcd is on fire")
            return None
        h.client.prepend_reactor("create", "endpointslices", fail_once)
        async with h:
            await h.step(1)
            assert len(h.slices()) == 1
            events = await h.events()
            assert any(r == "FailedToUpdateEndpointSlices" and "etcd is on fire" in m for r, m in events)
    run(main())


def test_a_pod_on_an_unknown_node_is_left_out_but_the_rest_is_written():
    async def main():
        async with harness(service(), pod("a", "10.42.0.1"), pod("ghost", "10.42.9.1", node="gone")) as h:
            assert set(h.endpoints_of()) == {"a"}
            events = await h.events()
            assert any(r == "FailedToUpdateEndpointSlices" and "Node gone Not Found" in m for r, m in events)
    run(main())


def test_an_existing_slice_with_null_endpoints_and_old_labels_is_reused():
    old = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-old", "namespace": "default", "generateName": "web-",
                        "labels": {"stale": "yes", "kubernetes.io/service-name": "web",
                                   "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                             "uid": "uid-svc-web", "controller": True}]},
           "addressType": "IPv4", "endpoints": None,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}

    async def main():
        async with harness(service(), old, pod("a", "10.42.0.1")) as h:
            (s,) = h.slices()
            assert s["metadata"]["name"] == "web-old" and "stale" not in s["metadata"]["labels"]
            assert [e["targetRef"]["name"] for e in s["endpoints"]] == ["a"]
    run(main())


def test_a_slice_of_an_older_service_with_the_same_name_is_replaced():
    old = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-gone", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web",
                                   "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                             "uid": "uid-of-a-deleted-web", "controller": True}]},
           "addressType": "IPv4", "endpoints": [], "ports": []}

    async def main():
        async with harness(service(), old, pod("a", "10.42.0.1")) as h:
            (s,) = h.slices()
            assert s["metadata"]["name"] != "web-gone"
            assert s["metadata"]["ownerReferences"][0]["uid"] == "uid-svc-web"
    run(main())
