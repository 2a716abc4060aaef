"""Which requests are long-running (upstream: ``BasicLongRunningRequestCheck``).

kube-apiserver builds its check from two sets: the verbs ``watch`` and ``proxy``, and the
subresources ``attach``, ``exec``, ``proxy``, ``log`` and ``portforward``. Long-running requests
are left out of the request timeout, of the in-flight limits and of the connection write
deadline: a watch or a ``logs -f`` may legitimately last for hours, and its memory is bounded
elsewhere (per-watch buffers).

`is_long_running(method, path, query)` is a pure function of the URL so that every filter
classifies a request the same way, before authentication and before the resource is resolved.
It follows upstream's RequestInfo rules:

- ``/api/v1/watch/...`` and ``/apis/<g>/<v>/watch/...`` are watches (legacy path form);
- ``GET`` with ``watch`` set to a Go ``strconv.ParseBool`` true value (``1``, ``t``, ``T``,
  ``true``, ``True``, ``TRUE``; the Python client sends ``True``) is a watch;
- ``/api/v1/proxy/...`` is the legacy proxy verb;
- the subresource is the third segment after the (optional) namespace, as in
  ``/api/v1/namespaces/<ns>/pods/<name>/log``.
Non-resource paths (``/healthz``, ``/openapi/v2``, ...) are never long-running.
"""

from __future__ import annotations

from collections.abc import Mapping

LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
# Go's strconv.ParseBool: the only spellings of true that metav1's parameter codec accepts.
GO_TRUE = frozenset({"1", "t", "T", "true", "True", "TRUE"})
# /api/v1/namespaces/<name>/<sub> addresses the namespace itself, not a resource inside it.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def is_long_running(method: str, path: str, query: Mapping[str, str]) -> bool:
    """True for watches, proxies, and attach/exec/log/portforward subresources."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return False
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if not rest:
        return False
    if rest[0] in LONG_RUNNING_VERBS:  # legacy /watch/... and /proxy/... prefixes
        return True
    if method in ("GET", "HEAD") and query.get("watch", "") in GO_TRUE:
        return True
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in NAMESPACE_SUBRESOURCES:
        rest = rest[2:]
    return len(rest) >= 3 and rest[2] in LONG_RUNNING_SUBRESOURCES


def of_request(request) -> bool:
    """`is_long_running` for an aiohttp request (the callable the filters take by default)."""
    return is_long_running(request.method, request.path, request.query)
