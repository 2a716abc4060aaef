"""Field selectors: ``fieldSelector=`` parsing, per-kind selectable fields, and label checks.

Syntax (apimachinery ``fields.ParseSelector``): terms joined by ``,`` (AND), each
``field=value``, ``field==value`` or ``field!=value``. In a value, ``\\``, ``,``
and ``=`` must be escaped with a backslash; any other escape is an error.
A field that an object does not have compares as ``""``.

`object_fields(res, obj)` is a kind's ``GetAttrs``: the string values the
registry matches selectors against (``metadata.name``, ``metadata.namespace``
for namespaced kinds, plus the kind's own fields: ``spec.nodeName`` for pods,
``involvedObject.name`` for events, ...). A custom resource also exposes the
``selectableFields`` of its CRD version, which the CRD registry passes in
``res.extra["selectableFields"]`` (a list of ``{"jsonPath": ".spec.x"}``).

`validate(res, selector)` is the field-label conversion the API server runs
before listing: it raises a 400 `StatusError` for a field the kind does not
support, with upstream's wording (``field label not supported: x`` for kinds
with their own conversion, ``"x" is not a known field selector: only
"metadata.name", "metadata.namespace"`` for the rest), and returns the selector
with deprecated labels renamed (pods' ``spec.host`` → ``spec.nodeName``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kubeling.api import errors
from kubeling.api.kinds import Resource

__all__ = ["SelectorError", "Term", "FieldSelector", "EVERYTHING", "parse", "escape_value", "unescape_value",
           "object_fields", "supported_fields", "validate"]


class SelectorError(ValueError):
    """A field selector that does not parse; ``str()`` is upstream's message."""


@dataclass(frozen=True)
class Term:
    field: str
    op: str  # "=" (also for "==") or "!="
    value: str

    def matches(self, fields: dict) -> bool:
        have = fields.get(self.field, "")
        return have == self.value if self.op == "=" else have != self.value

    def __str__(self) -> str:
        return f"{self.field}{self.op}{escape_value(self.value)}"


class FieldSelector:
    """An AND of `Term`s; the empty selector matches everything."""

    __slots__ = ("terms",)

    def __init__(self, terms=()) -> None:
        self.terms: tuple[Term, ...] = tuple(terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, fields: dict | None) -> bool:
        fields = fields or {}
        return all(t.matches(fields) for t in self.terms)

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal, if one ``field=value`` term pins it (used for indexes)."""
        for t in self.terms:
            if t.field == field and t.op == "=":
                return t.value
        return None

    def fields(self) -> list[str]:
        return [t.field for t in self.terms]

    def transform(self, fn: Callable[[str, str], tuple[str, str]]) -> "FieldSelector":
        """Rewrite every ``(field, value)`` with `fn` (upstream's ``Selector.Transform``)."""
        out = []
        for t in self.terms:
            f, v = fn(t.field, t.value)
            out.append(Term(f, t.op, v))
        return FieldSelector(out)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSelector) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(self.terms)


EVERYTHING = FieldSelector()


def escape_value(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(s: str) -> str:
    if not any(c in s for c in "\\,="):
        return s
    out: list[str] = []
    in_slash = False
    for c in s:
        if in_slash:
            if c not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c in ",=":
            # Upstream prints the rune with %v, i.e. as its code point.
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(s: str) -> list[str]:
    """Split on commas that are not escaped; escapes stay in place for `unescape_value`."""
    terms, start, in_slash = [], 0, False
    for i, c in enumerate(s):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(s[start:i])
            start = i + 1
    terms.append(s[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # The leftmost operator wins; at one position "!=" and "==" are tried before "=".
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def parse(s: str | None) -> FieldSelector:
    """Parse a ``fieldSelector`` query string; raises `SelectorError` with upstream's message."""
    if not s:
        return EVERYTHING
    terms = []
    for part in sorted(_split_terms(s)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{part}'")
        lhs, op, rhs = split
        terms.append(Term(lhs, "!=" if op == "!=" else "=", unescape_value(rhs)))
    return FieldSelector(terms)


# --- selectable fields per kind ------------------------------------------------------------------

def _g(obj: dict, *path, default=None):
    for p in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(p)
    return default if obj is None else obj


def _s(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _pod(obj: dict) -> dict:
    ips = _g(obj, "status", "podIPs", default=[])
    return {
        "spec.nodeName": _s(_g(obj, "spec", "nodeName")),
        "spec.restartPolicy": _s(_g(obj, "spec", "restartPolicy")),
        "spec.schedulerName": _s(_g(obj, "spec", "schedulerName")),
        "spec.serviceAccountName": _s(_g(obj, "spec", "serviceAccountName")),
        "spec.hostNetwork": _s(bool(_g(obj, "spec", "hostNetwork", default=False))),
        "status.phase": _s(_g(obj, "status", "phase")),
        # Upstream selects on the primary IP only; "status.podIPs" is an accepted label
        # that no pod carries, so it only ever matches "".
        "status.podIP": _s(ips[0].get("ip") if ips else _g(obj, "status", "podIP")),
        "status.nominatedNodeName": _s(_g(obj, "status", "nominatedNodeName")),
    }


def _event(obj: dict) -> dict:
    # Accepts both core/v1 and events.k8s.io/v1 shapes (they share storage).
    inv = obj.get("involvedObject") or obj.get("regarding") or {}
    src = obj.get("source") or obj.get("deprecatedSource") or {}
    reporting = obj.get("reportingComponent") or obj.get("reportingController") or ""
    return {
        "involvedObject.kind": _s(inv.get("kind")),
        "involvedObject.namespace": _s(inv.get("namespace")),
        "involvedObject.name": _s(inv.get("name")),
        "involvedObject.uid": _s(inv.get("uid")),
        "involvedObject.apiVersion": _s(inv.get("apiVersion")),
        "involvedObject.resourceVersion": _s(inv.get("resourceVersion")),
        "involvedObject.fieldPath": _s(inv.get("fieldPath")),
        "reason": _s(obj.get("reason")),
        "reportingComponent": _s(reporting),
        "source": _s(src.get("component") or reporting),
        "type": _s(obj.get("type")),
    }


_EVENT_LABELS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                 "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                 "reason", "reportingComponent", "source", "type", "metadata.namespace", "metadata.name")

@dataclass(frozen=True)
class KindFields:
    """A kind's selectable fields: ``attrs(obj)`` gives the values beyond metadata.name/namespace,
    ``labels`` the field labels its conversion accepts, ``renames`` the deprecated labels it maps."""

    attrs: Callable[[dict], dict]
    labels: tuple[str, ...]
    renames: dict = field(default_factory=dict)


_NS_NAME = ("metadata.name", "metadata.namespace")

POD = KindFields(_pod, ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                        "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                        "status.podIP", "status.podIPs", "status.nominatedNodeName"),
                 {"spec.host": "spec.nodeName"})
NODE = KindFields(lambda o: {"spec.unschedulable": _s(bool(_g(o, "spec", "unschedulable", default=False)))},
                  ("metadata.name", "spec.unschedulable"))
REPLICAS = KindFields(lambda o: {"status.replicas": _s(_g(o, "status", "replicas", default=0))},
                      _NS_NAME + ("status.replicas",))
EVENT = KindFields(_event, _EVENT_LABELS)
NAMESPACE = KindFields(lambda o: {"status.phase": _s(_g(o, "status", "phase"))}, ("status.phase", "metadata.name"))
SECRET = KindFields(lambda o: {"type": _s(o.get("type"))}, ("type",) + _NS_NAME)
SERVICE = KindFields(lambda o: {"spec.clusterIP": _s(_g(o, "spec", "clusterIP")), "spec.type": _s(_g(o, "spec", "type"))},
                     _NS_NAME + ("spec.clusterIP", "spec.type"))
JOB = KindFields(lambda o: {"status.successful": _s(_g(o, "status", "succeeded", default=0))},
                 _NS_NAME + ("status.successful",))

# (group, kind) -> fields, for the pure helpers below. Kinds not listed accept only
# metadata.name/metadata.namespace (upstream's default conversion). The API server reads the
# same constants through each resource's strategy.
_KINDS: dict[tuple[str, str], KindFields] = {
    ("", "Pod"): POD,
    ("", "Node"): NODE,
    ("", "ReplicationController"): REPLICAS,
    ("", "Event"): EVENT,
    ("events.k8s.io", "Event"): EVENT,
    ("", "Namespace"): NAMESPACE,
    ("", "Secret"): SECRET,
    ("", "Service"): SERVICE,
    ("apps", "ReplicaSet"): REPLICAS,
    ("batch", "Job"): JOB,
}


def as_string(v) -> str:
    """A field value as selectors compare it (booleans as ``true``/``false``, missing as "")."""
    return _s(v)


def _crd_field_names(res: Resource) -> list[str]:
    return [f["jsonPath"].lstrip(".") for f in res.extra.get("selectableFields") or [] if f.get("jsonPath")]


def selectable_value(v) -> str | None:
    """A custom resource's selectable field value as a selector compares it (None: not selectable)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int)):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return None


def object_fields(res: Resource, obj: dict) -> dict[str, str]:
    """The field set selectors are matched against (upstream ``GetAttrs``'s fields)."""
    meta = obj.get("metadata") or {}
    out = {"metadata.name": _s(meta.get("name"))}
    if res.namespaced:
        out["metadata.namespace"] = _s(meta.get("namespace"))
    if res.crd:
        from kubeling.api import jsonpath  # noqa: PLC0415 - only custom resources need it
        for f in res.extra.get("selectableFields") or []:
            path = f.get("jsonPath")
            if not path:
                continue
            found = jsonpath.evaluate(path, obj)
            value = selectable_value(found[0]) if found else None
            if value is not None:
                out[path.lstrip(".")] = value
        return out
    kind = _KINDS.get((res.group, res.kind))
    if kind:
        out.update(kind.attrs(obj))
    return out


def supported_fields(res: Resource) -> tuple[str, ...]:
    """The field labels `validate` accepts for `res`."""
    if res.crd:
        base = ["metadata.name"] + (["metadata.namespace"] if res.namespaced else [])
        return tuple(base + _crd_field_names(res))
    kind = _KINDS.get((res.group, res.kind))
    if kind:
        return kind.labels + tuple(kind.renames)
    return ("metadata.name", "metadata.namespace")


def _convert_label(res: Resource, label: str) -> str:
    """One field label through the kind's conversion; raises `SelectorError` if unsupported."""
    if res.crd or (res.group, res.kind) in _KINDS:
        renames = _KINDS[(res.group, res.kind)].renames if not res.crd else {}
        if label in renames:
            return renames[label]
        if label in supported_fields(res):
            return label
        raise SelectorError(f"field label not supported: {label}")
    if label in ("metadata.name", "metadata.namespace"):
        return label
    raise SelectorError(f'"{label}" is not a known field selector: only "metadata.name", "metadata.namespace"')


def validate(res: Resource, selector: FieldSelector | str) -> FieldSelector:
    """Check every field label against `res` and return the converted selector.

    Raises a 400 BadRequest `StatusError` (parse errors too, when given a string).
    """
    try:
        sel = parse(selector) if isinstance(selector, str) else selector
        return sel.transform(lambda f, v: (_convert_label(res, f), v))
    except SelectorError as e:
        raise errors.bad_request(str(e)) from None
