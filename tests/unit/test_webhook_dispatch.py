"""The webhook admission plugins on an in-process API server, calling a real HTTPS webhook
(tests/support/webhookserver.py): service references resolved to endpoints, reinvocation,
matchConditions, dryRun and sideEffects, UPDATE/DELETE requests, namespaceSelector on
Namespaces, and a patch that is not applicable."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from kubeling.api import errors

from inprocess import api_server, ctx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.webhookserver import WebhookServer  # noqa: E402

GROUP = "admissionregistration.k8s.io"


def run(coro):
    return asyncio.run(coro)


def pod(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                             "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def hook(name: str, cc: dict, **extra) -> dict:
    h = {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": cc,
         "rules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}
    h.update(extra)
    return h


async def install(api, kind: str, name: str, *hooks: dict) -> None:
    resource = kind.lower() + "s"
    await api.registry.create(api.lookup(GROUP, "v1", resource), {
        "apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": {"name": name}, "webhooks": list(hooks)}, ctx())


async def create_pod(api, obj: dict, **kw) -> dict:
    return await api.registry.create(api.lookup("", "v1", "pods"), obj, ctx("default", **kw))


@pytest.fixture
def server():
    calls = {}

    def record(path):
        def handler(req):
            calls.setdefault(path, []).append(req)
            return None
        return handler

    def add_b(req):
        calls.setdefault("/add-b", []).append(req)
        labels = req["object"]["metadata"].get("labels") or {}
        if "b" in labels:
            return {}
        return {"patch": [{"op": "add", "path": "/metadata/labels/b", "value": "1"}]}

    def bad_patch(req):
        return {"patch": [{"op": "remove", "path": "/metadata/nothing/here"}]}

    def add_container(req):
        return {"patch": [{"op": "add", "path": "/spec/containers/-", "value": {"name": "side", "image": "busybox"}}]}

    s = WebhookServer({"/record": record("/record"), "/other": record("/other"), "/add-b": add_b,
                       "/bad-patch": bad_patch, "/add-container": add_container},
                      names=("hook.default.svc", "localhost")).start()
    s.calls = calls
    yield s
    s.stop()


def test_webhook_service_reference_resolves_to_an_endpoint(server):
    async def main():
        api = await api_server()
        await api.registry.create(api.lookup("", "v1", "services"), {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": server.port}]}}, ctx("default"))
        await api.registry.create(api.lookup("", "v1", "endpoints"), {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": server.port}]}]},
            ctx("default"))
        await install(api, "ValidatingWebhookConfiguration", "svc", hook(
            "svc.webhooks.kubeling.test",
            {"service": {"namespace": "default", "name": "hook", "path": "/record"}, "caBundle": server.ca_bundle}))
        await create_pod(api, pod("via-service"))
        # the certificate is checked for <service>.<namespace>.svc: a service named otherwise fails
        await api.registry.create(api.lookup("", "v1", "services"), {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "wrong", "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": server.port}]}}, ctx("default"))
        await api.registry.create(api.lookup("", "v1", "endpoints"), {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "wrong", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": server.port}]}]},
            ctx("default"))
        await install(api, "ValidatingWebhookConfiguration", "wrong", hook(
            "wrong.webhooks.kubeling.test",
            {"service": {"namespace": "default", "name": "wrong", "path": "/record"}, "caBundle": server.ca_bundle}))
        with pytest.raises(errors.StatusError) as e:
            await create_pod(api, pod("wrong-name"))
        return e.value
    err = run(main())
    assert [r["name"] for r in server.calls["/record"]] == ["via-service", "wrong-name"]
    assert err.code == 500 and 'failed calling webhook "wrong.webhooks.kubeling.test"' in err.message
    assert "x509: certificate is not valid for the requested name" in err.message


def test_webhook_reinvocation_if_needed(server):
    async def main():
        api = await api_server()
        await install(api, "MutatingWebhookConfiguration", "a-first", hook(
            "first.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            reinvocationPolicy="IfNeeded"))
        await install(api, "MutatingWebhookConfiguration", "b-second", hook(
            "second.webhooks.kubeling.test", {"url": server.url("/add-b"), "caBundle": server.ca_bundle}))
        await install(api, "MutatingWebhookConfiguration", "c-never", hook(
            "never.webhooks.kubeling.test", {"url": server.url("/other"), "caBundle": server.ca_bundle}))
        return await create_pod(api, pod("p", {"a": "1"}))
    created = run(main())
    assert created["metadata"]["labels"] == {"a": "1", "b": "1"}
    first = server.calls["/record"]
    assert len(first) == 2                              # reinvoked once, after the second changed the object
    assert "b" not in first[0]["object"]["metadata"]["labels"] and first[1]["object"]["metadata"]["labels"]["b"] == "1"
    assert len(server.calls["/add-b"]) == 1             # Never: not reinvoked
    assert len(server.calls["/other"]) == 1


def test_webhook_match_conditions(server):

    async def main():
        api = await api_server()
        await install(api, "ValidatingWebhookConfiguration", "conds", hook(
            "conds.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            matchConditions=[{"name": "not-skipped", "expression": "object.metadata.name != 'skip-me'"},
                             {"name": "admin", "expression": "request.userInfo.username == 'system:admin'"}]))
        await create_pod(api, pod("skip-me"))
        await create_pod(api, pod("called"))
        await install(api, "ValidatingWebhookConfiguration", "broken", hook(
            "broken.webhooks.kubeling.test", {"url": server.url("/other"), "caBundle": server.ca_bundle},
            matchConditions=[{"name": "label", "expression": "object.metadata.labels['missing'] == 'x'"}]))
        with pytest.raises(errors.StatusError) as e:
            await create_pod(api, pod("errs"))
        return e.value
    err = run(main())
    # validating webhooks are called in parallel: "conds" saw "errs" too; "skip-me" was skipped
    assert [r["name"] for r in server.calls["/record"]] == ["called", "errs"]
    assert err.code == 500
    assert err.message.startswith('Internal error occurred: failed calling webhook "broken.webhooks.kubeling.test": '
                                  "failed evaluating match conditions: ")
    assert "/other" not in server.calls


def test_webhook_dry_run_and_side_effects(server):
    async def main():
        api = await api_server()
        await install(api, "ValidatingWebhookConfiguration", "dry", hook(
            "dry.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            sideEffects="NoneOnDryRun"))
        await create_pod(api, pod("dry"), dry_run=True)
        # A configuration stored by an older version may say Unknown (v1 refuses it on create).
        plugin = next(p for p in api.admission.plugins if p.NAME == "ValidatingAdmissionWebhook")
        plugin.source.configs = {"legacy": {"metadata": {"name": "legacy"}, "webhooks": [hook(
            "legacy.webhooks.kubeling.test", {"url": server.url("/other"), "caBundle": server.ca_bundle},
            sideEffects="Unknown", failurePolicy="Ignore", matchPolicy="Equivalent", timeoutSeconds=10)]}}
        plugin.source.synced, plugin.source._hooks = True, None
        with pytest.raises(errors.StatusError) as e:
            await create_pod(api, pod("dry2"), dry_run=True)
        return e.value
    err = run(main())
    assert server.calls["/record"][0]["dryRun"] is True
    assert server.calls["/record"][0]["options"]["dryRun"] == ["All"]
    assert (err.code, err.message) == (400, 'admission webhook "legacy.webhooks.kubeling.test" does not support dry run')
    assert "/other" not in server.calls


def test_webhook_update_delete_and_namespaces(server):
    async def main():
        api = await api_server()
        await install(api, "ValidatingWebhookConfiguration", "ops", hook(
            "ops.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            rules=[{"operations": ["UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"],
                    "resources": ["configmaps"]}]),
            hook("ns.webhooks.kubeling.test", {"url": server.url("/other"), "caBundle": server.ca_bundle},
                 namespaceSelector={"matchLabels": {"watched": "yes"}},
                 rules=[{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                         "resources": ["namespaces"], "scope": "Cluster"}]))
        cms = api.lookup("", "v1", "configmaps")
        await api.registry.create(cms, {"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": "cm", "namespace": "default"}, "data": {"a": "1"}},
                                  ctx("default"))
        cm = await api.registry.get(cms, "default", "cm")
        cm["data"]["a"] = "2"
        await api.registry.update(cms, "default", "cm", cm, ctx("default"))
        await api.registry.delete(cms, "default", "cm", {}, ctx("default"))
        nss = api.lookup("", "v1", "namespaces")
        for name, labels in (("plain", {}), ("watched", {"watched": "yes"})):
            await api.registry.create(nss, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": name, "labels": labels}}, ctx())
    run(main())
    update, delete = server.calls["/record"]
    assert update["operation"] == "UPDATE" and update["object"]["data"] == {"a": "2"}
    assert update["oldObject"]["data"] == {"a": "1"} and update["options"]["kind"] == "UpdateOptions"
    assert delete["operation"] == "DELETE" and delete["object"] is None and delete["oldObject"]["data"] == {"a": "2"}
    assert delete["options"]["kind"] == "DeleteOptions" and delete["name"] == "cm"
    # a namespaceSelector on Namespaces matches the Namespace's own labels
    assert [r["name"] for r in server.calls["/other"]] == ["watched"]
    assert server.calls["/other"][0]["namespace"] == "watched"


def test_webhook_invalid_patch_and_configurations_exempt(server):
    async def main():
        api = await api_server()
        await install(api, "MutatingWebhookConfiguration", "bad", hook(
            "bad.webhooks.kubeling.test", {"url": server.url("/bad-patch"), "caBundle": server.ca_bundle}))
        with pytest.raises(errors.StatusError) as e:
            await create_pod(api, pod("p"))
        # webhook configurations themselves are never sent to webhooks: a '*' rule cannot lock them
        await install(api, "ValidatingWebhookConfiguration", "all", hook(
            "all.webhooks.kubeling.test", {"url": "https://127.0.0.1:1/x", "caBundle": server.ca_bundle},
            rules=[{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]))
        await install(api, "ValidatingWebhookConfiguration", "more", hook(
            "more.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle}))
        return e.value
    err = run(main())
    assert err.code == 500
    assert 'admission webhook "bad.webhooks.kubeling.test" returned an invalid patch' in err.message


def test_webhook_match_condition_authorizer(server):

    async def main():
        api = await api_server()
        await install(api, "ValidatingWebhookConfiguration", "authz", hook(
            "authz.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            matchConditions=[{"name": "may-delete-nodes",
                              "expression": "authorizer.group('').resource('nodes').check('delete').allowed()"}]))
        await create_pod(api, pod("admin"))                                  # system:masters may
        await create_pod(api, pod("nobody"), user="nobody", groups=("system:authenticated",))
    run(main())
    assert [r["name"] for r in server.calls["/record"]] == ["admin"]


def test_webhook_patched_object_is_defaulted(server):
    async def main():
        api = await api_server()
        await install(api, "MutatingWebhookConfiguration", "sidecar", hook(
            "sidecar.webhooks.kubeling.test", {"url": server.url("/add-container"), "caBundle": server.ca_bundle}))
        return await create_pod(api, pod("p"))
    created = run(main())
    side = created["spec"]["containers"][1]
    assert side["name"] == "side" and side["imagePullPolicy"] == "Always"   # busybox = :latest
    assert side["terminationMessagePath"] == "/dev/termination-log"


def test_webhook_review_version(server):
    async def main():
        api = await api_server()
        await install(api, "ValidatingWebhookConfiguration", "versions", hook(
            "v1.webhooks.kubeling.test", {"url": server.url("/record"), "caBundle": server.ca_bundle},
            admissionReviewVersions=["v2", "v1", "v1beta1"]),
            hook("v1beta1.webhooks.kubeling.test", {"url": server.url("/other"), "caBundle": server.ca_bundle},
                 admissionReviewVersions=["v1beta1"]))
        await create_pod(api, pod("p"))
    run(main())
    assert sorted(server.api_versions) == [("/other", "admission.k8s.io/v1beta1"), ("/record", "admission.k8s.io/v1")]
