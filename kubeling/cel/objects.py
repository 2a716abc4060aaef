"""Object construction for MutatingAdmissionPolicy: ``Object{spec: Object.spec{replicas: 3}}`` and
``JSONPatch{op: "add", path: "/x", value: 1}``.

Upstream declares these as dynamically typed message types; cel-cpp's Python binding can only
declare message types from protobuf descriptors, so the expression is rewritten before it is
compiled: a construction ``Object.a.b{f: v, ...}`` / ``JSONPatch{...}`` becomes the map literal
``{"f": v, ...}`` (field names quoted, values untouched, nesting kept). The value is then the
same JSON the typed construction would produce. Strings and comments are never touched.
"""

from __future__ import annotations

import re

TYPE_ROOTS = ("Object", "JSONPatch")

_TOKEN = re.compile(r'''
    (?P<str>[rRbB]{0,2}(?:"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\'|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<comment>//[^\n]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>[0-9][0-9a-zA-Z_.]*)
  | (?P<ws>\s+)
  | (?P<punct>.)
''', re.VERBOSE | re.DOTALL)


def rewrite(expression: str) -> str:
    """``expression`` with object constructions as map literals (see the module docstring)."""
    toks = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expression)]
    out: list[str] = []
    stack: list[str] = []   # "obj" or "other" per open bracket
    prev_sig = ""           # the previous significant token's text
    i = 0
    n = len(toks)

    def next_sig(j: int) -> int:
        while j < n and toks[j][0] in ("ws", "comment"):
            j += 1
        return j

    while i < n:
        kind, text = toks[i]
        if kind == "ident" and text in TYPE_ROOTS and prev_sig != ".":
            # Object(.ident)* followed by '{' ?
            j = i + 1
            while True:
                k = next_sig(j)
                if k < n and toks[k][1] == "." and next_sig(k + 1) < n and toks[next_sig(k + 1)][0] == "ident":
                    j = next_sig(k + 1) + 1
                    continue
                break
            k = next_sig(j)
            if k < n and toks[k][1] == "{":
                out.append("{")
                stack.append("obj")
                prev_sig = "{"
                i = k + 1
                continue
        if kind == "ident" and stack and stack[-1] == "obj" and prev_sig in ("{", ","):
            k = next_sig(i + 1)
            if k < n and toks[k][1] == ":":
                out.append(f'"{text}"')
                prev_sig = text
                i += 1
                continue
        if kind == "punct":
            if text in "{[(":
                stack.append("other")
            elif text in "}])" and stack:
                stack.pop()
        out.append(text)
        if kind not in ("ws", "comment"):
            prev_sig = text
        i += 1
    return "".join(out)
