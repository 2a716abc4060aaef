"""StatefulSet controller against the FakeClient: ordering, scale-down, identity, claims, updates.

The kubelet is played by `mark`: it writes a pod's phase and Ready condition, as the node agent
would, so every ordering rule is exercised without a node.
"""

import asyncio
import copy

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.controllers.statefulset import StatefulSetController


def sts(name="web", replicas=3, image="busybox", policy="OrderedReady", partition=0, claims=(), retention=None,
        strategy="RollingUpdate", history_limit=10):
    spec = {"replicas": replicas, "serviceName": "nginx", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}}, "revisionHistoryLimit": history_limit,
            "updateStrategy": {"type": strategy, **({"rollingUpdate": {"partition": partition}}
                                                     if strategy == "RollingUpdate" else {})},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": image}]}}}
    if claims:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": c}, "spec": {"accessModes": ["ReadWriteOnce"],
                                         "resources": {"requests": {"storage": "1Gi"}}}} for c in claims]
    if retention:
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": retention[0], "whenScaled": retention[1]}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": spec}


class Harness(ControllerHarness):
    def __init__(self, *objs):
        super().__init__(StatefulSetController, NS, *objs)

    def pods(self, name_prefix=""):
        """By name: a StatefulSet's pods are known by their ordinal names."""
        return {p["metadata"]["name"]: p for p in super().pods(name_prefix)}

    def claims(self):
        return {c["metadata"]["name"]: c for c in self.list("persistentvolumeclaims")}

    def set(self, name="web"):
        return self.get("statefulsets", name)

    async def mark(self, name, phase="Running", ready=True):
        await self.mark_ready(name, ready, phase)

    async def ready_all(self, prefix="web-"):
        """Mark pods Ready one by one until nothing new appears (how OrderedReady advances)."""
        while True:
            todo = [n for n, p in sorted(self.pods(prefix).items())
                    if not (p.get("status") or {}).get("conditions") and not p["metadata"].get("deletionTimestamp")]
            if not todo:
                return
            for n in todo:
                await self.mark(n)

    async def edit(self, fn, name="web"):
        await super().edit(fn, "statefulsets", name)


def run(coro):
    asyncio.run(coro)


def test_ordered_ready_creates_each_pod_after_the_previous_is_ready():
    async def main():
        async with Harness(sts()) as h:
            assert list(h.pods()) == ["web-0"]
            await h.mark("web-0", ready=False)
            assert list(h.pods()) == ["web-0"]  # Running but not Ready: web-1 waits
            await h.mark("web-0")
            assert sorted(h.pods()) == ["web-0", "web-1"]
            await h.mark("web-1")
            assert sorted(h.pods()) == ["web-0", "web-1", "web-2"]
            await h.mark("web-2")
            creates = [a.obj["metadata"]["name"] for a in h.client.filter_actions("create", "pods")]
            assert creates == ["web-0", "web-1", "web-2"]
            p = h.pods()["web-1"]
            assert p["spec"]["hostname"] == "web-1" and p["spec"]["subdomain"] == "nginx"
            labels = p["metadata"]["labels"]
            assert labels["statefulset.kubernetes.io/pod-name"] == "web-1"
            assert labels["apps.kubernetes.io/pod-index"] == "1"
            assert p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
            st = h.set()["status"]
            assert (st["replicas"], st["readyReplicas"], st["availableReplicas"], st["currentReplicas"],
                    st["updatedReplicas"]) == (3, 3, 3, 3, 3)
            assert st["currentRevision"] == st["updateRevision"] == labels["controller-revision-hash"]
            assert st["observedGeneration"] == h.set()["metadata"]["generation"]
            assert ("SuccessfulCreate", "create Pod web-0 in StatefulSet web successful") in await h.events()
    run(main())


def test_parallel_creates_every_pod_at_once():
    async def main():
        async with Harness(sts(policy="Parallel")) as h:
            assert sorted(h.pods()) == ["web-0", "web-1", "web-2"]
    run(main())


def test_scale_down_goes_in_reverse_one_at_a_time():
    async def main():
        async with Harness(sts()) as h:
            await h.ready_all()
            # a finalizer keeps a deleted pod terminating, so the wait for termination shows
            for n in ("web-1", "web-2"):
                p = await h.client.get("", "v1", "pods", n, namespace="default")
                p["metadata"]["finalizers"] = ["example.com/hold"]
                await h.client.update("", "v1", "pods", p, namespace="default")
            await h.edit(lambda o: o["spec"].update(replicas=1))
            pods = h.pods()
            assert pods["web-2"]["metadata"].get("deletionTimestamp")
            assert not pods["web-1"]["metadata"].get("deletionTimestamp")  # waits for web-2 to be gone
            p = await h.client.get("", "v1", "pods", "web-2", namespace="default")
            p["metadata"]["finalizers"] = []
            await h.client.update("", "v1", "pods", p, namespace="default")
            await h.settle()
            assert h.pods()["web-1"]["metadata"].get("deletionTimestamp")
            deletes = [a.name for a in h.client.filter_actions("delete", "pods")]
            assert deletes == ["web-2", "web-1"]
    run(main())


@pytest.mark.parametrize("phase", [pytest.param(None, id="deleted"), pytest.param("Failed", id="failed")])
def test_a_lost_pod_comes_back_with_the_same_name(phase):
    async def main():
        async with Harness(sts()) as h:
            await h.ready_all()
            uid = h.pods()["web-1"]["metadata"]["uid"]
            if phase is None:
                await h.client.delete("", "v1", "pods", "web-1", namespace="default")
                await h.settle()
            else:
                await h.mark("web-1", phase="Failed", ready=False)
            again = h.pods()["web-1"]
            assert again["metadata"]["uid"] != uid
            assert again["spec"]["hostname"] == "web-1"
            if phase == "Failed":
                assert any(r == "RecreatingFailedPod" for r, _ in await h.events())
    run(main())


def test_claims_are_made_before_the_pod_and_mounted_by_it():
    async def main():
        async with Harness(sts(replicas=1, claims=("www",))) as h:
            creates = [(a.resource, a.obj["metadata"]["name"]) for a in h.client.actions
                       if a.verb == "create" and a.resource in ("pods", "persistentvolumeclaims")]
            assert creates == [("persistentvolumeclaims", "www-web-0"), ("pods", "web-0")]
            vols = h.pods()["web-0"]["spec"]["volumes"]
            assert {"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}} in vols
            claim = h.claims()["www-web-0"]
            assert claim["metadata"]["labels"] == {"app": "web"}
            assert ("SuccessfulCreate", "create Claim www-web-0 Pod web-0 in StatefulSet web success") \
                in await h.events()
    run(main())


@pytest.mark.parametrize("retention, in_range_owner, scaled_owner", [
    pytest.param(("Retain", "Retain"), [], [], id="retain-retain"),
    pytest.param(("Delete", "Retain"), ["StatefulSet"], ["StatefulSet"], id="delete-on-set-deletion"),
    pytest.param(("Retain", "Delete"), [], ["Pod"], id="delete-on-scale-down"),
    pytest.param(("Delete", "Delete"), ["StatefulSet"], ["Pod"], id="delete-both"),
])
def test_claim_retention_policy_sets_owner_references(retention, in_range_owner, scaled_owner):
    async def main():
        async with Harness(sts(replicas=2, claims=("www",), retention=retention)) as h:
            await h.ready_all()
            kinds = lambda c: [r["kind"] for r in c["metadata"].get("ownerReferences") or []]
            assert kinds(h.claims()["www-web-1"]) == in_range_owner
            for r in h.claims()["www-web-1"]["metadata"].get("ownerReferences") or []:
                assert r["controller"] is True
            await h.edit(lambda o: o["spec"].update(replicas=1))
            assert "web-1" not in h.pods()
            assert kinds(h.claims()["www-web-1"]) == scaled_owner  # the garbage collector acts on it
            assert kinds(h.claims()["www-web-0"]) == in_range_owner
    run(main())


def test_rolling_update_with_partition_goes_from_the_highest_ordinal_down():
    async def main():
        async with Harness(sts()) as h:
            await h.ready_all()
            old = h.set()["status"]["currentRevision"]

            def bump(o, partition):
                o["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
                o["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = partition
            await h.edit(lambda o: bump(o, 1))
            new = h.set()["status"]["updateRevision"]
            assert new != old
            image = lambda n: h.pods()[n]["spec"]["containers"][0]["image"]
            assert image("web-2") == "busybox:2" and image("web-1") == "busybox"  # one at a time
            await h.ready_all()
            assert image("web-1") == "busybox:2" and image("web-0") == "busybox"  # partition holds web-0
            await h.ready_all()
            st = h.set()["status"]
            assert (st["currentRevision"], st["updateRevision"], st["updatedReplicas"]) == (old, new, 2)
            await h.edit(lambda o: bump(o, 0))
            await h.ready_all()
            st = h.set()["status"]
            assert image("web-0") == "busybox:2"
            assert st["currentRevision"] == st["updateRevision"] == new
            assert st["currentReplicas"] == st["updatedReplicas"] == 3
    run(main())


def test_on_delete_updates_only_deleted_pods():
    async def main():
        async with Harness(sts(strategy="OnDelete")) as h:
            await h.ready_all()
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            assert {p["spec"]["containers"][0]["image"] for p in h.pods().values()} == {"busybox"}
            await h.client.delete("", "v1", "pods", "web-1", namespace="default")
            await h.settle()
            assert h.pods()["web-1"]["spec"]["containers"][0]["image"] == "busybox:2"
            assert h.pods()["web-0"]["spec"]["containers"][0]["image"] == "busybox"
    run(main())


def test_rollback_reuses_the_old_revision_and_renumbers_it():
    """What ``kubectl rollout undo sts`` does: patch the set with an old revision's data."""
    async def main():
        async with Harness(sts(replicas=1)) as h:
            await h.ready_all()
            first = h.set()["status"]["currentRevision"]
            await h.edit(lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="busybox:2"))
            await h.ready_all()
            rev = h.client.object("apps", "v1", "controllerrevisions", first, "default")
            assert rev["data"]["spec"]["template"]["$patch"] == "replace"
            await h.client.patch("apps", "v1", "statefulsets", "web", rev["data"], namespace="default",
                                 patch_type="strategic")
            await h.settle()
            await h.ready_all()
            st = h.set()["status"]
            assert st["updateRevision"] == st["currentRevision"] == first
            assert h.client.object("apps", "v1", "controllerrevisions", first, "default")["revision"] == 3
            assert len(h.client.filter_actions("create", "controllerrevisions")) == 2
            assert h.pods()["web-0"]["spec"]["containers"][0]["image"] == "busybox"
    run(main())


def test_history_is_truncated_to_the_limit():
    async def main():
        async with Harness(sts(replicas=1, history_limit=1)) as h:
            for tag in ("2", "3", "4"):
                await h.ready_all()
                await h.edit(lambda o, t=tag: o["spec"]["template"]["spec"]["containers"][0].update(
                    image=f"busybox:{t}"))
            await h.ready_all()
            res = h.client.tracker.resource("apps", "v1", "controllerrevisions")
            revs = h.client.tracker.list(res, "default", None, None)
            st = h.set()["status"]
            # the live revision plus one of history
            assert st["currentRevision"] in {r["metadata"]["name"] for r in revs}
            assert len(revs) == 2
    run(main())


def test_one_broken_set_records_an_event_and_the_others_go_on():
    async def main():
        def refuse(action):
            if action.obj["metadata"]["name"].startswith("bad-"):
                raise StatusError(422, "Invalid", 'Pod "bad-0" is invalid: spec.containers[0].image: Required value')
        h = Harness(sts("bad", replicas=1), sts("good", replicas=2, policy="Parallel"))
        h.client.prepend_reactor("create", "pods", refuse)
        async with h:
            assert sorted(h.pods()) == ["good-0", "good-1"]
            events = await h.events()
            assert any(r == "FailedCreate" and m.startswith("create Pod bad-0 in StatefulSet bad failed error:")
                       for r, m in events)
            assert h.ctrl.queue.num_requeues("default/bad") >= 1
    run(main())


def test_orphans_are_adopted_and_foreign_pods_ignored():
    async def main():
        orphan = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        stranger = copy.deepcopy(orphan)
        stranger["metadata"]["name"] = "other-0"  # matches the selector but is no member of "web"
        async with Harness(sts(replicas=1), orphan, stranger) as h:
            refs = h.pods()["web-0"]["metadata"]["ownerReferences"]
            assert refs[0]["name"] == "web" and refs[0]["controller"] is True
            assert "ownerReferences" not in h.pods()["other-0"]["metadata"]
    run(main())


def test_min_ready_seconds_holds_the_next_ordinal_until_available():
    async def main():
        s = sts(replicas=2)
        s["spec"]["minReadySeconds"] = 10
        async with Harness(s) as h:
            await h.mark("web-0")  # Ready now (the fake clock's wall time)
            assert list(h.pods()) == ["web-0"]
            st = h.set()["status"]
            assert (st["readyReplicas"], st["availableReplicas"]) == (1, 0)
            h.clock.step(11)  # the controller asked to look again after minReadySeconds
            await h.settle()
            assert sorted(h.pods()) == ["web-0", "web-1"]
            assert h.set()["status"]["availableReplicas"] == 1
    run(main())


def test_parallel_scale_down_deletes_every_condemned_pod_at_once():
    async def main():
        async with Harness(sts(replicas=4, policy="Parallel")) as h:
            for p in list(h.pods()):
                pod = await h.client.get("", "v1", "pods", p, namespace="default")
                pod["metadata"]["finalizers"] = ["example.com/hold"]  # deletion shows, the pod stays
                await h.client.update("", "v1", "pods", pod, namespace="default")
            await h.settle()
            await h.edit(lambda o: o["spec"].update(replicas=1))
            terminating = sorted(n for n, p in h.pods().items() if p["metadata"].get("deletionTimestamp"))
            assert terminating == ["web-1", "web-2", "web-3"]
            assert [a.name for a in h.client.filter_actions("delete", "pods")] == ["web-3", "web-2", "web-1"]
    run(main())
