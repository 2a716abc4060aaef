"""Access and token reviews (SubjectAccessReview, LocalSubjectAccessReview,
SelfSubjectAccessReview, TokenReview) and anonymous requests, in process."""

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from inprocess import api_server, http

AZ = "/apis/authorization.k8s.io/v1"
AN = "/apis/authentication.k8s.io/v1"


def run(coro):
    return asyncio.run(coro)


def sar(spec, kind="SubjectAccessReview"):
    return {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}


PODS = {"verb": "list", "resource": "pods", "namespace": "dev"}


def test_subject_access_review():
    async def go():
        api = await api_server()
        async with http(api) as c:
            r = await c.post(f"{AZ}/subjectaccessreviews", json=sar({"user": "bob", "resourceAttributes": PODS}))
            assert r.status == 201
            assert (await r.json())["status"]["allowed"] is False
            r = await c.post(f"{AZ}/subjectaccessreviews", json=sar(
                {"user": "bob", "groups": ["system:masters"], "resourceAttributes": PODS}))
            assert (await r.json())["status"]["allowed"] is True
            # a non-resource URL everyone may read
            r = await c.post(f"{AZ}/subjectaccessreviews", json=sar(
                {"user": "bob", "groups": ["system:authenticated"],
                 "nonResourceAttributes": {"verb": "get", "path": "/version"}}))
            assert (await r.json())["status"]["allowed"] is True
            r = await c.post(f"{AZ}/subjectaccessreviews", json=sar({"resourceAttributes": PODS}))
            assert r.status == 422
            body = await r.json()
            assert body["message"] == ('SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid '
                                       'value: "": at least one of user or group must be specified')
            r = await c.post(f"{AZ}/subjectaccessreviews", json=sar({"user": "bob"}))
            assert r.status == 422
            assert "exactly one of nonResourceAttributes or resourceAttributes" in (await r.json())["message"]
    run(go())


def test_local_subject_access_review():
    async def go():
        api = await api_server()
        async with http(api) as c:
            url = f"{AZ}/namespaces/dev/localsubjectaccessreviews"
            r = await c.post(url, json=sar({"user": "x", "groups": ["system:masters"], "resourceAttributes": PODS},
                                           "LocalSubjectAccessReview"))
            assert r.status == 201, await r.text()
            body = await r.json()
            assert body["status"]["allowed"] is True and body["metadata"]["namespace"] == "dev"
            r = await c.post(url, json=sar({"user": "x", "resourceAttributes": {**PODS, "namespace": "other"}},
                                           "LocalSubjectAccessReview"))
            assert r.status == 422
            assert "spec.resourceAttributes.namespace: Invalid value: \"other\": must match metadata.namespace" in \
                (await r.json())["message"]
            r = await c.post(url, json=sar({"user": "x", "nonResourceAttributes": {"verb": "get", "path": "/"}},
                                           "LocalSubjectAccessReview"))
            assert r.status == 422 and "disallowed on this kind of request" in (await r.json())["message"]
    run(go())


def test_self_subject_access_review_is_for_the_impersonated_user():
    async def go():
        api = await api_server()
        async with http(api) as c:
            body = sar({"resourceAttributes": {"verb": "delete", "resource": "nodes"}}, "SelfSubjectAccessReview")
            r = await c.post(f"{AZ}/selfsubjectaccessreviews", json=body)
            assert (await r.json())["status"]["allowed"] is True
            r = await c.post(f"{AZ}/selfsubjectaccessreviews", json=body, headers={"Impersonate-User": "bob"})
            assert (await r.json())["status"]["allowed"] is False
    run(go())


def test_token_review(tmp_path):
    f = tmp_path / "tokens.csv"
    f.write_text('secret-bob,bob,1001,"dev,qa"\n')

    async def go():
        api = await api_server(token_file=str(f))
        async with http(api) as c:
            def tr(token, **spec):
                return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token, **spec}}
            r = await c.post(f"{AN}/tokenreviews", json=tr("secret-bob"))
            assert r.status == 201, await r.text()
            st = (await r.json())["status"]
            assert st["authenticated"] is True
            assert st["user"] == {"username": "bob", "uid": "1001", "groups": ["dev", "qa", "system:authenticated"]}
            r = await c.post(f"{AN}/tokenreviews", json=tr("nope"))
            assert (await r.json())["status"] == {"authenticated": False, "user": {}}
            r = await c.post(f"{AN}/tokenreviews", json=tr("secret-bob", audiences=["other"]))
            assert (await r.json())["status"]["authenticated"] is False
            r = await c.post(f"{AN}/tokenreviews", json=tr(""))
            assert r.status == 400
            # a service account token the server issued
            r = await c.post("/api/v1/namespaces/default/serviceaccounts/default/token",
                             json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
            assert r.status == 201, await r.text()
            token = (await r.json())["status"]["token"]
            r = await c.post(f"{AN}/tokenreviews", json=tr(token))
            st = (await r.json())["status"]
            assert st["authenticated"] is True
            assert st["user"]["username"] == "system:serviceaccount:default:default"
            assert "system:serviceaccounts:default" in st["user"]["groups"]
    run(go())


def test_anonymous_requests_and_anonymous_auth_off():
    async def go():
        api = await api_server()
        client = TestClient(TestServer(api.build_app(), host="127.0.0.1"))
        await client.start_server()
        try:
            for path in ("/healthz", "/livez", "/readyz", "/version"):
                r = await client.get(path)
                assert r.status == 200, path
            r = await client.get("/api/v1/namespaces/default/pods")
            assert r.status == 403
            assert (await r.json())["message"].startswith('pods is forbidden: User "system:anonymous" cannot list')
            for path in ("/api", "/apis", "/openapi/v2", "/metrics"):
                assert (await client.get(path)).status == 403, path
            r = await client.post(f"{AZ}/selfsubjectaccessreviews", json=sar(
                {"resourceAttributes": PODS}, "SelfSubjectAccessReview"))
            assert r.status == 403
            api.anonymous_auth = False
            for path in ("/healthz", "/version", "/api/v1/pods"):
                r = await client.get(path)
                assert r.status == 401, path
                assert (await r.json())["reason"] == "Unauthorized"
        finally:
            await client.close()
    run(go())
