"""ObjectMeta, names, labels, annotations and label selectors, as apimachinery's
``pkg/api/validation`` and ``pkg/apis/meta/v1/validation``.

Also the small helpers every kind's validator shares (`immutable`, `nonneg`,
`selector_matches`). Every function returns ``list[FieldError]`` and never raises.
"""

from __future__ import annotations

from typing import Any, Callable

from kubeling.api.errors import FieldError, invalid_value, not_supported, required, too_long
from kubeling.api.validation import util


def forbidden(field: str, detail: str) -> FieldError:
    """A Forbidden field error (``errors.forbidden`` is shadowed by the StatusError constructor)."""
    return FieldError("Forbidden", field, detail)


TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
IMMUTABLE = "field is immutable"
NEGATIVE = "must be greater than or equal to 0"

NameFn = Callable[[str, bool], list[str]]


# --- name rules per kind --------------------------------------------------------------------------
# ``prefix`` is True for generateName: a trailing '-' is allowed there because a random suffix follows.

def _mask_dash(name: str, prefix: bool) -> str:
    return name[:-1] if prefix and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return util.is_dns1123_subdomain(_mask_dash(name, prefix))


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return util.is_dns1123_label(_mask_dash(name, prefix))


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return util.is_dns1035_label(_mask_dash(name, prefix))


def name_is_path_segment(name: str, prefix: bool) -> list[str]:
    if prefix:
        # A generated name gets a suffix, so only the "contains" rules apply to the prefix.
        return [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    return util.is_path_segment_name(name)


# --- shared helpers ---------------------------------------------------------------------------------

def immutable(new: Any, old: Any, path: str, detail: str = IMMUTABLE) -> list[FieldError]:
    return [] if new == old else [invalid_value(path, new, detail)]


def nonneg(value: Any, path: str) -> list[FieldError]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return [invalid_value(path, value, NEGATIVE)]
    return []


def positive(value: Any, path: str) -> list[FieldError]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
        return [invalid_value(path, value, "must be greater than 0")]
    return []


def dns_label(value: str, path: str) -> list[FieldError]:
    return [invalid_value(path, value, m) for m in util.is_dns1123_label(value)]


def dns_subdomain(value: str, path: str) -> list[FieldError]:
    return [invalid_value(path, value, m) for m in util.is_dns1123_subdomain(value)]


def qualified_name(value: str, path: str) -> list[FieldError]:
    return [invalid_value(path, value, m) for m in util.is_qualified_name(value)]


# --- labels, annotations, finalizers, owner references ----------------------------------------------

def validate_labels(labels: Any, path: str) -> list[FieldError]:
    if not labels:
        return []
    if not isinstance(labels, dict):
        return [invalid_value(path, labels, "must be a map of string keys to string values")]
    errs: list[FieldError] = []
    for k, v in labels.items():
        errs += [invalid_value(path, k, m) for m in util.is_qualified_name(k)]
        if not isinstance(v, str):
            errs.append(invalid_value(path, v, "label values must be strings"))
            continue
        errs += [invalid_value(path, v, m) for m in util.is_label_value(v)]
    return errs


def validate_annotations(annotations: Any, path: str) -> list[FieldError]:
    if not annotations:
        return []
    errs: list[FieldError] = []
    total = 0
    for k, v in annotations.items():
        # Upstream lower-cases keys before the check: annotation keys may hold capitals.
        errs += [invalid_value(path, k, m) for m in util.is_qualified_name(k.lower())]
        total += len(k) + len(v if isinstance(v, str) else str(v))
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(too_long(path, "", TOTAL_ANNOTATION_SIZE_LIMIT))
    return errs


def validate_finalizers(finalizers: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for f in finalizers or ():
        errs += [invalid_value(path, f, m) for m in util.is_qualified_name(f)]
    return errs


def validate_owner_references(refs: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    controllers = []
    for i, ref in enumerate(refs or ()):
        p = f"{path}[{i}]"
        gv = ref.get("apiVersion", "")
        if not gv:
            errs.append(invalid_value(p + ".apiVersion", gv, "version must not be empty"))
        elif gv.count("/") > 1:
            errs.append(invalid_value(p + ".apiVersion", gv, "invalid version"))
        for key, what in (("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                errs.append(invalid_value(f"{p}.{key}", ref.get(key, ""), f"{what} must not be empty"))
        if ref.get("controller"):
            controllers.append(f'{ref.get("kind", "")}/{ref.get("name", "")}')
    if len(controllers) > 1:
        errs.append(invalid_value(path, refs, "Only one reference can have Controller set to true. Found "
                                  f"\"true\" in references for {' and '.join(controllers)}"))
    return errs


# --- ObjectMeta ------------------------------------------------------------------------------------

def validate_object_meta(meta: Any, namespaced: bool, name_fn: NameFn = name_is_dns_subdomain,
                         path: str = "metadata") -> list[FieldError]:
    """ObjectMeta of a new object: name/generateName, namespace scope, labels, annotations, ..."""
    if not isinstance(meta, dict):
        return [required(path, "")]
    errs: list[FieldError] = []
    name, gen = meta.get("name") or "", meta.get("generateName") or ""
    if gen:
        errs += [invalid_value(path + ".generateName", gen, m) for m in name_fn(gen, True)]
    if not name:
        if not gen:
            errs.append(required(path + ".name", "name or generateName is required"))
    else:
        errs += [invalid_value(path + ".name", name, m) for m in name_fn(name, False)]
    ns = meta.get("namespace") or ""
    if namespaced:
        if not ns:
            errs.append(required(path + ".namespace", ""))
        else:
            errs += [invalid_value(path + ".namespace", ns, m) for m in util.is_dns1123_label(ns)]
    elif ns:
        errs.append(forbidden(path + ".namespace", "not allowed on this type"))
    errs += nonneg(meta.get("generation"), path + ".generation")
    errs += validate_labels(meta.get("labels"), path + ".labels")
    errs += validate_annotations(meta.get("annotations"), path + ".annotations")
    errs += validate_owner_references(meta.get("ownerReferences"), path + ".ownerReferences")
    errs += validate_finalizers(meta.get("finalizers"), path + ".finalizers")
    return errs


def validate_object_meta_update(new: dict, old: dict, path: str = "metadata") -> list[FieldError]:
    """The identity of an object never changes: name, namespace, uid, creationTimestamp."""
    errs: list[FieldError] = []
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        nv, ov = new.get(key), old.get(key)
        # An empty value in the request means "not sent": the registry fills it from the old object.
        if nv in (None, "") or ov in (None, ""):
            continue
        errs += immutable(nv, ov, f"{path}.{key}")
    return errs


def validate_template_meta(meta: Any, path: str) -> list[FieldError]:
    """The metadata of a pod template: only labels and annotations matter."""
    meta = meta or {}
    return validate_labels(meta.get("labels"), path + ".labels") + \
        validate_annotations(meta.get("annotations"), path + ".annotations")


# --- label selectors --------------------------------------------------------------------------------

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(sel: Any, path: str) -> list[FieldError]:
    if sel is None:
        return []
    errs = validate_labels(sel.get("matchLabels"), path + ".matchLabels")
    for i, req in enumerate(sel.get("matchExpressions") or ()):
        p = f"{path}.matchExpressions[{i}]"
        op, values = req.get("operator", ""), req.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                errs.append(required(p + ".values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(forbidden(p + ".values", "may not be specified when `operator` is 'Exists' or "
                                      "'DoesNotExist'"))
        else:
            errs.append(invalid_value(p + ".operator", op, "not a valid selector operator"))
        errs += [invalid_value(p + ".key", req.get("key", ""), m) for m in util.is_qualified_name(req.get("key", ""))]
        for j, v in enumerate(values):
            errs += [invalid_value(f"{p}.values[{j}]", v, m) for m in util.is_label_value(v)]
    return errs


def selector_is_empty(sel: Any) -> bool:
    return not sel or (not sel.get("matchLabels") and not sel.get("matchExpressions"))


def selector_matches(sel: dict, labels: dict | None) -> bool:
    """Whether a metav1.LabelSelector selects these labels (an empty selector selects everything)."""
    labels = labels or {}
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in sel.get("matchExpressions") or ():
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def enum(value: Any, path: str, allowed: tuple[str, ...] | list[str], optional: bool = True) -> list[FieldError]:
    """A field with a fixed set of values: Required when empty (unless optional), else NotSupported."""
    if value in (None, ""):
        return [] if optional else [required(path, "")]
    return [] if value in allowed else [not_supported(path, value, list(allowed))]
