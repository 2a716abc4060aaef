"""Tables for custom resources (``additionalPrinterColumns``) and the default table.

Custom resources, as apiextensions-apiserver's table convertor:

- columns are NAME, then one per additionalPrinterColumn (name, type, format,
  priority; the description defaults to ``Custom resource definition column (in
  JSONPath format): <jsonPath>``). A CRD version without any gets a single
  ``Age`` column of type ``date`` on ``.metadata.creationTimestamp``; a version
  that lists columns gets no implicit AGE.
- each cell takes the first value the column's JSONPath selects, or None
  (``null``) when nothing matches. ``string`` columns print it as kubectl's
  JSONPath would (maps and lists as JSON); ``integer``/``number``/``boolean``
  keep JSON numbers/booleans of that type (else null); ``date`` turns an RFC 3339
  string into a human age ("5m"), ``<invalid>`` if it does not parse.

The default table (kinds with no printer upstream: Role, LimitRange, CRDs, ...)
is NAME and ``Created At`` (type ``date``), the latter an RFC 3339 UTC timestamp.
"""

from __future__ import annotations

from datetime import datetime

from kubeling.api import duration, jsonpath
from kubeling.api.printers.common import META, NAME, Column, Printer, name, rfc3339

AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _effective(additional_printer_columns: list[dict] | None) -> list[dict]:
    return list(additional_printer_columns or []) or [AGE_COLUMN]


def _column(apc: dict) -> Column:
    if apc is AGE_COLUMN:
        return Column("Age", "date", (META, "creationTimestamp"))
    desc = apc.get("description") or \
        f"Custom resource definition column (in JSONPath format): {apc.get('jsonPath', '')}"
    return Column(apc.get("name", ""), apc.get("type", "string"), desc, apc.get("priority", 0) or 0,
                  apc.get("format", "") or "")


def crd_columns(additional_printer_columns: list[dict] | None) -> list[dict]:
    """``TableColumnDefinition``s for a CRD version's additionalPrinterColumns."""
    return [NAME.to_dict()] + [_column(c).to_dict() for c in _effective(additional_printer_columns)]


def cell_for(col_type: str, value, now: datetime):
    """One cell of a typed column from a JSON value (None when the type does not fit)."""
    if value is None:
        return None
    if col_type == "string":
        return jsonpath.format_value(value)
    if col_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None
    if col_type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)
    if col_type == "boolean":
        return value if isinstance(value, bool) else None
    if col_type == "date":
        if not isinstance(value, str):
            return None
        if value == "":
            return "<unknown>"
        t = duration.parse_time(value)
        if t is None:
            return "<invalid>"
        return duration.human(now - t)
    return None


def crd_cells(additional_printer_columns: list[dict] | None, obj: dict, now: datetime | None = None) -> list:
    """One custom resource's row: its name, then each column's cell."""
    now = now or duration.utcnow()
    cells: list = [name(obj)]
    for apc in _effective(additional_printer_columns):
        try:
            found = jsonpath.evaluate(apc.get("jsonPath", ""), obj)
        except jsonpath.JSONPathError:
            found = []
        cells.append(cell_for(apc.get("type", "string"), found[0], now) if found else None)
    return cells


def crd_printer(additional_printer_columns: list[dict] | None) -> Printer:
    cols = tuple(_column(c) for c in _effective(additional_printer_columns))
    return Printer((NAME,) + cols, lambda o, now: crd_cells(additional_printer_columns, o, now))


DEFAULT = Printer(
    (NAME, Column("Created At", "date", (META, "creationTimestamp"))),
    lambda o, now: [name(o), rfc3339((o.get("metadata") or {}).get("creationTimestamp"))])
