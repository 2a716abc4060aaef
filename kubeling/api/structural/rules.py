"""Is a CRD schema structural? (apiextensions.k8s.io/v1 requires it.)

A structural schema says what every field *is* (a ``type`` on every node,
except where ``x-kubernetes-int-or-string`` or
``x-kubernetes-preserve-unknown-fields`` stand in), keeps ``properties`` and
``additionalProperties`` apart, and uses ``allOf``/``anyOf``/``oneOf``/``not``
only for value validation (no types, defaults or extensions inside them).
That is what makes pruning and defaulting well defined.

Paths look like upstream's: ``<base>.properties[spec].properties[replicas].type``.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, invalid_value, required


def forbidden(field: str, detail: str) -> FieldError:
    """A Forbidden field error (``errors.forbidden`` is shadowed by the StatusError constructor)."""
    return FieldError("Forbidden", field, detail)


TYPES = ("array", "boolean", "integer", "number", "object", "string")
COMBINATORS = ("allOf", "anyOf", "oneOf")
# Inside a value-validation branch, these would change what a field *is*.
NOT_IN_VALUE_VALIDATION = ("type", "default", "additionalProperties", "nullable",
                           "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
                           "x-kubernetes-int-or-string")
METADATA_ALLOWED = ("name", "generateName")


def _value_validation(node: Any, path: str, errs: list[FieldError]) -> None:
    if not isinstance(node, dict):
        return
    for key in NOT_IN_VALUE_VALIDATION:
        if key in node:
            errs.append(forbidden(f"{path}.{key}", "must be empty to be structural"))
    for k, sub in (node.get("properties") or {}).items():
        _value_validation(sub, f"{path}.properties[{k}]", errs)
    if isinstance(node.get("items"), dict):
        _value_validation(node["items"], f"{path}.items", errs)
    for comb in COMBINATORS:
        for i, sub in enumerate(node.get(comb) or ()):
            _value_validation(sub, f"{path}.{comb}[{i}]", errs)
    if isinstance(node.get("not"), dict):
        _value_validation(node["not"], f"{path}.not", errs)


def _node(node: Any, path: str, errs: list[FieldError], *, where: str) -> None:
    if not isinstance(node, dict):
        errs.append(invalid_value(path, node, "must be an object"))
        return
    t = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "$ref" in node:
        errs.append(forbidden(path + ".$ref", "$ref is not supported"))
    if preserve is False:
        errs.append(invalid_value(path + ".x-kubernetes-preserve-unknown-fields", False, "must be true or undefined"))
    if int_or_string and t:
        errs.append(forbidden(path + ".type", "must be empty if x-kubernetes-int-or-string is true"))
    elif not t and not int_or_string and not preserve:
        errs.append(required(path + ".type", f"must not be empty for specified {where}"))
    elif t and t not in TYPES:
        errs.append(invalid_value(path + ".type", t, "must be one of " + ", ".join(TYPES)))
    if node.get("x-kubernetes-embedded-resource") and t != "object":
        errs.append(invalid_value(path + ".type", t, "must be object if x-kubernetes-embedded-resource is true"))
    props, addl = node.get("properties"), node.get("additionalProperties")
    if props and addl is not None and addl is not False:
        errs.append(forbidden(path + ".additionalProperties", "additionalProperties and properties are mutual "
                                                               "exclusive"))
    for k, sub in (props or {}).items():
        _node(sub, f"{path}.properties[{k}]", errs, where="object fields")
    if isinstance(addl, dict):
        _node(addl, f"{path}.additionalProperties", errs, where="object fields")
    items = node.get("items")
    if isinstance(items, dict):
        _node(items, f"{path}.items", errs, where="array items")
    elif t == "array":
        errs.append(required(path + ".items", "must be specified"))
    for comb in COMBINATORS:
        for i, sub in enumerate(node.get(comb) or ()):
            _value_validation(sub, f"{path}.{comb}[{i}]", errs)
    if isinstance(node.get("not"), dict):
        _value_validation(node["not"], f"{path}.not", errs)


def is_structural(node: Any, path: str = "") -> list[FieldError]:
    """Errors that make a CRD's openAPIV3Schema non-structural (empty when it is structural)."""
    errs: list[FieldError] = []
    if not isinstance(node, dict):
        return [required(path, "")]
    t = node.get("type")
    if not t:
        errs.append(required(path + ".type", "must not be empty at the root"))
    elif t != "object":
        errs.append(invalid_value(path + ".type", t, "must be object at the root"))
    meta = (node.get("properties") or {}).get("metadata")
    if isinstance(meta, dict):
        extra = set(meta) - {"type", "properties", "description"}
        bad_props = set(meta.get("properties") or {}) - set(METADATA_ALLOWED)
        if extra or bad_props or meta.get("type") not in (None, "object"):
            errs.append(forbidden(path + ".properties[metadata]", "must not specify anything other than name and "
                                  "generateName, but metadata is implicitly specified"))
    errs_before = len(errs)
    _node(node, path, errs, where="object fields")
    # The root's own missing type was already reported with the root's wording.
    return errs[:errs_before] + [e for e in errs[errs_before:]
                                 if not (e.field == path + ".type" and e.kind == "Required")]
