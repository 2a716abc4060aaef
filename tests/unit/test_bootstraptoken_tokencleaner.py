"""The token cleaner against the FakeClient: expired bootstrap token Secrets go, on time."""

import asyncio
import datetime as dt

from controller_testing import ControllerHarness

from kubeling.client.clock import FakeClock
from kubeling.clusterbootstrap import token as bt
from kubeling.controllers.bootstrap.tokencleaner import TokenCleaner

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
KS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}


def token_secret(token_id: str, ttl: float | None, **extra) -> dict:
    s = bt.secret_for(f"{token_id}.0123456789abcdef", ttl=ttl, now=START)
    s["metadata"]["uid"] = f"uid-{token_id}"
    s.update(extra)
    return s


def names(client) -> list[str]:
    res = client.tracker.resource("", "v1", "secrets")
    return sorted(s["metadata"]["name"] for s in client.tracker.list(res, "kube-system", None, None))


def test_expired_tokens_are_deleted_on_time():
    opaque = {**token_secret("cccccc", 10), "type": "Opaque"}
    opaque["metadata"] = {**opaque["metadata"], "name": "not-a-token"}
    unreadable = token_secret("dddddd", None)
    unreadable["data"]["expiration"] = "c29vbg=="    # "soon": counts as expired

    async def main():
        async with ControllerHarness(TokenCleaner, KS, token_secret("aaaaaa", 100), token_secret("bbbbbb", None),
                                     opaque, unreadable, clock=FakeClock(wall=START)) as h:
            await h.step(0)
            assert names(h.client) == ["bootstrap-token-aaaaaa", "bootstrap-token-bbbbbb", "not-a-token"]
            await h.step(99)
            assert "bootstrap-token-aaaaaa" in names(h.client)
            await h.step(1.5)
            assert names(h.client) == ["bootstrap-token-bbbbbb", "not-a-token"]
            for a in h.client.filter_actions("delete", "secrets"):
                assert a.options["preconditions"] == {"uid": f"uid-{a.name.rpartition('-')[2]}"}

    asyncio.run(main())
