"""The audit webhook backend against a real aiohttp server in the test's loop: batches, retries
with back-off, drops when the webhook keeps failing or the buffer is full, flush on close."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web

from kubeling.apiserver import audit
from kubeling.apiserver.audit.webhook import WebhookBackend, WebhookError


def _kubeconfig(tmp_path, url: str) -> str:
    path = tmp_path / "hook.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "h", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "h", "user": "u"}}]}))
    return str(path)


async def _sink(answers: list[int]):
    """A webhook answering the given statuses in turn (then 200); (runner, url, bodies, headers)."""
    bodies, headers = [], []

    async def handle(request):
        headers.append(dict(request.headers))
        bodies.append(await request.json())
        return web.json_response({}, status=answers.pop(0) if answers else 200)
    app = web.Application()
    app.router.add_post("/audit", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/audit", bodies, headers


def test_batches_by_size_and_wait_with_the_kubeconfig_credentials(tmp_path):
    async def main():
        runner, url, bodies, headers = await _sink([])
        b = WebhookBackend(_kubeconfig(tmp_path, url), max_batch_size=3, max_batch_wait=0.3)
        await b.start()
        for i in range(4):
            b.process({"i": i})
        await asyncio.sleep(0.6)
        assert [[e["i"] for e in body["items"]] for body in bodies] == [[0, 1, 2], [3]]
        assert all(body["kind"] == "EventList" and body["apiVersion"] == "audit.k8s.io/v1" for body in bodies)
        assert headers[0]["Authorization"] == "Bearer s3cret"
        b.process({"i": 4})
        await b.aclose()                      # what is buffered goes out on close
        assert bodies[-1]["items"] == [{"i": 4}] and b.sent == 5 and b.dropped == 0
        await runner.cleanup()
    asyncio.run(main())


def test_a_failing_webhook_is_retried_then_the_batch_is_dropped_with_upstreams_line(tmp_path, caplog):
    async def main():
        runner, url, bodies, _ = await _sink([503, 429])
        b = WebhookBackend(_kubeconfig(tmp_path, url), max_batch_wait=0.05, initial_backoff=0.05)
        await b.start()
        b.process({"i": 1})
        for _ in range(100):
            if b.sent:
                break
            await asyncio.sleep(0.05)
        assert b.sent == 1 and len(bodies) == 3          # 503, 429, then 200
        await runner.cleanup()                            # the webhook goes away
        b.process({"i": 2})
        for _ in range(200):
            if b.dropped:
                break
            await asyncio.sleep(0.05)
        assert b.dropped == 1
        await b.aclose()
    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "Error in audit plugin 'webhook' affecting 1 audit events" in caplog.text


def test_a_full_buffer_drops_new_events_instead_of_waiting(tmp_path):
    async def main():
        b = WebhookBackend(_kubeconfig(tmp_path, "http://127.0.0.1:9/audit"), buffer_size=2)
        for i in range(5):
            b.process({"i": i})                            # not started: nothing drains the buffer
        assert b.dropped == 3
    asyncio.run(main())


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "blocking"}, "--audit-webhook-mode=blocking: only batch is supported"),
    ({"max_batch_size": 0}, "must be positive"),
])
def test_bad_flags_are_refused(tmp_path, kwargs, message):
    with pytest.raises(WebhookError, match=message):
        WebhookBackend(_kubeconfig(tmp_path, "http://127.0.0.1:9/audit"), **kwargs)


def test_from_options_unions_the_log_and_the_webhook(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    hook = _kubeconfig(tmp_path, "http://127.0.0.1:9/audit")
    both = audit.from_options(str(policy), str(tmp_path / "audit.log"), webhook_config_file=hook)
    assert [type(b).__name__ for b in both.backend.backends] == ["LogBackend", "WebhookBackend"]
    both.backend.backends[0].close()
    only = audit.from_options(str(policy), None, webhook_config_file=hook)
    assert type(only.backend).__name__ == "WebhookBackend" and only.enabled
    with pytest.raises(WebhookError, match="--audit-webhook-config-file"):
        audit.from_options(str(policy), None, webhook_config_file=str(tmp_path / "missing"))
