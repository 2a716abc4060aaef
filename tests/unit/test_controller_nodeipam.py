"""Node IPAM controller (range allocator) and its CIDRSet, against the FakeClient."""

import asyncio

import pytest

from kubeling.client import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.nodeipam import CIDR_NOT_AVAILABLE, CIDRSet, CIDRSetFull, NodeIPAMController


@pytest.mark.parametrize("cluster, mask, occupied, expected", [
    pytest.param("10.42.0.0/16", 24, [], ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"], id="in-order"),
    pytest.param("10.42.0.0/16", 24, ["10.42.1.0/24"], ["10.42.0.0/24", "10.42.2.0/24", "10.42.3.0/24"],
                 id="skips-occupied"),
    pytest.param("10.42.0.0/16", 24, ["10.42.0.0/23"], ["10.42.2.0/24", "10.42.3.0/24", "10.42.4.0/24"],
                 id="a-wider-occupied-range-takes-every-subnet-it-covers"),
    pytest.param("10.42.0.0/16", 24, ["10.43.0.0/16", "192.168.0.0/24", "garbage"],
                 ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"], id="outside-the-range-is-ignored"),
    pytest.param("10.0.0.0/8", 16, ["10.0.0.0/16"], ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"], id="slash-16s"),
])
def test_cidrset_allocates_in_order(cluster, mask, occupied, expected):
    s = CIDRSet(cluster, mask)
    for c in occupied:
        s.occupy(c)
    assert [s.allocate_next() for _ in expected] == expected


def test_cidrset_round_robin_release_and_full():
    s = CIDRSet("10.42.0.0/22", 24)
    assert [s.allocate_next() for _ in range(3)] == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
    s.release("10.42.0.0/24")
    assert s.allocate_next() == "10.42.3.0/24"  # a freed subnet waits its turn
    assert s.allocate_next() == "10.42.0.0/24"
    with pytest.raises(CIDRSetFull, match="no remaining CIDRs left to allocate in the accepted range 10.42.0.0/22"):
        s.allocate_next()


@pytest.mark.parametrize("cluster, mask", [
    pytest.param("10.42.0.0/16", 8, id="mask-wider-than-cluster"),
    pytest.param("fd00::/48", 64, id="ipv6"),
])
def test_cidrset_refuses_unusable_settings(cluster, mask):
    with pytest.raises(ValueError):
        CIDRSet(cluster, mask)


def node(name, cidr=None):
    n = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}
    if cidr:
        n["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    return n


DEFAULT_NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


async def start(*objs, cluster_cidr=None):
    clock = FakeClock()
    client = FakeClient(DEFAULT_NS, *objs, clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    ctx = ControllerContext(client, factory, clock=clock)
    if cluster_cidr:
        ctx.cluster_cidr = cluster_cidr  # the field the manager's --cluster-cidr fills
    ctrl = NodeIPAMController(ctx)
    stop = asyncio.Event()
    factory.start(stop)
    assert await ctrl.wait_for_caches(stop)  # also restores the map from the cached Nodes
    return client, ctrl, stop, factory


async def finish(ctrl, stop, factory):
    stop.set()
    await ctrl.recorder.close()
    await factory.shutdown()


def cidr_of(client, name):
    spec = client.object("", "v1", "nodes", name)["spec"]
    assert spec.get("podCIDRs", [spec.get("podCIDR")]) == [spec.get("podCIDR")]
    return spec.get("podCIDR")


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0)
    await asyncio.wait_for(loop(), timeout)


def test_nodes_get_subnets_and_existing_ones_are_restored_first():
    async def main():
        client, ctrl, stop, factory = await start(node("a", "10.42.0.0/24"), node("b", "10.42.2.0/24"), node("c"))
        await ctrl.sync("c")
        assert cidr_of(client, "c") == "10.42.1.0/24"
        patch = client.filter_actions("patch", "nodes")[0]
        assert patch.options.get("patch_type") == "strategic"
        await ctrl.sync("a")  # has one already: no write
        assert len(client.filter_actions("patch", "nodes")) == 1
        await client.create("", "v1", "nodes", node("d"))
        await until(lambda: ctrl.nodes.get("d") is not None)
        await ctrl.sync("d")
        assert cidr_of(client, "d") == "10.42.3.0/24"
        await finish(ctrl, stop, factory)

    asyncio.run(main())


def test_exhaustion_records_cidr_not_available_and_a_deleted_node_frees_its_subnet():
    async def main():
        client, ctrl, stop, factory = await start(node("a"), node("b"), node("c"), cluster_cidr="10.42.0.0/23")
        await ctrl.sync("a")
        await ctrl.sync("b")
        with pytest.raises(RuntimeError, match="failed to allocate cidr from cluster cidr at idx:0"):
            await ctrl.sync("c")
        await ctrl.recorder.flush()
        [event] = (await client.list("", "v1", "events", namespace="default"))["items"]
        assert (event["reason"], event["type"], event["message"]) == (
            CIDR_NOT_AVAILABLE, "Normal", "Node c status is now: CIDRNotAvailable")
        assert event["involvedObject"]["kind"] == "Node" and event["involvedObject"]["name"] == "c"
        assert event["source"]["component"] == "cidrAllocator"

        freed = cidr_of(client, "a")
        await client.delete("", "v1", "nodes", "a")
        await until(lambda: ctrl.nodes.get("a") is None)
        await ctrl.sync("a")
        await ctrl.sync("c")
        assert cidr_of(client, "c") == freed
        await finish(ctrl, stop, factory)

    asyncio.run(main())


def test_a_failed_patch_keeps_the_reservation_for_the_retry():
    async def main():
        client, ctrl, stop, factory = await start(node("a"), node("b"))
        failures = [StatusError(500, "InternalError", "etcd is sad")]

        def flaky(action):
            if failures:
                raise failures.pop()

        client.prepend_reactor("patch", "nodes", flaky)
        with pytest.raises(StatusError):
            await ctrl.sync("a")
        await ctrl.sync("b")
        await ctrl.sync("a")
        assert (cidr_of(client, "a"), cidr_of(client, "b")) == ("10.42.0.0/24", "10.42.1.0/24")
        await finish(ctrl, stop, factory)

    asyncio.run(main())


def test_a_node_deleted_before_its_patch_releases_the_subnet():
    async def main():
        client, ctrl, stop, factory = await start(node("a"), cluster_cidr="10.42.0.0/24")

        def gone(action):
            raise StatusError(404, "NotFound", 'nodes "a" not found')

        client.prepend_reactor("patch", "nodes", gone)
        await ctrl.sync("a")  # not an error: nothing to retry
        assert ctrl.held == {} and ctrl.cidrs.used == set()
        await finish(ctrl, stop, factory)

    asyncio.run(main())


def test_short_run_assigns_new_nodes_and_releases_deleted_ones():
    async def main():
        client, ctrl, stop, factory = await start(node("a", "10.42.0.0/24"))
        task = asyncio.create_task(ctrl.run(1, stop))
        await client.create("", "v1", "nodes", node("b"))
        await until(lambda: cidr_of(client, "b") is not None)
        assert cidr_of(client, "b") == "10.42.1.0/24"
        await until(lambda: ctrl.held.get("b") == "10.42.1.0/24")
        await client.delete("", "v1", "nodes", "b")
        await until(lambda: "b" not in ctrl.held)
        assert ctrl.held == {"a": "10.42.0.0/24"}
        stop.set()
        await asyncio.wait_for(task, 2)
        await factory.shutdown()

    asyncio.run(main())


def test_against_the_in_process_api_server():
    """The real API server takes the patch (validation, strategic merge of podCIDRs), and a
    restarted controller restores the map from the Nodes it lists."""
    from inprocess import api_server, http

    from kubeling.client.rest import RESTClient
    from kubeling.client.transport import AiohttpTransport

    async def main():
        api = await api_server()
        async with http(api) as server:
            client = RESTClient(AiohttpTransport(str(server.make_url("/"))))
            try:
                for name in ("n1", "n2"):
                    await client.create("", "v1", "nodes", node(name))

                async def one_run():
                    factory = SharedInformerFactory(client)
                    ctrl = NodeIPAMController(ControllerContext(client, factory))
                    stop = asyncio.Event()
                    factory.start(stop)
                    task = asyncio.create_task(ctrl.run(1, stop))
                    try:
                        await until(lambda: len(ctrl.nodes.list()) == 3
                                    and all(n["spec"].get("podCIDRs") for n in ctrl.nodes.list()), timeout=10)
                        return {n["metadata"]["name"]: n["spec"] for n in ctrl.nodes.list()}
                    finally:
                        stop.set()
                        await asyncio.wait_for(task, 5)
                        await factory.shutdown()

                await client.create("", "v1", "nodes", node("n3"))
                first = await one_run()
                assert {k: v["podCIDRs"] for k, v in first.items()} == {
                    "n1": ["10.42.0.0/24"], "n2": ["10.42.1.0/24"], "n3": ["10.42.2.0/24"]}
                assert all(v["podCIDR"] == v["podCIDRs"][0] for v in first.values())
                await client.delete("", "v1", "nodes", "n2")
                await client.create("", "v1", "nodes", node("n4"))
                second = await one_run()  # a new controller: restores n1 and n3 before n4
                assert second["n4"]["podCIDR"] == "10.42.1.0/24"
            finally:
                await client.close()

    asyncio.run(main())
