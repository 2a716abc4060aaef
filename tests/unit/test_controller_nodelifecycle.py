"""Node lifecycle controller against the FakeClient and a FakeClock: health from Leases, condition
taints, rate-limited NoExecute tainting, zones, cordon, pods marked not Ready, events."""

import asyncio

import pytest
from controller_testing import ControllerHarness
from controller_testing import rfc3339 as rfc

from kubeling.api.errors import StatusError
from kubeling.client.clock import FakeClock
from kubeling.controllers.nodelifecycle import (
    FULL_DISRUPTION,
    NORMAL_STATE,
    PARTIAL_DISRUPTION,
    NodeLifecycleController,
    ZoneTainter,
)

GRACE = 40.0
PERIOD = 5.0
SYSTEM = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
          for n in ("default", "kube-node-lease")]


def node(clock, name, ready="True", zone=None, **spec):
    labels = {"kubernetes.io/os": "linux"}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    conds = [] if ready is None else [
        {"type": t, "status": s, "reason": "KubeletReady", "message": "ok",
         "lastHeartbeatTime": rfc(clock), "lastTransitionTime": rfc(clock)}
        for t, s in (("Ready", ready), ("MemoryPressure", "False"), ("DiskPressure", "False"),
                     ("PIDPressure", "False"))]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": dict(spec), "status": {"conditions": conds}}


def lease(clock, name):
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": rfc(clock)}}


def pod(name, node_name, ready=True):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2024-01-01T00:00:00Z"},
                {"type": "PodScheduled", "status": "True"}]}}


class Harness(ControllerHarness):
    event_fields = ("involvedObject.kind", "involvedObject.name", "type", "reason", "message")
    event_namespace = None
    idle_rounds = 40

    def __init__(self, build, **settings):
        clock = FakeClock()
        objs = build(clock)
        settings = {"node_monitor_period": PERIOD, "node_monitor_grace_period": GRACE,
                    "node_startup_grace_period": 60.0, **settings}
        super().__init__(NodeLifecycleController, *SYSTEM, *objs, clock=clock, **settings)
        self.alive = {o["metadata"]["name"] for o in objs if o["kind"] == "Node"}

    async def advance(self, seconds, tick=1.0):
        """Move time in ticks; every live node renews its Lease each tick, as the agent does."""
        steps = round(seconds / tick)
        for _ in range(steps):
            self.clock.step(tick)
            for name in sorted(self.alive):
                await self.client.patch("coordination.k8s.io", "v1", "leases", name,
                                        {"spec": {"renewTime": rfc(self.clock)}}, namespace="kube-node-lease")
            await self.settle()

    def node(self, name):
        return self.get("nodes", name, "", None)

    def taints(self, name):
        return sorted((t["key"].split("/")[-1], t["effect"]) for t in self.node(name)["spec"].get("taints") or ())

    def condition(self, name, type_="Ready"):
        return next(c for c in self.node(name)["status"]["conditions"] if c["type"] == type_)

    async def set_ready(self, name, status):
        n = self.node(name)
        for c in n["status"]["conditions"]:
            if c["type"] == "Ready":
                if c["status"] != status:
                    c["lastTransitionTime"] = rfc(self.clock)
                c.update(status=status, lastHeartbeatTime=rfc(self.clock), reason="KubeletReady")
        await self.client.update_status("", "v1", "nodes", n)
        await self.settle()


def cluster(*names, zone=None, extra=()):
    def build(clock):
        objs = []
        for n in names:
            objs += [node(clock, n, zone=zone), lease(clock, n)]
        return objs + [e(clock) if callable(e) else e for e in extra]
    return build


def test_silent_node_goes_unknown_tainted_and_its_pods_not_ready():
    async def main():
        async with Harness(cluster("n1", "n2", extra=[pod("a", "n2"), pod("b", "n1")])) as h:
            assert [e[3] for e in await h.events()] == ["RegisteredNode", "RegisteredNode"]
            assert (await h.events())[0][4] == "Node n1 event: Registered Node n1 in Controller"
            h.alive.discard("n2")
            await h.advance(GRACE - 1)
            assert h.condition("n2")["status"] == "True"
            await h.advance(2 * PERIOD + 1)  # marked Unknown on one pass, queued for its taint on the next
            for type_ in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                c = h.condition("n2", type_)
                assert (c["status"], c["reason"], c["message"]) == (
                    "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
            assert h.taints("n2") == [("unreachable", "NoExecute"), ("unreachable", "NoSchedule")]
            assert h.taints("n1") == []
            t = next(t for t in h.node("n2")["spec"]["taints"] if t["effect"] == "NoExecute")
            assert t.get("timeAdded")
            ready = lambda p: next(c for c in h.client.object("", "v1", "pods", p, "default")["status"]["conditions"]
                                   if c["type"] == "Ready")["status"]
            assert (ready("a"), ready("b")) == ("False", "True")
            assert ("Node", "n2", "Normal", "NodeNotReady", "Node n2 status is now: NodeNotReady") in await h.events()
            assert ("Pod", "a", "Warning", "NodeNotReady", "Node is not ready") in await h.events()
            # the node comes back: its taints go
            h.alive.add("n2")
            await h.set_ready("n2", "True")
            await h.advance(PERIOD)
            assert h.taints("n2") == []

    asyncio.run(main())


def test_not_ready_node_gets_not_ready_taint_swapped_to_unreachable_when_it_goes_silent():
    async def main():
        async with Harness(cluster("n1", "n2")) as h:
            await h.set_ready("n2", "False")
            await h.advance(PERIOD)
            assert h.taints("n2") == [("not-ready", "NoExecute"), ("not-ready", "NoSchedule")]
            h.alive.discard("n2")
            await h.advance(GRACE + 3 * PERIOD)
            assert h.taints("n2") == [("unreachable", "NoExecute"), ("unreachable", "NoSchedule")]

    asyncio.run(main())


def test_cordon_adds_the_unschedulable_taint_and_uncordon_removes_it():
    async def main():
        async with Harness(cluster("n1")) as h:
            await h.client.patch("", "v1", "nodes", "n1", {"spec": {"unschedulable": True}})
            await h.settle()
            assert h.taints("n1") == [("unschedulable", "NoSchedule")]
            await h.client.patch("", "v1", "nodes", "n1", {"spec": {"unschedulable": None}})
            await h.settle()
            assert h.taints("n1") == []
            # the beta OS label follows the GA one
            assert h.node("n1")["metadata"]["labels"]["beta.kubernetes.io/os"] == "linux"

    asyncio.run(main())


def test_node_that_never_posted_status_gets_startup_grace_then_never_updated():
    async def main():
        def build(clock):
            return [node(clock, "n1"), lease(clock, "n1"), node(clock, "new", ready=None)]
        async with Harness(build) as h:
            h.alive.discard("new")  # no Lease either
            await h.advance(55)
            assert "Ready" not in [c["type"] for c in h.node("new")["status"]["conditions"]]
            await h.advance(10)
            c = h.condition("new")
            assert (c["status"], c["reason"], c["message"]) == (
                "Unknown", "NodeStatusNeverUpdated", "Kubelet never posted node status.")

    asyncio.run(main())


def test_eviction_rate_limits_tainting_per_zone():
    async def main():
        names = [f"n{i}" for i in range(5)]
        async with Harness(cluster(*names)) as h:
            h.alive -= {"n3", "n4"}  # 2 of 5 down: the zone stays Normal, 0.1 nodes/s, burst 1
            await h.advance(GRACE + 2 * PERIOD + 1)
            tainted = [n for n in names if ("unreachable", "NoExecute") in h.taints(n)]
            assert len(tainted) == 1
            await h.advance(10)
            assert [n for n in names if ("unreachable", "NoExecute") in h.taints(n)] == ["n3", "n4"]
            assert h.ctrl.zone_states == {"": NORMAL_STATE}

    asyncio.run(main())


@pytest.mark.parametrize("down, state", [
    pytest.param({"n0", "n1", "n2"}, FULL_DISRUPTION, id="all-down-master-disruption"),
    pytest.param({"n0", "n1", "n2"}, PARTIAL_DISRUPTION, id="partial-small-cluster-stops"),  # 3 of 4
])
def test_disrupted_zones_do_not_taint(down, state):
    async def main():
        names = ["n0", "n1", "n2"] if state == FULL_DISRUPTION else ["n0", "n1", "n2", "n3"]
        h = Harness(cluster(*names), unhealthy_zone_threshold=0.5 if state == PARTIAL_DISRUPTION else 0.55)
        async with h:
            h.alive -= down
            await h.advance(GRACE + 3 * PERIOD)
            assert all(("unreachable", "NoExecute") not in h.taints(n) for n in names)
            assert h.ctrl.zone_states[""] == state
            assert all(h.condition(n)["status"] == "Unknown" for n in down)

    asyncio.run(main())


def test_zone_full_disruption_elsewhere_still_taints():
    async def main():
        def build(clock):
            return [node(clock, "a1", zone="a"), lease(clock, "a1"), node(clock, "b1", zone="b"), lease(clock, "b1")]
        async with Harness(build) as h:
            h.alive.discard("b1")
            await h.advance(GRACE + 2 * PERIOD)
            assert ("unreachable", "NoExecute") in h.taints("b1")
            assert h.ctrl.zone_states == {":\x00:a": NORMAL_STATE, ":\x00:b": FULL_DISRUPTION}

    asyncio.run(main())


def test_zone_tainter_drains_under_its_bucket():
    async def main():
        clock = FakeClock()
        q = ZoneTainter(1.0, clock)
        done = []

        async def fn(name):
            done.append(name)
            return True, 0.0
        for n in ("a", "b", "c"):
            assert q.add(n)
        assert not q.add("a")  # a member until removed
        await q.try_(fn)
        clock.step(1)
        await q.try_(fn)
        q.swap_limiter(0)
        clock.step(5)
        await q.try_(fn)
        assert done == ["a", "b"]
        assert q.remove("a") and q.add("a")

    asyncio.run(main())


def test_pod_bound_to_a_not_ready_node_is_marked_not_ready_and_deleted_node_is_removed():
    async def main():
        async with Harness(cluster("n1", "n2")) as h:
            await h.advance(1)  # a later heartbeat than the first, so the controller sees it
            await h.set_ready("n2", "False")
            await h.advance(PERIOD)
            await h.client.create("", "v1", "pods", pod("late", "n2"))
            await h.settle()
            c = next(c for c in h.client.object("", "v1", "pods", "late", "default")["status"]["conditions"]
                     if c["type"] == "Ready")
            assert c["status"] == "False"
            await h.client.delete("", "v1", "nodes", "n2")
            h.alive.discard("n2")
            await h.advance(PERIOD)
            assert ("Node", "n2", "Normal", "RemovingNode", "Node n2 event: Removing Node n2 from Controller") in await h.events()

    asyncio.run(main())


def test_one_node_failing_to_update_never_stops_the_others():
    async def main():
        def refuse(action):
            if action.name == "bad" and action.subresource == "status":
                raise StatusError(500, "InternalError", "boom")
        h = Harness(cluster("bad", "good", "ok"))
        h.client.prepend_reactor("update", "nodes", refuse)
        async with h:
            h.alive -= {"bad", "good"}
            await h.advance(GRACE + 2 * PERIOD)
            assert h.condition("good")["status"] == "Unknown"
            assert h.condition("bad")["status"] == "True"  # its writes keep failing, alone
            assert ("unreachable", "NoExecute") in h.taints("good")

    asyncio.run(main())
