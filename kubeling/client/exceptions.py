"""The client's exception tree.

::

    Exception
    ├── kubeling.api.errors.StatusError   the server answered with a failure Status
    │   │                                 (.code, .reason, .message, .details);
    │   │                                 e.g. ``e.code == 409`` for a conflict
    │   └── ResourceExpired               410: a list ``continue`` token or a watch's
    │                                     resourceVersion is too old; re-list
    ├── TransportError                    no answer: connection refused/reset, TLS
    │                                     failure, timeout, malformed response or stream
    └── ConfigError                       a kubeconfig that cannot be used

A StatusError is what the API server decided, so retrying the same request
usually gives the same answer (except 409 Conflict after a fresh read, 429, 5xx);
a TransportError is temporary by nature. The predicates below read better in
controllers than comparing codes.
"""

from __future__ import annotations

from kubeling.api.errors import StatusError


class ResourceExpired(StatusError):
    """HTTP 410 Gone / reason ``Expired``: the requested resourceVersion was compacted."""


class TransportError(Exception):
    """The request did not get an HTTP answer (or the answer could not be read)."""


class ConfigError(Exception):
    """A kubeconfig is missing, malformed, or names something that does not exist."""


def status_error(code: int, reason: str, message: str, details: dict | None = None) -> StatusError:
    """Build the right StatusError subclass for a Status coming back from the server."""
    cls = ResourceExpired if code == 410 else StatusError
    return cls(code, reason, message, details=details)


def is_not_found(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 404


def is_already_exists(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 409 and e.reason == "AlreadyExists"


def is_conflict(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 409 and e.reason == "Conflict"


def is_invalid(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 422


def is_gone(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 410


def is_forbidden(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 403


def is_too_many_requests(e: BaseException) -> bool:
    return isinstance(e, StatusError) and e.code == 429
