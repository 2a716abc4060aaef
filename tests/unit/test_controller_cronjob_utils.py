"""Schedule arithmetic of the CronJob controller: descriptors, time zones, missed-time counting."""

import asyncio
import datetime as dt

import pytest

from kubeling.client.clock import FakeClock
from kubeling.controllers import cronjob_utils as cu

T0 = dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC)  # a Monday


@pytest.mark.parametrize("expr, tz, after", [
    pytest.param("*/5 * * * *", None, "2024-01-01T00:05:00+00:00", id="step"),
    pytest.param("@hourly", None, "2024-01-01T01:00:00+00:00", id="hourly"),
    pytest.param("@daily", None, "2024-01-02T00:00:00+00:00", id="daily"),
    pytest.param("@midnight", None, "2024-01-02T00:00:00+00:00", id="midnight"),
    pytest.param("@weekly", None, "2024-01-07T00:00:00+00:00", id="weekly"),
    pytest.param("@monthly", None, "2024-02-01T00:00:00+00:00", id="monthly"),
    pytest.param("@yearly", None, "2025-01-01T00:00:00+00:00", id="yearly"),
    pytest.param("@annually", None, "2025-01-01T00:00:00+00:00", id="annually"),
    pytest.param("@every 90s", None, "2024-01-01T00:01:30+00:00", id="every"),
    pytest.param("30 9 * * 1-5", "Europe/Paris", "2024-01-01T09:30:00+01:00", id="time-zone"),
])
def test_next_schedule_time(expr, tz, after):
    assert cu.parse_schedule(expr, tz).next(T0).isoformat() == after


@pytest.mark.parametrize("created_minutes_ago, deadline, most_recent, missed", [
    pytest.param(0, None, None, cu.NONE, id="nothing-due"),
    pytest.param(1, None, 0, cu.NONE, id="one-due"),
    pytest.param(5, None, 0, cu.FEW, id="few-missed"),
    pytest.param(150, None, 0, cu.MANY, id="too-many"),
    pytest.param(150, 200, 0, cu.FEW, id="deadline-limits-the-look-back"),
])
def test_most_recent_schedule_time(created_minutes_ago, deadline, most_recent, missed):
    cj = {"metadata": {"name": "cj", "creationTimestamp": cu.rfc3339(T0 - dt.timedelta(minutes=created_minutes_ago))},
          "spec": {"startingDeadlineSeconds": deadline}, "status": {}}
    r = cu.most_recent_schedule_time(cj, T0, cu.parse_schedule("* * * * *"))
    assert r.missed == missed
    assert r.most_recent == (None if most_recent is None else T0 - dt.timedelta(minutes=most_recent))


def test_job_name_is_the_scheduled_minute():
    assert cu.job_name({"metadata": {"name": "hello"}}, T0) == f"hello-{int(T0.timestamp()) // 60}"


def test_scaled_clock_runs_faster_from_its_start():
    async def main():
        base = FakeClock(wall=T0)
        fast = cu.ScaledClock(base, 60, start=dt.datetime(2028, 2, 29, tzinfo=dt.UTC))
        fired = []
        fast.call_later(120, fired.append, "two minutes")
        base.step(1)
        assert fast.wall() == dt.datetime(2028, 2, 29, 0, 1, tzinfo=dt.UTC)
        assert fired == []
        base.step(1)
        assert fired == ["two minutes"]

    asyncio.run(main())
