"""Small helpers the checks share (upstream ``policy/helpers.go`` and ``visitor.go``)."""

from __future__ import annotations

import json
from typing import Iterator


def visit_containers(spec: dict) -> Iterator[dict]:
    """Every container of a pod spec: init containers, containers, then ephemeral containers
    (upstream's visiting order, which is the order names appear in messages)."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or ():
            if isinstance(c, dict):
                yield c


def security_context(obj: dict) -> dict:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def name_of(c: dict) -> str:
    return str(c.get("name", ""))


def quote(s) -> str:
    """Go's %q for the strings that appear here."""
    return json.dumps(str(s), ensure_ascii=False)


def join_quote(items) -> str:
    return ", ".join(quote(i) for i in items)


def pluralize(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def containers_phrase(names: list[str]) -> str:
    """``container "a"`` / ``containers "a", "b"``."""
    return f'{pluralize("container", "containers", len(names))} {join_quote(names)}'


def is_windows_pod(spec: dict) -> bool:
    return ((spec.get("os") or {}).get("name")) == "windows"


def ordered_unique(items) -> list:
    seen, out = set(), []
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out
