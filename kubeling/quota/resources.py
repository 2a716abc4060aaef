"""ResourceList arithmetic for quota (upstream's ``pkg/quota/v1/resources.go``).

A ResourceList here is ``{name: Decimal}``; `parse_list` reads the API's quantity strings and
`format_list` writes them back canonically. Names outside a list count as zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from kubeling.api import quantity

ResourceList = dict[str, Decimal]


def parse_list(rl: dict | None) -> ResourceList:
    out: ResourceList = {}
    for name, q in (rl or {}).items():
        try:
            out[name] = quantity._coerce(q).decimal
        except (ValueError, TypeError):
            continue
    return out


_BYTES = ("memory", "storage", "hugepages-")


def format_value(name: str, v: Decimal) -> str:
    """Byte quantities that are whole KiB print binary (``1Gi``), the rest decimal (``500m``)."""
    if any(b in name for b in _BYTES) and v == v.to_integral_value() and v % 1024 == 0 and v != 0:
        return quantity.format(v, quantity.BINARY_SI)
    return quantity.format(v)


def format_list(rl: ResourceList) -> dict[str, str]:
    return {name: format_value(name, v) for name, v in sorted(rl.items())}


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) + v
    return out


def subtract(a: ResourceList, b: ResourceList) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) - v
    return out


def mask(rl: ResourceList, names: Iterable[str]) -> ResourceList:
    names = set(names)
    return {k: v for k, v in rl.items() if k in names}


def exceeded(used: ResourceList, hard: ResourceList) -> list[str]:
    """Names in ``hard`` whose ``used`` is above the limit, sorted."""
    return sorted(k for k, limit in hard.items() if used.get(k, Decimal(0)) > limit)


def is_zero(rl: ResourceList) -> bool:
    return all(v == 0 for v in rl.values())


def pretty(rl: ResourceList) -> str:
    """``a=1,b=2Gi``: upstream's prettyPrint, sorted by name."""
    return ",".join(f"{k}={format_value(k, v)}" for k, v in sorted(rl.items()))
