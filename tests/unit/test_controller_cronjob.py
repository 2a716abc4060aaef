"""CronJob controller against the FakeClient, driven by a FakeClock (no real minutes pass)."""

import asyncio
import datetime as dt

from controller_testing import NS, ControllerHarness

from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.cronjob import CronJobController

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
MINUTES = int(START.timestamp()) // 60


def cronjob(name="cj", schedule="*/1 * * * *", created=START, **spec):
    full = {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"app": name}, "annotations": {"note": "x"}},
                            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                           "containers": [{"name": "c", "image": "busybox"}]}}}}}
    full.update(spec)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")}, "spec": full}


class Harness(ControllerHarness):
    def __init__(self, *objs):
        super().__init__(CronJobController, NS, *objs, clock=FakeClock(wall=START))

    def jobs(self):
        return sorted(j["metadata"]["name"] for j in self.list("jobs", "batch"))

    def cj(self, name="cj"):
        return self.get("cronjobs", name, "batch")

    def active(self, name="cj"):
        return [a["name"] for a in self.cj(name)["status"].get("active") or []]

    async def finish(self, job_name, kind="Complete"):
        """Play the Job controller: the Job finished."""
        now = self.now()
        status = {"startTime": now, "conditions": [{"type": kind, "status": "True"}]}
        if kind == "Complete":
            status["completionTime"] = now
        await self.client.patch("batch", "v1", "jobs", job_name, {"status": status}, namespace="default",
                                subresource="status", patch_type="merge")
        await self.settle()


def name_at(minute, cj="cj"):
    return f"{cj}-{MINUTES + minute}"


def test_makes_a_job_on_schedule():
    async def main():
        async with Harness(cronjob()) as h:
            assert h.jobs() == []
            await h.step(59)
            assert h.jobs() == []
            await h.step(2)
            assert h.jobs() == [name_at(1)]
            job = h.client.object("batch", "v1", "jobs", name_at(1), "default")
            assert job["metadata"]["annotations"] == {"note": "x", "batch.kubernetes.io/cronjob-scheduled-timestamp":
                                                      "2024-01-01T00:01:00Z"}
            assert job["metadata"]["labels"] == {"app": "cj"}
            assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
            assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
            status = h.cj()["status"]
            assert status["lastScheduleTime"] == "2024-01-01T00:01:00Z"
            assert h.active() == [name_at(1)]
            assert ("SuccessfulCreate", f"Created job {name_at(1)}") in await h.events()

    asyncio.run(main())


def test_forbid_skips_while_a_job_runs_then_catches_up():
    async def main():
        async with Harness(cronjob(concurrencyPolicy="Forbid")) as h:
            await h.step(61)
            await h.step(60)
            assert h.jobs() == [name_at(1)]
            assert ("JobAlreadyActive", ("Not starting job because prior execution is running and concurrency "
                                         "policy is Forbid")) in await h.events()
            await h.finish(name_at(1))
            # the missed 00:02 slot starts as soon as the running Job is done
            assert h.jobs() == [name_at(1), name_at(2)]
            assert h.active() == [name_at(2)]
            assert h.cj()["status"]["lastSuccessfulTime"]
            assert ("SawCompletedJob", f"Saw completed job: {name_at(1)}, status: Complete") in await h.events()

    asyncio.run(main())


def test_replace_deletes_the_running_job():
    async def main():
        async with Harness(cronjob(concurrencyPolicy="Replace")) as h:
            await h.step(61)
            await h.step(60)
            assert h.jobs() == [name_at(2)]
            assert h.active() == [name_at(2)]
            deletes = h.client.filter_actions("delete", "jobs")
            assert [(a.name, a.options["propagation_policy"]) for a in deletes] == [(name_at(1), "Background")]
            assert ("SuccessfulDelete", f"Deleted job {name_at(1)}") in await h.events()

    asyncio.run(main())


def test_allow_runs_jobs_side_by_side():
    async def main():
        async with Harness(cronjob()) as h:
            await h.step(61)
            await h.step(60)
            assert h.active() == [name_at(1), name_at(2)]

    asyncio.run(main())


def test_history_limits_keep_the_newest_finished_jobs():
    async def main():
        async with Harness(cronjob(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)) as h:
            await h.step(61)
            for minute in (1, 2, 3, 4):
                await h.step(1)
                await h.finish(name_at(minute), "Complete" if minute != 2 else "Failed")
                await h.step(59)
            await h.step(1)
            # 1 and 3 succeeded before 4; 2 failed; 5 is running
            assert h.jobs() == [name_at(2), name_at(4), name_at(5)]

    asyncio.run(main())


def test_starting_deadline_missed():
    async def main():
        async with Harness(cronjob(startingDeadlineSeconds=10)) as h:
            h.clock.step(75)  # the controller was busy: it syncs only at 00:01:15
            await h.settle()
            # 00:01 is more than 10 s ago: it is not started late (upstream looks back only
            # startingDeadlineSeconds, so the slot is skipped rather than reported)
            assert h.jobs() == []
            await h.step(50)
            assert h.jobs() == [name_at(2)]

    asyncio.run(main())


def test_too_many_missed_start_times_warns_and_starts_the_latest():
    async def main():
        async with Harness(cronjob(created=START - dt.timedelta(minutes=200))) as h:
            assert h.jobs() == [name_at(0)]
            reasons = [r for r, _ in await h.events()]
            assert "TooManyMissedTimes" in reasons

    asyncio.run(main())


def test_time_zone():
    async def main():
        async with Harness(cronjob(schedule="0 9 * * *", timeZone="America/New_York")) as h:
            await h.step(14 * 3600 + 1)  # 09:00 in New York is 14:00 UTC
            (name,) = h.jobs()
            assert name == name_at(14 * 60)
            job = h.client.object("batch", "v1", "jobs", name, "default")
            assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
                "2024-01-01T09:00:00-05:00"

    asyncio.run(main())


def test_suspended_makes_nothing():
    async def main():
        async with Harness(cronjob(suspend=True)) as h:
            await h.step(600)
            assert h.jobs() == []

    asyncio.run(main())


def test_broken_cronjobs_record_events_and_the_others_go_on():
    async def main():
        async with Harness(cronjob("badtz", timeZone="Mars/Olympus"), cronjob("badsched", schedule="0 0 31 2 *"),
                           cronjob("nonsense", schedule="what"), cronjob("good")) as h:
            await h.step(61)
            assert h.jobs() == [name_at(1, "good")]
            reasons = {r for r, _ in await h.events()}
            assert {"UnknownTimeZone", "InvalidSchedule", "UnparseableSchedule"} <= reasons

    asyncio.run(main())


def test_a_deleted_active_job_goes_missing():
    async def main():
        async with Harness(cronjob(concurrencyPolicy="Forbid")) as h:
            await h.step(61)
            await h.client.delete("batch", "v1", "jobs", name_at(1), namespace="default")
            await h.settle()
            assert h.active() == []
            assert ("MissingJob", f"Active job went missing: {name_at(1)}") in await h.events()

    asyncio.run(main())


def test_a_fast_clock_from_the_context():
    async def main():
        client = FakeClient(NS)
        ctx = ControllerContext(client, SharedInformerFactory(client), cronjob_clock_speed=60,
                                cronjob_clock_start="2028-02-29T00:00:00Z")
        ctl = CronJobController(ctx)
        assert ctl.clock.wall() >= dt.datetime(2028, 2, 29, tzinfo=dt.UTC)
        assert ctl.queue is not None and ctl.clock is not ctx.clock

    asyncio.run(main())


def test_an_unfinished_job_it_did_not_make_is_reported():
    async def main():
        stray = {"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": "stray", "namespace": "default", "uid": "uid-stray",
                              "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "cj",
                                                   "uid": "uid-cj", "controller": True}]},
                 "spec": {"template": {}}}
        async with Harness(cronjob(), stray) as h:
            await h.step(61)
            events = await h.events()
            assert ("UnexpectedJob", "Saw a job that the controller did not create or forgot: stray") in events
            # its own Job, just created, is never reported even before the cache sees the status
            assert not any(r == "UnexpectedJob" and name_at(1) in m for r, m in events)

    asyncio.run(main())
