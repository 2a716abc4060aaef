"""Server-side printing: the metav1 ``Table`` that ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
the columns it gets back, so the columns and cell strings here follow upstream's
printers (``pkg/printers/internalversion``) kind by kind:

- `columns(res)` — ``TableColumnDefinition``s (``name``, ``type``, ``format``,
  ``description``, ``priority``; priority 1 columns appear only with ``-o wide``);
- `cells(res, obj, now)` — one row's cells, in column order (wide ones included);
- `row_conditions(res, obj)` — ``TableRowCondition``s (finished pods are "Completed");
- `table(res, objs, ...)` — the whole ``Table`` object, rows carrying a
  ``PartialObjectMetadata`` (``include_object="Metadata"``, kubectl's default), the
  full object (``"Object"``) or nothing (``"None"``).

Lookup is by ``(group, kind)``; the registry is the explicit `REGISTRY` dict
merged from one module per API group. A kind without a printer gets `DEFAULT`
(NAME, CREATED AT), as upstream. A custom resource (``res.crd``) is printed from
its CRD version's ``additionalPrinterColumns``, which the CRD registry passes in
``res.extra["additionalPrinterColumns"]``; `crd_columns` / `crd_cells` take them
directly. Every function is pure: `now` (an aware datetime, default: the current
time) is the only clock, so tests pin it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from kubeling.api import duration
from kubeling.api.kinds import Resource
from kubeling.api.printers import apps, batch, core, crd, other
from kubeling.api.printers.common import Column, Printer
from kubeling.api.printers.crd import DEFAULT, crd_cells, crd_columns

log = logging.getLogger(__name__)

__all__ = ["Column", "Printer", "REGISTRY", "DEFAULT", "printer_for", "columns", "cells", "row_conditions",
           "crd_columns", "crd_cells", "table", "partial_object_metadata"]

REGISTRY: dict[tuple[str, str], Printer] = {
    **core.PRINTERS,
    **apps.PRINTERS,
    **batch.PRINTERS,
    **other.PRINTERS,
}


def printer_for(res: Resource) -> Printer:
    """The printer for a resource: its CRD columns, its kind's printer, or `DEFAULT`."""
    if res.crd:
        return crd.crd_printer(res.extra.get("additionalPrinterColumns"))
    return REGISTRY.get((res.group, res.kind), DEFAULT)


def columns(res: Resource) -> list[dict]:
    return [c.to_dict() for c in printer_for(res).columns]


def cells(res: Resource, obj: dict, now: datetime | None = None) -> list:
    return printer_for(res).row(obj, now or duration.utcnow())


def row_conditions(res: Resource, obj: dict) -> list:
    p = printer_for(res)
    return p.conditions(obj) if p.conditions else []


def partial_object_metadata(obj: dict, version: str = "v1") -> dict:
    """What a Table row carries with ``includeObject=Metadata``."""
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version or 'v1'}",
            "metadata": obj.get("metadata") or {}}


def table(what: Resource | Printer, objs: list[dict], include_object: str = "Metadata",
          now: datetime | None = None, *, resource_version: str = "", continue_token: str = "",
          remaining_item_count: int | None = None, no_headers: bool = False, version: str = "v1") -> dict:
    """A complete ``meta.k8s.io/<version>`` Table for `objs` (a list response, or one object in a
    list), printed by `what` (a printer, or a resource whose printer is looked up).

    ``no_headers`` (``TableOptions.noHeaders``) leaves out the column definitions, as watches do
    after their first event. A row whose printer fails still appears, with ``<error>`` cells, so one
    odd object never breaks a list.
    """
    printer = what if isinstance(what, Printer) else printer_for(what)
    now = now or duration.utcnow()
    meta: dict = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    if remaining_item_count is not None:
        meta["remainingItemCount"] = remaining_item_count
    rows = []
    for obj in objs:
        row: dict = {"cells": _cells(printer, obj, now)}
        conds = printer.conditions(obj) if printer.conditions else []
        if conds:
            row["conditions"] = conds
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_object_metadata(obj, version)
        rows.append(row)
    out = {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": meta}
    # Upstream serializes the omitted definitions as null (a nil slice), not as a missing key.
    out["columnDefinitions"] = None if no_headers else [c.to_dict() for c in printer.columns]
    out["rows"] = rows
    return out


def _cells(printer: Printer, obj: dict, now: datetime) -> list:
    try:
        return printer.row(obj, now)
    except Exception:  # noqa: BLE001 - a printer bug must not fail the whole list
        log.exception("printing %s", (obj.get("metadata") or {}).get("name"))
        return [(obj.get("metadata") or {}).get("name", "")] + ["<error>"] * (len(printer.columns) - 1)
