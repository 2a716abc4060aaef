"""Small helpers shared by the per-group defaulters.

Go decides "unset" by the zero value of a field's type, and JSON ``null`` decodes to
that zero value. So, for a defaulter:

- a pointer field (``*int32``, ``*bool``, ``*string``, ``*Struct``) is unset when it
  is missing or ``None`` -> `set_ptr`;
- a plain string / integer field is unset when it is missing, ``None``, ``""`` or
  ``0`` -> `set_zero`;
- a map or slice is "empty" when missing, ``None`` or of length 0.

Input has not necessarily been type-checked yet, so every walker tolerates wrong
types by skipping them (validation reports them; defaulting must never crash).
"""

from __future__ import annotations

from typing import Any, Iterator

from kubeling.api import quantity


def set_ptr(d: dict, key: str, value: Any) -> None:
    """Default a pointer-typed field: only when missing or null."""
    if d.get(key) is None:
        d[key] = value


def set_zero(d: dict, key: str, value: Any) -> None:
    """Default a value-typed field: when missing, null, "" or 0 (Go's zero value)."""
    v = d.get(key)
    if v is None or v == "" or (v == 0 and not isinstance(v, bool) and isinstance(v, (int, float))):
        d[key] = value


def child(d: Any, key: str, create: bool = False) -> dict | None:
    """``d[key]`` when it is an object; with ``create``, an empty one is made when
    missing or null (Go's value-typed structs always exist). None for wrong types."""
    if not isinstance(d, dict):
        return None
    v = d.get(key)
    if v is None and create:
        v = d[key] = {}
    return v if isinstance(v, dict) else None


def dicts(d: Any, key: str) -> Iterator[dict]:
    """The object items of the list ``d[key]`` (skipping anything malformed)."""
    if isinstance(d, dict):
        v = d.get(key)
        if isinstance(v, list):
            for item in v:
                if isinstance(item, dict):
                    yield item


def is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, (dict, list, str)) and len(v) == 0)


def resource_list(d: Any, key: str) -> None:
    """core/v1 ``SetDefaults_ResourceList``: round every quantity up to milli precision.

    The value is also rewritten in canonical form, which is what the apiserver
    echoes after decoding into ``resource.Quantity``. Malformed quantities are
    left alone for validation to report.
    """
    rl = child(d, key)
    if not rl:
        return
    for name, value in list(rl.items()):
        try:
            rl[name] = quantity.round_up_milli(value)
        except (ValueError, TypeError):
            pass
