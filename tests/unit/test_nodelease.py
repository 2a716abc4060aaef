"""The node Lease is created, owned by its Node, renewed every 10 s, and recovered after faults."""

import asyncio
from datetime import UTC, datetime

import pytest

from kubeling.api.errors import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.fake import FakeClient
from kubeling.kubelet.nodelease import NodeLease

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}}
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "node-uid-1"}}
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


async def settle(clock=None, seconds=0.0):
    if clock is not None and seconds:
        clock.step(seconds)
    for _ in range(30):
        await asyncio.sleep(0)


def lease_of(client):
    return client.object("coordination.k8s.io", "v1", "leases", "n1", namespace="kube-node-lease")


def writes(client):
    return [a.verb for a in client.actions if a.resource == "leases" and a.verb in ("get", "create", "update")]


def test_created_owned_and_renewed_every_ten_seconds():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, NODE, clock=clock)
        stop = asyncio.Event()
        task = asyncio.create_task(NodeLease(client, "n1", clock=clock).run(stop))
        try:
            await settle()
            lease = lease_of(client)
            assert lease["spec"] == {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                                     "renewTime": "2024-05-01T12:00:00.000000Z"}
            assert lease["metadata"]["ownerReferences"] == [
                {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid-1"}]
            assert writes(client) == ["get", "create"]  # created counts as renewed

            client.clear_actions()
            await settle(clock, 9.9)
            assert writes(client) == []  # not before 10 s
            await settle(clock, 0.6)  # 10 s plus at most 4 % jitter
            assert writes(client) == ["update"]  # renewal from the cached copy, no GET
            assert lease_of(client)["spec"]["renewTime"] == clock.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

            await settle(clock, 10.5)
            assert writes(client) == ["update", "update"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 1)
    asyncio.run(go())


def test_owner_reference_added_once_the_node_exists():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, clock=clock)
        lease = NodeLease(client, "n1", clock=clock)
        await lease.sync()
        assert "ownerReferences" not in lease_of(client)["metadata"]
        client.seed(NODE)
        clock.step(10)
        await lease.sync()
        assert lease_of(client)["metadata"]["ownerReferences"][0]["uid"] == "node-uid-1"
    asyncio.run(go())


def test_deleted_lease_is_recreated():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, NODE, clock=clock)
        lease = NodeLease(client, "n1", clock=clock)
        await lease.sync()
        await client.delete("coordination.k8s.io", "v1", "leases", "n1", namespace="kube-node-lease")
        client.clear_actions()
        clock.step(10)
        await lease.sync()
        assert writes(client) == ["update", "get", "create"]
        assert lease_of(client)["spec"]["renewTime"] == "2024-05-01T12:00:10.000000Z"
    asyncio.run(go())


def test_conflict_rereads_and_renews():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, NODE, clock=clock)
        lease = NodeLease(client, "n1", clock=clock)
        await lease.sync()
        # Someone else touches the Lease: our cached resourceVersion is stale now.
        await client.patch("coordination.k8s.io", "v1", "leases", "n1", {"metadata": {"labels": {"x": "y"}}},
                           namespace="kube-node-lease")
        client.clear_actions()
        clock.step(10)
        await lease.sync()
        assert writes(client) == ["update", "get", "update"]
        got = lease_of(client)
        assert got["metadata"]["labels"] == {"x": "y"}
        assert got["spec"]["renewTime"] == "2024-05-01T12:00:10.000000Z"
    asyncio.run(go())


def test_create_failures_back_off_doubling_to_seven_seconds():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, NODE, clock=clock)
        failures = {"left": 7}

        def fail(action):
            if failures["left"]:
                failures["left"] -= 1
                raise StatusError(500, "InternalError", "etcd is down")

        client.prepend_reactor("create", "leases", fail)
        stop = asyncio.Event()
        task = asyncio.create_task(NodeLease(client, "n1", clock=clock).run(stop))
        try:
            waits = []
            for _ in range(7):
                await settle()
                deadline = clock.next_deadline()
                waits.append(round(deadline - clock.now(), 3))
                clock.set(deadline)
            await settle()
            assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 7.0]
            assert lease_of(client) is not None
        finally:
            stop.set()
            await asyncio.wait_for(task, 1)
    asyncio.run(go())


@pytest.mark.parametrize("failing,calls", [
    pytest.param(1, 0, id="one-failure-no-callback"),
    pytest.param(3, 2, id="repeated-failures-call-back"),
])
def test_repeated_update_failures_call_back(failing, calls):
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, NODE, clock=clock)
        seen = []
        lease = NodeLease(client, "n1", clock=clock, on_repeated_failure=lambda: seen.append(1))
        await lease.sync()
        left = {"n": failing}

        def fail(action):
            if left["n"]:
                left["n"] -= 1
                raise StatusError(503, "ServiceUnavailable", "try later")

        client.prepend_reactor("update", "leases", fail)
        clock.step(10)
        await lease.sync()
        assert len(seen) == calls
        assert lease_of(client)["spec"]["renewTime"] == "2024-05-01T12:00:10.000000Z"
    asyncio.run(go())


def test_stop_ends_the_loop_promptly_even_while_backing_off():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(NS, clock=clock)
        client.prepend_reactor("get", "leases", lambda a: (_ for _ in ()).throw(StatusError(500, "InternalError", "x")))
        stop = asyncio.Event()
        task = asyncio.create_task(NodeLease(client, "n1", clock=clock).run(stop))
        await settle()
        stop.set()
        await asyncio.wait_for(task, 1)
    asyncio.run(go())
