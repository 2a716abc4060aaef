"""compile/evaluate over cel-cpp (``cel-expr-python``): environments, type hints, errors.

See the package docstring for the contract. Environments are cached by their variable
declarations (a policy's expressions share one); a compiled `Program` is immutable and may be
evaluated any number of times, from any coroutine.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from cel_expr_python import cel as _cel
from cel_expr_python.ext import ext_bindings, ext_optional

from kubeling.cel import library

T = _cel.Type

# Upstream bounds an expression by its estimated cost; here the length, cel-cpp's iteration
# budget for comprehensions (macros) and a cap on cel.bind (each binding can double a value that
# the body uses twice) bound it.
MAX_EXPRESSION_LENGTH = 10 * 1024
MAX_BINDS = 8
_BIND = re.compile(r"\bcel\s*\.\s*bind\s*\(")
_STRING_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')


class CompileError(Exception):
    """The expression does not parse or type-check; ``str()`` is the checker's message."""


class EvalError(Exception):
    """Evaluating the expression failed (no such key, no matching overload, budget exceeded...)."""


_SIMPLE = {
    "dyn": T.DYN, "any": T.DYN, "bool": T.BOOL, "int": T.INT, "uint": T.UINT, "double": T.DOUBLE,
    "string": T.STRING, "bytes": T.BYTES, "null": T.NULL, "null_type": T.NULL,
    "list": T.List(T.DYN), "map": T.Map(T.STRING, T.DYN),
    "timestamp": T.TIMESTAMP, "duration": T.DURATION,
}


def _parse_type(s: str):
    s = s.strip()
    if s in _SIMPLE:
        return _SIMPLE[s]
    m = re.fullmatch(r"list\((.*)\)", s)
    if m:
        return T.List(_parse_type(m.group(1)))
    m = re.fullmatch(r"map\(\s*([a-z_]+)\s*,(.*)\)", s)
    if m:
        return T.Map(_parse_type(m.group(1)), _parse_type(m.group(2)))
    raise ValueError(f"unknown CEL type hint {s!r}")


def schema_type(schema: dict | None, depth: int = 0):
    """The CEL type of values a structural (OpenAPI v3) schema admits.

    Objects with ``properties`` are ``map(string, dyn)``: without protobuf messages cel-cpp
    cannot declare a struct, so field access into them is checked at run time. Anything
    nullable, int-or-string, preserving unknown fields or untyped is ``dyn``; ``number`` is
    ``dyn`` too so that integral JSON numbers compare with doubles as CEL's heterogeneous
    equality does.
    """
    if not isinstance(schema, dict) or depth > 32:
        return T.DYN
    if schema.get("nullable") or schema.get("x-kubernetes-int-or-string"):
        return T.DYN
    t = schema.get("type")
    if t == "boolean":
        return T.BOOL
    if t == "integer":
        return T.INT
    if t == "string":
        return T.STRING
    if t == "array":
        return T.List(schema_type(schema.get("items"), depth + 1))
    if t == "object":
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict) and not schema.get("properties"):
            return T.Map(T.STRING, schema_type(ap, depth + 1))
        if schema.get("x-kubernetes-embedded-resource") or schema.get("properties") is not None or ap:
            return T.Map(T.STRING, T.DYN)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return T.DYN
        return T.Map(T.STRING, T.DYN)
    return T.DYN


def _to_type(hint: Any):
    if hint is None:
        return T.DYN
    if isinstance(hint, T):
        return hint
    if isinstance(hint, str):
        return _parse_type(hint)
    if isinstance(hint, dict):
        return schema_type(hint)
    raise ValueError(f"unknown CEL type hint {hint!r}")


_envs: dict[tuple, Any] = {}
_envs_lock = threading.Lock()


def _env(decls: dict[str, Any]):
    key = tuple(sorted((k, v.name()) for k, v in decls.items()))
    env = _envs.get(key)
    if env is None:
        with _envs_lock:
            env = _envs.get(key)
            if env is None:
                env = _cel.NewEnv(variables=decls, extensions=[ext_optional.ExtOptional(), ext_bindings.ExtBindings()],
                                  functions=library.declarations())
                if len(_envs) > 512:
                    _envs.clear()
                _envs[key] = env
    return env


_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]\s*$")


def _clean(msg: str) -> str:
    """cel-cpp's status text without its ``CODE: `` prefix and `` [CODE]`` suffix."""
    msg = _STATUS_SUFFIX.sub("", str(msg))
    msg = _STATUS_PREFIX.sub("", msg, count=1)
    m = re.match(r'Key not found in map : "(.*)"$', msg)
    if m:
        return f"no such key: {m.group(1)}"
    if msg.startswith("No matching overloads found"):
        return "no matching overload" + msg[len("No matching overloads found"):].replace(" :", ":", 1)
    return msg


def _compile_message(msg: str) -> str:
    msg = _STATUS_SUFFIX.sub("", str(msg))
    msg = _STATUS_PREFIX.sub("", msg, count=1)
    return msg


class Program:
    """A compiled expression; ``evaluate`` may be called any number of times."""

    __slots__ = ("expression", "_expr", "_names", "return_type")

    def __init__(self, expression: str, expr, names: tuple[str, ...]) -> None:
        self.expression = expression
        self._expr = expr
        self._names = names
        self.return_type = _type_name(expr.return_type())

    def evaluate(self, activation: dict | None = None) -> Any:
        activation = activation or {}
        try:
            with library.evaluating(activation):
                data = {n: library.to_cel(activation[n]) for n in self._names if n in activation}
                value = self._expr.eval(data=data)
                kind = value.type().name()
                if kind == "ERROR":
                    raise EvalError(_clean(value.value()))
                if kind.startswith("optional") or kind == "OPAQUE":
                    raise EvalError(f"unsupported result type {kind.lower()}")
                return library.from_cel(value.plain_value())
        except EvalError:
            raise
        except Exception as e:  # a conversion or runtime failure inside cel-cpp: never crash the caller
            raise EvalError(_clean(str(e))) from None


def _type_name(t) -> str:
    try:
        return t.name().lower().replace("<", "(").replace(">", ")")
    except Exception:
        return "dyn"


def compile(expression: str, variables: dict[str, Any] | None = None) -> Program:  # noqa: A001
    """Parse and check ``expression`` with ``variables`` declared (name -> type hint)."""
    if not isinstance(expression, str):
        raise CompileError("expression must be a string")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CompileError(f"expression is too long ({len(expression)} characters, at most "
                           f"{MAX_EXPRESSION_LENGTH})")
    if len(_BIND.findall(_STRING_LITERALS.sub("", expression))) > MAX_BINDS:
        raise CompileError(f"expression uses cel.bind more than {MAX_BINDS} times")
    try:
        decls = {name: _to_type(hint) for name, hint in (variables or {}).items()}
    except ValueError as e:
        raise CompileError(str(e)) from None
    decls.update(library.variables(decls))
    try:
        expr = _env(decls).compile(expression)
    except Exception as e:
        raise CompileError(_compile_message(str(e))) from None
    return Program(expression, expr, tuple(decls))
