"""Server-side ``Table`` and ``PartialObjectMetadata`` responses (what ``kubectl get`` asks for).

The Table comes from the resource's printer (its strategy's `printer_for`, which for a custom
resource prints the CRD's ``additionalPrinterColumns``). Rows carry the object as
PartialObjectMetadata by default (``includeObject=Metadata``), the whole object with
``includeObject=Object``, or nothing with ``None``.
"""

from __future__ import annotations

from kubeling.api import errors, printers
from kubeling.apiserver.resources import Served


def table(served: Served, items: list[dict], resource_version: str, include_object: str = "Metadata",
          version: str = "v1") -> dict:
    if include_object not in ("None", "Metadata", "Object"):
        raise errors.bad_request(f'includeObject: Unsupported value: "{include_object}": supported values: '
                                 f'"Metadata", "None", "Object"')
    if include_object == "Object":
        items = [{**o, "apiVersion": o.get("apiVersion") or served.res.group_version,
                  "kind": o.get("kind") or served.res.kind} for o in items]
    return printers.table(served.strategy.printer_for(served), items, include_object,
                          resource_version=resource_version, version=version or "v1")


def partial_metadata(obj: dict, is_list: bool, version: str = "v1") -> dict:
    if is_list:
        return {"kind": "PartialObjectMetadataList", "apiVersion": f"meta.k8s.io/{version or 'v1'}",
                "metadata": obj.get("metadata", {}),
                "items": [printers.partial_object_metadata(i, version) for i in obj.get("items", [])]}
    return printers.partial_object_metadata(obj, version)
