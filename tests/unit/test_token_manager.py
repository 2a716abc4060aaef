"""The agent's service account token manager: caching, refresh at 80 % of the TTL or 24 h,
shared in-flight requests, fallback to a still-valid token, forget/cleanup — with a scripted
client and clock, and once against an in-process API server over HTTP."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kubeling.api import errors
from kubeling.client.rest import RESTClient
from kubeling.client.transport import AiohttpTransport
from kubeling.kubelet.token import TokenManager

from inprocess import api_server, ctx, http

T0 = 1_700_000_000.0


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def pod(name="p", uid="uid-1"):
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid}}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class ScriptedClient:
    """Answers TokenRequests as the server does (expiry = now + expirationSeconds); can fail."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def create(self, group, version, resource, body, *, namespace=None, subresource=None, name=None):
        self.calls.append((resource, namespace, name, subresource, body))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        exp = body["spec"]["expirationSeconds"]
        return {**body, "status": {"token": f"token-{len(self.calls)}",
                                   "expirationTimestamp": rfc3339(self.clock.now + exp)}}


def manager():
    clock = Clock()
    client = ScriptedClient(clock)
    return TokenManager(client, clock=clock, rng=random.Random(7)), client, clock


def test_the_request_is_bound_to_the_pod():
    async def main():
        tm, client, _ = manager()
        token, expiry = await tm.get(pod(), "default", "", 3607)
        assert (token, expiry) == ("token-1", T0 + 3607)
        resource, ns, name, sub, body = client.calls[0]
        assert (resource, ns, name, sub) == ("serviceaccounts", "ns", "default", "token")
        assert body["spec"] == {"audiences": [], "expirationSeconds": 3607, "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "uid-1"}}
        await tm.get(pod(), "default", "vault", 3607)
        assert client.calls[1][4]["spec"]["audiences"] == ["vault"]
    asyncio.run(main())


@pytest.mark.parametrize("ttl, elapsed, refreshed", [
    pytest.param(3607, 0.79 * 3607 - 11, False, id="before-80-percent"),
    pytest.param(3607, 0.80 * 3607 + 1, True, id="after-80-percent"),
    pytest.param(7 * 24 * 3600, 23 * 3600, False, id="long-token-before-24h"),
    pytest.param(7 * 24 * 3600, 24 * 3600 + 1, True, id="long-token-after-24h"),
])
def test_refresh_points(ttl, elapsed, refreshed):
    async def main():
        tm, client, clock = manager()
        await tm.get(pod(), "default", "", ttl)
        clock.now += elapsed
        token, _ = await tm.get(pod(), "default", "", ttl)
        assert (token == "token-2") == refreshed
        assert len(client.calls) == (2 if refreshed else 1)
    asyncio.run(main())


def test_each_key_part_gets_its_own_token():
    async def main():
        tm, client, _ = manager()
        for args in [(pod(), "default", "", 3607), (pod(), "default", "", 3607), (pod(), "other", "", 3607),
                     (pod(), "default", "aud", 3607), (pod(), "default", "", 7200), (pod(uid="uid-2"), "default", "", 3607)]:
            await tm.get(*args)
        assert len(client.calls) == 5 and len(tm) == 5
        tm.forget("uid-1")
        assert len(tm) == 1
    asyncio.run(main())


def test_concurrent_gets_share_one_request():
    async def main():
        tm, client, _ = manager()
        client.gate = asyncio.Event()
        gets = [asyncio.create_task(tm.get(pod(), "default", "", 3607)) for _ in range(5)]
        await asyncio.sleep(0)
        client.gate.set()
        results = await asyncio.gather(*gets)
        assert len(client.calls) == 1 and {r[0] for r in results} == {"token-1"}
    asyncio.run(main())


def test_a_failed_refresh_falls_back_until_expiry():
    async def main():
        tm, client, clock = manager()
        await tm.get(pod(), "default", "", 3607)
        client.fail = errors.StatusError(500, "InternalError", "boom")
        clock.now += 0.9 * 3607
        assert (await tm.get(pod(), "default", "", 3607))[0] == "token-1"  # refresh failed: still valid
        clock.now = T0 + 3607 + 1
        with pytest.raises(errors.StatusError):
            await tm.get(pod(), "default", "", 3607)
        tm.cleanup()
        assert len(tm) == 0
    asyncio.run(main())


def test_against_the_api_server():
    """A real TokenRequest round trip: the token is bound to the pod and authenticates."""
    async def main():
        api = await api_server()
        try:
            await api.registry.create(api.lookup("", "v1", "serviceaccounts"),
                                      {"metadata": {"name": "default", "namespace": "default"}}, ctx("default"))
        except errors.StatusError as e:  # a bootstrap that makes default accounts is fine too
            assert e.reason == "AlreadyExists"
        p = await api.registry.create(api.lookup("", "v1", "pods"), {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, ctx("default"))
        async with http(api) as c:
            client = RESTClient(AiohttpTransport(str(c.make_url(""))))
            try:
                tm = TokenManager(client)
                token, expiry = await tm.get(p, "default", "", 3607)
                assert abs(expiry - (time.time() + 3607)) < 5
                user = await api.service_account_tokens.authenticate(token)
                assert user.extra["authentication.kubernetes.io/pod-uid"] == [p["metadata"]["uid"]]
                assert (await tm.get(p, "default", "", 3607))[0] == token  # cached
            finally:
                await client.close()
    asyncio.run(main())
