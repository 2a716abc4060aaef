"""Label selectors: upstream's string syntax and ``metav1.LabelSelector``.

Grammar (apimachinery ``labels.Parse``)::

    selector    ::= requirement ("," requirement)*   -- comma is AND; "" selects everything
    requirement ::= ["!"] KEY [ ("in"|"notin") "(" VALUE ("," VALUE)* ")"
                              | ("="|"=="|"!=") VALUE
                              | (">"|"<") INTEGER ]

Whitespace separates tokens and is otherwise ignored. ``in``/``notin`` are
keywords only in operator position (``x in (in)`` is fine). Keys must be
qualified names (``[prefix/]name``) and values valid label values; violations
raise `SelectorError` (a ValueError) whose message matches upstream's, which the
API server returns as a 400 BadRequest.

A `Selector` is an immutable AND of `Requirement`s, sorted by key so that
``str()`` is canonical (``a=b,c in (x,y),!d``). `NOTHING` (from a nil
``metav1.LabelSelector``) matches no object; `EVERYTHING` matches all.

`validate_key` / `validate_value` are the upstream name checks (``IsQualifiedName``,
``IsValidLabelValue``); they return a list of messages, empty when valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SelectorError", "Requirement", "Selector", "EVERYTHING", "NOTHING", "parse", "from_label_selector",
    "from_set", "format_labels", "format_label_selector", "validate_key", "validate_value",
]


class SelectorError(ValueError):
    """A label selector that does not parse or validate; ``str()`` is upstream's message."""


# --- upstream name validation (k8s.io/apimachinery/pkg/util/validation) ---------------------------

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_RE = re.compile(f"^{_QNAME_FMT}$")
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
              "alphanumeric character")
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_LABEL_VALUE_MSG = ("a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' "
                    "or '.', and must start and end with an alphanumeric character")
_DNS_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_FMT = f"{_DNS_LABEL_FMT}(\\.{_DNS_LABEL_FMT})*"
_DNS_SUBDOMAIN_RE = re.compile(f"^{_DNS_SUBDOMAIN_FMT}$")
_DNS_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                      "'.', and must start and end with an alphanumeric character")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's ``RegexError`` wording (the double spaces before "or" are upstream's)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    ex = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {ex}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def validate_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append(_max_len(253))
    if not _DNS_SUBDOMAIN_RE.match(value):
        errs.append(regex_error(_DNS_SUBDOMAIN_MSG, _DNS_SUBDOMAIN_FMT, "example.com"))
    return errs


def validate_key(key: str) -> list[str]:
    """``IsQualifiedName``: ``[DNS-subdomain "/"] name`` with a 63-character name part."""
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        errs = []
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in validate_dns1123_subdomain(prefix)]
    else:
        return ["a qualified name " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len(63))
    if name and not _QNAME_RE.match(name):
        errs.append("name part " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def validate_value(value: str) -> list[str]:
    """``IsValidLabelValue``: empty, or at most 63 qualified-name characters."""
    errs = []
    if len(value) > 63:
        errs.append(_max_len(63))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _go_str_list(vals) -> str:
    # A []string bad value is printed with Go's %#v in field.Invalid messages.
    if not vals:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_go_quote(v) for v in vals) + "}"


# --- requirements and selectors -------------------------------------------------------------------

IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GT, LT = "exists", "!", "gt", "lt"
_BINARY_OPS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GT, LT)
_ALL_OPS = _BINARY_OPS + (EXISTS, DOES_NOT_EXIST)


def _is_int(v: str) -> bool:
    return bool(re.fullmatch(r"[+-]?[0-9]+", v)) and -(2 ** 63) <= int(v) < 2 ** 63


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    @classmethod
    def new(cls, key: str, operator: str, values=(), path: str = "") -> "Requirement":
        """Validate like upstream's ``NewRequirement``; raise `SelectorError` on any violation."""
        values = tuple(values)
        errs: list[str] = []
        kpath = f"{path}.key" if path else "key"
        vpath = f"{path}.values" if path else "values"
        key_errs = validate_key(key)
        if key_errs:
            errs.append(f"{kpath}: Invalid value: {_go_quote(key)}: {'; '.join(key_errs)}")
        if operator in (IN, NOT_IN):
            if not values:
                errs.append(f"{vpath}: Invalid value: {_go_str_list(values)}: "
                            "for 'in', 'notin' operators, values set can't be empty")
        elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
            if len(values) != 1:
                errs.append(f"{vpath}: Invalid value: {_go_str_list(values)}: "
                            "exact-match compatibility requires one single value")
        elif operator in (EXISTS, DOES_NOT_EXIST):
            if values:
                errs.append(f"{vpath}: Invalid value: {_go_str_list(values)}: "
                            "values set must be empty for exists and does not exist")
        elif operator in (GT, LT):
            if len(values) != 1:
                errs.append(f"{vpath}: Invalid value: {_go_str_list(values)}: "
                            "for 'Gt', 'Lt' operators, exactly one value is required")
            for i, v in enumerate(values):
                if not _is_int(v):
                    errs.append(f"{vpath}[{i}]: Invalid value: {_go_quote(v)}: "
                                "for 'Gt', 'Lt' operators, the value must be an integer")
        else:
            supported = ", ".join(f'"{o}"' for o in _ALL_OPS)
            errs.append(f'{path + "." if path else ""}operator: Unsupported value: {_go_quote(operator)}: '
                        f"supported values: {supported}")
        for i, v in enumerate(values):
            verrs = validate_value(v)
            if verrs:
                errs.append(f"{vpath}[{i}][{key}]: Invalid value: {_go_quote(v)}: {'; '.join(verrs)}")
        if errs:
            raise SelectorError(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
        return cls(key, operator, values)

    def matches(self, labels: dict) -> bool:
        op, present = self.operator, self.key in labels
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if op == EXISTS:
            return present
        if op == DOES_NOT_EXIST:
            return not present
        if op in (GT, LT):
            if not present or len(self.values) != 1:
                return False
            have, want = labels[self.key], self.values[0]
            if not (_is_int(have) and _is_int(want)):
                return False
            return int(have) > int(want) if op == GT else int(have) < int(want)
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        vals = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({vals})"
        sym = {GT: ">", LT: "<"}.get(op, op)
        return f"{self.key}{sym}{vals}"


class Selector:
    """An AND of requirements. ``nothing=True`` is upstream's ``labels.Nothing()``."""

    __slots__ = ("requirements", "nothing")

    def __init__(self, requirements=(), nothing: bool = False) -> None:
        # Stable sort by key, as upstream's parser, so str() is deterministic.
        self.requirements: tuple[Requirement, ...] = tuple(sorted(requirements, key=lambda r: r.key))
        self.nothing = nothing

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything (matches every object)."""
        return not self.nothing and not self.requirements

    def matches(self, labels: dict | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have (``=``/``==``/one-value ``in``), else None."""
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "Selector(<nothing>)" if self.nothing else f"Selector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Selector) and self.nothing == other.nothing
                and self.requirements == other.requirements)

    def __hash__(self) -> int:
        return hash((self.nothing, self.requirements))


EVERYTHING = Selector()
NOTHING = Selector(nothing=True)


# --- the string parser ----------------------------------------------------------------------------

_SPECIAL = set("=!(),><")
_WHITESPACE = set(" \t\r\n")
_SYMBOLS = {")": ")", ",": ",", "!": "!", "==": "==", "=": "=", ">": ">", "<": "<", "!=": "!=", "(": "("}
_KEYWORDS = {"in": IN, "notin": NOT_IN}
IDENT, END, ERROR = "ident", "end", "error"


def _lex(s: str) -> list[tuple[str, str]]:
    """Tokens as ``(kind, literal)``; kind is IDENT, END, ERROR, a symbol, or "in"/"notin"."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in _WHITESPACE:
            i += 1
        if i >= n:
            out.append((END, ""))
            return out
        if s[i] in _SPECIAL:
            # Longest run of special characters that is still a known symbol.
            buf, last, j = "", None, i
            while j < n and s[j] in _SPECIAL:
                buf += s[j]
                if buf in _SYMBOLS:
                    last = (buf, j + 1)
                elif last is not None:
                    break
                j += 1
            if last is None:
                out.append((ERROR, f"error expected: keyword found '{buf}'"))
                i = j
            else:
                out.append((_SYMBOLS[last[0]], last[0]))
                i = last[1]
            continue
        j = i
        while j < n and s[j] not in _SPECIAL and s[j] not in _WHITESPACE:
            j += 1
        word = s[i:j]
        out.append((_KEYWORDS.get(word, IDENT), word))
        i = j


class _Parser:
    def __init__(self, s: str) -> None:
        self.items = _lex(s)
        self.pos = 0

    def _tok(self, i: int, values: bool) -> tuple[str, str]:
        kind, lit = self.items[i]
        if values and kind in (IN, NOT_IN):
            kind = IDENT  # keywords are plain identifiers in value/key position
        return kind, lit

    def peek(self, values: bool = True) -> tuple[str, str]:
        return self._tok(self.pos, values)

    def next(self, values: bool = True) -> tuple[str, str]:
        self.pos += 1
        return self._tok(self.pos - 1, values)

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            kind, lit = self.peek()
            if kind == END:
                return reqs
            if kind not in (IDENT, "!"):
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except SelectorError as e:
                raise SelectorError(f"unable to parse requirement: {e}") from None
            kind, lit = self.next()
            if kind == END:
                return reqs
            if kind != ",":
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            kind2, lit2 = self.peek()
            if kind2 not in (IDENT, "!"):
                raise SelectorError(f"found '{lit2}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        op = ""
        kind, lit = self.next()
        if kind == "!":
            op = DOES_NOT_EXIST
            kind, lit = self.next()
        if kind != IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        key_errs = validate_key(key)
        if key_errs:
            raise SelectorError(f"<nil>: Invalid value: {_go_quote(key)}: {'; '.join(key_errs)}")
        if op == DOES_NOT_EXIST or self.peek()[0] in (END, ","):
            # "!a=b" yields "!a" and then fails on the unexpected "=", as upstream.
            return Requirement.new(key, op or EXISTS)
        kind, lit = self.next(values=False)
        ops = {IN: IN, NOT_IN: NOT_IN, "=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS, ">": GT, "<": LT}
        if kind not in ops:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPS)}")
        op = ops[kind]
        values = self.set_values() if op in (IN, NOT_IN) else self.exact_value()
        return Requirement.new(key, op, sorted(values))

    def set_values(self) -> set[str]:
        kind, lit = self.next()
        if kind != "(":
            raise SelectorError(f"found '{lit}' expected: '('")
        kind, lit = self.peek()
        if kind == ")":
            self.next()
            return {""}
        if kind not in (IDENT, ","):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        vals = self.identifiers()
        if self.next()[0] != ")":
            raise SelectorError(f"found '{lit}', expected: ')'")
        return vals

    def identifiers(self) -> set[str]:
        vals: set[str] = set()
        while True:
            kind, lit = self.next()
            if kind == IDENT:
                vals.add(lit)
                kind2, lit2 = self.peek()
                if kind2 == ",":
                    continue
                if kind2 == ")":
                    return vals
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if kind == ",":
                # Empty items ("(,a", "a,,b", "a,)") are the empty-string value.
                if not vals:
                    vals.add("")
                kind2 = self.peek()[0]
                if kind2 in (")", ","):
                    vals.add("")
                if kind2 == ")":
                    return vals
                continue
            raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        kind = self.peek()[0]
        if kind in (END, ","):
            return {""}
        kind, lit = self.next()
        if kind == IDENT:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse(s: str | None) -> Selector:
    """Parse a ``labelSelector`` query string. Raises `SelectorError` with upstream's message."""
    if not s:
        return EVERYTHING
    return Selector(_Parser(s).parse())


# --- metav1.LabelSelector -------------------------------------------------------------------------

_EXPR_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def from_label_selector(ls: dict | None) -> Selector:
    """``metav1.LabelSelectorAsSelector``: None → `NOTHING`, ``{}`` → `EVERYTHING`."""
    if ls is None:
        return NOTHING
    match_labels = ls.get("matchLabels") or {}
    exprs = ls.get("matchExpressions") or []
    if not match_labels and not exprs:
        return EVERYTHING
    reqs = [Requirement.new(k, EQUALS, [v]) for k, v in match_labels.items()]
    for e in exprs:
        op = _EXPR_OPS.get(e.get("operator"))
        if op is None:
            raise SelectorError(f"{_go_quote(str(e.get('operator', '')))} is not a valid label selector operator")
        reqs.append(Requirement.new(e.get("key", ""), op, list(e.get("values") or [])))
    return Selector(reqs)


def from_set(labels: dict | None) -> Selector:
    """``labels.SelectorFromSet``: every key equal to its value (no validation)."""
    return Selector([Requirement(k, EQUALS, (v,)) for k, v in (labels or {}).items()])


def format_labels(labels: dict | None) -> str:
    """``labels.FormatLabels``: ``a=b,c=d`` sorted by key, ``<none>`` when empty."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_label_selector(ls: dict | None) -> str:
    """``metav1.FormatLabelSelector``: the selector string, ``<none>`` if empty, ``<error>`` if bad."""
    try:
        s = str(from_label_selector(ls))
    except SelectorError:
        return "<error>"
    return s or "<none>"
