"""Building blocks shared by the per-group printers: column definitions and cell helpers.

A `Printer` is a kind's column list plus a ``row(obj, now) -> list`` function
returning one cell per column, in order (wide columns included; kubectl hides
``priority: 1`` columns unless ``-o wide``). ``conditions(obj)`` optionally
returns metav1 ``TableRowCondition``s (pods use it to mark completed rows).

Column descriptions are upstream's API documentation, read from the OpenAPI
definitions in `kubeling.api.schema` when a column list is first rendered; a
column names its source as ``doc=(definition, property)`` or gives literal text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from kubeling.api import duration, labels

META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@functools.lru_cache(maxsize=None)
def _schema_doc(definition: str, prop: str) -> str:
    try:
        from kubeling.api import schema  # noqa: PLC0415 - loaded lazily; it reads a large file
        node = schema.get().defs.get(definition) or {}
    except Exception:  # noqa: BLE001 - a missing description must never break a listing
        return ""
    return ((node.get("properties") or {}).get(prop) or {}).get("description", "")


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    doc: str | tuple[str, str] = ""
    priority: int = 0
    format: str = ""

    @property
    def description(self) -> str:
        return _schema_doc(*self.doc) if isinstance(self.doc, tuple) else self.doc

    def to_dict(self) -> dict:
        """The metav1 ``TableColumnDefinition`` (all five fields, as the API server sends them)."""
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


NAME = Column("Name", format="name", doc=(META, "name"))
AGE = Column("Age", doc=(META, "creationTimestamp"))
CONTAINERS = Column("Containers", priority=1, doc="Names of each container in the template.")
IMAGES = Column("Images", priority=1, doc="Images referenced by each container in the template.")


def wide(col: Column) -> Column:
    return Column(col.name, col.type, col.doc, 1, col.format)


Row = Callable[[dict, datetime], list]


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    row: Row
    conditions: Callable[[dict], list] | None = None


# --- cell helpers ---------------------------------------------------------------------------------

def g(obj: Any, *path: str | int, default: Any = None) -> Any:
    """``obj[p0][p1]...`` with `default` for anything missing or null along the way."""
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
        if obj is None:
            return default
    return obj


def name(obj: dict) -> str:
    return g(obj, "metadata", "name", default="")


def age(obj: dict, now: datetime) -> str:
    return duration.since(g(obj, "metadata", "creationTimestamp"), now)


def since(ts: str | None, now: datetime) -> str:
    return duration.since(ts, now)


def deleting(obj: dict) -> bool:
    return bool(g(obj, "metadata", "deletionTimestamp"))


def container_cells(pod_spec: dict | None) -> tuple[str, str]:
    """Comma-joined container names and images of a pod template."""
    cs = g(pod_spec, "containers", default=[])
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def replicated_cells(o: dict, now, selector: str) -> list:
    """NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR: ReplicaSets and
    ReplicationControllers print alike; only how their selector is written differs."""
    names, images = container_cells(g(o, "spec", "template", "spec"))
    return [name(o), g(o, "spec", "replicas", default=0), g(o, "status", "replicas", default=0),
            g(o, "status", "readyReplicas", default=0), age(o, now), names, images, selector]


def format_labels(m: dict | None) -> str:
    return labels.format_labels(m)


def format_selector(sel: dict | None) -> str:
    return labels.format_label_selector(sel)


def selector_string(sel: dict | None) -> str:
    """``LabelSelectorAsSelector(sel).String()``: no ``<none>`` placeholder, ``<invalid>`` on error."""
    try:
        return str(labels.from_label_selector(sel))
    except labels.SelectorError:
        return "<invalid>"


def int_or_string(v: Any) -> str:
    return str(v)


def join_host_port(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def list_with_more(items: list[str], total: int, maximum: int = 3, empty: str = "<unset>") -> str:
    """Up to `maximum` items, then ``+ N more...``, as upstream's long-list columns."""
    shown = ",".join(items[:maximum])
    if total > maximum:
        return f"{shown} + {total - maximum} more..."
    return shown or empty


def bool_ptr(v: Any) -> str:
    """``printBoolPtr``: ``True``/``False``, ``<unset>`` for nil."""
    if v is None:
        return "<unset>"
    return "True" if v else "False"


def rfc3339(ts: str | None) -> str:
    """A timestamp re-rendered as upstream's ``Time.UTC().Format(RFC3339)`` (zero time if unset)."""
    t = duration.parse_time(ts)
    if t is None:
        return "0001-01-01T00:00:00Z"
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
