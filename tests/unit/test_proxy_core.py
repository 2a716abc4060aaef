"""kube-proxy's core: the Service and EndpointSlice change trackers, the bounded-frequency runner,
and the server's wiring (informers -> trackers -> runner -> mode) over a FakeClient."""

from __future__ import annotations

import asyncio
import time

import pytest

from kubeling.client.fake import FakeClient
from kubeling.proxy import conntrack
from kubeling.proxy.endpointschangetracker import EndpointsChangeTracker, parse_time
from kubeling.proxy.runner import BoundedFrequencyRunner
from kubeling.proxy.server import ProxyOptions, ProxyServer
from kubeling.proxy.servicechangetracker import ServiceChangeTracker, service_ports
from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName


def svc(name="web", ns="default", *, ports=None, labels=None, status=None, **spec):
    spec.setdefault("clusterIP", "10.43.0.20")
    spec.setdefault("ports", ports or [{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
           "spec": spec}
    if status:
        obj["status"] = status
    return obj


def eps_slice(name="web-abc", svc_name="web", ns="default", *, endpoints=(), ports=None, trigger=None,
              address_type="IPv4"):
    meta = {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc_name}}
    if trigger:
        meta["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": trigger}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": address_type, "endpoints": list(endpoints),
            "ports": ports if ports is not None else [{"name": "", "port": 8080, "protocol": "TCP"}]}


def ep(ip, node="node-1", ready=None, serving=None, terminating=None):
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    return {"addresses": [ip], "conditions": cond, "nodeName": node}


WEB = ServicePortName("default", "web", "", "TCP")


# -- services ----------------------------------------------------------------------------------

def test_service_ports_cluster_ip():
    got = service_ports(svc())
    assert got == {WEB: ServicePort("10.43.0.20", 80)}


def test_service_ports_skips_headless_external_name_and_other_proxies():
    assert service_ports(svc(clusterIP="None")) == {}
    assert service_ports(svc(type="ExternalName", externalName="example.com", clusterIP="")) == {}
    assert service_ports(svc(labels={"service.kubernetes.io/service-proxy-name": "other"})) == {}


def test_service_ports_load_balancer_everything():
    s = svc(type="LoadBalancer", ports=[{"name": "http", "port": 80, "nodePort": 30080},
                                        {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
            externalIPs=["192.0.2.5"], externalTrafficPolicy="Local", internalTrafficPolicy="Local",
            healthCheckNodePort=32000, sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            loadBalancerSourceRanges=["10.0.0.0/8", " 192.168.1.1/24"],
            status={"loadBalancer": {"ingress": [{"ip": "10.44.0.2", "ipMode": "VIP"}, {"ip": "10.44.0.3"},
                                                 {"ip": "10.44.0.4", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}})
    got = service_ports(s)
    http = got[ServicePortName("default", "web", "http", "TCP")]
    dns = got[ServicePortName("default", "web", "dns", "UDP")]
    assert http == ServicePort("10.43.0.20", 80, "TCP", 30080, ("192.0.2.5",), ("10.44.0.2", "10.44.0.3"),
                               ("10.0.0.0/8", "192.168.1.0/24"), "ClientIP", 60, True, True, 32000)
    assert dns.protocol == "UDP" and dns.node_port == 30053 and dns.port == 53


def test_service_ports_defaults_and_policies_that_do_not_apply():
    # ClusterIP services have no node port, no LB IPs, and externalTrafficPolicy Local means nothing
    s = svc(externalTrafficPolicy="Local", sessionAffinity="ClientIP",
            status={"loadBalancer": {"ingress": [{"ip": "10.44.0.2"}]}})
    p = service_ports(s)[WEB]
    assert (p.node_port, p.load_balancer_ips, p.external_policy_local) == (0, (), False)
    assert p.sticky_max_age_seconds == 10800


def test_service_tracker_records_changes_and_deletes():
    t = ServiceChangeTracker()
    a = svc()
    assert t.update(None, a) and t.take_changes() == {WEB}
    assert not t.update(a, svc())                       # no change to a proxied field
    b = svc(ports=[{"port": 80}, {"name": "x", "port": 81}], clusterIP="10.43.0.21")
    b["spec"]["ports"][0]["name"] = "http"
    assert t.update(a, b)
    http, x = ServicePortName("default", "web", "http"), ServicePortName("default", "web", "x")
    assert t.take_changes() == {WEB, http, x}
    assert set(t.map) == {http, x}
    assert t.update(b, None) and t.map == {} and t.take_changes() == {http, x}


def test_service_tracker_survives_a_bad_object():
    t = ServiceChangeTracker()
    bad = svc(ports=[{"port": "eighty"}])
    t.update(None, bad)
    assert t.map == {}
    broken = {"metadata": {"name": "x", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.9", "ports": "junk"}}
    t.update(None, broken)       # logged, ignored
    t.update(None, svc())
    assert WEB in t.map


# -- endpoints ---------------------------------------------------------------------------------

def test_slice_conditions_default_as_the_api_says():
    t = EndpointsChangeTracker("node-1")
    t.update(None, eps_slice(endpoints=[ep("10.42.0.10"), ep("10.42.1.10", node="node-2", ready=False),
                                        ep("10.42.2.10", ready=False, serving=True, terminating=True)]))
    got = {e.ip: e for e in t.map[WEB]}
    assert got["10.42.0.10"] == Endpoint("10.42.0.10", 8080, True, True, False, "node-1", "", True)
    assert got["10.42.1.10"] == Endpoint("10.42.1.10", 8080, False, False, False, "node-2", "", False)
    assert got["10.42.2.10"].terminating and got["10.42.2.10"].serving and not got["10.42.2.10"].ready


def test_slices_of_one_service_merge_and_dedupe():
    t = EndpointsChangeTracker("node-1")
    t.update(None, eps_slice("web-a", endpoints=[ep("10.42.0.11", ready=False), ep("10.42.0.10")]))
    t.update(None, eps_slice("web-b", endpoints=[ep("10.42.0.11"), ep("10.42.0.12")]))
    assert [(e.ip, e.ready) for e in t.map[WEB]] == [("10.42.0.10", True), ("10.42.0.11", True),
                                                    ("10.42.0.12", True)]
    assert t.take_changes() == {WEB}
    # one slice goes: what only it had goes with it
    t.update(eps_slice("web-b"), None)
    assert [e.ip for e in t.map[WEB]] == ["10.42.0.10", "10.42.0.11"]
    t.update(eps_slice("web-a"), None)
    assert WEB not in t.map and t.take_changes() == {WEB}


def test_slices_ports_protocols_and_families():
    t = EndpointsChangeTracker("node-1")
    t.update(None, eps_slice(endpoints=[ep("10.42.0.10")],
                             ports=[{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "tcp", "port": 53}]))
    t.update(None, eps_slice("web-v6", endpoints=[{"addresses": ["fd00::1"]}], address_type="IPv6"))
    assert set(t.map) == {ServicePortName("default", "web", "dns", "UDP"), ServicePortName("default", "web", "tcp", "TCP")}


def test_unchanged_slice_is_no_change_and_trigger_times_are_kept():
    t = EndpointsChangeTracker("node-1")
    s = eps_slice(endpoints=[ep("10.42.0.10")], trigger="2026-12-02T12:00:00.5Z")
    assert t.update(None, s)
    assert not t.update(s, s)
    assert t.take_trigger_times() == [parse_time("2026-12-02T12:00:00.5Z")]
    assert parse_time("2026-12-02T12:00:00.123456789Z") == pytest.approx(parse_time("2026-12-02T12:00:00Z") + 0.123456)
    assert parse_time("junk") is None


# -- conntrack ---------------------------------------------------------------------------------

def test_stale_udp_flows():
    dns = ServicePortName("kube-system", "dns", "dns", "UDP")
    s = {dns: ServicePort("10.43.0.10", 53, "UDP", node_port=30053)}
    old = {dns: [Endpoint("10.42.0.5", 53), Endpoint("10.42.0.6", 53)]}
    new = {dns: [Endpoint("10.42.0.6", 53)]}
    flows = conntrack.stale_flows(s, old, s, new, {dns})
    assert flows == [conntrack.Flow(17, "10.43.0.10", 53, "10.42.0.5"), conntrack.Flow(17, None, 30053, "10.42.0.5")]
    # first endpoints of a service: forget every flow to it
    assert conntrack.stale_flows(s, {}, s, new) == [conntrack.Flow(17, "10.43.0.10", 53),
                                                     conntrack.Flow(17, None, 30053)]
    # TCP needs nothing
    assert conntrack.stale_flows({WEB: ServicePort("10.43.0.20", 80)}, {WEB: [Endpoint("10.42.0.1", 80)]}, {}, {}) == []


# -- runner ------------------------------------------------------------------------------------

def test_runner_coalesces_bounds_and_resyncs():
    async def main():
        calls: list[tuple[float, bool]] = []
        t0 = time.monotonic()

        async def fn(full):
            calls.append((time.monotonic() - t0, full))

        r = BoundedFrequencyRunner("t", fn, min_interval=0.2, max_interval=0.6)
        stop = asyncio.Event()
        task = asyncio.create_task(r.loop(stop))
        await asyncio.sleep(0.05)
        assert len(calls) == 1 and calls[0][1] is True          # the first sync is full, at once
        for _ in range(10):                                     # a burst of requests...
            r.run()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.25)
        assert len(calls) == 2                                  # ...is one sync, not before min_interval
        assert calls[1][0] >= 0.19 and calls[1][1] is False     # request-driven: partial
        await asyncio.sleep(0.6)
        assert len(calls) == 3 and calls[2][1] is True          # nothing asked: the periodic full sync
        assert calls[2][0] - calls[1][0] >= 0.55
        stop.set()
        await task

    asyncio.run(main())


def test_runner_retries_a_failure_as_a_full_sync():
    async def main():
        calls: list[bool] = []

        async def fn(full):
            calls.append(full)
            if len(calls) == 2:
                raise RuntimeError("iptables-restore failed")

        r = BoundedFrequencyRunner("t", fn, min_interval=0.05, max_interval=10, retry_interval=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(r.loop(stop))
        await asyncio.sleep(0.02)
        r.run()
        await asyncio.sleep(0.35)
        stop.set()
        await task
        assert calls == [True, False, True] and r.failures == 1

    asyncio.run(main())


# -- the server over a FakeClient --------------------------------------------------------------

class RecordingProxier:
    mode = "recording"

    def __init__(self):
        self.syncs: list[tuple[dict, dict, set | None]] = []
        self.fail_next = False

    async def start(self):
        pass

    async def sync(self, services, endpoints, changed=None):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.syncs.append((dict(services), {k: list(v) for k, v in endpoints.items()}, changed))


async def _until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_server_feeds_the_mode_from_informers_and_records_metrics():
    async def main():
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.44.0.2"}]}}
        client = FakeClient(ns, node)
        await client.create("", "v1", "services", svc(), namespace="default")
        await client.create("", "v1", "services", svc("headless", clusterIP="None",
                                                      labels={"service.kubernetes.io/headless": ""}), namespace="default")
        opts = ProxyOptions(min_sync_period=0.05, sync_period=30, metrics_bind_address="", healthz_bind_address="")
        p = RecordingProxier()
        server = ProxyServer(opts, client, "node-1", p, node_ips=("10.44.0.2",))
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await _until(lambda: p.syncs)
        services, endpoints, changed = p.syncs[0]
        assert set(services) == {WEB} and endpoints == {} and changed is None
        trigger = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        await client.create("discovery.k8s.io", "v1", "endpointslices",
                            eps_slice(endpoints=[ep("10.42.0.10"), ep("10.42.1.10", node="node-2")], trigger=trigger),
                            namespace="default")
        await _until(lambda: len(p.syncs) == 2)
        services, endpoints, changed = p.syncs[1]
        assert changed == {WEB}
        assert [(e.ip, e.is_local) for e in endpoints[WEB]] == [("10.42.0.10", True), ("10.42.1.10", False)]
        # a failed sync is retried as a full one, with the change still there
        p.fail_next = True
        await client.delete("", "v1", "services", "web", namespace="default")
        await _until(lambda: len(p.syncs) == 3, timeout=5)
        assert p.syncs[2][2] is None and p.syncs[2][0] == {}
        text = server.metrics.render().decode()
        assert "kubeproxy_sync_proxy_rules_duration_seconds_count 3" in text
        assert "kubeproxy_network_programming_duration_seconds_count 1" in text
        assert "kubeproxy_sync_proxy_rules_last_timestamp_seconds" in text
        assert server.health.healthy()
        stop.set()
        await task

    asyncio.run(main())


def test_service_health_check_node_port_answers_by_local_endpoints():
    async def main():
        import aiohttp

        from kubeling.proxy.healthcheck import ServiceHealthServer
        hs = ServiceHealthServer(bind="127.0.0.1")
        from tests.support.ports import free_port
        port = free_port()
        await hs.sync({"default/web": port}, {"default/web": 2})
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/") as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    assert body == {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2,
                                    "serviceProxyHealthy": True}
                await hs.sync({"default/web": port}, {"default/web": 0})
                async with http.get(f"http://127.0.0.1:{port}/") as resp:
                    assert resp.status == 503
            await hs.sync({}, {})
            assert hs.ports == []
        finally:
            await hs.close()

    asyncio.run(main())
