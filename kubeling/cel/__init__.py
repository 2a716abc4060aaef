"""CEL, the Common Expression Language, as Kubernetes uses it.

One small contract for every user in kubeling (ValidatingAdmissionPolicy, MutatingAdmissionPolicy,
CRD ``x-kubernetes-validations``, webhook ``matchConditions``)::

    prog = kubeling.cel.compile("self.spec.replicas <= 5", {"self": None})
    prog.evaluate({"self": obj})            # -> False

- ``compile(expression, variables)`` declares the variables (name -> type hint) and returns a
  `Program`; a syntax error, an undeclared reference or a call no overload matches raises
  `CompileError` with the checker's message (line, column and a caret). A type hint is ``None``
  or ``"dyn"`` (any JSON value), a CEL type name (``"bool"``, ``"int"``, ``"double"``,
  ``"string"``, ``"list"``, ``"map"``, ``"list(string)"``, ``"map(string, dyn)"``) or an
  OpenAPI v3 schema dict (a CRD's structural schema), from which the type is derived as
  upstream's ``SchemaDeclType`` does for the parts CEL can check without protobuf messages.
- ``Program.evaluate(activation)`` takes plain JSON-like Python values and returns one; an
  evaluation error (no such key, no matching overload at run time, division by zero, the
  runtime budget exceeded) raises `EvalError`.

The engine is Google's cel-cpp through ``cel-expr-python`` (see bench/RESULTS.md, "Issue 9", for
why). Kubernetes' extension libraries are provided in `kubeling.cel.library` (strings, lists,
regex, quantity, url, ip/cidr, format; the authorizer for admission policies). A hostile
expression is bounded: cel-cpp's comprehension iteration budget (10,000 iterations per
evaluation) stops nested macros, the expression length is capped (10 KiB) and so is ``cel.bind``
(8 per expression: each can double a value), and the Python-side functions refuse inputs that
would make them slow or huge (RE2 regular expressions, strings they build capped at 1 MiB).
Not bounded: plain concatenation inside the length cap (``s + s + ...``), which upstream's cost
estimator would refuse for large inputs.
"""

from __future__ import annotations

from kubeling.cel.core import (
    MAX_BINDS,
    MAX_EXPRESSION_LENGTH,
    CompileError,
    EvalError,
    Program,
    compile,
)

__all__ = ["CompileError", "EvalError", "MAX_BINDS", "MAX_EXPRESSION_LENGTH", "Program", "compile"]
