"""Human durations as the AGE / DURATION columns show them (upstream duration.HumanDuration)."""

from datetime import datetime, timedelta, timezone

import pytest

from kubeling.api import duration

M, H, D, Y = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize("seconds, text", [
    pytest.param(-5, "<invalid>", id="future"),
    pytest.param(-1.5, "0s", id="small-skew"),
    pytest.param(0, "0s", id="zero"),
    pytest.param(5, "5s", id="seconds"),
    pytest.param(119, "119s", id="under-two-minutes"),
    pytest.param(2 * M, "2m", id="two-minutes"),
    pytest.param(3 * M + 2, "3m2s", id="minutes-seconds"),
    pytest.param(9 * M + 59, "9m59s", id="under-ten-minutes"),
    pytest.param(10 * M + 30, "10m", id="ten-minutes-drops-seconds"),
    pytest.param(179 * M, "179m", id="under-three-hours"),
    pytest.param(3 * H, "3h", id="three-hours"),
    pytest.param(5 * H + 30 * M, "5h30m", id="hours-minutes"),
    pytest.param(8 * H + 30 * M, "8h", id="eight-hours-drops-minutes"),
    pytest.param(47 * H, "47h", id="under-two-days"),
    pytest.param(2 * D + 3 * H, "2d3h", id="days-hours"),
    pytest.param(7 * D, "7d", id="whole-days"),
    pytest.param(45 * D + 5 * H, "45d", id="days"),
    pytest.param(2 * Y + 30 * D, "2y30d", id="years-days"),
    pytest.param(3 * Y, "3y", id="whole-years"),
    pytest.param(9 * Y + 100 * D, "9y", id="many-years"),
])
def test_human(seconds, text):
    assert duration.human(seconds) == text
    assert duration.human(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("seconds, text", [
    pytest.param(-3, "<invalid>", id="future"),
    pytest.param(59, "59s", id="seconds"),
    pytest.param(90, "1m", id="minutes"),
    pytest.param(5 * H + 59 * M, "5h", id="hours"),
    pytest.param(400 * D, "1y", id="years"),
])
def test_short(seconds, text):
    assert duration.short(seconds) == text


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("ts, text", [
    pytest.param("2024-05-01T11:55:00Z", "5m", id="rfc3339"),
    pytest.param("2024-05-01T11:59:30.123456Z", "29s", id="micro-time"),
    pytest.param("2024-05-01T13:55:00+02:00", "5m", id="offset"),
    pytest.param(None, "<unknown>", id="unset"),
    pytest.param("garbage", "<unknown>", id="unparseable"),
])
def test_since(ts, text):
    assert duration.since(ts, NOW) == text


def test_between():
    assert duration.between("2024-05-01T10:00:00Z", "2024-05-01T10:01:02Z") == "62s"
    assert duration.between(None, "2024-05-01T10:01:02Z") == ""
