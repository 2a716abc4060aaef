"""The usual subresource tables of a strategy: ``status`` (and ``scale``)."""

from __future__ import annotations

from kubeling.apiserver.registry.scale import ScaleREST
from kubeling.apiserver.registry.status import StatusREST


def status_subresources(*extra: str) -> dict[str, type]:
    """``{"status": StatusREST}``, plus ``"scale": ScaleREST`` when asked."""
    table: dict[str, type] = {"status": StatusREST}
    if "scale" in extra:
        table["scale"] = ScaleREST
    return table
