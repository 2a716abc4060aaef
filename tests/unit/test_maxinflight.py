"""Overload protection (`kubeling.apiserver.filters.maxinflight`) and the long-running check it
shares with the timeout filter (`kubeling.apiserver.filters.longrunning`), on an in-process aiohttp
app whose handlers block until the test releases them."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from kubeling.apiserver import serving
from kubeling.apiserver.auth import ANONYMOUS, UserInfo
from kubeling.apiserver.filters import longrunning, maxinflight

ADMIN = UserInfo("admin", groups=("system:masters", "system:authenticated"))
ALICE = UserInfo("alice", groups=("system:authenticated",))
OPTIONS = serving.ServingOptions(raise_open_file_limit=False)


@pytest.mark.parametrize("method, path, query, want", [
    pytest.param("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, True, id="watch-param"),
    pytest.param("GET", "/api/v1/pods", {"watch": "True"}, True, id="python-client-watch-True"),
    pytest.param("GET", "/api/v1/pods", {"watch": "1"}, True, id="watch-1"),
    pytest.param("GET", "/api/v1/pods", {"watch": "false"}, False, id="watch-false-is-a-list"),
    pytest.param("GET", "/api/v1/pods", {"watch": "yes"}, False, id="not-a-go-bool"),
    pytest.param("GET", "/apis/apps/v1/watch/namespaces/ns/deployments", {}, True, id="legacy-watch-path"),
    pytest.param("GET", "/api/v1/namespaces/ns/pods/p/log", {}, True, id="log"),
    pytest.param("POST", "/api/v1/namespaces/ns/pods/p/exec", {}, True, id="exec"),
    pytest.param("GET", "/api/v1/namespaces/ns/pods/p/attach", {}, True, id="attach"),
    pytest.param("POST", "/api/v1/namespaces/ns/pods/p/portforward", {}, True, id="portforward"),
    pytest.param("GET", "/api/v1/namespaces/ns/services/s/proxy/a/b", {}, True, id="service-proxy"),
    pytest.param("GET", "/api/v1/nodes/n/proxy/metrics", {}, True, id="node-proxy"),
    pytest.param("GET", "/api/v1/proxy/namespaces/ns/pods/p", {}, True, id="legacy-proxy-verb"),
    pytest.param("GET", "/api/v1/namespaces/ns/pods/p/status", {}, False, id="status"),
    pytest.param("PUT", "/api/v1/namespaces/log/finalize", {}, False, id="namespace-named-log"),
    pytest.param("GET", "/api/v1/namespaces/ns/pods", {}, False, id="list"),
    pytest.param("POST", "/api/v1/namespaces/ns/pods", {"watch": "true"}, False, id="watch-param-on-a-post"),
    pytest.param("GET", "/healthz", {"watch": "true"}, False, id="non-resource"),
    pytest.param("GET", "/apis/apps", {}, False, id="group-discovery"),
])
def test_is_long_running(method, path, query, want):
    assert longrunning.is_long_running(method, path, query) is want


class Gate:
    """Handlers that wait on an event, so that a test decides how many requests are in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def handler(self, request: web.Request) -> web.Response:
        self.entered += 1
        await self.release.wait()
        return web.Response(text="done")


def app_with(gate: Gate, limiter: maxinflight.MaxInFlight) -> web.Application:
    @web.middleware
    async def authn(request, handler):  # stands in for the pipeline's authentication
        request["user"] = {"admin": ADMIN, "alice": ALICE}.get(request.headers.get("X-User", ""), ANONYMOUS)
        return await handler(request)

    app = web.Application(middlewares=[authn, limiter.middleware])
    app.router.add_route("*", "/{tail:.*}", gate.handler)
    return app


async def _fill(session, base, method, path, n, gate, headers=None):
    tasks = [asyncio.create_task(session.request(method, base + path, headers=headers)) for _ in range(n)]
    for _ in range(200):
        if gate.entered >= n:
            break
        await asyncio.sleep(0.01)
    return tasks


@pytest.mark.parametrize("fill, probe, headers, status", [
    pytest.param(("GET", "/api/v1/pods", 2), ("GET", "/api/v1/pods"), None, 429, id="reads-over-the-budget"),
    pytest.param(("POST", "/api/v1/namespaces/ns/pods", 1), ("DELETE", "/api/v1/namespaces/ns/pods/p"), None, 429,
                 id="mutations-over-the-budget"),
    pytest.param(("POST", "/api/v1/namespaces/ns/pods", 1), ("GET", "/api/v1/pods"), None, 200,
                 id="reads-unaffected-by-spent-mutating-budget"),
    pytest.param(("GET", "/api/v1/pods", 2), ("POST", "/api/v1/namespaces/ns/pods"), None, 200,
                 id="mutations-unaffected-by-spent-read-budget"),
    pytest.param(("GET", "/api/v1/pods", 2), ("GET", "/readyz"), None, 200, id="readyz-never-refused"),
    pytest.param(("GET", "/api/v1/pods", 2), ("GET", "/livez/ping"), None, 200, id="livez-check-never-refused"),
    pytest.param(("GET", "/api/v1/pods", 2), ("GET", "/api/v1/pods"), {"X-User": "admin"}, 200,
                 id="system-masters-exempt"),
    pytest.param(("GET", "/api/v1/pods", 2), ("GET", "/api/v1/pods"), {"X-User": "alice"}, 429,
                 id="other-users-not-exempt"),
    pytest.param(("GET", "/api/v1/pods?watch=true", 5), ("GET", "/api/v1/pods"), None, 200,
                 id="watches-are-not-counted"),
])
def test_budgets(fill, probe, headers, status):
    """Budgets of 2 reads and 1 mutation; ``fill`` blocks in its handlers, then the probe."""
    (got_status, _, body, _), _ = scenario(limits=(2, 1), fill=fill, probe=probe, headers=headers)
    assert got_status == status, body


def scenario(limits, fill, probe, headers):
    """Fill a budget with ``fill=(method, path, n)`` requests blocked in their handler, send the
    ``probe``, then release everything. Returns the probe's (status, headers, body, answered
    before the release) and the limiter."""
    async def main():
        gate = Gate()
        limiter = maxinflight.MaxInFlight(*limits, registry=CollectorRegistry())
        listener = await serving.start(app_with(gate, limiter), "127.0.0.1", 0, None, OPTIONS)
        base = f"http://127.0.0.1:{listener.port}"
        try:
            async with aiohttp.ClientSession() as session:
                blocked = await _fill(session, base, *fill, gate)
                probe_task = asyncio.create_task(session.request(probe[0], base + probe[1], headers=headers))
                done, _ = await asyncio.wait([probe_task], timeout=0.5)  # a refusal is immediate
                gate.release.set()
                r = await probe_task
                got = (r.status, dict(r.headers), await r.read(), bool(done))
                r.release()
                for t in blocked:
                    (await t).release()
            return got, limiter
        finally:
            await listener.close()

    return asyncio.run(main())


def test_refusal_is_upstreams_429_status_with_retry_after():
    (status, headers, body, immediate), limiter = scenario(
        limits=(1, 1), fill=("GET", "/api/v1/pods", 1), probe=("GET", "/api/v1/pods"), headers=None)
    assert (status, immediate, headers["Retry-After"], headers["Content-Type"]) == \
        (429, True, "1", "application/json")
    assert orjson.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": "Too many requests, please try again later.",
                                  "reason": "TooManyRequests", "details": {"retryAfterSeconds": 1}, "code": 429}
    assert limiter.rejected == {"readOnly": 1, "mutating": 0}
    assert limiter.inflight == {"readOnly": 0, "mutating": 0}  # every slot given back


def test_zero_disables_a_budget():
    (status, *_), _ = scenario(limits=(0, 1), fill=("GET", "/api/v1/pods", 5),
                                         probe=("GET", "/api/v1/pods"), headers=None)
    assert status == 200


def test_inflight_gauge_and_slot_release_on_handler_failure():
    registry = CollectorRegistry()
    limiter = maxinflight.MaxInFlight(3, 3, registry=registry)
    seen = []

    @web.middleware
    async def observe(request, handler):
        seen.append(registry.get_sample_value("apiserver_current_inflight_requests", {"request_kind": "mutating"}))
        return await handler(request)

    async def boom(request):
        raise RuntimeError("handler fault")

    async def main():
        app = web.Application(middlewares=[limiter.middleware, observe])
        app.router.add_route("*", "/{tail:.*}", boom)
        listener = await serving.start(app, "127.0.0.1", 0, None, OPTIONS)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(5):  # more than the budget: each failure must give its slot back
                    async with session.post(f"http://127.0.0.1:{listener.port}/api/v1/namespaces/ns/pods") as r:
                        assert r.status == 500
        finally:
            await listener.close()

    asyncio.run(main())
    assert seen == [1.0] * 5
    assert limiter.inflight["mutating"] == 0 and limiter.rejected["mutating"] == 0
    assert registry.get_sample_value("apiserver_current_inflight_requests", {"request_kind": "mutating"}) == 0
