"""kubectl's JSONPath dialect (client-go ``util/jsonpath``) over plain JSON values.

A *template* is literal text with ``{...}`` actions::

    {.metadata.name}                    field access; a leading "$" (root) or "@" (current) is optional
    {.items[0]} {.items[-1]} {.a[1:3]}  index / negative index / slice [start:end:step]
    {.items[*].metadata.name}           wildcard over a list (or a map's values, sorted by key)
    {.metadata.labels.*}                wildcard field
    {.spec['app.kubernetes.io/name']}   bracketed (quoted) field; fields may also escape dots: a\\.b
    {.a['x','y']} {.a[0,2]}             unions
    {..name}                            recursive descent
    {.status.conditions[?(@.type=="Ready")].status}
                                        filters: == != < > <= >=, or a bare path for "exists"
    {range .items[*]}{.metadata.name}{"\\n"}{end}
    {"literal text"}

A bare expression without braces (``.spec.replicas``, as CRD
``additionalPrinterColumns`` and ``selectableFields`` write it) is treated as one
action.

`evaluate(expr, obj)` returns the matched values, in order, across all actions
(literal text is not a value). `render(template, obj)` prints like kubectl
``-o jsonpath``: strings raw, maps and lists as compact JSON, several values of
one action separated by a space. Missing keys yield nothing unless
``allow_missing=False``, in which case `JSONPathError` ("x is not found") is raised;
syntax errors always raise `JSONPathError` (a ValueError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JSONPathError", "parse", "evaluate", "render", "format_value"]


class JSONPathError(ValueError):
    pass


# --- AST ------------------------------------------------------------------------------------------

@dataclass
class Path:
    """A path expression: ``root`` is "$" (document root) or "@" (current value)."""
    root: str
    segments: list = field(default_factory=list)


@dataclass
class Filter:
    left: Path
    op: str  # "exists", "==", "!=", "<", ">", "<=", ">="
    right: Any = None  # a Path or a literal


@dataclass
class Range:
    path: Path
    body: list


# Segments: ("field", name) ("wild",) ("recursive",) ("index", [int | slice | str]) ("filter", Filter)


# --- parser ---------------------------------------------------------------------------------------

_TERMINATORS = set(" \t\r\n.,[]$@{}()=!<>")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def error(self, msg: str) -> JSONPathError:
        return JSONPathError(f"{msg} in {self.s!r} at position {self.i}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t", "\r", "\n") and self.peek():
            self.i += 1

    # template level
    def template(self) -> list:
        nodes, stack = [], []
        cur = nodes
        while self.i < len(self.s):
            j = self.s.find("{", self.i)
            if j < 0:
                cur.append(self.s[self.i:])
                break
            if j > self.i:
                cur.append(self.s[self.i:j])
            self.i = j + 1
            node = self.action()
            if node == "end":
                if not stack:
                    raise self.error("not in range, nothing to end")
                cur = stack.pop()
            elif isinstance(node, Range):
                cur.append(node)
                stack.append(cur)
                cur = node.body
            else:
                cur.append(node)
        if stack:
            raise JSONPathError(f"unclosed action: range without end in {self.s!r}")
        return nodes

    def action(self):
        self.skip_ws()
        if self.s.startswith("range", self.i) and (self.peek(5) in (" ", "\t", "\n")):
            self.i += 5
            self.skip_ws()
            path = self.path()
            self.close()
            return Range(path, [])
        if self.s.startswith("end", self.i) and self.peek(3) in ("}", " "):
            self.i += 3
            self.close()
            return "end"
        if self.peek() in ('"', "'"):
            text = self.quoted()
            self.close()
            return text
        path = self.path()
        self.close()
        return path

    def close(self) -> None:
        self.skip_ws()
        if self.peek() != "}":
            raise self.error("unclosed action" if not self.peek() else f"unexpected {self.peek()!r}")
        self.i += 1

    def quoted(self) -> str:
        q = self.peek()
        self.i += 1
        out = []
        while True:
            c = self.peek()
            if not c:
                raise self.error("unterminated quoted string")
            self.i += 1
            if c == q:
                return "".join(out)
            if c == "\\":
                n = self.peek()
                self.i += 1
                out.append({"n": "\n", "t": "\t", "r": "\r"}.get(n, n))
            else:
                out.append(c)

    # expressions
    def path(self) -> Path:
        root = "@"
        if self.peek() in ("$", "@"):
            root = self.peek()
            self.i += 1
        p = Path(root)
        while True:
            c = self.peek()
            if c == "." and self.peek(1) == ".":
                self.i += 2
                p.segments.append(("recursive",))
                if self.peek() == "[":
                    continue
                p.segments.append(self.field_segment())
            elif c == ".":
                self.i += 1
                if self.peek() in ("", "}", " ") and not p.segments:
                    continue  # "{.}" / "{@.}" is the current value itself
                if self.peek() == "[":
                    continue
                p.segments.append(self.field_segment())
            elif c == "[":
                self.i += 1
                p.segments.append(self.bracket())
            elif not p.segments and c and c not in _TERMINATORS:
                p.segments.append(self.field_segment())  # "metadata.name" without the leading dot
            else:
                return p

    def field_segment(self):
        out = []
        while True:
            c = self.peek()
            if c == "\\" and self.peek(1):
                out.append(self.peek(1))
                self.i += 2
                continue
            if not c or c in _TERMINATORS:
                break
            out.append(c)
            self.i += 1
        name = "".join(out)
        if not name:
            raise self.error("missing field name")
        return ("wild",) if name == "*" else ("field", name)

    def bracket(self):
        self.skip_ws()
        if self.peek() == "?":
            self.i += 1
            if self.peek() != "(":
                raise self.error("expected '(' after '?'")
            self.i += 1
            f = self.filter()
            self.skip_ws()
            if self.peek() != "]":
                raise self.error("unterminated filter")
            self.i += 1
            return ("filter", f)
        if self.peek() == "*":
            self.i += 1
            self.skip_ws()
            if self.peek() != "]":
                raise self.error("unterminated array")
            self.i += 1
            return ("wild",)
        params: list = []
        while True:
            self.skip_ws()
            if self.peek() in ('"', "'"):
                params.append(self.quoted())
            else:
                j = self.i
                while self.peek() and self.peek() not in ",]":
                    self.i += 1
                params.append(self.index_param(self.s[j:self.i].strip()))
            self.skip_ws()
            c = self.peek()
            self.i += 1
            if c == "]":
                return ("index", params)
            if c != ",":
                raise self.error("unterminated array")

    def index_param(self, text: str):
        try:
            if ":" in text:
                parts = [p.strip() for p in text.split(":")]
                if len(parts) > 3:
                    raise ValueError
                nums = [int(p) if p else None for p in parts] + [None] * (3 - len(parts))
                return slice(*nums)
            return int(text)
        except ValueError:
            raise self.error(f"invalid array index {text!r}") from None

    def filter(self) -> Filter:
        self.skip_ws()
        left = self.operand()
        self.skip_ws()
        if self.peek() == ")":
            self.i += 1
            if not isinstance(left, Path):
                raise self.error("filter needs a path")
            return Filter(left, "exists")
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.s.startswith(op, self.i):
                self.i += len(op)
                break
        else:
            raise self.error("unrecognized filter operator")
        self.skip_ws()
        right = self.operand()
        self.skip_ws()
        if self.peek() != ")":
            raise self.error("unterminated filter")
        self.i += 1
        if not isinstance(left, Path):
            left, right = right, left
        if not isinstance(left, Path):
            raise self.error("filter needs a path")
        return Filter(left, op, right)

    def operand(self):
        c = self.peek()
        if c in ('"', "'"):
            return self.quoted()
        if c in ("@", "$", "."):
            return self.path()
        j = self.i
        while self.peek() and self.peek() not in " )=!<>":
            self.i += 1
        word = self.s[j:self.i]
        if word in ("true", "false"):
            return word == "true"
        if word == "null":
            return None
        try:
            return int(word)
        except ValueError:
            pass
        try:
            return float(word)
        except ValueError:
            raise self.error(f"unrecognized filter operand {word!r}") from None


def parse(template: str) -> list:
    """The template's nodes: literal strings, `Path`s and `Range`s."""
    if "{" not in template:
        template = "{" + template + "}"
    return _Parser(template).template()


# --- evaluation -----------------------------------------------------------------------------------

class _Missing(Exception):
    pass


def _descendants(v):
    yield v
    if isinstance(v, dict):
        for k in v:
            yield from _descendants(v[k])
    elif isinstance(v, list):
        for x in v:
            yield from _descendants(x)


def _apply(seg, values: list, root, strict: bool) -> list:
    kind = seg[0]
    out: list = []
    if kind == "field":
        for v in values:
            if isinstance(v, dict) and seg[1] in v:
                out.append(v[seg[1]])
        if not out and values and strict:
            raise JSONPathError(f"{seg[1]} is not found")
    elif kind == "wild":
        for v in values:
            if isinstance(v, dict):
                out.extend(v[k] for k in sorted(v))
            elif isinstance(v, list):
                out.extend(v)
    elif kind == "recursive":
        for v in values:
            out.extend(_descendants(v))
    elif kind == "index":
        for v in values:
            for p in seg[1]:
                if isinstance(p, str):
                    if isinstance(v, dict) and p in v:
                        out.append(v[p])
                    elif strict:
                        raise JSONPathError(f"{p} is not found")
                elif isinstance(v, list):
                    if isinstance(p, slice):
                        out.extend(v[p])
                    elif -len(v) <= p < len(v):
                        out.append(v[p])
                    elif strict:
                        raise JSONPathError(f"array index out of bounds: index {p}, length {len(v)}")
                elif strict:
                    raise JSONPathError(f"{type(v).__name__} is not array or slice")
    elif kind == "filter":
        for v in values:
            if isinstance(v, list):
                out.extend(x for x in v if _passes(seg[1], x, root))
    return out


def _eval_path(p: Path, current, root, strict: bool = False) -> list:
    values = [root if p.root == "$" else current]
    after_recursive = False
    for seg in p.segments:
        # After "..", a missing field is normal (most descendants lack it).
        values = _apply(seg, values, root, strict and not after_recursive)
        after_recursive = seg[0] == "recursive" or after_recursive
    return values


def _compare(op: str, a, b) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if op in ("==", "!="):
            return (a == b and type(a) is type(b)) == (op == "==")
        return False
    if isinstance(a, num) and isinstance(b, num) or isinstance(a, str) and isinstance(b, str):
        return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    if op == "==":
        return a is None and b is None
    if op == "!=":
        return not (a is None and b is None)
    return False


def _passes(f: Filter, item, root) -> bool:
    lefts = _eval_path(f.left, item, root)
    if f.op == "exists":
        return bool(lefts)
    if len(lefts) != 1:
        if len(lefts) > 1:
            raise JSONPathError("can only compare one element at a time")
        return False
    if isinstance(f.right, Path):
        rights = _eval_path(f.right, item, root)
        if len(rights) != 1:
            return False
        right = rights[0]
    else:
        right = f.right
    return _compare(f.op, lefts[0], right)


def _walk(nodes: list, current, root, strict: bool, emit) -> None:
    for n in nodes:
        if isinstance(n, str):
            emit(None, n)
        elif isinstance(n, Range):
            for item in _eval_path(n.path, current, root, strict):
                elems = item if isinstance(item, list) else [item]
                for e in elems:
                    _walk(n.body, e, root, strict, emit)
        else:
            emit(_eval_path(n, current, root, strict), None)


def evaluate(expr: str, obj, *, allow_missing: bool = True) -> list:
    """All values `expr` selects from `obj`, in document order per action."""
    nodes = parse(expr)
    out: list = []
    _walk(nodes, obj, obj, not allow_missing, lambda vals, text: out.extend(vals or ()))
    return out


def format_value(v) -> str:
    """One value as kubectl prints it: strings raw, maps/lists as compact JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return str(v)


def render(template: str, obj, *, allow_missing: bool = True) -> str:
    """Print `template` against `obj` like ``kubectl -o jsonpath=...``."""
    nodes = parse(template)
    parts: list[str] = []

    def emit(vals, text):
        if text is not None:
            parts.append(text)
        else:
            parts.append(" ".join(format_value(v) for v in vals))

    _walk(nodes, obj, obj, not allow_missing, emit)
    return "".join(parts)
