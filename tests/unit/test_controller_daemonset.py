"""DaemonSet controller against the FakeClient: placement, node changes, failures, updates, status.

No scheduler runs here: daemon pods carry their node in a required ``matchFields`` affinity and the
controller maps them by it. `Harness.mark` plays the kubelet (phase and Ready).
"""

import asyncio

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.controllers.daemonset import DaemonSetsController, util


def node(name, labels=None, taints=None, unschedulable=False):
    spec = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def ds(name="agent", image="busybox", node_selector=None, tolerations=None, strategy=None, surge=0, unavailable=1,
       history_limit=10):
    pod_spec = {"containers": [{"name": "c", "image": image}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    upd = {"type": strategy or "RollingUpdate"}
    if upd["type"] == "RollingUpdate":
        upd["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": name}}, "updateStrategy": upd,
                     "revisionHistoryLimit": history_limit,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}}


NO_SCHEDULE = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
NO_EXECUTE = {"key": "dedicated", "value": "db", "effect": "NoExecute"}


@pytest.mark.parametrize("n, d, expected", [
    pytest.param(node("a"), ds(), (True, True), id="plain-node"),
    pytest.param(node("a", {"disk": "hdd"}), ds(node_selector={"disk": "ssd"}), (False, False),
                 id="node-selector-mismatch"),
    pytest.param(node("a", {"disk": "ssd"}), ds(node_selector={"disk": "ssd"}), (True, True),
                 id="node-selector-match"),
    pytest.param(node("a", taints=[NO_SCHEDULE]), ds(), (False, True), id="untolerated-noschedule-keeps-running"),
    pytest.param(node("a", taints=[NO_EXECUTE]), ds(), (False, False), id="untolerated-noexecute-evicts"),
    pytest.param(node("a", taints=[NO_EXECUTE]),
                 ds(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "db"}]), (True, True),
                 id="tolerated-taint"),
    pytest.param(node("a", taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
                      unschedulable=True), ds(), (True, True), id="cordoned-node-default-toleration"),
    pytest.param(node("a", taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]), ds(),
                 (True, True), id="not-ready-default-toleration"),
    pytest.param(node("a", taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
                 ds(), (False, True), id="network-unavailable-needs-host-network"),
])
def test_node_should_run_daemon_pod(n, d, expected):
    assert util.node_should_run_daemon_pod(n, d) == expected


def test_default_tolerations_and_host_network():
    spec = {"hostNetwork": True, "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                                  "effect": "NoExecute", "tolerationSeconds": 30}]}
    util.add_daemon_tolerations(spec)
    keys = [(t["key"], t["effect"]) for t in spec["tolerations"]]
    assert keys == [("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule"),
                    ("node.kubernetes.io/network-unavailable", "NoSchedule")]
    assert all("tolerationSeconds" not in t for t in spec["tolerations"])  # never evicted for not-ready


class Harness(ControllerHarness):
    def __init__(self, *objs):
        super().__init__(DaemonSetsController, NS, *objs)

    def by_node(self):
        out = {}
        for p in self.pods():
            out.setdefault(util.target_node_name(p), []).append(p)
        return out

    def set(self, name="agent"):
        return self.get("daemonsets", name)

    async def mark(self, pod, phase="Running", ready=True):
        await self.mark_ready(pod["metadata"]["name"], ready, phase)

    async def ready_all(self):
        for p in self.pods():
            if not (p.get("status") or {}).get("conditions") and not p["metadata"].get("deletionTimestamp"):
                await self.mark(p)

    async def edit(self, fn, group="apps", resource="daemonsets", name="agent", namespace="default"):
        await super().edit(fn, resource, name, group, namespace)


def run(coro):
    asyncio.run(coro)


def test_one_pod_per_eligible_node_bound_by_affinity():
    async def main():
        async with Harness(node("a"), node("b", taints=[NO_SCHEDULE]), node("c"), ds()) as h:
            placed = h.by_node()
            assert sorted(placed) == ["a", "c"] and all(len(v) == 1 for v in placed.values())
            pod = placed["a"][0]
            assert "nodeName" not in pod["spec"]  # the scheduler binds it
            terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert terms == {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                                     "values": ["a"]}]}]}
            assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"} \
                in pod["spec"]["tolerations"]
            rev = h.client.tracker.list(h.client.tracker.resource("apps", "v1", "controllerrevisions"), "default",
                                        None, None)
            assert len(rev) == 1
            assert pod["metadata"]["labels"]["controller-revision-hash"] == \
                rev[0]["metadata"]["labels"]["controller-revision-hash"]
            assert rev[0]["data"]["spec"]["template"]["$patch"] == "replace"
            st = h.set()["status"]
            assert (st["desiredNumberScheduled"], st["currentNumberScheduled"], st["numberReady"],
                    st["numberMisscheduled"], st["observedGeneration"]) == (2, 2, 0, 0, 1)
            assert st["numberUnavailable"] == 2
            await h.ready_all()
            st = h.set()["status"]
            assert (st["numberReady"], st["numberAvailable"], st["updatedNumberScheduled"]) == (2, 2, 2)
            assert "numberUnavailable" not in st
            events = await h.events()
            assert sum(r == "SuccessfulCreate" and m.startswith("Created pod: agent-") for r, m in events) == 2
    run(main())


def test_new_nodes_get_a_pod_and_nodes_that_stop_matching_lose_it():
    async def main():
        async with Harness(node("a", {"role": "edge"}), ds(node_selector={"role": "edge"})) as h:
            assert sorted(h.by_node()) == ["a"]
            await h.client.create("", "v1", "nodes", node("b", {"role": "edge"}))
            await h.settle()
            assert sorted(h.by_node()) == ["a", "b"]
            await h.edit(lambda n: n["metadata"]["labels"].update(role="core"), group="", resource="nodes",
                         name="a", namespace=None)
            assert sorted(h.by_node()) == ["b"]
    run(main())


def test_failed_pods_are_replaced_with_backoff():
    async def main():
        async with Harness(node("a"), ds()) as h:
            first = h.pods()[0]
            await h.mark(first, phase="Failed", ready=False)
            second = h.pods()
            assert [p["metadata"]["name"] for p in second] != [first["metadata"]["name"]] and len(second) == 1
            assert any(r == "FailedDaemonPod" and m == f"Found failed daemon pod default/{first['metadata']['name']}"
                       " on node a, will try to kill it" for r, m in await h.events())
            await h.mark(second[0], phase="Failed", ready=False)
            assert h.pods()[0]["metadata"]["name"] == second[0]["metadata"]["name"]  # within the 1 s backoff
            h.clock.step(1.5)
            await h.settle()
            assert h.pods()[0]["metadata"]["name"] != second[0]["metadata"]["name"]
    run(main())


def test_rolling_update_respects_max_unavailable():
    async def main():
        async with Harness(node("a"), node("b"), node("c"), ds()) as h:
            await h.ready_all()
            old_hash = h.pods()[0]["metadata"]["labels"]["controller-revision-hash"]
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            rounds = 0
            while any(p["spec"]["containers"][0]["image"] == "busybox" for p in h.pods()):
                ready = [p for p in h.pods() if (p.get("status") or {}).get("conditions")]
                assert len(ready) >= 2  # never more than maxUnavailable=1 node without a ready pod
                await h.ready_all()
                rounds += 1
                assert rounds < 10
            await h.ready_all()
            assert len(h.pods()) == 3
            st = h.set()["status"]
            assert (st["updatedNumberScheduled"], st["numberAvailable"], st["observedGeneration"]) == (3, 3, 2)
            assert old_hash not in {p["metadata"]["labels"]["controller-revision-hash"] for p in h.pods()}
    run(main())


def test_rolling_update_with_surge_keeps_the_old_pod_until_the_new_is_available():
    async def main():
        async with Harness(node("a"), node("b"), ds(surge=1, unavailable=0)) as h:
            await h.ready_all()
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            placed = h.by_node()
            assert sorted(len(v) for v in placed.values()) == [1, 2]  # one surge pod, next to its old pod
            while any(p["spec"]["containers"][0]["image"] == "busybox" for p in h.pods()):
                assert all(any((p.get("status") or {}).get("conditions") for p in v) for v in h.by_node().values())
                await h.ready_all()
            assert sorted(h.by_node()) == ["a", "b"] and len(h.pods()) == 2
    run(main())


def test_on_delete_replaces_only_deleted_pods():
    async def main():
        async with Harness(node("a"), node("b"), ds(strategy="OnDelete")) as h:
            await h.ready_all()
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            assert {p["spec"]["containers"][0]["image"] for p in h.pods()} == {"busybox"}
            victim = h.by_node()["a"][0]
            await h.client.delete("", "v1", "pods", victim["metadata"]["name"], namespace="default")
            await h.settle()
            images = {n: v[0]["spec"]["containers"][0]["image"] for n, v in h.by_node().items()}
            assert images == {"a": "busybox:2", "b": "busybox"}
    run(main())


def test_rollback_renumbers_the_old_revision():
    async def main():
        async with Harness(node("a"), ds()) as h:
            await h.ready_all()
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            await h.ready_all()
            await h.ready_all()
            res = h.client.tracker.resource("apps", "v1", "controllerrevisions")
            first = min(h.client.tracker.list(res, "default", None, None), key=lambda r: r["revision"])
            await h.client.patch("apps", "v1", "daemonsets", "agent", first["data"], namespace="default",
                                 patch_type="strategic")
            await h.settle()
            await h.ready_all()
            await h.ready_all()
            revs = {r["metadata"]["name"]: r["revision"] for r in h.client.tracker.list(res, "default", None, None)}
            assert revs[first["metadata"]["name"]] == 3 and len(revs) == 2
            assert h.pods()[0]["spec"]["containers"][0]["image"] == "busybox"
    run(main())


def test_one_broken_set_records_an_event_and_the_others_go_on():
    async def main():
        def refuse(action):
            if action.obj["metadata"]["labels"].get("app") == "bad":
                raise StatusError(403, "Forbidden", 'pods "bad-x" is forbidden: exceeded quota: q')
        h = Harness(node("a"), ds("bad"), ds("good"))
        h.client.prepend_reactor("create", "pods", refuse)
        async with h:
            assert [p["metadata"]["labels"]["app"] for p in h.pods()] == ["good"]
            assert ("FailedCreate", 'Error creating: pods "bad-x" is forbidden: exceeded quota: q') in await h.events()
            assert h.ctrl.queue.num_requeues("default/bad") >= 1
            assert h.set("good")["status"]["currentNumberScheduled"] == 1
    run(main())


def test_misscheduled_pods_are_counted_and_removed():
    async def main():
        async with Harness(node("a"), node("b"), ds()) as h:
            await h.ready_all()
            await h.edit(lambda n: n["spec"].update(taints=[NO_EXECUTE]), group="", resource="nodes", name="b",
                         namespace=None)
            assert sorted(h.by_node()) == ["a"]
            assert h.set()["status"]["desiredNumberScheduled"] == 1
    run(main())


def test_unbound_pods_for_a_deleted_node_are_removed():
    async def main():
        async with Harness(node("a"), node("b"), ds()) as h:
            assert sorted(h.by_node()) == ["a", "b"]
            await h.client.delete("", "v1", "nodes", "b")
            await h.settle()
            assert sorted(h.by_node()) == ["a"]
            assert h.set()["status"]["desiredNumberScheduled"] == 1
    run(main())


def test_an_orphan_daemon_pod_is_adopted_not_duplicated():
    async def main():
        orphan = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "agent-old", "namespace": "default", "labels": {"app": "agent"}},
                  "spec": {"nodeName": "a", "containers": [{"name": "c", "image": "busybox"}]}}
        # OnDelete: the adopted pod has no revision hash, so a RollingUpdate would replace it next
        async with Harness(node("a"), ds(strategy="OnDelete"), orphan) as h:
            pods = h.pods()
            assert [p["metadata"]["name"] for p in pods] == ["agent-old"]
            assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
            st = h.set()["status"]
            assert st["currentNumberScheduled"] == 1 and "updatedNumberScheduled" not in st
    run(main())


def test_a_set_being_deleted_makes_nothing():
    async def main():
        d = ds()
        d["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        d["metadata"]["finalizers"] = ["foregroundDeletion"]
        async with Harness(node("a"), d) as h:
            assert h.pods() == []
            assert h.client.filter_actions("create", "controllerrevisions") == []
    run(main())
