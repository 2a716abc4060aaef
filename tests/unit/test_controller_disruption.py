"""Disruption controller against the FakeClient: PDB status for minAvailable/maxUnavailable (ints and
percentages) over every kind of controller, disrupted pods, fail-safe, events, stale pod conditions."""

import asyncio
import datetime as dt

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.client.factory import SharedInformerFactory
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.disruption import (
    DisruptionController,
    ExpectedCountError,
    scaled_value,
)

LABELS = {"app": "web"}


def owner(api_version, kind, name, replicas=None, uid=None, controlled_by=None):
    obj = {"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"},
           "spec": {"selector": {"matchLabels": LABELS}} if kind != "ReplicationController" else {"selector": LABELS}}
    if replicas is not None:
        obj["spec"]["replicas"] = replicas
    if controlled_by is not None:
        obj["metadata"]["ownerReferences"] = [controlled_by]
    return obj


def ref(obj):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True}


def pod(name, ready=True, by=None, labels=LABELS, **meta):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": dict(labels), **meta},
         "spec": {"containers": [{"name": "c", "image": "i"}]},
         "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if by is not None:
        p["metadata"]["ownerReferences"] = [ref(by)]
    return p


def pdb(name="pdb", generation=1, selector=None, status=None, **spec):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default", "generation": generation, "uid": f"uid-{name}"},
            "spec": {"selector": {"matchLabels": LABELS} if selector is None else selector, **spec},
            "status": status or {}}


class Harness(ControllerHarness):
    event_fields = ("involvedObject.name", "type", "reason", "message")
    event_namespace = None
    rounds = 2000
    must_settle = False  # a failing PDB's fail-safe status write re-triggers it on the FakeClient

    def __init__(self, *objs):
        super().__init__(DisruptionController, NS, *objs)

    def status(self, name="pdb"):
        return self.get("poddisruptionbudgets", name, "policy")["status"]


def counts(st):
    return (st.get("expectedPods"), st.get("desiredHealthy"), st.get("currentHealthy"), st.get("disruptionsAllowed"))


RS = owner("apps/v1", "ReplicaSet", "rs", replicas=4)
DEP = owner("apps/v1", "Deployment", "dep", replicas=3)
RS_OF_DEP = owner("apps/v1", "ReplicaSet", "dep-abc", replicas=7, controlled_by=ref(DEP))
STS = owner("apps/v1", "StatefulSet", "web", replicas=3)
RC = owner("v1", "ReplicationController", "rc", replicas=5)


@pytest.mark.parametrize("spec, objs, expected", [
    pytest.param({"minAvailable": 2}, [pod("a"), pod("b"), pod("c")], (3, 2, 3, 1), id="min-int"),
    pytest.param({"minAvailable": 2}, [pod("a"), pod("b"), pod("c", ready=False)], (3, 2, 2, 0),
                 id="min-int-one-unready"),
    pytest.param({"minAvailable": "50%"}, [RS, pod("a", by=RS), pod("b", by=RS), pod("c", by=RS)], (4, 2, 3, 1),
                 id="min-percent-replicaset-scale"),
    pytest.param({"maxUnavailable": 1}, [DEP, RS_OF_DEP, pod("a", by=RS_OF_DEP), pod("b", by=RS_OF_DEP)],
                 (3, 2, 2, 0), id="max-int-deployment-scale-not-the-replicaset"),
    pytest.param({"maxUnavailable": "34%"}, [STS] + [pod(f"web-{i}", by=STS) for i in range(3)], (3, 1, 3, 2),
                 id="max-percent-statefulset-rounds-up"),
    pytest.param({"maxUnavailable": 10}, [RC, pod("a", by=RC)], (5, 0, 1, 1), id="max-above-scale-floors-at-0"),
    pytest.param({"minAvailable": 1}, [], (0, 1, 0, 0), id="no-pods"),
    pytest.param({"minAvailable": 0}, [pod("a", labels={"app": "db"})], (0, 0, 0, 0), id="other-labels-not-selected"),
])
def test_status(spec, objs, expected):
    async def main():
        async with Harness(*objs, pdb(**spec)) as h:
            st = h.status()
            assert counts(st) == expected
            assert st["observedGeneration"] == 1
            cond = st["conditions"][0]
            allowed = expected[3] > 0
            assert (cond["type"], cond["status"], cond["reason"]) == (
                "DisruptionAllowed", "True" if allowed else "False", "SufficientPods" if allowed else "InsufficientPods")
            if not expected[0] and "minAvailable" in spec and spec["minAvailable"]:
                assert ("pdb", "Normal", "NoPods", "No matching pods found") in await h.events()

    asyncio.run(main())


@pytest.mark.parametrize("value, total, up, want", [
    pytest.param(3, 10, True, 3, id="int"),
    pytest.param("25%", 10, True, 3, id="percent-up"),
    pytest.param("25%", 10, False, 2, id="percent-down"),
])
def test_scaled_value(value, total, up, want):
    assert scaled_value(value, total, up) == want


def test_scaled_value_refuses_a_non_percentage_string():
    with pytest.raises(ExpectedCountError, match="string is not a percentage"):
        scaled_value("3", 10, True)


def test_follows_pods_becoming_ready_and_keeps_the_transition_time():
    async def main():
        async with Harness(pdb(minAvailable=2), pod("a"), pod("b", ready=False)) as h:
            first = h.status()["conditions"][0]
            assert first["status"] == "False"
            await h.step(10)
            p = h.client.object("", "v1", "pods", "b", "default")
            p["status"]["conditions"][0]["status"] = "True"
            await h.client.update_status("", "v1", "pods", p)
            await h.client.create("", "v1", "pods", pod("c"))
            await h.settle()
            st = h.status()
            assert counts(st) == (3, 2, 3, 1)
            assert st["conditions"][0]["lastTransitionTime"] != first["lastTransitionTime"]
            writes = len(h.client.filter_actions("update", "poddisruptionbudgets"))
            await h.step(PDB_RESYNC_PLUS)
            assert len(h.client.filter_actions("update", "poddisruptionbudgets")) == writes  # unchanged: no write

    asyncio.run(main())


PDB_RESYNC_PLUS = 31


def test_disrupted_pods_do_not_count_and_expire():
    async def main():
        h = Harness(pdb(minAvailable=1), pod("a"), pod("b"), pod("c"))
        now = h.clock.wall()
        recorded = {"a": (now - dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "b": (now - dt.timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "gone": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        h.client.object("policy", "v1", "poddisruptionbudgets", "pdb", "default")["status"] = {"disruptedPods": recorded}
        async with h:
            st = h.status()
            assert st["disruptedPods"] == {"a": recorded["a"]}  # b expired, gone is gone
            assert counts(st) == (3, 1, 2, 1)
            assert ("b", "Warning", "NotDeleted",
                    "Pod was expected by PDB default/pdb to be deleted but it wasn't") in await h.events()
            await h.step(91)  # a's entry expires 2 minutes after it was written: looked at again then
            st = h.status()
            assert "disruptedPods" not in st
            assert counts(st) == (3, 1, 3, 2)

    asyncio.run(main())


def test_missing_controller_fails_safe_with_events():
    async def main():
        ghost = owner("apps/v1", "ReplicaSet", "ghost", replicas=2)
        async with Harness(pdb(maxUnavailable=1, status={"disruptionsAllowed": 3}), pod("a", by=ghost)) as h:
            st = h.status()
            assert st["disruptionsAllowed"] == 0
            cond = st["conditions"][0]
            assert (cond["status"], cond["reason"], cond["message"]) == (
                "False", "SyncFailed", 'found no controllers for pod "a"')
            assert ("pdb", "Warning", "NoControllers", 'found no controllers for pod "a"') in await h.events()
            assert ("pdb", "Warning", "CalculateExpectedPodCountFailed",
                    'Failed to calculate the number of expected pods: found no controllers for pod "a"') in await h.events()

    asyncio.run(main())


def test_unmanaged_pods_are_reported_and_count_for_nothing():
    async def main():
        async with Harness(pdb(maxUnavailable=1), pod("a"), pod("b")) as h:
            assert counts(h.status()) == (0, 0, 2, 0)
            assert any(e[2] == "UnmanagedPods" for e in await h.events())

    asyncio.run(main())


@pytest.mark.parametrize("scale_answer, expected, reason", [
    pytest.param({"replicas": 6}, (6, 5, 1, 0), "InsufficientPods", id="scale-subresource"),
    pytest.param(None, (None, None, None, 0), "SyncFailed", id="no-scale-subresource"),
])
def test_any_controller_through_its_scale_subresource(scale_answer, expected, reason):
    async def main():
        ds = owner("apps/v1", "DaemonSet", "ds")

        def scale(action):
            if action.subresource != "scale":
                return None
            if scale_answer is None:
                raise StatusError(404, "NotFound", "the server could not find the requested resource")
            return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "ds", "namespace": "default", "uid": "uid-ds"}, "spec": scale_answer}
        h = Harness(ds, pdb(maxUnavailable=1), pod("a", by=ds))
        h.client.prepend_reactor("get", "daemonsets", scale)
        async with h:
            st = h.status()
            assert counts(st) == expected
            assert st["conditions"][0]["reason"] == reason
            if scale_answer is None:
                assert st["conditions"][0]["message"] == "daemonsets.apps does not implement the scale subresource"

    asyncio.run(main())


def test_one_broken_pdb_never_stops_the_others():
    async def main():
        bad = pdb("bad", selector={"matchExpressions": [{"key": "app", "operator": "Nope", "values": ["x"]}]})
        bad["spec"]["minAvailable"] = 1
        async with Harness(bad, pdb("good", minAvailable=1), pod("a"), pod("b")) as h:
            assert h.status("bad")["conditions"][0]["reason"] == "SyncFailed"
            assert counts(h.status("good")) == (2, 1, 2, 1)

    asyncio.run(main())


def test_conflicting_write_is_retried_without_fail_safe():
    async def main():
        tries = {"n": 0}

        def conflict(action):
            if action.subresource == "status" and tries["n"] == 0:
                tries["n"] += 1
                raise StatusError(409, "Conflict", "the object has been modified")
        h = Harness(pdb(minAvailable=1), pod("a"), pod("b"))
        h.client.prepend_reactor("update", "poddisruptionbudgets", conflict)
        async with h:
            await h.step(1)
            st = h.status()
            assert counts(st) == (2, 1, 2, 1)
            assert st["conditions"][0]["reason"] == "SufficientPods"

    asyncio.run(main())


def test_stale_disruption_target_condition_is_reset():
    async def main():
        h = Harness()
        marked = pod("a")
        marked["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                               "reason": "EvictionByEvictionAPI",
                                               "lastTransitionTime": h.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")})
        kubelet = pod("k")
        kubelet["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                                "reason": "TerminationByKubelet", "lastTransitionTime": "2020-01-01T00:00:00Z"})
        h.client.seed(marked, kubelet)
        async with h:
            await h.step(100)
            cond = lambda n: next(c for c in h.client.object("", "v1", "pods", n, "default")["status"]["conditions"]
                                  if c["type"] == "DisruptionTarget")["status"]
            assert cond("a") == "True"
            await h.step(21)
            assert (cond("a"), cond("k")) == ("False", "True")

    asyncio.run(main())


def test_with_the_in_process_api_server_and_its_eviction_api():
    """What the eviction subresource charges is what this controller writes: 429 while the budget
    is spent, Pending pods never charged, unhealthy pods per ``unhealthyPodEvictionPolicy``."""
    from inprocess import api_server, http

    from kubeling.client.rest import RESTClient
    from kubeling.client.transport import AiohttpTransport

    async def until(pred, timeout=10.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not await pred():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.02)

    def live_pod(name, node_name="n1"):
        p = pod(name)
        del p["metadata"]["uid"], p["status"]
        p["spec"]["nodeName"] = node_name
        return p

    async def set_ready(client, name, ready):
        p = await client.get("", "v1", "pods", name, namespace="default")
        p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        await client.update_status("", "v1", "pods", p, namespace="default")

    async def evict(client, name):
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}}
        try:
            await client.create("", "v1", "pods", body, namespace="default", subresource="eviction", name=name)
        except StatusError as e:
            return e.code
        return 201

    async def main():
        api = await api_server()
        async with http(api) as server:
            client = RESTClient(AiohttpTransport(str(server.make_url("/"))))
            factory = SharedInformerFactory(client)
            ctrl = DisruptionController(ControllerContext(client, factory))
            stop = asyncio.Event()
            factory.start(stop)
            task = asyncio.create_task(ctrl.run(2, stop))
            try:
                for n in ("p0", "p1", "p2"):
                    await client.create("", "v1", "pods", live_pod(n), namespace="default")
                    await set_ready(client, n, True)
                await client.create("policy", "v1", "poddisruptionbudgets",
                                    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                     "metadata": {"name": "pdb"}, "spec": {"minAvailable": 2,
                                                                          "selector": {"matchLabels": LABELS}}},
                                    namespace="default")

                async def status(**want):
                    st = (await client.get("policy", "v1", "poddisruptionbudgets", "pdb", namespace="default"))["status"]
                    return all(st.get(k) == v for k, v in want.items())
                await until(lambda: status(observedGeneration=1, disruptionsAllowed=1, currentHealthy=3))
                assert await evict(client, "p0") == 201
                assert await evict(client, "p1") == 429  # spent, until the controller sees more healthy pods
                await until(lambda: status(currentHealthy=2, disruptionsAllowed=0))
                await client.create("", "v1", "pods", live_pod("pending"), namespace="default")
                assert await evict(client, "pending") == 201  # never started: not charged
                await set_ready(client, "p2", False)
                await until(lambda: status(currentHealthy=1))
                assert await evict(client, "p2") == 429  # IfHealthyBudget: the budget is not met
                await client.patch("policy", "v1", "poddisruptionbudgets", "pdb",
                                   {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}, namespace="default")
                await until(lambda: status(observedGeneration=2))
                assert await evict(client, "p2") == 201
                assert await evict(client, "p1") == 429  # a healthy pod is still protected
            finally:
                stop.set()
                await asyncio.wait_for(task, 5)
                await factory.shutdown()
                await client.close()

    asyncio.run(main())
