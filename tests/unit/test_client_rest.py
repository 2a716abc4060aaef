"""RESTClient against a scripted transport: paths, params, bodies, errors, watch parsing."""

import asyncio

import orjson
import pytest

from kubeling.api.errors import StatusError, conflict, not_found
from kubeling.client.clock import FakeClock
from kubeling.client.exceptions import ResourceExpired, TransportError, is_conflict, is_not_found
from kubeling.client.rest import RESTClient, decode_status_error, path
from kubeling.client.transport import Request, Response


class FakeStream:
    def __init__(self, status, lines, body=b""):
        self.status = status
        self.headers = {}
        self._lines = lines
        self._body = body
        self.closed = False

    async def read(self):
        return self._body

    async def __aiter__(self):
        for line in self._lines:
            if isinstance(line, Exception):
                raise line
            yield line

    async def aclose(self):
        self.closed = True


class FakeTransport:
    """Answers each request with the next scripted (status, body[, headers]) and records it."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[Request] = []
        self.streams: list[FakeStream] = []
        self.closed = False

    async def request(self, req, *, timeout=None):
        self.requests.append(req)
        status, body, *rest = self.answers.pop(0)
        if isinstance(body, (dict, list)):
            body = orjson.dumps(body)
        return Response(status, rest[0] if rest else {}, body)

    async def stream(self, req):
        self.requests.append(req)
        s = self.answers.pop(0)
        self.streams.append(s)
        return s

    async def close(self):
        self.closed = True


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("args,expected", [
    pytest.param(("", "v1", "pods"), "/api/v1/pods", id="core-cluster-list"),
    pytest.param(("", "v1", "pods", "ns"), "/api/v1/namespaces/ns/pods", id="core-namespaced-list"),
    pytest.param(("", "v1", "pods", "ns", "p", "status"), "/api/v1/namespaces/ns/pods/p/status", id="subresource"),
    pytest.param(("apps", "v1", "deployments", "ns", "d"), "/apis/apps/v1/namespaces/ns/deployments/d",
                 id="group"),
    pytest.param(("", "v1", "namespaces", None, "kube-system"), "/api/v1/namespaces/kube-system",
                 id="namespace-object"),
    pytest.param(("", "v1", "namespaces", "x", "x", "finalize"), "/api/v1/namespaces/x/finalize",
                 id="namespace-subresource-ignores-namespace-arg"),
    pytest.param(("rbac.authorization.k8s.io", "v1", "clusterroles", None, "system:admin"),
                 "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin", id="quoted-name"),
])
def test_path(args, expected):
    assert path(*args) == expected


def test_path_subresource_needs_name():
    with pytest.raises(ValueError):
        path("", "v1", "pods", "ns", None, "status")


def test_get_sends_headers_and_decodes():
    t = FakeTransport((200, {"kind": "Pod", "metadata": {"name": "p"}}))
    c = RESTClient(t, headers={"Authorization": "Bearer x"}, user_agent="kubeling/test")
    obj = run(c.get("", "v1", "pods", "p", namespace="ns"))
    assert obj["metadata"]["name"] == "p"
    req = t.requests[0]
    assert (req.method, req.path) == ("GET", "/api/v1/namespaces/ns/pods/p")
    assert req.headers["User-Agent"] == "kubeling/test"
    assert req.headers["Authorization"] == "Bearer x"
    assert req.headers["Accept"] == "application/json"


def test_list_params():
    t = FakeTransport((200, {"kind": "PodList", "items": []}))
    c = RESTClient(t)
    run(c.list("", "v1", "pods", namespace="ns", label_selector="app=x", field_selector="spec.nodeName=n",
               limit=10, continue_="tok", resource_version="0"))
    assert t.requests[0].params == [("labelSelector", "app=x"), ("fieldSelector", "spec.nodeName=n"),
                                    ("limit", "10"), ("continue", "tok"), ("resourceVersion", "0")]


def test_create_uses_object_namespace_and_field_manager():
    t = FakeTransport((201, {"kind": "ConfigMap"}))
    c = RESTClient(t)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team"}}
    run(c.create("", "v1", "configmaps", cm, field_manager="mgr", dry_run=True))
    req = t.requests[0]
    assert (req.method, req.path) == ("POST", "/api/v1/namespaces/team/configmaps")
    assert orjson.loads(req.body) == cm
    assert req.headers["Content-Type"] == "application/json"
    assert req.params == [("fieldManager", "mgr"), ("dryRun", "All")]


def test_update_and_update_status_put_to_the_object():
    t = FakeTransport((200, {}), (200, {}))
    c = RESTClient(t)
    d = {"metadata": {"name": "d", "namespace": "ns", "resourceVersion": "5"}}
    run(c.update("apps", "v1", "deployments", d))
    run(c.update_status("apps", "v1", "deployments", d))
    assert [(r.method, r.path) for r in t.requests] == [
        ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d"),
        ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/status"),
    ]


@pytest.mark.parametrize("patch_type,content_type", [
    pytest.param("json", "application/json-patch+json", id="json"),
    pytest.param("merge", "application/merge-patch+json", id="merge"),
    pytest.param("strategic", "application/strategic-merge-patch+json", id="strategic"),
    pytest.param("apply", "application/apply-patch+yaml", id="apply"),
])
def test_patch_content_types(patch_type, content_type):
    t = FakeTransport((200, {}))
    c = RESTClient(t)
    run(c.patch("", "v1", "pods", "p", {"metadata": {"labels": {"a": "b"}}}, namespace="ns",
                patch_type=patch_type, field_manager="m", force=True if patch_type == "apply" else None))
    req = t.requests[0]
    assert req.method == "PATCH" and req.headers["Content-Type"] == content_type
    assert ("fieldManager", "m") in req.params
    assert (("force", "true") in req.params) == (patch_type == "apply")


def test_apply_without_field_manager_is_refused():
    c = RESTClient(FakeTransport())
    with pytest.raises(ValueError):
        run(c.patch("", "v1", "pods", "p", {}, patch_type="apply"))


def test_delete_sends_delete_options():
    t = FakeTransport((200, {"kind": "Status", "status": "Success"}))
    c = RESTClient(t)
    run(c.delete("apps", "v1", "deployments", "d", namespace="ns", propagation_policy="Foreground",
                 grace_period_seconds=0, preconditions={"uid": "u1"}))
    assert orjson.loads(t.requests[0].body) == {
        "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}}


@pytest.mark.parametrize("err", [
    pytest.param(not_found("pods", "", "p"), id="404"),
    pytest.param(conflict("deployments", "apps", "d", "the object has been modified"), id="409"),
])
def test_status_errors_are_rebuilt(err):
    t = FakeTransport((err.code, err.to_status()))
    c = RESTClient(t)
    with pytest.raises(StatusError) as ei:
        run(c.get("", "v1", "pods", "p", namespace="ns"))
    e = ei.value
    assert (e.code, e.reason, e.message, e.details) == (err.code, err.reason, err.message, err.details)
    assert is_not_found(e) == (err.code == 404)
    assert is_conflict(e) == (err.code == 409)


def test_410_is_resource_expired():
    st = {"kind": "Status", "code": 410, "reason": "Expired", "message": "continue token too old"}
    with pytest.raises(ResourceExpired):
        run(RESTClient(FakeTransport((410, st))).list("", "v1", "pods"))


def test_non_status_error_body():
    e = decode_status_error(503, b"upstream connect error")
    assert (e.code, e.reason, e.message) == (503, "ServiceUnavailable", "upstream connect error")
    e = decode_status_error(404, b"")
    assert e.reason == "NotFound" and "404" in e.message


def test_429_is_retried_after_retry_after():
    async def main():
        clock = FakeClock()
        t = FakeTransport((429, {"kind": "Status", "code": 429}, {"Retry-After": "2"}), (200, {"ok": 1}))
        c = RESTClient(t, clock=clock)
        task = asyncio.create_task(c.get("", "v1", "pods", "p"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and len(t.requests) == 1
        clock.step(2)
        assert (await asyncio.wait_for(task, 1)) == {"ok": 1}
        assert len(t.requests) == 2

    run(main())


def test_client_side_rate_limit():
    async def main():
        clock = FakeClock()
        t = FakeTransport(*[(200, {})] * 3)
        c = RESTClient(t, qps=1, burst=2, clock=clock)
        await c.get("", "v1", "pods", "a")
        await c.get("", "v1", "pods", "b")
        third = asyncio.create_task(c.get("", "v1", "pods", "c"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(t.requests) == 2, "the third request must wait for a token"
        clock.step(1)
        await asyncio.wait_for(third, 1)

    run(main())


def _line(typ, obj):
    return orjson.dumps({"type": typ, "object": obj})


def test_watch_yields_events_and_bookmarks():
    async def main():
        s = FakeStream(200, [_line("ADDED", {"metadata": {"name": "a"}}), b"",
                             _line("BOOKMARK", {"metadata": {"resourceVersion": "7"}}),
                             _line("DELETED", {"metadata": {"name": "a"}})])
        t = FakeTransport(s)
        c = RESTClient(t)
        async with c.watch("", "v1", "pods", namespace="ns", name="a", resource_version="5") as w:
            events = [(typ, obj["metadata"]) async for typ, obj in w]
        assert events == [("ADDED", {"name": "a"}), ("BOOKMARK", {"resourceVersion": "7"}),
                          ("DELETED", {"name": "a"})]
        req = t.requests[0]
        assert req.path == "/api/v1/namespaces/ns/pods"
        assert ("watch", "true") in req.params and ("resourceVersion", "5") in req.params
        assert ("allowWatchBookmarks", "true") in req.params
        assert ("fieldSelector", "metadata.name=a") in req.params
        assert s.closed

    run(main())


def test_watch_error_410_raises_resource_expired():
    async def main():
        st = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
              "message": "too old resource version: 1 (5)"}
        s = FakeStream(200, [_line("ADDED", {"metadata": {"name": "a"}}), _line("ERROR", st)])
        c = RESTClient(FakeTransport(s))
        got = []
        with pytest.raises(ResourceExpired) as ei:
            async for ev in c.watch("", "v1", "pods"):
                got.append(ev[0])
        assert got == ["ADDED"] and ei.value.code == 410 and "too old" in ei.value.message
        assert s.closed

    run(main())


def test_watch_error_other_code_raises_status_error():
    async def main():
        st = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"}
        c = RESTClient(FakeTransport(FakeStream(200, [_line("ERROR", st)])))
        with pytest.raises(StatusError) as ei:
            async for _ in c.watch("", "v1", "pods"):
                pass
        assert not isinstance(ei.value, ResourceExpired) and ei.value.code == 500

    run(main())


def test_watch_non_2xx_start():
    async def main():
        body = orjson.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message": "no"})
        s = FakeStream(403, [], body)
        c = RESTClient(FakeTransport(s))
        with pytest.raises(StatusError) as ei:
            async with c.watch("", "v1", "secrets"):
                pass
        assert ei.value.code == 403 and s.closed

    run(main())


def test_watch_malformed_line_is_transport_error():
    async def main():
        s = FakeStream(200, [b"{not json"])
        with pytest.raises(TransportError):
            async for _ in RESTClient(FakeTransport(s)).watch("", "v1", "pods"):
                pass
        assert s.closed

    run(main())


def test_close_closes_transport():
    t = FakeTransport()
    run(RESTClient(t).close())
    assert t.closed
