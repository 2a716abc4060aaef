"""postStart / preStop handlers: exec through a subprocess-backed runtime seam, httpGet against
a local aiohttp server (and the HTTPS->HTTP fallback), sleep, deadlines and invalid handlers."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from test_prober_runners import LocalRuntime, free_port

from kubeling.kubelet.lifecycle import format_pod, run_handler

POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}
CONTAINER = {"name": "app", "ports": [{"name": "admin", "containerPort": 1}]}
WHERE = 'for Container "app" in Pod "web_ns(u1)"'


def hook(handler, pod_ip="127.0.0.1", timeout=None, container=CONTAINER, events=None):
    runtime = LocalRuntime()
    record = (lambda *a: events.append(a)) if events is not None else None
    msg = asyncio.run(run_handler(runtime, POD, container, "c1", handler, pod_ip,
                                  timeout=timeout, record_event=record))
    return msg, runtime


@pytest.mark.parametrize("command, want", [
    pytest.param(["sh", "-c", "exit 0"], None, id="ok"),
    pytest.param(["sh", "-c", "echo half; echo bad >&2; exit 3"],
                 f"Exec lifecycle hook ([sh -c echo half; echo bad >&2; exit 3]) {WHERE} failed - "
                 "error: command 'sh -c echo half; echo bad >&2; exit 3' exited with 3: bad\n, "
                 'message: "half\\nbad\\n"', id="exit-3"),
])
def test_exec_hook(command, want):
    msg, runtime = hook({"exec": {"command": command}})
    assert msg == want
    assert runtime.calls[0][:2] == ("c1", command)


def test_exec_hook_is_cut_by_the_deadline():
    started = time.monotonic()
    msg, runtime = hook({"exec": {"command": ["sh", "-c", "sleep 10"]}}, timeout=0.5)
    assert time.monotonic() - started < 3
    assert runtime.calls[0][2] == 0.5
    assert msg == (f"Exec lifecycle hook ([sh -c sleep 10]) {WHERE} failed - error: "
                   'command "sh -c sleep 10" timed out, message: ""')


def _serve(routes):
    async def start():
        seen = []

        async def handler(request):
            seen.append(request)
            return web.Response(status=routes.get(request.path, 404))

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1], seen
    return start


@pytest.mark.parametrize("path, scheme", [
    pytest.param("/shutdown", "HTTP", id="200"),
    pytest.param("/broken", "HTTP", id="any-status-is-success"),
    pytest.param("/shutdown", "HTTPS", id="https-falls-back-to-http"),
])
def test_http_hook(path, scheme):
    async def main():
        runner, port, seen = await _serve({"/shutdown": 200, "/broken": 500})()
        events = []
        try:
            msg = await run_handler(LocalRuntime(), POD, CONTAINER, "c1", {"httpGet": {
                "path": path, "port": port, "scheme": scheme,
                "httpHeaders": [{"name": "Authorization", "value": "Bearer x"}]}}, "127.0.0.1",
                record_event=lambda *a: events.append(a))
        finally:
            await runner.cleanup()
        return msg, seen, events, port

    msg, seen, events, port = asyncio.run(main())
    assert msg is None
    (request,) = seen
    assert request.headers["User-Agent"] == "kube-lifecycle/1.33"
    if scheme == "HTTPS":
        assert "Authorization" not in request.headers
        assert events == [(POD, "Warning", "LifecycleHTTPFallback",
                           (f"request to HTTPS lifecycle hook 127.0.0.1:{port} got HTTP response, "
                           "retry with HTTP succeeded"))]
    else:
        assert request.headers["Authorization"] == "Bearer x" and events == []


def test_http_hook_failures():
    dead = free_port()
    msg, _ = hook({"httpGet": {"path": "/stop", "port": dead}})
    assert msg == (f"HTTP lifecycle hook (/stop) {WHERE} failed - error: Get "
                   f'"http://127.0.0.1:{dead}/stop": dial tcp 127.0.0.1:{dead}: connect: '
                   "connection refused")
    msg, _ = hook({"httpGet": {"path": "/stop", "port": "nope"}})
    assert msg.endswith('failed - error: strconv.Atoi: parsing "nope": invalid syntax')
    msg, _ = hook({"httpGet": {"path": "/stop", "port": 80}}, pod_ip="")
    assert msg.endswith("failed - error: failed to find networking container")


@pytest.mark.parametrize("seconds, timeout, want, at_least", [
    pytest.param(1, None, None, 0.9, id="sleeps"),
    pytest.param(5, 0.3, f"Sleep lifecycle hook (5) {WHERE} failed - error: container terminated "
                 "before sleep hook finished", 0.25, id="cut-by-grace"),
])
def test_sleep_hook(seconds, timeout, want, at_least):
    started = time.monotonic()
    msg, _ = hook({"sleep": {"seconds": seconds}}, timeout=timeout)
    elapsed = time.monotonic() - started
    assert msg == want
    assert at_least <= elapsed < at_least + 1


def test_invalid_handler_and_pod_format():
    msg, _ = hook({"tcpSocket": {"port": 80}})
    assert msg == 'Cannot run handler: invalid handler: {"tcpSocket": {"port": 80}}'
    assert format_pod(POD) == "web_ns(u1)"


def test_runtime_ignoring_timeout_is_abandoned():
    class Stuck:
        async def exec_sync(self, container_id, cmd, timeout):
            await asyncio.sleep(30)

    started = time.monotonic()
    msg = asyncio.run(run_handler(Stuck(), POD, CONTAINER, "c1", {"exec": {"command": ["x"]}},
                                  "127.0.0.1", timeout=0.2))
    assert time.monotonic() - started < 2
    assert msg == f"Exec lifecycle hook ([x]) {WHERE} failed - error: context deadline exceeded"
