"""Deployment controller with the ReplicaSet controller against the FakeClient, a toy kubelet
marking pods Ready: rollouts, bounds, conditions, pause, cleanup, rollback, adoption, faults."""

import asyncio
import copy

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.api.errors import StatusError
from kubeling.controllers.deployment import DeploymentController
from kubeling.controllers.replicaset import ReplicaSetController

BAD_IMAGE = "docker.io/library/doesnotexist:1"


def deployment(name="web", replicas=3, image="busybox:1", surge=1, unavailable=0, strategy="RollingUpdate", **spec):
    strat = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strat,
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}


class Cluster(ControllerHarness):
    """Both controllers on one fake API; `kubelet` plays the node (Ready unless the image is bad)."""

    event_fields = ("reason", "message", "involvedObject.name")
    idle_rounds = 60
    must_settle = False  # a failed ReplicaSet create rewrites the same status: the FakeClient re-delivers it

    def __init__(self, *objs):
        super().__init__((DeploymentController, ReplicaSetController), NS, *objs)
        self.observations = []

    def replicasets(self, owner="web"):
        return sorted((rs for rs in self.list("replicasets", "apps")
                       if any(r["name"] == owner for r in rs["metadata"].get("ownerReferences") or ())),
                      key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))

    def observe(self, name="web"):
        """Pods of the Deployment right now: (total, available)."""
        pods = [p for p in self.list("pods") if p["metadata"]["labels"].get("app") == name]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in (p.get("status") or {}).get("conditions") or ())]
        self.observations.append((len(pods), len(ready)))
        return len(pods), len(ready)

    async def kubelet(self, one_at_a_time=False):
        """Mark not-yet-ready pods Running and Ready (never the bad image's)."""
        for p in self.list("pods"):
            if p["spec"]["containers"][0]["image"] == BAD_IMAGE or (p.get("status") or {}).get("conditions"):
                continue
            await self.mark_ready(p["metadata"]["name"], settle=False)
            if one_at_a_time:
                return True
        return False

    async def run_until_stable(self, name="web", steps=60):
        for _ in range(steps):
            await self.settle()
            self.observe(name)
            if not await self.kubelet(one_at_a_time=True):
                await self.settle()
                self.observe(name)
                return
        raise AssertionError("no steady state")

    async def events(self, reason=None):
        return [e for e in await super().events() if reason in (None, e[0])]

    async def set_spec(self, name="web", **changes):
        d = copy.deepcopy(self.get("deployments", name))
        for path, value in changes.items():
            node = d["spec"]
            *parents, leaf = path.split("__")
            for p in parents:
                node = node[p]
            node[leaf] = value
        await self.client.update("apps", "v1", "deployments", d)


def condition(d, type_):
    return next((c for c in d["status"].get("conditions") or () if c["type"] == type_), None)


def test_a_new_deployment_gets_a_hashed_replicaset_and_reports_complete():
    async def main():
        async with Cluster(deployment()) as c:
            await c.run_until_stable()
            (rs,) = c.replicasets()
            h = rs["metadata"]["labels"]["pod-template-hash"]
            assert rs["metadata"]["name"] == f"web-{h}"
            assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
            assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
            ann = rs["metadata"]["annotations"]
            assert (ann["deployment.kubernetes.io/revision"], ann["deployment.kubernetes.io/desired-replicas"],
                    ann["deployment.kubernetes.io/max-replicas"]) == ("1", "3", "4")
            d = c.get("deployments", "web")
            assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
            st = d["status"]
            assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"],
                    st["observedGeneration"]) == (3, 3, 3, 3, 1)
            assert "unavailableReplicas" not in st
            assert (condition(d, "Available")["status"], condition(d, "Available")["reason"]) == (
                "True", "MinimumReplicasAvailable")
            prog = condition(d, "Progressing")
            assert (prog["status"], prog["reason"], prog["message"]) == (
                "True", "NewReplicaSetAvailable", f'ReplicaSet "web-{h}" has successfully progressed.')
            assert await c.events("ScalingReplicaSet") == [
                ("ScalingReplicaSet", f"Scaled up replica set web-{h} to 3", "web")]

    asyncio.run(main())


@pytest.mark.parametrize("replicas, surge, unavailable", [
    pytest.param(3, 1, 0, id="surge-1-unavailable-0"),
    pytest.param(4, 0, 1, id="surge-0-unavailable-1"),
    pytest.param(5, "40%", "20%", id="percentages"),
])
def test_rolling_update_stays_within_surge_and_unavailability(replicas, surge, unavailable):
    async def main():
        async with Cluster(deployment(replicas=replicas, surge=surge, unavailable=unavailable)) as c:
            await c.run_until_stable()
            c.observations.clear()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:2"}])
            await c.run_until_stable()
            max_surge = surge if isinstance(surge, int) else -(-int(surge[:-1]) * replicas // 100)
            max_unavailable = unavailable if isinstance(unavailable, int) else int(unavailable[:-1]) * replicas // 100
            for total, available in c.observations:
                assert total <= replicas + max_surge
                assert available >= replicas - max_unavailable
            old, new = c.replicasets()
            assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, replicas)
            assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            d = c.get("deployments", "web")
            assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            assert (d["status"]["updatedReplicas"], d["status"]["availableReplicas"]) == (replicas, replicas)
            assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
            scaled = [m for _, m, _ in await c.events("ScalingReplicaSet")]
            assert any(m.startswith(f"Scaled down replica set {old['metadata']['name']} to 0 from ") for m in scaled)

    asyncio.run(main())


def test_recreate_scales_old_to_zero_before_creating_the_new():
    async def main():
        async with Cluster(deployment(strategy="Recreate")) as c:
            await c.run_until_stable()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:2"}])
            await c.settle()
            # old pods are deleted by the ReplicaSet controller; only then is the new one made
            await c.run_until_stable()
            old, new = c.replicasets()
            assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 3)
            scaled = [m for _, m, _ in await c.events("ScalingReplicaSet")]
            down = scaled.index(f"Scaled down replica set {old['metadata']['name']} to 0 from 3")
            up = scaled.index(f"Scaled up replica set {new['metadata']['name']} to 3")
            assert down < up

    asyncio.run(main())


def test_scaling_mid_rollout_is_proportional():
    async def main():
        async with Cluster(deployment(replicas=10, surge=3, unavailable=2)) as c:
            await c.run_until_stable()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": BAD_IMAGE}])
            await c.run_until_stable()
            old, new = c.replicasets()
            assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (8, 5)  # stuck: 10+3 in all
            await c.set_spec(replicas=20)
            await c.run_until_stable()
            old, new = c.replicasets()
            # 23 allowed; 10 more spread as 8:5 of 13 -> +6 (8*23/13=14.2) and +4 (5*23/13=8.8 -> 9)
            assert old["spec"]["replicas"] + new["spec"]["replicas"] == 23
            assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (14, 9)
            for rs in (old, new):
                ann = rs["metadata"]["annotations"]
                assert (ann["deployment.kubernetes.io/desired-replicas"],
                        ann["deployment.kubernetes.io/max-replicas"]) == ("20", "23")

    asyncio.run(main())


def test_progress_deadline_exceeded():
    async def main():
        async with Cluster(deployment(progressDeadlineSeconds=10)) as c:
            await c.run_until_stable()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": BAD_IMAGE}])
            await c.run_until_stable()
            d = c.get("deployments", "web")
            assert condition(d, "Progressing")["reason"] in ("ReplicaSetUpdated", "NewReplicaSetCreated")
            c.clock.step(12)  # the controller asked to look again just after the deadline
            await c.settle()
            d = c.get("deployments", "web")
            new = c.replicasets()[-1]
            prog = condition(d, "Progressing")
            assert (prog["status"], prog["reason"], prog["message"]) == (
                "False", "ProgressDeadlineExceeded", f'ReplicaSet "{new["metadata"]["name"]}" has timed out progressing.')
            assert condition(d, "Available")["status"] == "True"  # the old pods still serve

    asyncio.run(main())


def test_pause_holds_the_rollout_and_resume_continues():
    async def main():
        async with Cluster(deployment()) as c:
            await c.run_until_stable()
            await c.set_spec(paused=True)
            await c.settle()
            prog = condition(c.get("deployments", "web"), "Progressing")
            assert (prog["status"], prog["reason"], prog["message"]) == ("Unknown", "DeploymentPaused",
                                                                          "Deployment is paused")
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:2"}])
            await c.run_until_stable()
            assert len(c.replicasets()) == 1
            await c.set_spec(paused=False)
            await c.run_until_stable()
            assert [rs["spec"]["replicas"] for rs in c.replicasets()] == [0, 3]
            assert condition(c.get("deployments", "web"), "Progressing")["reason"] == "NewReplicaSetAvailable"

    asyncio.run(main())


def test_revision_history_limit_deletes_the_oldest_empty_replicasets():
    async def main():
        async with Cluster(deployment(revisionHistoryLimit=1)) as c:
            await c.run_until_stable()
            for tag in ("2", "3", "4"):
                await c.set_spec(template__spec__containers=[{"name": "c", "image": f"busybox:{tag}"}])
                await c.run_until_stable()
            revisions = [rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for rs in c.replicasets()]
            assert revisions == ["3", "4"]

    asyncio.run(main())


def test_template_back_to_an_old_one_reuses_its_replicaset_with_the_next_revision():
    """What client-side ``kubectl rollout undo`` does: the old template comes back."""
    async def main():
        async with Cluster(deployment()) as c:
            await c.run_until_stable()
            first = c.replicasets()[0]["metadata"]["name"]
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:2"}])
            await c.run_until_stable()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:1"}])
            await c.run_until_stable()
            rss = c.replicasets()
            assert len(rss) == 2 and rss[-1]["metadata"]["name"] == first
            ann = rss[-1]["metadata"]["annotations"]
            assert (ann["deployment.kubernetes.io/revision"], ann["deployment.kubernetes.io/revision-history"]) == (
                "3", "1")

    asyncio.run(main())


def test_legacy_rollback_annotation():
    async def main():
        async with Cluster(deployment()) as c:
            await c.run_until_stable()
            await c.set_spec(template__spec__containers=[{"name": "c", "image": "busybox:2"}])
            await c.run_until_stable()
            d = copy.deepcopy(c.get("deployments", "web"))
            d["metadata"]["annotations"]["deprecated.deployment.rollback.to"] = "0"
            await c.client.update("apps", "v1", "deployments", d)
            await c.run_until_stable()
            d = c.get("deployments", "web")
            assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1"
            assert "deprecated.deployment.rollback.to" not in d["metadata"]["annotations"]
            assert "pod-template-hash" not in d["spec"]["template"]["metadata"]["labels"]
            assert ("DeploymentRollback", 'Rolled back deployment "web" to revision 1', "web") in await c.events()
            assert c.replicasets()[-1]["spec"]["replicas"] == 3

    asyncio.run(main())


def refuse_broken_replicasets(action):
    if action.obj["metadata"]["name"].startswith("broken-"):
        raise StatusError(422, "Invalid", 'ReplicaSet.apps "broken-x" is invalid: spec.template: Invalid value')


def test_a_refused_replicaset_is_reported_and_the_other_deployments_go_on():
    async def main():
        c = Cluster(deployment("broken"), deployment("fine"))
        c.client.prepend_reactor("create", "replicasets", refuse_broken_replicasets)
        async with c:
            await c.run_until_stable("fine")
            assert c.get("deployments", "fine")["status"]["availableReplicas"] == 3
            events = await c.events("ReplicaSetCreateError")
            assert events and events[0][2] == "broken"
            assert events[0][1].startswith('Failed to create new replica set "broken-')
            prog = condition(c.get("deployments", "broken"), "Progressing")
            assert (prog["status"], prog["reason"]) == ("False", "ReplicaSetCreateError")

    asyncio.run(main())


def test_adopts_an_orphan_replicaset_and_selecting_all_is_refused():
    async def main():
        orphan = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": "web-manual", "namespace": "default", "labels": {"app": "web"}},
                  "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "c", "image": "busybox:0"}]}}}}
        everything = deployment("all")
        everything["spec"]["selector"] = {}
        async with Cluster(deployment(), orphan, everything) as c:
            await c.run_until_stable()
            ref = c.get("replicasets", "web-manual")["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["controller"]) == ("Deployment", "web", True)
            assert ("SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.",
                    "all") in await c.events()
            assert c.get("deployments", "all")["status"]["observedGeneration"] == 1

    asyncio.run(main())


def test_a_replicaset_the_cache_has_not_seen_yet_is_no_hash_collision():
    """A create answered AlreadyExists for a ReplicaSet the informer has not delivered yet (the
    previous sync made it) is retried, not counted as a collision."""
    async def main():
        c = Cluster(deployment())
        refused = []

        def already_exists_once(action):
            if not refused:
                refused.append(action.obj["metadata"]["name"])
                raise StatusError(409, "AlreadyExists", f'replicasets.apps "{refused[0]}" already exists')
        c.client.prepend_reactor("create", "replicasets", already_exists_once)
        async with c:
            c.clock.step(1)  # the retry's backoff
            await c.run_until_stable()
            d = c.get("deployments", "web")
            assert "collisionCount" not in d["status"]
            assert [rs["metadata"]["name"] for rs in c.replicasets()] == refused

    asyncio.run(main())


def refuse_pods_of(app):
    def react(action):
        if action.obj["metadata"]["labels"].get("app") == app:
            raise StatusError(403, "Forbidden", 'pods "x" is forbidden: exceeded quota: pods, requested: pods=1, '
                                                'used: pods=0, limited: pods=0')
    return react


def test_a_replicaset_failure_shows_on_the_deployment():
    async def main():
        c = Cluster(deployment())
        c.client.prepend_reactor("create", "pods", refuse_pods_of("web"))
        async with c:
            await c.run_until_stable()
            cond = condition(c.get("deployments", "web"), "ReplicaFailure")
            assert (cond["status"], cond["reason"]) == ("True", "FailedCreate")
            assert "exceeded quota" in cond["message"]
            assert condition(c.get("deployments", "web"), "Available")["status"] == "False"

    asyncio.run(main())


def test_min_ready_seconds_delays_availability():
    async def main():
        async with Cluster(deployment(minReadySeconds=5)) as c:
            await c.run_until_stable()
            (rs,) = c.replicasets()
            assert rs["spec"]["minReadySeconds"] == 5
            st = c.get("deployments", "web")["status"]
            assert (st["readyReplicas"], st.get("availableReplicas", 0), st["unavailableReplicas"]) == (3, 0, 3)
            c.clock.step(6)  # the ReplicaSet controller looks again after minReadySeconds
            await c.settle()
            st = c.get("deployments", "web")["status"]
            assert (st["availableReplicas"], st.get("unavailableReplicas", 0)) == (3, 0)
            assert condition(c.get("deployments", "web"), "Progressing")["reason"] == "NewReplicaSetAvailable"

    asyncio.run(main())
