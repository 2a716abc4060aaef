"""The ``kubernetes`` Service's endpoints with several API servers (upstream's lease endpoint
reconciler): each server's lease under ``/registry/masterleases/``, expired ones dropped, every
live address in the Endpoints and the EndpointSlice, sorted; a leaving server removes its own."""

from __future__ import annotations

import asyncio
import json

from inprocess import api_server

from kubeling.apiserver import endpointreconciler as er
from kubeling.apiserver.endpointreconciler import LeaseEndpointReconciler


async def addresses(api):
    e = await api.registry.get(api.lookup("", "v1", "endpoints"), "default", "kubernetes")
    s = await api.registry.get(api.lookup("discovery.k8s.io", "v1", "endpointslices"), "default", "kubernetes")
    ips = [a["ip"] for a in e["subsets"][0]["addresses"]]
    assert [ep["addresses"][0] for ep in s["endpoints"]] == ips
    assert all(ep["conditions"] == {"ready": True} for ep in s["endpoints"])
    return ips


def test_two_servers_are_listed_sorted_and_a_leaving_one_removes_itself():
    async def main():
        api = await api_server(advertise_address="10.0.0.9", secure_port=6443)
        store = api.registry.store
        assert await addresses(api) == ["10.0.0.9"]   # one server: today's result
        kv = (await store.list(er.PREFIX)).kvs
        assert [k.key for k in kv] == ["/registry/masterleases/10.0.0.9"]
        assert json.loads(kv[0].value)["kind"] == "Endpoints"
        a = LeaseEndpointReconciler(api, store, "10.0.0.9", 6443)
        b = LeaseEndpointReconciler(api, store, "10.0.0.10", 6443)
        await b.reconcile()
        assert await addresses(api) == ["10.0.0.9", "10.0.0.10"]   # numeric order
        await a.reconcile()
        e = await api.registry.get(api.lookup("", "v1", "endpoints"), "default", "kubernetes")
        rv = e["metadata"]["resourceVersion"]
        await a.reconcile()   # nothing changed: nothing written
        e = await api.registry.get(api.lookup("", "v1", "endpoints"), "default", "kubernetes")
        assert e["metadata"]["resourceVersion"] == rv
        await b.remove()
        assert await addresses(api) == ["10.0.0.9"]
        await b.reconcile()   # a removed reconciler stays out
        assert await addresses(api) == ["10.0.0.9"]
        await a.remove()      # the last one leaves its address: never an empty list
        assert await addresses(api) == ["10.0.0.9"]
    asyncio.run(main())


def test_a_dead_servers_lease_expires_and_it_leaves_the_endpoints():
    async def main():
        api = await api_server(advertise_address="10.0.0.1", secure_port=6443)
        store = api.registry.store
        a = LeaseEndpointReconciler(api, store, "10.0.0.1", 6443)
        dead = LeaseEndpointReconciler(api, store, "10.0.0.2", 6443, ttl=0.3)
        await dead.reconcile()
        await a.reconcile()
        assert await addresses(api) == ["10.0.0.1", "10.0.0.2"]
        for _ in range(100):   # the dead one renews no more; its 0.3 s lease runs out
            await asyncio.sleep(0.1)
            await a.reconcile()
            if await addresses(api) == ["10.0.0.1"]:
                break
        assert await addresses(api) == ["10.0.0.1"]
        assert [k.key for k in (await store.list(er.PREFIX)).kvs] == ["/registry/masterleases/10.0.0.1"]
    asyncio.run(main())


def test_the_loop_renews_until_stopped():
    async def main():
        api = await api_server(advertise_address="10.0.0.1", secure_port=6443)
        store = api.registry.store
        b = LeaseEndpointReconciler(api, store, "10.0.0.3", 6443, ttl=1.0, interval=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(b.run(stop))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if "10.0.0.3" in await addresses(api):
                break
        gens = []
        for _ in range(100):
            await asyncio.sleep(0.05)
            _, kv = await store.get(er.PREFIX + "10.0.0.3")
            gens.append(json.loads(kv.value)["metadata"]["generation"])
            if gens[-1] >= 3:
                break
        assert gens[-1] >= 3   # renewed each round
        stop.set()
        await asyncio.wait_for(task, 5)
    asyncio.run(main())


def test_servers_reconciling_at_once_all_end_up_listed():
    async def main():
        api = await api_server(advertise_address="10.0.1.1", secure_port=6443)
        store = api.registry.store
        rs = [LeaseEndpointReconciler(api, store, f"10.0.1.{i}", 6443) for i in range(1, 7)]
        await asyncio.gather(*(r.reconcile() for r in rs))   # conflicting writes are read again
        await rs[0].reconcile()
        assert await addresses(api) == [f"10.0.1.{i}" for i in range(1, 7)]
    asyncio.run(main())
