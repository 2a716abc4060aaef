"""Human-readable durations, as kubectl shows them in AGE and DURATION columns.

`human` is upstream's ``duration.HumanDuration``: about two or three significant
figures ("45s", "3m2s", "15m", "4h", "5h30m", "2d3h", "45d", "3y120d", "9y").
`short` is ``duration.ShortHumanDuration`` (one unit: "45s", "3m", "4h", "2d", "3y").
`since(ts, now)` renders the time elapsed since an RFC 3339 timestamp, or
``"<unknown>"`` when there is none, as the printers' ``translateTimestampSince``.

Durations are `datetime.timedelta` or seconds (int/float). Both functions
tolerate up to two seconds of clock skew into the future ("0s") and call
anything further ahead ``"<invalid>"``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_MIN = 60
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR


def _seconds(d: timedelta | float | int) -> float:
    return d.total_seconds() if isinstance(d, timedelta) else float(d)


def _trunc(x: float) -> int:
    # Go's int(float) truncates toward zero; Python's int() does too.
    return int(x)


def human(d: timedelta | float | int) -> str:
    secs = _seconds(d)
    s = _trunc(secs)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 2 * _MIN:
        return f"{s}s"
    minutes = s // _MIN
    if minutes < 10:
        rem = s % _MIN
        return f"{minutes}m" if rem == 0 else f"{minutes}m{rem}s"
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = s // _HOUR
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h" if rem == 0 else f"{hours}h{rem}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d" if rem == 0 else f"{hours // 24}d{rem}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def short(d: timedelta | float | int) -> str:
    secs = _seconds(d)
    s = _trunc(secs)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < _MIN:
        return f"{s}s"
    if s < _HOUR:
        return f"{s // _MIN}m"
    if s < _DAY:
        return f"{s // _HOUR}h"
    if s < 365 * _DAY:
        return f"{s // _DAY}d"
    return f"{s // (365 * _DAY)}y"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 (``metav1.Time``) or micro-time string as an aware datetime; None if unset/bad."""
    if not value or not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def since(value: str | None, now: datetime | None = None) -> str:
    """``human(now - value)``, or ``"<unknown>"`` for a missing/zero timestamp."""
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human((now or utcnow()) - t)


def between(start: str | None, end: str | None) -> str:
    """``human(end - start)``; empty string when either is unset."""
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return ""
    return human(b - a)
