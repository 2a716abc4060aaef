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
"""

from __future__ import annotations

import copy
from typing import Any

from kubeling.api import errors

MAX_OPERATIONS = 10000


class PatchFailed(Exception):
    """An operation could not be applied; the text says why (for logs and tests)."""


def unprocessable() -> errors.StatusError:
    """The 422 the apiserver returns for a patch it cannot apply."""
    return errors.StatusError(422, "Invalid", "the server rejected our request due to an error in our request",
                              details={})


def json_equal(a: Any, b: Any) -> bool:
    """JSON value equality: ``1 == 1.0`` but ``true != 1``, objects by keys, arrays by order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def apply(doc: Any, ops: Any) -> Any:
    """Apply a JSON Patch to ``doc`` and return the new document."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        kind = type(ops).__name__ if not isinstance(ops, list) else "array element"
        raise errors.bad_request(f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch")
    if len(ops) > MAX_OPERATIONS:
        raise errors.StatusError(413, "RequestEntityTooLarge",
                                 f"Request entity too large: The allowed maximum operations in a JSON patch is "
                                 f"{MAX_OPERATIONS}, got {len(ops)}")
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            doc = apply_operation(doc, op)
    except PatchFailed:
        raise unprocessable() from None
    return doc


def apply_operation(doc: Any, op: dict) -> Any:
    """Apply one operation (mutating ``doc`` where possible); raises PatchFailed."""
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
        return _add(doc, path, copy.deepcopy(_get(doc, _pointer(op, "from"))))
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
    return copy.deepcopy(op["value"])


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
