"""Object validation with upstream field paths and messages.

    validate(obj, old=None, request_version=None) -> list[FieldError]

``obj`` has already been defaulted. The kind is taken from ``kind`` and from the
group of ``request_version`` (the apiVersion the client wrote through), or of the
object's ``apiVersion`` when that is not given. The two differ when the registry
validates an object already converted to its storage version: an events.k8s.io/v1
Event arrives as a core/v1 one, yet upstream validates it with events.k8s.io's
rules. Metadata (name rule per kind, namespace scope, labels, annotations,
finalizers, owner references) is checked here, then the kind's own rules from
its group module (`core`, `service`, `persistentvolume`, `apps`, `batch`,
`networking`, `rbac`, `other`, `events`, `apiextensions`). With ``old``, the update
rules run too (identity fields and each kind's immutable fields); without it, the
kind's create-only rules.

Unknown kinds (custom resources) get no errors here: their metadata is
checked with `validate_meta` and their body with `kubeling.api.structural`.
Errors are returned, never raised; the registry turns them into a 422.
"""

from __future__ import annotations

from kubeling.api.errors import FieldError
from kubeling.api.validation import (apiextensions, apps, batch, core, events, networking, other, persistentvolume,
                                     rbac, service)
from kubeling.api.validation.kind import Kind
from kubeling.api.validation.meta import (NameFn, name_is_dns_subdomain, validate_object_meta,
                                          validate_object_meta_update)

KINDS: dict[tuple[str, str], Kind] = {}
for _module in (core, service, persistentvolume, apps, batch, networking, rbac, other, events, apiextensions):
    KINDS.update(_module.KINDS)


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = (api_version or "").rpartition("/")
    return group, version


def kind_of(obj: dict, request_version: str | None = None) -> Kind | None:
    group, _ = split_api_version(request_version or obj.get("apiVersion", ""))
    if group in ("extensions",) and obj.get("kind") == "Deployment":
        group = "apps"  # the legacy Deployment group follows the apps rules
    return KINDS.get((group, obj.get("kind", "")))


def validate_meta(obj: dict, namespaced: bool, old: dict | None = None,
                  name_fn: NameFn = name_is_dns_subdomain) -> list[FieldError]:
    """Metadata alone: for custom resources, whose body the structural schema validates."""
    meta = obj.get("metadata")
    errs = validate_object_meta(meta, namespaced, name_fn)
    if old is not None and isinstance(meta, dict):
        errs += validate_object_meta_update(meta, old.get("metadata") or {})
    return errs


def validate(obj: dict, old: dict | None = None, request_version: str | None = None) -> list[FieldError]:
    kind = kind_of(obj, request_version)
    if kind is None:
        return []
    errs = validate_meta(obj, kind.namespaced, old, kind.name)
    errs += kind.create(obj)
    if old is None:
        errs += kind.create_only(obj)
    else:
        errs += kind.update(obj, old)
    return errs


__all__ = ["validate", "validate_meta", "kind_of", "KINDS", "FieldError"]
