"""The scheduler process's serve(): with --leader-elect it schedules only while holding the Lease
kube-system/kube-scheduler; without it, at once. The in-tree plugins bind through pods/binding."""

from __future__ import annotations

import asyncio
import copy

import pytest

from kubeling.client.fake import FakeClient
from kubeling.controllers.manager import LeaderElection
from kubeling.scheduler import server


def cluster() -> FakeClient:
    c = FakeClient(*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                     for n in ("default", "kube-system")),
                   {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                    "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]}})
    pods = c.tracker.resource("", "v1", "pods")

    def bind(action):
        if action.subresource != "binding":
            return None
        p = copy.deepcopy(c.tracker.get(pods, action.namespace, action.name))
        p["spec"]["nodeName"] = action.obj["target"]["name"]
        c.tracker.update(pods, p, action.namespace, None)
        return {"kind": "Status", "status": "Success"}
    c.prepend_reactor("create", "pods", bind)
    return c


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


async def until(cond, what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out: {what}")


@pytest.mark.parametrize("elect", [pytest.param(False, id="no-election"), pytest.param(True, id="leader-elect")])
def test_serve_schedules_and_takes_the_lease_when_asked(elect):
    async def main():
        c = cluster()
        stop = asyncio.Event()
        le = LeaderElection(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5, identity="sched-a") \
            if elect else None
        task = asyncio.create_task(server.serve(c, stop, leader_election=le))
        try:
            await c.create("", "v1", "pods", pod("a"))
            await until(lambda: c.object("", "v1", "pods", "a", "default")["spec"].get("nodeName") == "n1", "a bound")
            lease = c.object("coordination.k8s.io", "v1", "leases", "kube-scheduler", "kube-system")
            if elect:
                assert lease["spec"]["holderIdentity"] == "sched-a"
            else:
                assert lease is None
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    asyncio.run(main())


def test_a_standby_does_not_schedule_while_another_holds_the_lease():
    async def main():
        c = cluster()
        await c.create("coordination.k8s.io", "v1", "leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 60,
                     "renewTime": "2099-01-01T00:00:00.000000Z"}})
        stop = asyncio.Event()
        le = LeaderElection(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5, identity="standby")
        task = asyncio.create_task(server.serve(c, stop, leader_election=le))
        try:
            await c.create("", "v1", "pods", pod("a"))
            await asyncio.sleep(1.5)
            assert not c.object("", "v1", "pods", "a", "default")["spec"].get("nodeName")
            assert not [a for a in c.filter_actions("create", "pods") if a.subresource == "binding"]
            assert not c.filter_actions("watch", "pods")   # it built no informers either
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    asyncio.run(main())


def test_config_file_adds_a_profile_and_is_checked(tmp_path):
    good = tmp_path / "sched.yaml"
    good.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                    "percentageOfNodesToScore: 30\nprofiles:\n- schedulerName: default-scheduler\n"
                    "- schedulerName: no-scoring\n  plugins:\n    score:\n      disabled: [{name: '*'}]\n")
    cfg = server.load_config(str(good))

    async def main():
        from kubeling.client.factory import SharedInformerFactory
        from kubeling.scheduler.scheduler import Scheduler
        c = cluster()
        s = Scheduler(c, SharedInformerFactory(c), config=cfg)
        assert set(s.profiles) == {"default-scheduler", "no-scoring"}
        assert s.profiles["no-scoring"].points["score"] == [] and s.profiles["default-scheduler"].points["score"]
        assert s.algorithm.percentage_of_nodes_to_score == 30
    asyncio.run(main())
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ConfigMap\n")
    with pytest.raises(ValueError, match="expected a KubeSchedulerConfiguration"):
        server.load_config(str(bad))
    assert server.load_config(None) == {}
