"""Job controller against the FakeClient with a FakeClock; the test plays the kubelet."""

import asyncio
import datetime as dt

import pytest
from controller_testing import NS, ControllerHarness

from kubeling.client.clock import FakeClock
from kubeling.controllers.job import JOB_TRACKING_FINALIZER, JobController

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def job(name="pi", uid=None, **spec):
    """A Job as the API server stores it after defaulting and selector generation."""
    uid = uid or f"uid-{name}"
    labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
              "controller-uid": uid, "job-name": name}
    full = {"completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
            "suspend": False, "podReplacementPolicy": "TerminatingOrFailed", "manualSelector": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {"metadata": {"labels": labels},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    full.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default", "uid": uid, "labels": labels}, "spec": full}


class Harness(ControllerHarness):
    """A running JobController over a FakeClient; ``settle()`` lets it work until idle."""

    def __init__(self, *objs):
        super().__init__(JobController, NS, *objs, workers=3, clock=FakeClock(wall=START))

    def job(self, name="pi"):
        return self.get("jobs", name, "batch")

    def active(self, prefix=""):
        return [p for p in self.pods(prefix) if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                and not p["metadata"].get("deletionTimestamp")]

    async def finish(self, pod, phase, exit_code=None, conditions=()):
        """Play the kubelet: the pod's containers ended (``exit_code``) and it reached ``phase``."""
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        status = {"phase": phase, "conditions": list(conditions),
                  "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"terminated": {
                      "exitCode": code, "finishedAt": self.now()}}}]}
        await self.client.patch("", "v1", "pods", pod["metadata"]["name"], {"status": status},
                                namespace="default", subresource="status", patch_type="merge")
        await self.settle()

    async def run_pods(self, prefix=""):
        """Mark every active pod Running and Ready."""
        for p in self.active(prefix):
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            await self.client.patch("", "v1", "pods", p["metadata"]["name"], {"status": status},
                                    namespace="default", subresource="status", patch_type="merge")
        await self.settle()

    def conditions(self, name="pi"):
        return [(c["type"], c["status"], c.get("reason", "")) for c in self.job(name)["status"].get("conditions", [])]


def test_completions_with_parallelism_never_runs_more_than_parallelism():
    async def main():
        async with Harness(job(completions=5, parallelism=2)) as h:
            most = 0
            for _ in range(10):
                active = h.active()
                most = max(most, len(active))
                if not active:
                    break
                await h.run_pods()
                await h.finish(active[0], "Succeeded")
            status = h.job()["status"]
            assert most == 2
            assert status["succeeded"] == 5 and status["active"] == 0
            assert h.conditions() == [("SuccessCriteriaMet", "True", "CompletionsReached"),
                                      ("Complete", "True", "CompletionsReached")]
            assert h.job()["status"]["conditions"][-1]["message"] == "Reached expected number of succeeded pods"
            assert status["completionTime"] and status["startTime"]
            assert status["uncountedTerminatedPods"] == {}
            assert all(JOB_TRACKING_FINALIZER not in (p["metadata"].get("finalizers") or []) for p in h.pods())
            events = await h.events()
            assert [r for r, _ in events].count("SuccessfulCreate") == 5
            assert ("Completed", "Job completed") in events

    asyncio.run(main())


def test_pods_carry_labels_owner_and_the_tracking_finalizer():
    async def main():
        async with Harness(job()) as h:
            (pod,) = h.pods()
            meta = pod["metadata"]
            assert meta["generateName"] == "pi-"
            assert JOB_TRACKING_FINALIZER in meta["finalizers"]
            assert meta["labels"]["batch.kubernetes.io/job-name"] == "pi"
            assert meta["labels"]["controller-uid"] == "uid-pi"
            (ref,) = meta["ownerReferences"]
            assert (ref["kind"], ref["uid"], ref["controller"]) == ("Job", "uid-pi", True)
            assert h.job()["status"]["active"] == 1

    asyncio.run(main())


def test_backoff_limit_exceeded_with_exponential_backoff():
    async def main():
        async with Harness(job(backoffLimit=1)) as h:
            await h.finish(h.active()[0], "Failed")
            assert h.job()["status"]["failed"] == 1
            assert h.active() == []  # the replacement waits out the 10 s back-off
            await h.step(9)
            assert h.active() == []
            await h.step(1.5)
            assert len(h.active()) == 1
            await h.finish(h.active()[0], "Failed")
            status = h.job()["status"]
            assert status["failed"] == 2
            assert h.conditions() == [("FailureTarget", "True", "BackoffLimitExceeded"),
                                      ("Failed", "True", "BackoffLimitExceeded")]
            assert "completionTime" not in status
            assert ("BackoffLimitExceeded", "Job has reached the specified backoff limit") in await h.events()

    asyncio.run(main())


def test_backoff_doubles_after_each_failure():
    async def main():
        async with Harness(job(backoffLimit=6)) as h:
            waits = []
            for _ in range(3):
                await h.finish(h.active()[0], "Failed")
                waited = 0
                while not h.active():
                    await h.step(1)
                    waited += 1
                waits.append(waited)
            assert waits == [10, 20, 40]

    asyncio.run(main())


def test_active_deadline_fails_the_job_and_deletes_its_pods():
    async def main():
        j = job(activeDeadlineSeconds=30, parallelism=2, completions=2)
        # a second finalizer stands in for the kubelet: the deleted pods stay terminating until it goes
        j["spec"]["template"]["metadata"]["finalizers"] = ["example.com/hold"]
        async with Harness(j) as h:
            assert len(h.active()) == 2
            await h.step(31)
            assert h.active() == []
            assert h.conditions() == [("FailureTarget", "True", "DeadlineExceeded")]
            assert h.job()["status"]["terminating"] == 2 and h.job()["status"]["failed"] == 2
            for p in h.pods():
                await h.client.patch("", "v1", "pods", p["metadata"]["name"],
                                     {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/hold"]}},
                                     namespace="default", patch_type="strategic")
            await h.settle()
            assert h.conditions()[-1] == ("Failed", "True", "DeadlineExceeded")
            assert h.job()["status"]["terminating"] == 0
            assert ("DeadlineExceeded", "Job was active longer than specified deadline") in await h.events()

    asyncio.run(main())


def test_a_deleted_running_pod_is_counted_once_and_replaced():
    async def main():
        async with Harness(job(backoffLimit=6)) as h:
            (pod,) = h.active()
            await h.client.delete("", "v1", "pods", pod["metadata"]["name"], namespace="default")
            await h.settle()
            status = h.job()["status"]
            assert status["failed"] == 1 and status["uncountedTerminatedPods"] == {}
            assert h.client.object("", "v1", "pods", pod["metadata"]["name"], "default") is None
            await h.step(11)
            await h.step(1)
            assert h.job()["status"]["failed"] == 1  # never counted twice
            assert len(h.active()) == 1

    asyncio.run(main())


@pytest.mark.parametrize("rule, exit_code, conditions, expect", [
    pytest.param({"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}, 42, [],
                 ("Failed", "PodFailurePolicy",
                  "Container c for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"),
                 id="failjob-on-exit-code"),
    pytest.param({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}, 137,
                 [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
                 ("replaced", 0), id="ignore-disruption"),
    pytest.param({"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}}, 3, [],
                 ("replaced", 1), id="count"),
    pytest.param({"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}, 137,
                 [{"type": "DisruptionTarget", "status": "True"}],
                 ("Failed", "PodFailurePolicy",
                  "Pod default/{pod} has condition DisruptionTarget matching FailJob rule at index 0"),
                 id="failjob-on-condition"),
])
def test_pod_failure_policy(rule, exit_code, conditions, expect):
    async def main():
        async with Harness(job(podFailurePolicy={"rules": [rule]}, podReplacementPolicy="Failed")) as h:
            (pod,) = h.active()
            await h.finish(pod, "Failed", exit_code, conditions)
            await h.step(11)
            status = h.job()["status"]
            if expect[0] == "Failed":
                cond = h.job()["status"]["conditions"][-1]
                assert (cond["type"], cond["reason"]) == expect[:2]
                assert cond["message"] == expect[2].format(pod=pod["metadata"]["name"])
            else:
                assert status.get("failed", 0) == expect[1]
                assert len(h.active()) == 1
                assert not status.get("conditions")

    asyncio.run(main())


def test_indexed_job():
    async def main():
        async with Harness(job(completions=3, parallelism=3, completionMode="Indexed")) as h:
            pods = sorted(h.active(), key=lambda p: p["metadata"]["name"])
            assert [p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods] == \
                ["0", "1", "2"]
            for i, p in enumerate(pods):
                assert p["metadata"]["generateName"] == f"pi-{i}-"
                assert p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == str(i)
                assert p["spec"]["hostname"] == f"pi-{i}"
                env = p["spec"]["containers"][0]["env"]
                assert env[0]["name"] == "JOB_COMPLETION_INDEX"
            await h.finish(pods[1], "Succeeded")
            assert h.job()["status"]["completedIndexes"] == "1"
            await h.finish(pods[0], "Failed")
            await h.step(11)
            (again,) = h.active("pi-0-")
            assert again["metadata"]["name"] != pods[0]["metadata"]["name"]
            await h.finish(again, "Succeeded")
            await h.finish(pods[2], "Succeeded")
            status = h.job()["status"]
            assert status["completedIndexes"] == "0-2" and status["succeeded"] == 3 and status["failed"] == 1
            assert h.conditions()[-1] == ("Complete", "True", "CompletionsReached")

    asyncio.run(main())


def test_suspend_and_resume():
    async def main():
        async with Harness(job(suspend=True, completions=2, parallelism=2)) as h:
            assert h.pods() == []
            assert h.conditions() == [("Suspended", "True", "JobSuspended")]
            assert "startTime" not in h.job()["status"]
            j = h.job()
            j["spec"]["suspend"] = False
            await h.client.update("batch", "v1", "jobs", j, namespace="default")
            await h.settle()
            assert len(h.active()) == 2
            assert h.conditions() == [("Suspended", "False", "JobResumed")]
            assert h.job()["status"]["startTime"]
            j = h.job()
            j["spec"]["suspend"] = True
            await h.client.update("batch", "v1", "jobs", j, namespace="default")
            await h.settle()
            assert h.active() == [] and h.job()["status"]["active"] == 0
            assert h.job()["status"].get("failed", 0) == 0  # a suspended pod is not a failure
            assert h.conditions() == [("Suspended", "True", "JobSuspended")]
            reasons = [r for r, _ in await h.events()]
            assert {"Suspended", "Resumed", "SuccessfulDelete"} <= set(reasons)

    asyncio.run(main())


def test_orphaned_pods_lose_the_finalizer_when_the_job_goes():
    async def main():
        async with Harness(job()) as h:
            (pod,) = h.pods()
            await h.client.delete("batch", "v1", "jobs", "pi", namespace="default")
            await h.settle()
            left = h.client.object("", "v1", "pods", pod["metadata"]["name"], "default")
            assert JOB_TRACKING_FINALIZER not in (left["metadata"].get("finalizers") or [])

    asyncio.run(main())


def test_one_broken_job_does_not_stop_the_others():
    async def main():
        def refuse(action):
            if action.obj["metadata"]["generateName"].startswith("bad-"):
                from kubeling.api.errors import StatusError
                raise StatusError(403, "Forbidden", 'pods "bad-" is forbidden: exceeded quota')

        bad_selector = job("weird", selector={"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
        h = Harness(job("bad"), bad_selector, job("good"))
        h.client.prepend_reactor("create", "pods", refuse)
        async with h:
            (pod,) = h.active("good-")
            await h.finish(pod, "Succeeded")
            assert h.conditions("good")[-1] == ("Complete", "True", "CompletionsReached")
            assert h.pods("bad-") == []
            events = await h.events()
            assert any(r == "FailedCreate" and "exceeded quota" in m for r, m in events)

    asyncio.run(main())


def test_no_completions_job_completes_on_first_success():
    async def main():
        async with Harness(job(completions=None, parallelism=2)) as h:
            pods = h.active()
            assert len(pods) == 2
            await h.finish(pods[0], "Succeeded")
            assert h.conditions() == []  # the other is still running
            await h.finish(pods[1], "Succeeded")
            assert h.conditions()[-1] == ("Complete", "True", "CompletionsReached")

    asyncio.run(main())


def test_backoff_limit_per_index():
    async def main():
        async with Harness(job(completions=3, parallelism=3, completionMode="Indexed", backoffLimitPerIndex=1,
                               backoffLimit=2**31 - 1)) as h:
            first = h.active("pi-0-")[0]
            await h.finish(first, "Failed")
            # the failed pod keeps its finalizer until its replacement carries the count
            kept = h.client.object("", "v1", "pods", first["metadata"]["name"], "default")
            assert JOB_TRACKING_FINALIZER in kept["metadata"]["finalizers"]
            for p in h.active("pi-1-") + h.active("pi-2-"):
                await h.finish(p, "Succeeded")
            await h.step(11)
            (again,) = h.active("pi-0-")
            assert again["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "1"
            kept = h.client.object("", "v1", "pods", first["metadata"]["name"], "default")
            assert JOB_TRACKING_FINALIZER not in (kept["metadata"].get("finalizers") or [])
            await h.finish(again, "Failed")
            status = h.job()["status"]
            assert status["failedIndexes"] == "0" and status["completedIndexes"] == "1-2"
            assert status["failed"] == 2
            assert h.conditions()[-1] == ("Failed", "True", "FailedIndexes")

    asyncio.run(main())


@pytest.mark.parametrize("spec, exit_code, reason", [
    pytest.param({"backoffLimitPerIndex": 0, "maxFailedIndexes": 0}, 1, "MaxFailedIndexesExceeded", id="max-failed"),
    pytest.param({"backoffLimitPerIndex": 3, "maxFailedIndexes": 0, "podReplacementPolicy": "Failed",
                  "podFailurePolicy": {"rules": [{"action": "FailIndex",
                                                  "onExitCodes": {"operator": "In", "values": [42]}}]}},
                 42, "MaxFailedIndexesExceeded", id="fail-index-rule"),
])
def test_failed_indexes_fail_the_job(spec, exit_code, reason):
    async def main():
        async with Harness(job(completions=3, parallelism=3, completionMode="Indexed", backoffLimit=2**31 - 1,
                               **spec)) as h:
            await h.finish(h.active("pi-1-")[0], "Failed", exit_code)
            assert h.active() == []
            assert h.job()["status"]["failedIndexes"] == "1"
            assert h.conditions()[-1] == ("Failed", "True", reason)

    asyncio.run(main())


@pytest.mark.parametrize("rule", [
    pytest.param({"succeededIndexes": "0"}, id="by-indexes"),
    pytest.param({"succeededCount": 1}, id="by-count"),
    pytest.param({"succeededIndexes": "0-2", "succeededCount": 1}, id="count-of-indexes"),
])
def test_success_policy_completes_early_and_removes_lingering_pods(rule):
    async def main():
        async with Harness(job(completions=3, parallelism=3, completionMode="Indexed",
                               successPolicy={"rules": [rule]})) as h:
            await h.finish(h.active("pi-0-")[0], "Succeeded")
            assert h.active() == []
            assert h.conditions() == [("SuccessCriteriaMet", "True", "SuccessPolicy"),
                                      ("Complete", "True", "SuccessPolicy")]
            status = h.job()["status"]
            assert status["conditions"][0]["message"] == "Matched rules at index 0"
            assert status["completedIndexes"] == "0" and status.get("failed", 0) == 0

    asyncio.run(main())


def test_a_job_managed_by_another_controller_is_left_alone():
    async def main():
        async with Harness(job(managedBy="example.com/other")) as h:
            assert h.pods() == []
            assert not h.job().get("status")

    asyncio.run(main())
