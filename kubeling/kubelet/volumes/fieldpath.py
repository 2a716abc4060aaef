"""The downward API's values (upstream's ``pkg/fieldpath`` and ``api/v1/resource``), shared by the
``downwardAPI``/``projected`` volumes and by container env.

- `pod_field(pod, path)`: ``metadata.name|namespace|uid|labels|annotations`` and
  ``metadata.labels['k']``/``metadata.annotations['k']`` (a missing key is ""). Whole maps are
  written one ``key="value"`` line per key, sorted, values quoted as Go's ``%q`` does.
- `container_resource(container, resource, divisor, allocatable)`: ``limits|requests`` of
  ``cpu|memory|ephemeral-storage``, divided by ``divisor`` (default "1") and rounded up, as
  upstream: cpu in millicores over the divisor's millicores, the others in units. A missing
  limit falls back to the node's allocatable (upstream's ``defaultPodLimitsForDownwardAPI``);
  a missing request is 0.
- Failures raise `FieldPathError` with upstream's wording.
"""

from __future__ import annotations

import re

from kubeling.api import quantity


class FieldPathError(ValueError):
    pass


_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")
_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def go_quote(s: str) -> str:
    """``fmt.Sprintf("%q", s)`` for the strings labels and annotations hold."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(m: dict[str, str]) -> str:
    return "\n".join(f"{k}={go_quote(str(m[k]))}" for k in sorted(m))


def pod_field(pod: dict, path: str) -> str:
    """The value of a ``metadata.*`` fieldRef (see the module docstring)."""
    meta = pod.get("metadata") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        which = m.group(1).split(".")[1]
        return str((meta.get(which) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1]) or {})
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".")[1]) or "")
    raise FieldPathError(f"unsupported fieldPath: {path}")


def _find_container(pod: dict, name: str) -> dict | None:
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or ():
            if c.get("name") == name:
                return c
    return None


def container_resource(container: dict, resource: str, divisor: str | int | None,
                       allocatable: dict) -> str:
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in _RESOURCES:
        raise FieldPathError(f"unsupported container resource : {resource}")
    values = (container.get("resources") or {}).get(kind) or {}
    raw = values.get(name)
    if raw is None and kind == "limits":
        raw = allocatable.get(name)
    raw = "0" if raw is None else raw
    div = divisor if divisor not in (None, "", 0, "0") else "1"
    try:
        if name == "cpu":
            return str(_ceil_div(quantity.milli_value(raw), quantity.milli_value(div)))
        return str(_ceil_div(quantity.value(raw), quantity.value(div)))
    except (ValueError, ZeroDivisionError) as e:
        raise FieldPathError(f"invalid quantity for {resource}: {e}") from None


def _ceil_div(a: int, b: int) -> int:
    # Integers, not floats: a byte count of a large memory limit stays exact.
    return -(-a // b)


def resource_for_pod(pod: dict, container_name: str, resource: str, divisor: str | int | None,
                     allocatable: dict) -> str:
    """A volume item's ``resourceFieldRef``: the named container's resource."""
    container = _find_container(pod, container_name)
    if container is None:
        raise FieldPathError(f"container {container_name} not found")
    return container_resource(container, resource, divisor, allocatable)
