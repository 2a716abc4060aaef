"""Taint eviction controller against the FakeClient: immediate and timed evictions, cancellation, events."""

import asyncio

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.controllers.tainteviction import (
    TaintEvictionController,
    matching_tolerations,
    min_toleration_seconds,
)

UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
DEDICATED = {"key": "dedicated", "value": "db", "effect": "NoExecute"}


def node(name="n1", *taints):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {"taints": list(taints)} if taints else {}}


def tol(key, seconds=None, effect="NoExecute", operator="Exists", value=None):
    t = {"key": key, "operator": operator, "effect": effect}
    if seconds is not None:
        t["tolerationSeconds"] = seconds
    if value is not None:
        t["value"] = value
    return t


def pod(name, node_name="n1", *tolerations, uid=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "i"}],
                     "tolerations": list(tolerations)},
            "status": {"phase": "Running"}}


class Harness(ControllerHarness):
    event_fields = ("involvedObject.name", "reason", "message")
    event_namespace = None

    def __init__(self, *objs):
        super().__init__(TaintEvictionController, NS, *objs)

    def pods(self):
        """Names of the pods left, in every namespace."""
        return sorted(p["metadata"]["name"] for p in self.list("pods", namespace=None))

    async def set_taints(self, name, *taints):
        await self.client.patch("", "v1", "nodes", name, {"spec": {"taints": list(taints) or None}})
        await self.settle()


@pytest.mark.parametrize("taints, tolerations, expected", [
    pytest.param([UNREACHABLE], [], (False, []), id="no-tolerations"),
    pytest.param([UNREACHABLE], [tol("node.kubernetes.io/unreachable", 30)],
                 (True, [tol("node.kubernetes.io/unreachable", 30)]), id="exact-key"),
    pytest.param([UNREACHABLE, DEDICATED], [tol("node.kubernetes.io/unreachable", 30)], (False, []),
                 id="one-taint-untolerated"),
    pytest.param([DEDICATED], [tol("dedicated", operator="Equal", value="web")], (False, []), id="value-differs"),
    pytest.param([DEDICATED], [{"operator": "Exists"}], (True, [{"operator": "Exists"}]), id="tolerate-everything"),
    pytest.param([DEDICATED], [tol("dedicated", effect="NoSchedule")], (False, []), id="other-effect"),
])
def test_matching_tolerations(taints, tolerations, expected):
    assert matching_tolerations(taints, tolerations) == expected


@pytest.mark.parametrize("tolerations, seconds", [
    pytest.param([], 0.0, id="none-means-now"),
    pytest.param([tol("a")], -1.0, id="no-seconds-forever"),
    pytest.param([tol("a", 30), tol("b", 10), tol("c")], 10.0, id="smallest"),
    pytest.param([tol("a", 30), tol("b", -5)], 0.0, id="negative-is-now"),
])
def test_min_toleration_seconds(tolerations, seconds):
    assert min_toleration_seconds(tolerations) == seconds


def test_untolerated_taint_evicts_at_once_with_condition_and_event():
    async def main():
        async with Harness(node("n1", DEDICATED), pod("a"), pod("other", "n2")) as h:
            assert h.pods() == ["other"]
            patches = [a for a in h.client.filter_actions("patch", "pods") if a.subresource == "status"]
            cond = patches[0].obj["status"]["conditions"][0]
            assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionTarget", "True",
                                                                     "DeletionByTaintManager")
            deletes = h.client.filter_actions("delete", "pods")
            assert [(d.name, d.options["preconditions"]) for d in deletes] == [("a", {"uid": "uid-a"})]
            assert await h.events() == [("a", "TaintManagerEviction", "Marking for deletion Pod default/a")]

    asyncio.run(main())


def test_toleration_seconds_delay_the_eviction_and_the_taint_leaving_cancels_it():
    async def main():
        async with Harness(node("n1"), pod("short", "n1", tol("node.kubernetes.io/unreachable", 10)),
                           pod("long", "n1", tol("node.kubernetes.io/unreachable", 60)),
                           pod("forever", "n1", tol("node.kubernetes.io/unreachable"))) as h:
            await h.set_taints("n1", UNREACHABLE)
            assert h.pods() == ["forever", "long", "short"]
            await h.step(9.5)
            assert h.pods() == ["forever", "long", "short"]
            await h.step(1)
            assert h.pods() == ["forever", "long"]
            await h.set_taints("n1")  # the node came back: the pending eviction of "long" is cancelled
            await h.step(120)
            assert h.pods() == ["forever", "long"]
            assert sorted(await h.events()) == [
                ("long", "TaintManagerEviction", "Cancelling deletion of Pod default/long"),
                ("short", "TaintManagerEviction", "Marking for deletion Pod default/short")]

    asyncio.run(main())


def test_a_second_taint_never_postpones_a_pending_eviction():
    async def main():
        other = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
        async with Harness(node("n1", UNREACHABLE),
                           pod("p", "n1", tol("node.kubernetes.io/unreachable", 20),
                               tol("node.kubernetes.io/not-ready", 100))) as h:
            await h.step(15)
            await h.set_taints("n1", UNREACHABLE, other)  # min(20, 100) from the original start
            await h.step(5.5)
            assert h.pods() == []

    asyncio.run(main())


def test_pod_bound_later_and_pod_deleted_while_pending():
    async def main():
        async with Harness(node("n1", NOT_READY)) as h:
            await h.client.create("", "v1", "pods", pod("late", "n1", tol("node.kubernetes.io/not-ready", 5)))
            await h.client.create("", "v1", "pods", pod("gone", "n1", tol("node.kubernetes.io/not-ready", 50)))
            await h.settle()
            await h.client.delete("", "v1", "pods", "gone", namespace="default")
            await h.settle()
            await h.step(6)
            assert h.pods() == []
            reasons = sorted(await h.events())
            assert ("gone", "TaintManagerEviction", "Cancelling deletion of Pod default/gone") in reasons
            assert ("late", "TaintManagerEviction", "Marking for deletion Pod default/late") in reasons
            assert not h.ctrl.evictions  # nothing left behind once the pods are gone

    asyncio.run(main())


def test_failed_delete_is_retried_and_one_broken_pod_does_not_stop_the_others():
    async def main():
        # malformed (an API server would refuse it): int("soon") fails in this pod's evaluation alone
        broken = pod("broken", "n1", {"key": "dedicated", "operator": "Exists", "effect": "NoExecute",
                                      "tolerationSeconds": "soon"})
        failures = {"n": 0}

        def flaky(action):
            if action.name == "flaky" and failures["n"] < 2:
                failures["n"] += 1
                raise StatusError(500, "InternalError", "etcd is sad")

        h = Harness(node("n1", DEDICATED), broken, pod("flaky"), pod("fine"))
        h.client.prepend_reactor("delete", "pods", flaky)
        async with h:
            assert "fine" not in h.pods()
            for _ in range(6):
                await h.step(2)
            assert h.pods() == ["broken"]  # the malformed one keeps failing alone
            assert failures["n"] == 2

    asyncio.run(main())
