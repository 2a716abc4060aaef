"""Resource names and quantities: container requests/limits, quotas, limit ranges.

Quantities are parsed with `kubeling.api.quantity.parse` when that module exists;
until then (it is being written in parallel) a private parser with the same
grammar is used, so that validation does not depend on import order.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from kubeling.api.errors import FieldError, invalid_value
from kubeling.api.validation import util

QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

_QTY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}

STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _private_parse(s: str) -> Decimal:
    m = _QTY.match(s.strip())
    if not m:
        raise ValueError(QUANTITY_MSG)
    number, suffix = m.groups()
    try:
        n = Decimal(number)
    except InvalidOperation:
        raise ValueError(QUANTITY_MSG) from None
    if suffix in _BINARY:
        return n * _BINARY[suffix]
    if suffix in _DECIMAL:
        return n * _DECIMAL[suffix]
    if suffix[:1] in ("e", "E") and re.fullmatch(r"[-+]?[0-9]+", suffix[1:]):
        return n * (Decimal(10) ** int(suffix[1:]))
    raise ValueError("unable to parse quantity's suffix")


def parse_quantity(value: Any) -> Decimal:
    """A Quantity (string or JSON number) as a Decimal; ValueError when it does not parse."""
    if isinstance(value, bool):
        raise ValueError(QUANTITY_MSG)
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(QUANTITY_MSG)
    try:
        from kubeling.api import quantity  # written in parallel; fall back until it lands
    except ImportError:
        return _private_parse(value)
    try:
        return Decimal(quantity.parse(value))
    except Exception as e:  # its own error type: normalise to ValueError for callers
        raise ValueError(str(e) or QUANTITY_MSG) from None


def quantity(value: Any, path: str, *, nonneg: bool = True) -> tuple[Decimal | None, list[FieldError]]:
    try:
        q = parse_quantity(value)
    except ValueError as e:
        return None, [invalid_value(path, value, str(e))]
    if nonneg and q < 0:
        return q, [invalid_value(path, value, "must be greater than or equal to 0")]
    return q, []


def _is_extended(name: str) -> bool:
    return "/" in name and not name.startswith("kubernetes.io/") and not name.startswith("requests.")


def validate_resource_name(name: str, path: str, *, container: bool = False) -> list[FieldError]:
    errs = [invalid_value(path, name, m) for m in util.is_qualified_name(name)]
    if errs:
        return errs
    if container and "/" not in name and name not in STANDARD_CONTAINER_RESOURCES \
            and not name.startswith("hugepages-"):
        return [invalid_value(path, name, "must be a standard resource for containers")]
    return []


def validate_resource_list(rl: Any, path: str, *, container: bool = False) -> tuple[dict, list[FieldError]]:
    """Names and quantities of a ResourceList; returns the parsed quantities too."""
    parsed: dict[str, Decimal] = {}
    errs: list[FieldError] = []
    for name, value in (rl or {}).items():
        p = f"{path}[{name}]"
        errs += validate_resource_name(name, p, container=container)
        q, qerrs = quantity(value, p)
        errs += qerrs
        if q is None:
            continue
        parsed[name] = q
        if container and _is_extended(name) and q != q.to_integral_value():
            errs.append(invalid_value(p, value, "must be an integer"))
    return parsed, errs


def validate_resource_requirements(res: Any, path: str) -> list[FieldError]:
    """Container resources: valid names/quantities, and every request at most its limit."""
    if not res:
        return []
    limits, errs = validate_resource_list(res.get("limits"), path + ".limits", container=True)
    requests, rerrs = validate_resource_list(res.get("requests"), path + ".requests", container=True)
    errs += rerrs
    for name, req in requests.items():
        lim = limits.get(name)
        if lim is not None and req > lim:
            errs.append(invalid_value(f"{path}.requests[{name}]", res["requests"][name],
                                      f"must be less than or equal to {name} limit of {res['limits'][name]}"))
    for name in requests:
        # Extended resources cannot be overcommitted: a request needs an equal limit.
        if _is_extended(name) and name in limits and requests[name] != limits[name]:
            errs.append(invalid_value(f"{path}.requests[{name}]", res["requests"][name],
                                      f"must be equal to {name} limit of {res['limits'][name]}"))
        elif _is_extended(name) and name not in limits:
            errs.append(invalid_value(f"{path}.limits", res.get("limits") or {},
                                      "Limit must be set for non overcommitable resources"))
    return errs
