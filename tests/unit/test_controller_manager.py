"""The controller manager in-process: selection, one shared factory, crash escalation, leader election."""

import asyncio

import pytest

from kubeling.client import StatusError
from kubeling.client.fake import FakeClient
from kubeling.controllers import manager
from kubeling.controllers.base import Controller
from kubeling.controllers.rootcacertpublisher import ROOT_CA

NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("default", "kube-system")]


@pytest.mark.parametrize("selection, expected", [
    pytest.param(["*"], list(manager.REGISTRY), id="all"),
    pytest.param(["*", "-garbagecollector"], [n for n in manager.REGISTRY if n != "garbagecollector"],
                 id="all-but-one"),
    pytest.param(["namespace", "serviceaccount"], ["namespace", "serviceaccount"], id="named"),
    pytest.param(["namespace", "nope"], ["namespace"], id="unknown-ignored"),
    pytest.param([], [], id="none"),
])
def test_enabled(selection, expected):
    assert manager.enabled(selection) == expected


def test_registry_names_are_upstreams():
    # a sample of upstream's --controllers names: `kubeling controller-manager --controllers` takes them as is
    assert {"garbagecollector", "namespace", "serviceaccount", "nodeipam", "resourcequota"} <= set(manager.REGISTRY)


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0)
    await asyncio.wait_for(loop(), timeout)


def test_every_controller_runs_on_one_shared_factory():
    async def main():
        client = FakeClient(*NAMESPACES)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run_controllers(client, manager.enabled(["*"]), stop, ca_pem="CA"))
        await client.create("", "v1", "namespaces", {"metadata": {"name": "team"}})
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "team") is not None
                    and client.object("", "v1", "configmaps", ROOT_CA, "team") is not None)
        # Four controllers use namespaces; the shared informer lists and watches them once.
        assert len(client.filter_actions("list", "namespaces")) == 1
        assert len(client.filter_actions("watch", "namespaces")) == 1
        stop.set()
        await asyncio.wait_for(task, 2)
        assert client.tracker.watchers == set()  # every informer stopped and closed its watch

    asyncio.run(main())


class Idle(Controller):
    NAME = "idle"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.handle(ctx.informers.informer_for("", "v1", "namespaces"))
        self.stopped = False

    async def sync(self, key):
        pass

    async def run(self, workers, stop):
        await super().run(workers, stop)
        self.stopped = True


class Crashing(Idle):
    NAME = "crashing"

    async def run(self, workers, stop):
        await self.wait_for_caches(stop)
        raise ZeroDivisionError("controller bug")


class Quitting(Idle):
    NAME = "quitting"

    async def run(self, workers, stop):
        return


@pytest.mark.parametrize("bad, error", [
    pytest.param(Crashing, ZeroDivisionError, id="crash"),
    pytest.param(Quitting, RuntimeError, id="returns-before-stop"),
])
def test_a_failing_controller_stops_the_others_and_escalates(bad, error):
    async def main():
        client = FakeClient(*NAMESPACES)
        made = []

        def idle(ctx):
            made.append(Idle(ctx))
            return made[-1]

        registry = {"idle": idle, bad.NAME: bad}
        idle.WORKERS = 1
        with pytest.raises(error):
            await asyncio.wait_for(manager.run_controllers(client, ["idle", bad.NAME], asyncio.Event(),
                                                           registry=registry), 2)
        assert made[0].stopped  # drained, not abandoned
        assert client.tracker.watchers == set()

    asyncio.run(main())


def test_an_informer_crash_escalates():
    async def main():
        client = FakeClient(*NAMESPACES)

        def bug(action):
            raise TypeError("list path bug")

        client.prepend_reactor("list", "namespaces", bug)
        with pytest.raises(TypeError, match="list path bug"):
            await asyncio.wait_for(manager.run_controllers(client, ["idle"], asyncio.Event(),
                                                           registry={"idle": Idle}), 2)

    asyncio.run(main())


FAST = dict(lease_duration=2, renew_deadline=0.4, retry_period=0.05)


def test_leader_election_runs_controllers_while_leading_and_releases():
    async def main():
        client = FakeClient(*NAMESPACES)
        stop = asyncio.Event()
        le = manager.LeaderElection(identity="cm-1", **FAST)
        task = asyncio.create_task(manager.serve(client, ["serviceaccount"], stop, leader_election=le))
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "default") is not None)
        lease = client.object("coordination.k8s.io", "v1", "leases", manager.LEASE_NAME, manager.LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "cm-1"
        stop.set()
        await asyncio.wait_for(task, 2)
        lease = client.object("coordination.k8s.io", "v1", "leases", manager.LEASE_NAME, manager.LEASE_NAMESPACE)
        assert "holderIdentity" not in lease["spec"]  # released for the next candidate

    asyncio.run(main())


def test_losing_the_lease_stops_controllers_and_raises():
    async def main():
        client = FakeClient(*NAMESPACES)
        stop = asyncio.Event()
        le = manager.LeaderElection(identity="cm-1", **FAST)
        task = asyncio.create_task(manager.serve(client, ["serviceaccount"], stop, leader_election=le))
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "default") is not None)

        def partitioned(action):
            raise StatusError(503, "ServiceUnavailable", "the API server is unreachable")

        client.prepend_reactor("*", "leases", partitioned)
        with pytest.raises(manager.LeadershipLost):
            await asyncio.wait_for(task, 3)
        assert client.tracker.watchers == set()

    asyncio.run(main())


def test_a_second_candidate_waits_while_the_first_leads():
    async def main():
        client = FakeClient(*NAMESPACES)
        stop = asyncio.Event()
        first = asyncio.create_task(manager.serve(client, ["serviceaccount"], stop,
                                                  leader_election=manager.LeaderElection(identity="cm-1", **FAST)))
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "default") is not None)
        second = asyncio.create_task(manager.serve(client, ["namespace"], stop,
                                                   leader_election=manager.LeaderElection(identity="cm-2", **FAST)))
        await asyncio.sleep(0.3)
        lease = client.object("coordination.k8s.io", "v1", "leases", manager.LEASE_NAME, manager.LEASE_NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "cm-1"
        assert len(client.filter_actions("list", "namespaces")) == 1  # the second never started its controllers
        stop.set()
        await asyncio.wait_for(asyncio.gather(first, second), 2)

    asyncio.run(main())
