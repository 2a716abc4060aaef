"""How one kind is validated: its name rule, its create checks and its update checks.

Each group module exposes ``KINDS: dict[(group, kind), Kind]``; the package
`__init__` merges them. Metadata (name, namespace, labels, ...) is checked by
the package itself, using ``name`` and the kind's scope, so a Kind's
``create``/``update``/``create_only`` look at the rest of the object only.

On create the package runs ``create`` then ``create_only``; on update it runs
``create`` on the new object, then ``update(new, old)``. ``create_only`` holds the
rules upstream applies to new objects alone (events.k8s.io's strict Event rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kubeling.api.errors import FieldError
from kubeling.api.validation.meta import NameFn, name_is_dns_subdomain

Check = Callable[[dict], list[FieldError]]
UpdateCheck = Callable[[dict, dict], list[FieldError]]


def _nothing(*_args) -> list[FieldError]:
    return []


@dataclass(frozen=True)
class Kind:
    create: Check = _nothing
    # Extra rules for an update, run after ``create`` on the new object.
    update: UpdateCheck = _nothing
    name: NameFn = name_is_dns_subdomain
    namespaced: bool = True
    # Rules for a new object only, run after ``create``.
    create_only: Check = _nothing
