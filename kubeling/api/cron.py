"""Cron schedules: standard five-field cron and the ``@yearly``/``@annually``/``@monthly``/
``@weekly``/``@daily``/``@midnight``/``@hourly`` descriptors (croniter), and robfig/cron's
``@every <Go duration>``, evaluated in a time zone. The CronJob controller reads ``spec.schedule``
with it, and the API server its ``--etcd-snapshot-schedule-cron``, as k3s reads it with the same
parser.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from croniter import croniter


class Schedule:
    """``next(t)``: the first schedule time strictly after the aware datetime ``t``. ``every`` is
    the ``@every`` interval as written (seconds); `next` takes at least 1 s, as robfig/cron does."""

    def __init__(self, expr: str, tz: dt.tzinfo) -> None:
        self.tz = tz
        self.expr = expr
        self.every: float | None = None
        if expr.startswith("@every "):
            from kubeling.api.protobuf.encode import parse_go_duration
            self.every = parse_go_duration(expr[len("@every "):].strip()) / 1e9
            return
        croniter(expr)  # raises on a bad expression

    def next(self, t: dt.datetime) -> dt.datetime:
        if self.every is not None:
            return t.replace(microsecond=0) + dt.timedelta(seconds=max(self.every, 1.0))
        return croniter(self.expr, t.astimezone(self.tz)).get_next(dt.datetime)


def time_zone(name: str | None) -> dt.tzinfo:
    """The zone named by ``spec.timeZone`` (UTC when unset); raises for an unknown name."""
    if not name:
        return dt.UTC
    return zoneinfo.ZoneInfo(name)


def parse_schedule(expr: str, tz: str | dt.tzinfo | None = None) -> Schedule:
    """A `Schedule` in ``tz`` (a zone name, a tzinfo, or UTC); ValueError for a bad expression,
    ZoneInfoNotFoundError for an unknown zone name."""
    zone = tz if isinstance(tz, dt.tzinfo) else time_zone(tz)
    try:
        return Schedule(expr.strip(), zone)
    except Exception as e:  # noqa: BLE001 - croniter raises several types for one user error
        raise ValueError(str(e) or "unparseable schedule") from None
