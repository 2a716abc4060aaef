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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


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
    try:
        return _fmt(v)
    except (TypeError, ValueError):  # e.g. integers beyond 64 bits: still say what was sent
        import json
        return json.dumps(v, default=str)


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return orjson.dumps(v).decode()
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return orjson.dumps(v).decode()


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
    """An API failure carrying everything needed for a ``metav1.Status``."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_status(self) -> dict:
        st: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            st["details"] = self.details
        return st


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
    qk = f"{kind}.{group}" if group else kind
    if len(errs) == 1:
        agg = str(errs[0])
    else:
        agg = "[" + ", ".join(str(e) for e in errs) + "]"
    return StatusError(422, "Invalid", f'{qk} "{name}" is invalid: {agg}',
                       details=_details(name, group, kind, [e.cause() for e in errs]))


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
