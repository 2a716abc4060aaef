"""Service account tokens: TokenRequest (``serviceaccounts/<name>/token``) and the bearer JWT
authenticator, on an in-process API server over the in-memory store."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest

from kubeling.api import errors
from kubeling.apiserver import serviceaccount as sat
from kubeling.apiserver.registry.core.serviceaccount import TokenRequestREST

from inprocess import api_server, ctx, http

NS = "default"
TOKEN_PATH = f"/api/v1/namespaces/{NS}/serviceaccounts/default/token"


def run(coro):
    return asyncio.run(coro)


def claims_of(token: str) -> dict:
    return orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def tamper(token: str) -> str:
    h, _, s = token.split(".")
    c = claims_of(token)
    c["sub"] = "system:serviceaccount:default:admin"
    return ".".join([h, base64.urlsafe_b64encode(orjson.dumps(c)).rstrip(b"=").decode(), s])


async def default_account(api, ns: str = NS) -> dict:
    """The namespace's ``default`` account: made here, or as made by whatever bootstrapped the server."""
    served = api.lookup("", "v1", "serviceaccounts")
    try:
        return await api.registry.create(served, {"metadata": {"name": "default", "namespace": ns}}, ctx(ns))
    except errors.StatusError as e:
        if e.reason != "AlreadyExists":
            raise
        return await api.registry.get_raw(served, ns, "default")


async def setup(api):
    """``default`` ServiceAccount and an unbound pod ``p`` running as it; returns (sa, pod)."""
    sa = await default_account(api)
    pod = await api.registry.create(api.lookup("", "v1", "pods"), {
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, ctx(NS))
    return sa, pod


async def request_token(client, spec: dict, path: str = TOKEN_PATH):
    r = await client.post(path, json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                      "spec": spec})
    return r.status, await r.json()


def test_token_request_defaults_and_claims():
    async def main():
        api = await api_server()
        sa, _ = await setup(api)
        async with http(api) as c:
            before = int(time.time())
            status, out = await request_token(c, {})
        assert status == 201
        assert out["apiVersion"] == "authentication.k8s.io/v1" and out["kind"] == "TokenRequest"
        assert out["metadata"]["name"] == "default" and out["metadata"]["namespace"] == NS
        assert out["spec"] == {"audiences": [sat.ISSUER], "expirationSeconds": 3600}
        token = out["status"]["token"]
        header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header == {"alg": "RS256", "kid": sat.key_id(api.service_account_keys.private.public_key())}
        c = claims_of(token)
        assert c["iss"] == sat.ISSUER and c["aud"] == [sat.ISSUER]
        assert c["sub"] == "system:serviceaccount:default:default"
        assert before <= c["iat"] == c["nbf"] <= before + 2 and c["exp"] == c["iat"] + 3600
        assert c["kubernetes.io"] == {"namespace": NS, "serviceaccount": {"name": "default",
                                                                          "uid": sa["metadata"]["uid"]}}
        assert out["status"]["expirationTimestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c["exp"]))
        user = await api.service_account_tokens.authenticate(token)
        assert user.name == "system:serviceaccount:default:default" and user.uid == sa["metadata"]["uid"]
        assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default")
        assert user.extra == {sat.EXTRA_CREDENTIAL_ID: [f"JTI={c['jti']}"]}
    run(main())


@pytest.mark.parametrize("spec, code, message", [
    pytest.param({"expirationSeconds": 599}, 422, 'TokenRequest.authentication.k8s.io "" is invalid: '
                 "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes",
                 id="too-short"),
    pytest.param({"expirationSeconds": (1 << 32) + 1}, 422, "may not specify a duration larger than 2^32 seconds",
                 id="too-long"),
    pytest.param({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}, 400,
                 "cannot bind token to object of type /v1, Kind=ConfigMap", id="unsupported-kind"),
    pytest.param({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "missing"}}, 404,
                 'pods "missing" not found', id="missing-pod"),
    pytest.param({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "not-its-uid"}}, 409,
                 'Operation cannot be fulfilled on Pod "p": the UID in the bound object reference (not-its-uid) '
                 "does not match the UID in record", id="wrong-uid"),
    pytest.param({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "other"}}, 400,
                 'cannot bind token for serviceaccount "default" to pod running with different serviceaccount name.',
                 id="pod-of-another-account"),
])
def test_token_request_refusals(spec, code, message):
    async def main():
        api = await api_server()
        await setup(api)
        await api.registry.create(api.lookup("", "v1", "serviceaccounts"),
                                  {"metadata": {"name": "builder", "namespace": NS}}, ctx(NS))
        await api.registry.create(api.lookup("", "v1", "pods"), {
            "metadata": {"name": "other", "namespace": NS},
            "spec": {"serviceAccountName": "builder", "containers": [{"name": "c", "image": "busybox"}]}}, ctx(NS))
        async with http(api) as c:
            status, out = await request_token(c, spec)
        assert status == code, out
        assert message in out["message"]
    run(main())


def test_token_request_for_a_missing_account_or_mismatched_name():
    async def main():
        api = await api_server()
        await setup(api)
        async with http(api) as c:
            status, out = await request_token(c, {}, f"/api/v1/namespaces/{NS}/serviceaccounts/nobody/token")
            assert (status, out["message"]) == (404, 'serviceaccounts "nobody" not found')
            r = await c.post(TOKEN_PATH, json={"kind": "TokenRequest", "metadata": {"name": "other"}, "spec": {}})
            out = await r.json()
            assert r.status == 422 and out["details"]["causes"][0]["field"] == "metadata.name"
    run(main())


def test_pod_bound_token_and_the_extended_kubelet_token():
    async def main():
        api = await api_server()
        _, pod = await setup(api)
        ref = {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod["metadata"]["uid"]}
        async with http(api) as c:
            _, plain = await request_token(c, {"boundObjectRef": ref, "audiences": ["vault"], "expirationSeconds": 3607})
            _, kubelet = await request_token(c, {"boundObjectRef": ref, "expirationSeconds": 3607})
        pc = claims_of(plain["status"]["token"])
        assert pc["aud"] == ["vault"] and pc["exp"] - pc["iat"] == 3607 and "warnafter" not in pc["kubernetes.io"]
        assert pc["kubernetes.io"]["pod"] == {"name": "p", "uid": pod["metadata"]["uid"]}
        kc = claims_of(kubelet["status"]["token"])
        assert kc["exp"] - kc["iat"] == sat.EXTENDED_EXPIRATION_SECONDS
        assert kc["kubernetes.io"]["warnafter"] == kc["iat"] + 3607
        # The answer reports what was asked for, not the extension.
        assert kubelet["status"]["expirationTimestamp"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(kc["iat"] + 3607))
        user = await api.service_account_tokens.authenticate(kubelet["status"]["token"])
        assert user.extra[sat.EXTRA_POD_NAME] == ["p"] and user.extra[sat.EXTRA_POD_UID] == [pod["metadata"]["uid"]]
        with pytest.raises(sat.TokenInvalid, match="audiences"):  # "vault" is not an API audience
            await api.service_account_tokens.authenticate(plain["status"]["token"])
    run(main())


def test_max_expiration_shortens_with_a_warning():
    async def main():
        api = await api_server()
        await setup(api)
        api.scope.rest(TokenRequestREST).configure(api.service_account_keys, max_expiration_seconds=7200)
        async with http(api) as c:
            r = await c.post(TOKEN_PATH, json={"spec": {"expirationSeconds": 86400}})
            out = await r.json()
        assert out["spec"]["expirationSeconds"] == 7200
        assert "requested expiration of 86400 seconds shortened to 7200 seconds" in r.headers.get("Warning", "")
    run(main())


async def _delete_pod(api):
    await api.registry.delete(api.lookup("", "v1", "pods"), NS, "p", {"gracePeriodSeconds": 0}, ctx(NS))


async def _delete_sa(api):
    await api.registry.delete(api.lookup("", "v1", "serviceaccounts"), NS, "default", {}, ctx(NS))


async def _recreate_sa(api):
    await _delete_sa(api)
    await api.registry.create(api.lookup("", "v1", "serviceaccounts"),
                              {"metadata": {"name": "default", "namespace": NS}}, ctx(NS))


@pytest.mark.parametrize("change, token_of, message", [
    pytest.param(None, tamper, "cryptographic", id="tampered"),
    pytest.param(None, lambda t: t[:-8] + "AAAAAAAA", "cryptographic", id="bad-signature"),
    pytest.param(_delete_pod, None, "has been invalidated", id="bound-pod-deleted"),
    pytest.param(_delete_sa, None, 'serviceaccounts "default" not found', id="account-deleted"),
    pytest.param(_recreate_sa, None, "service account UID", id="account-recreated"),
])
def test_authenticator_refuses(change, token_of, message):
    async def main():
        api = await api_server()
        _, pod = await setup(api)
        async with http(api) as c:
            _, out = await request_token(c, {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p",
                                                                "uid": pod["metadata"]["uid"]}})
        token = out["status"]["token"]
        assert (await api.service_account_tokens.authenticate(token)) is not None
        if change is not None:
            await change(api)
        with pytest.raises(sat.TokenInvalid, match=message):
            await api.service_account_tokens.authenticate(token_of(token) if token_of else token)
    run(main())


@pytest.mark.parametrize("offset, ok, message", [
    pytest.param(3600 + 59, True, "", id="expired-within-leeway"),
    pytest.param(3600 + 61, False, "has expired", id="expired"),
    pytest.param(-59, True, "", id="not-before-within-leeway"),
    pytest.param(-61, False, "not valid yet", id="not-yet-valid"),
])
def test_authenticator_time_checks_with_leeway(offset, ok, message):
    async def main():
        api = await api_server()
        await setup(api)
        async with http(api) as c:
            _, out = await request_token(c, {})
        token = out["status"]["token"]
        iat = claims_of(token)["iat"]
        auth = sat.Authenticator(api.service_account_keys, sat.StoreGetter(api.registry, api.lookup),
                                 clock=lambda: iat + offset)
        if ok:
            assert (await auth.authenticate(token)).name == "system:serviceaccount:default:default"
        else:
            with pytest.raises(sat.TokenInvalid, match=message):
                await auth.authenticate(token)
    run(main())


def test_a_token_of_another_issuer_or_key_is_not_ours():
    async def main():
        api = await api_server()
        sa, _ = await setup(api)
        foreign = sat.Keys()  # another key: its tokens fail the signature check
        token = sat.sign(foreign, sat.bound_claims(sa, [sat.ISSUER], 3600))
        with pytest.raises(sat.TokenInvalid):
            await api.service_account_tokens.authenticate(token)
        other_issuer = sat.sign(api.service_account_keys, {**sat.bound_claims(sa, [sat.ISSUER], 3600),
                                                           "iss": "https://example.com"})
        assert await api.service_account_tokens.authenticate(other_issuer) is None
        assert await api.service_account_tokens.authenticate("not-a-jwt") is None
    run(main())


def test_legacy_secret_token_valid_while_the_secret_holds_it():
    async def main():
        api = await api_server()
        sa, _ = await setup(api)
        token = sat.sign(api.service_account_keys, sat.legacy_claims(sa, "default-token"))
        secrets = api.lookup("", "v1", "secrets")
        await api.registry.create(secrets, {
            "metadata": {"name": "default-token", "namespace": NS,
                         "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token",
            "data": {"token": base64.b64encode(token.encode()).decode()}}, ctx(NS))
        user = await api.service_account_tokens.authenticate(token)
        assert user.name == "system:serviceaccount:default:default" and user.uid == sa["metadata"]["uid"]
        assert "exp" not in claims_of(token)
        other = sat.sign(api.service_account_keys, {**sat.legacy_claims(sa, "default-token"), "extra": 1})
        with pytest.raises(sat.TokenInvalid, match="does not match server's copy"):
            await api.service_account_tokens.authenticate(other)
        await api.registry.delete(secrets, NS, "default-token", {}, ctx(NS))
        with pytest.raises(sat.TokenInvalid, match="invalidated"):
            await api.service_account_tokens.authenticate(token)
    run(main())


def test_bearer_token_over_http_identifies_the_account():
    """Through the whole pipeline: whoami answers the account; a pod list is refused naming it
    (no RBAC yet); a bad token is a 401."""
    async def main():
        api = await api_server()
        await setup(api)
        async with http(api) as c:
            _, out = await request_token(c, {})
            auth = {"Authorization": f"Bearer {out['status']['token']}"}
            r = await c.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", headers=auth,
                             json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            info = (await r.json())["status"]["userInfo"]
            assert r.status == 201 and info["username"] == "system:serviceaccount:default:default"
            assert set(info["groups"]) == {"system:serviceaccounts", "system:serviceaccounts:default",
                                           "system:authenticated"}
            r = await c.get(f"/api/v1/namespaces/{NS}/pods", headers=auth)
            assert r.status == 403
            assert (await r.json())["message"].startswith(
                'pods is forbidden: User "system:serviceaccount:default:default" cannot list resource "pods"')
            r = await c.get(f"/api/v1/namespaces/{NS}/pods", headers={"Authorization": f"Bearer {tamper(out['status']['token'])}"})
            assert r.status == 401 and (await r.json())["reason"] == "Unauthorized"
    run(main())


def test_node_bound_token_lives_with_its_node():
    async def main():
        api = await api_server()
        await setup(api)
        nodes = api.lookup("", "v1", "nodes")
        node = await api.registry.create(nodes, {"metadata": {"name": "n1"}}, ctx())
        async with http(api) as c:
            status, out = await request_token(c, {"boundObjectRef": {"kind": "Node", "apiVersion": "v1", "name": "n1"}})
        assert status == 201, out
        kube = claims_of(out["status"]["token"])["kubernetes.io"]
        assert kube["node"] == {"name": "n1", "uid": node["metadata"]["uid"]} and "pod" not in kube
        user = await api.service_account_tokens.authenticate(out["status"]["token"])
        assert user.extra[sat.EXTRA_NODE_NAME] == ["n1"]
        await api.registry.delete(nodes, None, "n1", {}, ctx())
        with pytest.raises(sat.TokenInvalid, match="invalidated"):
            await api.service_account_tokens.authenticate(out["status"]["token"])
    run(main())


def test_pod_bound_token_carries_the_pods_node():
    async def main():
        api = await api_server()
        await default_account(api)
        node = await api.registry.create(api.lookup("", "v1", "nodes"), {"metadata": {"name": "n1"}}, ctx())
        pod = await api.registry.create(api.lookup("", "v1", "pods"), {
            "metadata": {"name": "p", "namespace": NS},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}, ctx(NS))
        async with http(api) as c:
            _, out = await request_token(c, {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p",
                                                                "uid": pod["metadata"]["uid"]}})
        kube = claims_of(out["status"]["token"])["kubernetes.io"]
        assert kube["pod"]["name"] == "p" and kube["node"] == {"name": "n1", "uid": node["metadata"]["uid"]}
        user = await api.service_account_tokens.authenticate(out["status"]["token"])
        assert user.extra[sat.EXTRA_NODE_UID] == [node["metadata"]["uid"]]
    run(main())
