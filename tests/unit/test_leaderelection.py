"""LeaderElector against an in-memory Lease store with resourceVersion compare-and-swap."""

import asyncio
import copy

import pytest

from kubeling.api.errors import already_exists, conflict, not_found
from kubeling.client.clock import FakeClock
from kubeling.client.exceptions import TransportError
from kubeling.client.leaderelection import LeaderElector


class FakeLeases:
    """get/create/update of Leases, with optimistic concurrency like the API server."""

    def __init__(self):
        self.leases: dict[tuple[str, str], dict] = {}
        self.rv = 0
        self.down: set[str] = set()  # identities whose requests fail (a partitioned replica)
        self.writes: list[tuple[str, str]] = []

    def _check(self, who):
        if who in self.down:
            raise TransportError("connection refused")

    def client(self, who):
        api = self

        class Client:
            async def get(self, group, version, resource, name, *, namespace=None):
                assert (group, version, resource) == ("coordination.k8s.io", "v1", "leases")
                api._check(who)
                await asyncio.sleep(0)
                if (namespace, name) not in api.leases:
                    raise not_found("leases", "coordination.k8s.io", name)
                return copy.deepcopy(api.leases[(namespace, name)])

            async def create(self, group, version, resource, obj, *, namespace=None):
                api._check(who)
                await asyncio.sleep(0)
                key = (namespace, obj["metadata"]["name"])
                if key in api.leases:
                    raise already_exists("leases", "coordination.k8s.io", key[1])
                api.rv += 1
                obj = copy.deepcopy(obj)
                obj["metadata"]["resourceVersion"] = str(api.rv)
                api.leases[key] = obj
                api.writes.append((who, "create"))
                return copy.deepcopy(obj)

            async def update(self, group, version, resource, obj, *, namespace=None):
                api._check(who)
                await asyncio.sleep(0)
                key = (namespace, obj["metadata"]["name"])
                cur = api.leases.get(key)
                if cur is None:
                    raise not_found("leases", "coordination.k8s.io", key[1])
                if obj["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
                    raise conflict("leases", "coordination.k8s.io", key[1], "the object has been modified")
                api.rv += 1
                obj = copy.deepcopy(obj)
                obj["metadata"]["resourceVersion"] = str(api.rv)
                api.leases[key] = obj
                api.writes.append((who, "update"))
                return copy.deepcopy(obj)

        return Client()

    def spec(self):
        return self.leases[("kube-system", "lock")]["spec"]


class Candidate:
    def __init__(self, api, clock, who, **kw):
        self.events = []
        self.stop = asyncio.Event()
        self.lost: asyncio.Event | None = None

        async def started(lost):
            self.events.append("started")
            self.lost = lost
            await lost.wait()
            self.events.append("work-stopped")

        self.elector = LeaderElector(
            api.client(who), "kube-system", "lock", who, lease_duration=15, renew_deadline=10, retry_period=2,
            on_started_leading=kw.pop("started", started), on_stopped_leading=lambda: self.events.append("stopped"),
            on_new_leader=lambda ident: self.events.append(f"leader={ident}"), clock=clock, **kw)
        self.task = asyncio.create_task(self.elector.run(self.stop))


async def settle(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


async def advance(clock, seconds, step=0.25):
    t = 0.0
    while t < seconds:
        clock.step(step)
        t += step
        await settle()


def test_first_candidate_creates_lease_and_leads():
    async def main():
        api, clock = FakeLeases(), FakeClock()
        a = Candidate(api, clock, "a")
        await settle()
        assert a.events == ["leader=a", "started"]
        assert a.elector.is_leader()
        spec = api.spec()
        assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
        assert spec["leaseTransitions"] == 0
        assert spec["acquireTime"] == spec["renewTime"] == "2024-01-01T00:00:00.000000Z"
        await advance(clock, 5)
        assert api.spec()["renewTime"] > spec["renewTime"], "the leader keeps renewing"
        assert api.spec()["acquireTime"] == spec["acquireTime"]
        a.stop.set()
        await asyncio.wait_for(a.task, 1)

    asyncio.run(main())


def test_only_one_of_two_leads_and_release_hands_over_fast():
    async def main():
        api, clock = FakeLeases(), FakeClock()
        a = Candidate(api, clock, "a")
        await settle()
        b = Candidate(api, clock, "b")
        await advance(clock, 30)
        assert "started" in a.events and "started" not in b.events
        assert b.elector.get_leader() == "a" and not b.elector.is_leader()
        a.stop.set()
        await asyncio.wait_for(a.task, 1)
        assert a.events[-2:] == ["work-stopped", "stopped"]
        assert "holderIdentity" not in api.spec() and api.spec()["leaseDurationSeconds"] == 1
        await advance(clock, 5)  # b only waits for its next retry, not a full lease
        assert "started" in b.events
        assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1
        b.stop.set()
        await asyncio.wait_for(b.task, 1)

    asyncio.run(main())


def test_partitioned_leader_steps_down_and_successor_waits_for_expiry():
    async def main():
        api, clock = FakeLeases(), FakeClock()
        a = Candidate(api, clock, "a")
        await settle()
        b = Candidate(api, clock, "b")
        await advance(clock, 4)
        last_renew = clock.now()
        api.down.add("a")  # a can no longer reach the API server
        # The failing round starts at the next retry (<= 2s) and lasts renew_deadline (10s).
        await advance(clock, 9.5)
        assert "stopped" not in a.events, "a keeps leading until renew_deadline passes"
        await advance(clock, 3)
        assert a.events[-2:] == ["work-stopped", "stopped"]
        await asyncio.wait_for(a.task, 1)
        assert not a.lost is None and a.lost.is_set()
        # b must not take over before the lease (15s since it last saw a change) ran out.
        assert "started" not in b.events
        await advance(clock, last_renew + 15 - clock.now() - 0.5)
        assert "started" not in b.events
        await advance(clock, 12)  # b's jittered retries see the record a little late
        assert "started" in b.events and api.spec()["holderIdentity"] == "b"
        assert api.spec()["leaseTransitions"] == 1
        assert "leader=b" in b.events
        b.stop.set()
        await asyncio.wait_for(b.task, 1)

    asyncio.run(main())


def test_concurrent_candidates_never_both_lead():
    async def main():
        api, clock = FakeLeases(), FakeClock()
        cands = [Candidate(api, clock, f"c{i}") for i in range(5)]
        await advance(clock, 20)
        leaders = [c for c in cands if "started" in c.events]
        assert len(leaders) == 1
        assert [c.elector.is_leader() for c in cands].count(True) == 1
        for c in cands:
            c.stop.set()
        await asyncio.wait_for(asyncio.gather(*(c.task for c in cands)), 2)

    asyncio.run(main())


def test_leading_task_crash_steps_down_and_escalates():
    async def main():
        api, clock = FakeLeases(), FakeClock()

        async def crash(lost):
            raise RuntimeError("controller bug")

        a = Candidate(api, clock, "a", started=crash)
        with pytest.raises(RuntimeError, match="controller bug"):
            await asyncio.wait_for(a.task, 2)
        assert a.events[-1] == "stopped"
        assert "holderIdentity" not in api.spec(), "a crashed leader releases the lease"

    asyncio.run(main())


def test_stop_before_acquiring_returns_without_callbacks():
    async def main():
        api, clock = FakeLeases(), FakeClock()
        a = Candidate(api, clock, "a")
        await settle()
        b = Candidate(api, clock, "b")
        await settle()
        b.stop.set()
        await asyncio.wait_for(b.task, 1)
        assert b.events == ["leader=a"]
        a.stop.set()
        await asyncio.wait_for(a.task, 1)

    asyncio.run(main())


@pytest.mark.parametrize("kw", [
    pytest.param(dict(lease_duration=10, renew_deadline=10), id="lease-not-longer-than-deadline"),
    pytest.param(dict(lease_duration=0.6, renew_deadline=0.4, retry_period=0.1), id="lease-under-a-second"),
    pytest.param(dict(renew_deadline=2, retry_period=2), id="deadline-too-short-for-retries"),
    pytest.param(dict(identity=""), id="empty-identity"),
])
def test_invalid_timings(kw):
    args = dict(identity="a", lease_duration=15, renew_deadline=10, retry_period=2)
    args.update(kw)
    with pytest.raises(ValueError):
        LeaderElector(None, "ns", "lock", args.pop("identity"), **args)
