"""Bootstrap tokens (`kubeling.clusterbootstrap.token`) and their authenticator, alone and inside
an in-process API server: who a token is, and every way a token is refused (401)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt

import pytest

from kubeling.apiserver.authenticator.bootstraptoken import BootstrapTokenAuthenticator, TokenInvalid
from kubeling.clusterbootstrap import token as bt
from inprocess import api_server, ctx, http

TOKEN = "abcdef.0123456789abcdef"


class Getter:
    def __init__(self, *secrets: dict) -> None:
        self.secrets = {s["metadata"]["name"]: s for s in secrets}

    async def get(self, resource, namespace, name):
        assert (resource, namespace) == ("secrets", "kube-system")
        return self.secrets.get(name)


def authenticate(secret: dict | None, token: str = TOKEN):
    return asyncio.run(BootstrapTokenAuthenticator(Getter(*([secret] if secret else []))).authenticate(token))


def test_token_format_and_generate():
    assert bt.parse(TOKEN) == ("abcdef", "0123456789abcdef")
    for bad in ("abcde.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde", "abcdef0123456789abcdef"):
        assert bt.parse(bad) is None
    fresh = {bt.generate() for _ in range(20)}
    assert len(fresh) == 20 and all(bt.parse(t) for t in fresh)


def test_secret_for_has_upstream_keys():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    s = bt.secret_for(TOKEN, ttl=3600, description="for node-4", now=now)
    assert s["type"] == "bootstrap.kubernetes.io/token"
    assert s["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    assert bt.secret_data(s) == {"token-id": "abcdef", "token-secret": "0123456789abcdef",
                                 "expiration": "2026-01-01T01:00:00Z", "description": "for node-4",
                                 "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                                 "auth-extra-groups": "system:bootstrappers:kubeling:default-node-token"}
    with pytest.raises(ValueError, match="bootstrap group"):
        bt.secret_for(TOKEN, groups=["system:masters"])
    assert "expiration" not in bt.secret_data(bt.secret_for(TOKEN, ttl=0))


def test_a_valid_token_is_its_bootstrapper():
    user = authenticate(bt.secret_for(TOKEN, ttl=600, groups=["system:bootstrappers:worker"]))
    assert user.name == "system:bootstrap:abcdef"
    assert user.groups == ("system:bootstrappers", "system:bootstrappers:worker")


def _edit(secret: dict, **data) -> dict:
    for k, v in data.items():
        k = k.replace("_", "-")
        if v is None:
            secret["data"].pop(k, None)
        else:
            secret["data"][k] = base64.b64encode(v.encode()).decode()
    return secret


@pytest.mark.parametrize("secret, why", [
    pytest.param(None, "no secret", id="deleted"),
    pytest.param(_edit(bt.secret_for(TOKEN), token_secret="ffffffffffffffff"), "does not match", id="wrong-secret"),
    pytest.param(_edit(bt.secret_for(TOKEN), expiration="2020-01-01T00:00:00Z"), "expired", id="expired"),
    pytest.param(_edit(bt.secret_for(TOKEN), expiration="soon"), "expired", id="unreadable-expiration"),
    pytest.param(_edit(bt.secret_for(TOKEN), usage_bootstrap_authentication=None), "usage", id="no-auth-usage"),
    pytest.param(_edit(bt.secret_for(TOKEN), auth_extra_groups="system:masters"), "bootstrap group", id="bad-group"),
    pytest.param({**bt.secret_for(TOKEN), "type": "Opaque"}, "type", id="not-a-token-secret"),
    pytest.param({**bt.secret_for(TOKEN), "metadata": {"name": "bootstrap-token-abcdef",
                                                      "deletionTimestamp": "2026-01-01T00:00:00Z"}},
                 "being deleted", id="being-deleted"),
])
def test_refusals(secret, why):
    with pytest.raises(TokenInvalid, match=why):
        authenticate(secret)


def test_other_tokens_are_not_ours():
    assert authenticate(bt.secret_for(TOKEN), "not-a-bootstrap-token") is None


def test_api_server_authenticates_and_revokes():
    async def main():
        api = await api_server()
        secrets = api.lookup("", "v1", "secrets")
        await api.registry.create(secrets, bt.secret_for(TOKEN, ttl=600), ctx("kube-system"))
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
        async with http(api) as client:
            resp = await client.post(path, json=review, headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status == 201, await resp.text()
            info = (await resp.json())["status"]["userInfo"]
            assert info["username"] == "system:bootstrap:abcdef"
            assert set(info["groups"]) == {"system:bootstrappers", "system:authenticated",
                                           "system:bootstrappers:kubeling:default-node-token"}
            wrong = "abcdef.ffffffffffffffff"
            resp = await client.post(path, json=review, headers={"Authorization": f"Bearer {wrong}"})
            assert resp.status == 401 and (await resp.json())["reason"] == "Unauthorized"
            await api.registry.delete(secrets, "kube-system", "bootstrap-token-abcdef", {}, ctx("kube-system"))
            resp = await client.post(path, json=review, headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status == 401
    asyncio.run(main())
