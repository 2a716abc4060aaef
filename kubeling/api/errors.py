"""The API's error tree, and the ``Status`` objects it becomes on the wire.

::

    StatusError                    any failure that the API reports as a metav1.Status
    ├── code/reason                400 BadRequest, 401 Unauthorized, 403 Forbidden, 404 NotFound,
    │                              405 MethodNotAllowed, 406 NotAcceptable, 409 AlreadyExists|Conflict,
    │                              410 Expired|Gone, 415 UnsupportedMediaType, 422 Invalid,
    │                              429 TooManyRequests, 500 InternalError, 504 Timeout
    └── details.causes             a list of `FieldError` (reason, message, field)

Storage errors are translated to these at the registry boundary; the client
translates them back into `kubeling.client` exceptions. Validation functions
return ``list[FieldError]`` (an expected outcome) and the registry raises
`invalid(...)` from them.

On the wire a Status is written as upstream's JSON serializer writes it (`encode_status`): keys
in the Go struct's field order, empty fields left out, ``<``, ``>``, ``&``, U+2028 and U+2029
escaped, and a trailing newline. What an error echoes is bounded (`kubeling.api.limits`): a
field error quotes at most MAX_ECHOED_VALUE_CHARS of the value it is about, a Status message
is cut at MAX_STATUS_MESSAGE_CHARS and its causes at MAX_STATUS_CAUSES_CHARS, so that a small
request can never produce a huge error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from kubeling.api import limits


# field.ErrorType -> (CauseType, message prefix), as upstream's apimachinery.
FIELD_ERROR_TYPES = {
    "NotFound": ("FieldValueNotFound", "Not found"),
    "Required": ("FieldValueRequired", "Required value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "TooLong": ("FieldValueTooLong", "Too long"),
    "TooMany": ("FieldValueTooMany", "Too many"),
    "Internal": ("InternalError", "Internal error"),
    "TypeInvalid": ("FieldValueTypeInvalid", "Invalid value"),
}

_NO_VALUE = object()


def _fmt_value(v: Any) -> str:
    """A value as a field error quotes it: scalars as Go prints them, the rest as JSON, and
    anything longer than MAX_ECHOED_VALUE_CHARS cut there and marked with ``...``."""
    limit = limits.MAX_ECHOED_VALUE_CHARS
    out: list[str] = []
    size = 0
    for token in _tokens(v, limit):
        out.append(token)
        size += len(token)
        if size > limit:
            return "".join(out)[:limit] + "..."
    return "".join(out)


def _scalar(v: Any, limit: int) -> str:
    if isinstance(v, str):
        return orjson.dumps(v[:limit + 1]).decode()
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        try:
            return str(v)
        except ValueError:  # more digits than Python will print
            return f"<{v.bit_length()}-bit integer>"
    if isinstance(v, float):
        return orjson.dumps(v).decode()
    return orjson.dumps(str(v)[:limit + 1]).decode()


def _tokens(v: Any, limit: int):
    """The JSON text of ``v`` in small pieces, generated lazily and iteratively: the caller stops
    once it has enough, so a value of any size or depth costs about ``limit`` steps."""
    if not isinstance(v, (dict, list)):
        # Go's %v for a lone float (1e+21); inside JSON it is JSON's spelling.
        yield str(v) if isinstance(v, float) else _scalar(v, limit)
        return
    stack: list[tuple[Any, str]] = []

    def open_(c):
        stack.append((iter(c.items()) if isinstance(c, dict) else iter(c), "}" if isinstance(c, dict) else "]"))
        return "{" if isinstance(c, dict) else "["

    yield open_(v)
    first = True
    while stack:
        it, close = stack[-1]
        item = next(it, _NO_VALUE)
        if item is _NO_VALUE:
            stack.pop()
            first = False
            yield close
            continue
        if not first:
            yield ","
        first = False
        if close == "}":
            key, item = item
            yield _scalar(str(key), limit) + ":"
        if isinstance(item, (dict, list)):
            yield open_(item)
            first = True
        else:
            yield _scalar(item, limit)


@dataclass
class FieldError:
    """One problem at one field path, like upstream's ``field.Error``.

    ``kind`` is a key of FIELD_ERROR_TYPES; ``field`` is a path such as
    ``spec.template.spec.containers[0].image``.
    """

    kind: str
    field: str
    detail: str = ""
    value: Any = _NO_VALUE
    supported: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return FIELD_ERROR_TYPES[self.kind][0]

    @property
    def message(self) -> str:
        """The cause message without the field path, as in ``details.causes``."""
        prefix = FIELD_ERROR_TYPES[self.kind][1]
        parts = [prefix]
        if self.value is not _NO_VALUE and self.kind in ("Invalid", "NotSupported", "Duplicate", "TypeInvalid",
                                                         "TooLong", "TooMany", "Forbidden"):
            if self.kind not in ("Forbidden", "TooLong", "TooMany"):
                parts = [f"{prefix}: {_fmt_value(self.value)}"]
        msg = parts[0]
        if self.kind == "NotSupported" and self.supported:
            msg += ": supported values: " + ", ".join(f'"{s}"' for s in self.supported)
        elif self.detail:
            msg += ": " + self.detail
        return msg

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def cause(self) -> dict:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("Required", field, detail)


def invalid_value(field: str, value: Any, detail: str = "") -> FieldError:
    return FieldError("Invalid", field, detail, value)


def not_supported(field: str, value: Any, supported: list[str] | tuple[str, ...]) -> FieldError:
    return FieldError("NotSupported", field, "", value, tuple(supported))


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("Forbidden", field, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("Duplicate", field, "", value)


def too_long(field: str, value: Any, limit: int) -> FieldError:
    return FieldError("TooLong", field, f"may not be more than {limit} bytes", value)


class StatusError(Exception):
    """An API failure carrying everything needed for a ``metav1.Status``.

    The message is cut at MAX_STATUS_MESSAGE_CHARS and ``details.causes`` at
    MAX_STATUS_CAUSES_CHARS (the last kept cause then says how many were left out).
    """

    def __init__(self, code: int, reason: str, message: str, *, details: dict | None = None,
                 headers: dict | None = None) -> None:
        message = _cap_message(message)
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = _cap_causes(details)
        self.headers = headers or {}

    def to_status(self) -> dict:
        """The ``Status`` dict, keys in the Go struct's order, empty fields left out."""
        st: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        if self.message:
            st["message"] = self.message
        if self.reason:
            st["reason"] = self.reason
        if self.details is not None:
            st["details"] = _ordered_details(self.details)
        if self.code:
            st["code"] = self.code
        return st


_DETAILS_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")
_CAUSE_ORDER = ("reason", "message", "field")


def _ordered_details(details: dict) -> dict:
    out = {k: details[k] for k in _DETAILS_ORDER if details.get(k)}
    if out.get("causes"):
        out["causes"] = [{k: c[k] for k in _CAUSE_ORDER if c.get(k)} for c in out["causes"]]
    out.update((k, v) for k, v in details.items() if k not in _DETAILS_ORDER and v)
    return out


def _cap_message(message: str) -> str:
    if len(message) <= limits.MAX_STATUS_MESSAGE_CHARS:
        return message
    return message[:limits.MAX_STATUS_MESSAGE_CHARS] + "... (truncated)"


def _cap_causes(details: dict | None) -> dict | None:
    causes = (details or {}).get("causes")
    if not causes:
        return details
    kept = _bounded(causes, len(causes))
    return details if len(kept) == len(causes) else {**details, "causes": kept}


def _bounded(causes, total: int) -> list[dict]:
    """The first causes of an iterable of ``total`` that fit MAX_STATUS_CAUSES_CHARS (at least one),
    plus a last one saying how many were left out."""
    kept: list[dict] = []
    size = 0
    for cause in causes:
        cause = {**cause, "message": _cap_message(cause.get("message") or "")}
        size += sum(len(str(v)) for v in cause.values())
        if kept and size > limits.MAX_STATUS_CAUSES_CHARS:
            kept.append({"message": f"{total - len(kept)} more causes omitted"})
            break
        kept.append(cause)
    return kept


def encode_json(obj: Any) -> bytes:
    """JSON bytes as upstream's serializer (Go's ``json.Encoder``) writes them: HTML-sensitive
    characters and the two Unicode line separators escaped, and a trailing newline. Those
    characters are only ever inside strings, so escaping the encoded bytes is exact."""
    data = orjson.dumps(obj)
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data + b"\n"


_GO_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
               ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def encode_status(status: StatusError | dict) -> bytes:
    """A Status (an error, or a Status dict) as upstream writes it in a response body."""
    if isinstance(status, StatusError):
        return encode_json(status.to_status())
    details = status.get("details")
    err = StatusError(status.get("code") or 0, status.get("reason") or "", status.get("message") or "",
                      details=details if isinstance(details, dict) else None)
    st = err.to_status()
    st["status"] = status.get("status") or "Failure"
    return encode_json(st)


def _details(name: str | None, group: str | None, kind: str | None, causes: list[dict] | None = None,
             retry_after: int | None = None) -> dict:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if causes:
        d["causes"] = causes
    if retry_after:
        d["retryAfterSeconds"] = retry_after
    return d


def not_found(resource: str, group: str, name: str) -> StatusError:
    gr = f"{resource}.{group}" if group else resource
    return StatusError(404, "NotFound", f'{gr} "{name}" not found', details=_details(name, group, resource))


def already_exists(resource: str, group: str, name: str) -> StatusError:
    gr = f"{resource}.{group}" if group else resource
    return StatusError(409, "AlreadyExists", f'{gr} "{name}" already exists',
                       details=_details(name, group, resource))


def conflict(resource: str, group: str, name: str, detail: str) -> StatusError:
    gr = f"{resource}.{group}" if group else resource
    return StatusError(409, "Conflict", f'Operation cannot be fulfilled on {gr} "{name}": {detail}',
                       details=_details(name, group, resource))


STALE_DETAIL = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(kind: str, group: str, name: str, errs: list[FieldError]) -> StatusError:
    """422 Invalid, as upstream's ``NewInvalid``: one cause per error, and a message that lists
    each distinct error once (its ``ToAggregate``). Both are bounded (see `StatusError`)."""
    qk = f"{kind}.{group}" if group else kind
    distinct: list[str] = []
    seen: set[str] = set()
    size = 0
    for e in errs:
        text = str(e)
        if text not in seen:
            seen.add(text)
            distinct.append(text)
            size += len(text) + 2
            if size > limits.MAX_STATUS_MESSAGE_CHARS:
                break  # the message is cut here anyway
    agg = distinct[0] if len(distinct) == 1 else "[" + ", ".join(distinct) + "]"
    causes = _bounded((e.cause() for e in errs), len(errs))
    return StatusError(422, "Invalid", f'{qk} "{name}" is invalid: {agg}',
                       details=_details(name, group, kind, causes))


def bad_request(message: str, causes: list[dict] | None = None) -> StatusError:
    return StatusError(400, "BadRequest", message, details={"causes": causes} if causes else None)


def forbidden_error(user: str, verb: str, resource: str, group: str, name: str = "", namespace: str = "",
                    reason: str = "") -> StatusError:
    gr = f'"{resource}" in API group "{group}"'
    what = f'{resource}{"." + group if group else ""} "{name}" is forbidden' if name else \
        f'{resource}{"." + group if group else ""} is forbidden'
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    msg = f'{what}: User "{user}" cannot {verb} resource {gr}{scope}'
    if reason:
        msg += f": {reason}"
    return StatusError(403, "Forbidden", msg, details=_details(name, group, resource))


def forbidden_status(resource: str, group: str, name: str, message: str) -> StatusError:
    gr = f"{resource}.{group}" if group else resource
    return StatusError(403, "Forbidden", f'{gr} "{name}" is forbidden: {message}',
                       details=_details(name, group, resource))


def method_not_allowed(verb: str, resource: str) -> StatusError:
    return StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                       details=_details(None, None, resource))


def gone(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def too_many_requests(message: str = "Too many requests, please try again later.", retry_after: int = 1) \
        -> StatusError:
    return StatusError(429, "TooManyRequests", message, details=_details(None, None, None, None, retry_after),
                       headers={"Retry-After": str(retry_after)})


def request_entity_too_large(message: str) -> StatusError:
    """413, as upstream's ``NewRequestEntityTooLargeError``."""
    return StatusError(413, "RequestEntityTooLarge", f"Request entity too large: {message}")


def body_too_large(limit: int = limits.MAX_REQUEST_BODY_BYTES) -> StatusError:
    """The 413 for a request body over ``limit`` bytes (upstream's limited body read)."""
    return request_entity_too_large(f"limit is {limit}")


def unsupported_media_type(accepted: list[str] | tuple[str, ...]) -> StatusError:
    return StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                       f"accepted media types include: {', '.join(accepted)}")


def not_acceptable(message: str) -> StatusError:
    return StatusError(406, "NotAcceptable", message)


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {message}",
                       details={"causes": [{"message": message}]})


def timeout(message: str) -> StatusError:
    return StatusError(504, "Timeout", message)
