"""JSON Patch (RFC 6902) over plain dicts, with JSON Pointers (RFC 6901).

Errors follow the apiserver's PATCH handler for ``application/json-patch+json``:

- a patch that is not a list of operation objects -> 400 BadRequest;
- more than 10000 operations -> 413 RequestEntityTooLarge;
- any operation that cannot be applied (unknown op, missing path, failing
  ``test``, index out of range, ...) -> 422 Invalid with upstream's generic
  message "the server rejected our request due to an error in our request".

Like upstream's json-patch library, array indices may be negative (counted
from the end) and ``-`` appends. Operations apply in order to a copy; the input
document is never modified.

Bounds (figures in `kubeling.api.limits`): ``copy`` operations may together add at
most JSON_PATCH_MAX_COPY_BYTES of JSON (json-patch's ``AccumulatedCopySizeLimit``,
which the apiserver sets from ``JSONPatchMaxCopyBytes``), so n copies of a value
into itself cannot double it n times; and the result may not nest deeper than
MAX_NESTING_DEPTH (or the input, when that was deeper already). Both are 422 like
any other operation that cannot apply. Values are copied by encoding them, never
by a recursive walk, so intermediate documents of any depth are safe.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from kubeling.api import errors, limits

MAX_OPERATIONS = limits.MAX_JSON_PATCH_OPERATIONS


class PatchFailed(Exception):
    """An operation could not be applied; the text says why (for logs and tests)."""


def unprocessable() -> errors.StatusError:
    """The 422 the apiserver returns for a patch it cannot apply."""
    return errors.StatusError(422, "Invalid", "the server rejected our request due to an error in our request",
                              details={})


def json_equal(a: Any, b: Any) -> bool:
    """JSON value equality: ``1 == 1.0`` but ``true != 1``, objects by keys, arrays by order.

    Iterative, so values of any depth compare."""
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        if isinstance(a, bool) or isinstance(b, bool):
            if type(a) is not type(b) or a != b:
                return False
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
            if a != b:
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or a.keys() != b.keys():
                return False
            stack.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            stack.extend(zip(a, b))
        elif type(a) is not type(b) or a != b:
            return False
    return True


def apply(doc: Any, ops: Any, *, max_copy_bytes: int = limits.JSON_PATCH_MAX_COPY_BYTES,
          max_depth: int = limits.MAX_NESTING_DEPTH) -> Any:
    """Apply a JSON Patch to ``doc`` and return the new document (see the module docstring)."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        kind = type(ops).__name__ if not isinstance(ops, list) else "array element"
        raise errors.bad_request(f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch")
    if len(ops) > MAX_OPERATIONS:
        raise errors.request_entity_too_large(
            f"The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {len(ops)}")
    original = doc
    doc = _clone(doc)
    copied = [0, max_copy_bytes]  # bytes copied so far, and the allowance
    try:
        for op in ops:
            doc = apply_operation(doc, op, copied)
    except PatchFailed:
        raise unprocessable() from None
    if limits.depth_exceeds(doc, max_depth) and limits.depth_exceeds(doc, max(max_depth, _depth(original))):
        raise unprocessable()
    return doc


def _clone(value: Any) -> Any:
    """A deep copy through JSON (fast, and iterative in C); deepcopy for what JSON cannot hold."""
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(value)


def _depth(value: Any) -> int:
    """The nesting depth of a JSON value (iterative)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _copy_counted(value: Any, copied: list[int]) -> Any:
    """A copy of ``value`` for a ``copy`` operation, charged to the accumulated copy size."""
    try:
        raw = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        raise PatchFailed("Unable to complete the copy: the value cannot be encoded") from None
    copied[0] += len(raw)
    if copied[1] > 0 and copied[0] > copied[1]:
        raise PatchFailed(f"Unable to complete the copy, the accumulated size increase of copy is {copied[0]}, "
                          f"exceeding the limit {copied[1]}")
    return orjson.loads(raw)


def apply_operation(doc: Any, op: dict, copied: list[int] | None = None) -> Any:
    """Apply one operation (mutating ``doc`` where possible); raises PatchFailed.

    ``copied`` is ``[bytes copied so far, allowance]`` across a patch's operations (no limit
    when omitted)."""
    kind = op.get("op")
    path = _pointer(op, "path")
    if kind == "add":
        return _add(doc, path, _value(op))
    if kind == "remove":
        _remove(doc, path)
        return doc
    if kind == "replace":
        return _replace(doc, path, _value(op))
    if kind == "move":
        src = _pointer(op, "from")
        if path[:len(src)] == src and len(path) > len(src):
            raise PatchFailed("move operation cannot move a value into one of its children")
        value = _get(doc, src)
        if src == path:
            return doc
        _remove(doc, src)
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, _copy_counted(_get(doc, _pointer(op, "from")), copied or [0, 0]))
    if kind == "test":
        expected = _value(op)
        try:
            actual = _get(doc, path)
        except PatchFailed:
            if expected is None:
                return doc
            raise
        if not json_equal(actual, expected):
            raise PatchFailed(f"testing value {_display(path)} failed: test failed")
        return doc
    raise PatchFailed(f"Unexpected kind: {kind}")


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: ``"/a~1b/0"`` -> ``["a/b", "0"]``; ``""`` is the whole document."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFailed(f"JSON pointer must be empty or start with a \"/\": {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _pointer(op: dict, field: str) -> list[str]:
    p = op.get(field)
    if not isinstance(p, str):
        raise PatchFailed(f"operation missing {field!r}")
    return parse_pointer(p)


def _value(op: dict) -> Any:
    if "value" not in op:
        raise PatchFailed(f"operation {op.get('op')!r} missing 'value'")
    return _clone(op["value"])


def _display(path: list[str]) -> str:
    return "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in path)


def _index(token: str, length: int, *, allow_end: bool) -> int:
    try:
        idx = int(token)
    except ValueError:
        raise PatchFailed(f"invalid array index {token!r}") from None
    if idx < 0:
        idx += length
    if idx < 0 or idx > length or (idx == length and not allow_end):
        raise PatchFailed(f"array index out of bounds: {token}")
    return idx


def _container(doc: Any, path: list[str]) -> Any:
    """The parent of the location ``path`` names; it must exist."""
    node = doc
    for depth, token in enumerate(path[:-1]):
        if isinstance(node, dict):
            if token not in node:
                raise PatchFailed(f"doc is missing path: {_display(path[:depth + 1])}: missing value")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), allow_end=False)]
        else:
            raise PatchFailed(f"doc is missing path: {_display(path[:depth + 1])}: missing value")
    if not isinstance(node, (dict, list)):
        raise PatchFailed(f"doc is missing path: {_display(path)}: missing value")
    return node


def _get(doc: Any, path: list[str]) -> Any:
    if not path:
        return doc
    parent, token = _container(doc, path), path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchFailed(f"doc is missing key: {_display(path)}: missing value")
        return parent[token]
    return parent[_index(token, len(parent), allow_end=False)]


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, token = _container(doc, path), path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif token == "-":
        parent.append(value)
    else:
        parent.insert(_index(token, len(parent), allow_end=True), value)
    return doc


def _remove(doc: Any, path: list[str]) -> None:
    if not path:
        raise PatchFailed("unable to remove the whole document")
    parent, token = _container(doc, path), path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchFailed(f"Unable to remove nonexistent key: {token}: missing value")
        del parent[token]
    else:
        del parent[_index(token, len(parent), allow_end=False)]


def _replace(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent, token = _container(doc, path), path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchFailed(f"replace operation does not apply: doc is missing key: {_display(path)}: missing value")
        parent[token] = value
    else:
        parent[_index(token, len(parent), allow_end=False)] = value
    return doc
