"""Service IP and node port allocation through bitmaps held in the store."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from kubeling.api import errors
from kubeling.apiserver.registry import Config
from kubeling.apiserver.registry.core.service import IPS_KEY, PORTS_KEY

from inprocess import api_server, ctx


def run(coro):
    return asyncio.run(coro)


def svc(name: str, *, type_: str = "ClusterIP", ip: str | None = None, ports=None) -> dict:
    spec: dict = {"type": type_, "selector": {"app": name},
                  "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if ip is not None:
        spec["clusterIP"] = ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


async def _bits(api, key: str) -> int:
    value, _ = await api.registry.read_key(key)
    import base64
    return sum(bin(b).count("1") for b in base64.b64decode(orjson.loads(value)["data"]))


def test_cluster_ips_are_unique_and_in_range():
    async def main():
        api = await api_server(config=Config(service_cidr="10.96.0.0/28"))
        served = api.lookup("", "v1", "services")
        ips = set()
        for i in range(10):
            obj = await api.registry.create(served, svc(f"s{i}"), ctx("default"))
            ips.add(obj["spec"]["clusterIP"])
            assert obj["spec"]["clusterIPs"] == [obj["spec"]["clusterIP"]]
        assert len(ips) == 10 and all(ip.startswith("10.96.0.") for ip in ips)
        assert await _bits(api, IPS_KEY) == 11  # ten and the bootstrap `kubernetes` service
    run(main())


def test_range_full_is_an_error_and_takes_nothing():
    async def main():
        api = await api_server(config=Config(service_cidr="10.96.0.0/29"))  # 6 hosts, .1 taken
        served = api.lookup("", "v1", "services")
        for i in range(5):
            await api.registry.create(served, svc(f"s{i}"), ctx("default"))
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, svc("one-too-many"), ctx("default"))
        assert e.value.code == 500 and "range is full" in e.value.message
    run(main())


@pytest.mark.parametrize("ip, message", [
    pytest.param("10.0.0.5", "is not in the valid range. The range of valid IPs is 10.43.0.0/16", id="outside"),
    pytest.param("10.43.0.1", "provided IP is already allocated", id="taken"),
])
def test_requested_ip_refused(ip, message):
    async def main():
        api = await api_server()
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(api.lookup("", "v1", "services"), svc("x", ip=ip), ctx("default"))
        assert e.value.code == 422 and message in e.value.message
        assert e.value.details["causes"][0]["field"] == "spec.clusterIPs"
    run(main())


def test_delete_releases_ip_and_node_ports():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "services")
        obj = await api.registry.create(served, svc("np", type_="NodePort"), ctx("default"))
        port = obj["spec"]["ports"][0]["nodePort"]
        assert 30000 <= port <= 32767
        assert await _bits(api, PORTS_KEY) == 1
        await api.registry.delete(served, "default", "np", {}, ctx("default"))
        assert await _bits(api, PORTS_KEY) == 0 and await _bits(api, IPS_KEY) == 1
        again = await api.registry.create(served, svc("np2", type_="NodePort",
                                                      ports=[{"port": 80, "nodePort": port}]), ctx("default"))
        assert again["spec"]["ports"][0]["nodePort"] == port  # free again
    run(main())


def test_a_failed_create_gives_back_what_it_took():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "services")
        bad = svc("Bad_Name", type_="NodePort")  # allocation happens, validation then fails
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, bad, ctx("default"))
        assert e.value.code == 422
        assert await _bits(api, PORTS_KEY) == 0 and await _bits(api, IPS_KEY) == 1
    run(main())


def test_leaving_nodeport_releases_ports_and_update_keeps_allocations():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "services")
        obj = await api.registry.create(served, svc("t", type_="NodePort"), ctx("default"))
        ip, port = obj["spec"]["clusterIP"], obj["spec"]["ports"][0]["nodePort"]
        same = svc("t", type_="NodePort")  # the client leaves out what was allocated
        kept, _ = await api.registry.update(served, "default", "t", same, ctx("default"))
        assert kept["spec"]["clusterIP"] == ip and kept["spec"]["ports"][0]["nodePort"] == port
        back = svc("t", type_="ClusterIP")
        plain, _ = await api.registry.update(served, "default", "t", back, ctx("default"))
        assert "nodePort" not in plain["spec"]["ports"][0]
        assert await _bits(api, PORTS_KEY) == 0
    run(main())


def test_repair_marks_what_stored_services_hold():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "services")
        await api.registry.create(served, svc("r", type_="NodePort"), ctx("default"))
        await api.registry.store.delete(IPS_KEY)  # as if the bitmap was lost
        await api.registry.store.delete(PORTS_KEY)
        await api.strategies[("", "services")].repair(api.registry, served)
        assert await _bits(api, IPS_KEY) == 2 and await _bits(api, PORTS_KEY) == 1
    run(main())


def test_concurrent_creates_never_share_an_ip():
    async def main():
        api = await api_server(config=Config(service_cidr="10.96.0.0/26"))
        served = api.lookup("", "v1", "services")
        objs = await asyncio.gather(*(api.registry.create(served, svc(f"c{i}"), ctx("default")) for i in range(40)))
        assert len({o["spec"]["clusterIP"] for o in objs}) == 40
    run(main())
