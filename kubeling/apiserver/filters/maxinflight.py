"""Overload protection: upstream's ``WithMaxInFlightLimit`` (``server/filters/maxinflight.go``).

Two independent budgets, as kube-apiserver's flags:

- ``--max-requests-inflight`` (default 400): read-only requests (``GET``/``HEAD``);
- ``--max-mutating-requests-inflight`` (default 200): everything else.

A request that finds its budget spent is answered at once (no queueing, as upstream) with
``429 TooManyRequests``, a ``Retry-After: 1`` header and a ``metav1.Status`` whose message is
upstream's ("Too many requests, please try again later."). client-go and kubectl retry a 429
after ``Retry-After`` on their own.

Not counted, never refused:

- long-running requests (watch, proxy, exec, attach, log, portforward): they would hold a slot
  for hours (``filters.longrunning``);
- ``/healthz``, ``/livez``, ``/readyz`` and their sub-checks: upstream's default API Priority and
  Fairness configuration puts probes in the ``exempt`` priority level, so a load balancer never
  takes an overloaded server out of rotation because of the overload itself;
- users in ``system:masters``: upstream's filter lets them through when the budget is spent
  ("a super-admin or a loopback connection"). This needs the authenticated user, so the
  middleware must run *after* authentication has stored it in ``request["user"]`` (anything
  with a ``groups`` attribute). Without a user, no one is exempt by group.

A limit of 0 disables that budget (upstream: "zero means no limit").

Counters are plain integers on one event loop: a slot is taken and released without an
``await`` in between the check and the increment, so no lock is needed. The slot is released
in ``finally``, whatever the handler raises (cancellation included).

Metrics: ``apiserver_current_inflight_requests{request_kind="readOnly"|"mutating"}`` (a gauge, as
upstream) when a Prometheus ``registry`` is given.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver.filters import longrunning

DEFAULT_MAX_READONLY = 400  # --max-requests-inflight
DEFAULT_MAX_MUTATING = 200  # --max-mutating-requests-inflight
RETRY_AFTER_SECONDS = 1
PRIVILEGED_GROUP = "system:masters"
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})
PROBE_PATHS = ("/healthz", "/livez", "/readyz")
READ_ONLY_KIND, MUTATING_KIND = "readOnly", "mutating"


def is_probe(path: str) -> bool:
    """``/healthz``, ``/livez``, ``/readyz`` and their ``/<check>`` sub-paths."""
    return any(path == p or path.startswith(p + "/") for p in PROBE_PATHS)


def _privileged(request: web.Request) -> bool:
    user = request.get("user")
    return user is not None and PRIVILEGED_GROUP in getattr(user, "groups", ())


class MaxInFlight:
    """The two budgets and the middleware that spends them (see the module docstring)."""

    def __init__(self, max_readonly: int = DEFAULT_MAX_READONLY, max_mutating: int = DEFAULT_MAX_MUTATING,
                 is_long_running: Callable[[web.Request], bool] = longrunning.of_request, *,
                 registry=None) -> None:
        self.limits = {READ_ONLY_KIND: max_readonly, MUTATING_KIND: max_mutating}
        self.inflight = {READ_ONLY_KIND: 0, MUTATING_KIND: 0}
        self.rejected = {READ_ONLY_KIND: 0, MUTATING_KIND: 0}
        self.is_long_running = is_long_running
        self._gauge = None
        if registry is not None:
            from prometheus_client import Gauge

            self._gauge = Gauge("apiserver_current_inflight_requests",
                                "Maximal number of currently used inflight request limit of this apiserver per "
                                "request kind in last second.", ["request_kind"], registry=registry)

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if is_probe(request.path) or self.is_long_running(request):
            return await handler(request)
        kind = READ_ONLY_KIND if request.method in READ_ONLY_METHODS else MUTATING_KIND
        limit = self.limits[kind]
        if limit and self.inflight[kind] >= limit and not _privileged(request):
            self.rejected[kind] += 1
            return too_many_requests()
        self._add(kind, 1)
        try:
            return await handler(request)
        finally:
            self._add(kind, -1)

    def _add(self, kind: str, delta: int) -> None:
        self.inflight[kind] += delta
        if self._gauge is not None:
            self._gauge.labels(kind).set(self.inflight[kind])


def too_many_requests() -> web.Response:
    """The 429 answer: a ``metav1.Status`` with upstream's message and ``Retry-After: 1``."""
    e = errors.too_many_requests(retry_after=RETRY_AFTER_SECONDS)
    return web.Response(status=e.code, body=orjson.dumps(e.to_status()), content_type="application/json",
                        headers=e.headers)


def middleware(max_readonly: int = DEFAULT_MAX_READONLY, max_mutating: int = DEFAULT_MAX_MUTATING,
               is_long_running: Callable[[web.Request], bool] = longrunning.of_request, *, registry=None):
    """An aiohttp middleware enforcing both budgets; see `MaxInFlight`."""
    return MaxInFlight(max_readonly, max_mutating, is_long_running, registry=registry).middleware
