"""ReplicaSet controller (and the ReplicationManager over the same logic) against the FakeClient."""

import asyncio

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.controllers.replicaset import ReplicaSetController, pods_to_delete
from kubeling.controllers.replication import ReplicationManager

READY_SINCE = "2024-01-01T00:00:00Z"


def template(app="web"):
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def rs(name="web", replicas=3, app="web", uid=None, **spec):
    meta = {"name": name, "namespace": "default", "generation": 1}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}, "template": template(app),
                     **spec}}


def rc(name="legacy", replicas=2, app="legacy"):
    return {"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"app": app}, "template": template(app)}}


def pod(name, app="web", owner=None, node=None, ready=None, phase="Running", created=None, uid=None):
    meta = {"name": name, "namespace": "default", "labels": {"app": app}}
    if uid:
        meta["uid"] = uid
    if created:
        meta["creationTimestamp"] = created
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": True}]
    status = {"phase": phase}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": READY_SINCE}]
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


class Harness(ControllerHarness):
    event_fields = ("reason", "message", "involvedObject.name")

    def __init__(self, *objs, cls=ReplicaSetController):
        super().__init__(cls, NS, *objs)

    def owned_by(self, owner_name):
        return sorted(p["metadata"]["name"] for p in self.pods()
                      if any(r["name"] == owner_name for r in p["metadata"].get("ownerReferences") or ()))


def test_creates_the_missing_pods_owned_and_labelled():
    async def main():
        async with Harness(rs(replicas=3)) as h:
            pods = h.pods()
            assert len(pods) == 3
            owner = h.get("replicasets", "web")
            for p in pods:
                assert p["metadata"]["labels"] == {"app": "web"}
                assert p["metadata"]["name"].startswith("web-")
                (ref,) = p["metadata"]["ownerReferences"]
                assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                               "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
            assert len(h.client.filter_actions("create", "pods")) == 3  # expectations: never twice
            assert owner["status"]["replicas"] == 3
            assert owner["status"]["fullyLabeledReplicas"] == 3
            assert owner["status"]["observedGeneration"] == 1
            events = await h.events()
            assert sorted(r for r, _, _ in events) == ["SuccessfulCreate"] * 3
            assert all(m.startswith("Created pod: web-") and n == "web" for _, m, n in events)

    asyncio.run(main())


def test_a_deleted_pod_is_replaced_and_scaling_follows_spec():
    async def main():
        async with Harness(rs(replicas=2)) as h:
            victim = h.owned_by("web")[0]
            await h.client.delete("", "v1", "pods", victim, namespace="default")
            await h.settle()
            assert len(h.owned_by("web")) == 2 and victim not in h.owned_by("web")
            owner = h.get("replicasets", "web")
            await h.client.update("apps", "v1", "replicasets", {**owner, "spec": {**owner["spec"], "replicas": 4}})
            await h.settle()
            assert len(h.owned_by("web")) == 4
            owner = h.get("replicasets", "web")
            await h.client.update("apps", "v1", "replicasets", {**owner, "spec": {**owner["spec"], "replicas": 1}})
            await h.settle()
            assert len(h.owned_by("web")) == 1
            assert h.get("replicasets", "web")["status"]["replicas"] == 1
            assert [r for r, _, _ in await h.events()].count("SuccessfulDelete") == 3

    asyncio.run(main())


def test_scale_down_deletes_unassigned_then_not_ready_then_newest():
    async def main():
        owner = rs(replicas=1, uid="rs-1")
        seeded = [
            pod("ready-old", owner=owner, node="n1", ready=True, created="2024-01-01T00:00:00Z"),
            pod("ready-new", owner=owner, node="n1", ready=True, created="2024-01-01T00:05:00Z"),
            pod("not-ready", owner=owner, node="n1", ready=False, created="2024-01-01T00:00:00Z"),
            pod("unassigned", owner=owner, phase="Pending", created="2024-01-01T00:00:00Z"),
        ]
        async with Harness(owner, *seeded) as h:
            assert h.owned_by("web") == ["ready-old"]
            deleted = [a.name for a in h.client.filter_actions("delete", "pods")]
            assert sorted(deleted) == ["not-ready", "ready-new", "unassigned"]
            for a in h.client.filter_actions("delete", "pods"):
                assert a.options["preconditions"]["uid"]  # never a same-named newcomer

    asyncio.run(main())


@pytest.mark.parametrize("pods, related, want", [
    pytest.param([pod("a", node="n1", ready=True), pod("b", node="n2", ready=True)],
                 [pod("x", node="n1")], ["a"], id="doubled-up-on-a-node-goes-first"),
    pytest.param([pod("a", node="n1", ready=True), pod("b", phase="Pending")], [], ["b"], id="unassigned-first"),
    pytest.param([pod("a", node="n1", ready=True, created="2024-01-01T00:00:00Z"),
                  pod("b", node="n1", ready=True, created="2024-01-02T00:00:00Z")], [], ["b"], id="newest-first"),
])
def test_pods_to_delete_order(pods, related, want):
    assert [p["metadata"]["name"] for p in pods_to_delete(pods, related, len(want))] == want


def test_adopts_matching_orphans_and_releases_pods_that_stop_matching():
    async def main():
        owner = rs(replicas=2, uid="rs-1")
        strayed = pod("strayed", app="other", owner=owner, node="n1", ready=True)
        async with Harness(owner, pod("orphan", node="n1", ready=True), strayed) as h:
            names = h.owned_by("web")
            assert "orphan" in names and "strayed" not in names and len(names) == 2
            assert not h.get("pods", "strayed", "")["metadata"].get("ownerReferences")
            assert len(h.client.filter_actions("create", "pods")) == 1

    asyncio.run(main())


def test_ready_and_available_with_min_ready_seconds_requeue():
    async def main():
        async with Harness(rs(replicas=2, minReadySeconds=10)) as h:
            for name in h.owned_by("web"):
                await h.mark_ready(name)
            await h.settle()
            st = h.get("replicasets", "web")["status"]
            assert st["readyReplicas"] == 2 and "availableReplicas" not in st
            h.clock.step(11)  # the controller asked to look again after minReadySeconds
            await h.settle()
            st = h.get("replicasets", "web")["status"]
            assert st["availableReplicas"] == 2

    asyncio.run(main())


def quota_refusal(action):
    if action.obj["metadata"]["labels"].get("app") == "broken":
        raise StatusError(403, "Forbidden", 'pods "broken-x" is forbidden: exceeded quota: q, requested: pods=1, '
                                            'used: pods=0, limited: pods=0')


def test_a_refused_create_records_failed_create_and_replica_failure_and_spares_the_others():
    async def main():
        h = Harness(rs("broken", replicas=5, app="broken"), rs("fine", replicas=2, app="fine"))
        h.client.prepend_reactor("create", "pods", quota_refusal)
        async with h:
            assert len(h.owned_by("fine")) == 2
            broken_creates = [a for a in h.client.filter_actions("create", "pods")
                              if a.obj["metadata"]["labels"]["app"] == "broken"]
            # slow start: each sync tries a first batch of one and stops there; the status write's own
            # update event brings exactly one more sync (upstream's too), and backoff holds the rest
            assert len(broken_creates) == 2
            st = h.get("replicasets", "broken")["status"]
            (cond,) = st["conditions"]
            assert cond["type"] == "ReplicaFailure" and cond["status"] == "True"
            assert cond["reason"] == "FailedCreate" and "exceeded quota" in cond["message"]
            events = await h.events()
            message = ('Error creating: pods "broken-x" is forbidden: exceeded quota: q, '
                       'requested: pods=1, used: pods=0, limited: pods=0')
            assert ("FailedCreate", message, "broken") in events
            # the quota goes away: the retry creates them and the condition is removed
            h.client._reactors.clear()
            h.clock.step(5)
            await h.settle()
            assert len(h.owned_by("broken")) == 5
            assert "conditions" not in h.get("replicasets", "broken")["status"]

    asyncio.run(main())


def test_replication_controller_is_served_by_the_same_logic():
    async def main():
        async with Harness(rc(replicas=2), cls=ReplicationManager) as h:
            pods = h.owned_by("legacy")
            assert len(pods) == 2
            ref = h.get("pods", pods[0], "")["metadata"]["ownerReferences"][0]
            assert (ref["apiVersion"], ref["kind"]) == ("v1", "ReplicationController")
            assert h.get("replicationcontrollers", "legacy", "")["status"]["replicas"] == 2
            events = await h.events()
            assert {r for r, _, _ in events} == {"SuccessfulCreate"}

    asyncio.run(main())


def test_a_replicaset_being_deleted_creates_nothing():
    async def main():
        owner = rs(replicas=3)
        owner["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["foregroundDeletion"])
        async with Harness(owner) as h:
            assert h.pods() == []

    asyncio.run(main())
