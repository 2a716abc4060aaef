"""Server-side ``Table`` and ``PartialObjectMetadata`` responses (what ``kubectl get`` asks for).

Rows carry the object as PartialObjectMetadata by default (``includeObject=Metadata``),
the whole object with ``includeObject=Object``, or nothing with ``None``. A row whose
printer fails still appears, with ``<error>`` cells, so one odd object never breaks a list.
"""

from __future__ import annotations

import logging

from kubeling.api import errors, printers
from kubeling.apiserver.resources import Served

log = logging.getLogger(__name__)


def _columns(served: Served) -> list[dict]:
    if served.res.crd:
        return printers.crd_columns(list(served.printer_columns))
    return printers.columns(served.res)


def _cells(served: Served, obj: dict, ncols: int) -> list:
    try:
        if served.res.crd:
            return printers.crd_cells(list(served.printer_columns), obj)
        return printers.cells(served.res, obj)
    except Exception:  # noqa: BLE001 - a printer bug must not fail the whole list
        log.exception("printing %s %s", served.res.kind, obj.get("metadata", {}).get("name"))
        return [obj.get("metadata", {}).get("name", "")] + ["<error>"] * (ncols - 1)


def _meta_object(obj: dict, version: str) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version or 'v1'}",
            "metadata": obj.get("metadata", {})}


def table(served: Served, items: list[dict], resource_version: str, include_object: str = "Metadata",
          version: str = "v1", no_headers: bool = False) -> dict:
    if include_object not in ("None", "Metadata", "Object"):
        raise errors.bad_request(f'includeObject: Unsupported value: "{include_object}": supported values: '
                                 f'"Metadata", "None", "Object"')
    cols = _columns(served)
    rows = []
    for obj in items:
        row: dict = {"cells": _cells(served, obj, len(cols))}
        if not served.res.crd:
            conds = printers.row_conditions(served.res, obj)
            if conds:
                row["conditions"] = conds
        if include_object == "Metadata":
            row["object"] = _meta_object(obj, version)
        elif include_object == "Object":
            full = dict(obj)
            full.setdefault("apiVersion", served.res.group_version)
            full.setdefault("kind", served.res.kind)
            row["object"] = full
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version or 'v1'}",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": None if no_headers else cols, "rows": rows}


def partial_metadata(obj: dict, is_list: bool, version: str = "v1") -> dict:
    if is_list:
        return {"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{version or 'v1'}",
                "metadata": obj.get("metadata", {}),
                "items": [_meta_object(i, version) for i in obj.get("items", [])]}
    return _meta_object(obj, version)
