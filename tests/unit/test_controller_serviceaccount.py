"""ServiceAccount controller and root CA publisher against the FakeClient."""

import asyncio

import pytest

from kubeling.client import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.rootcacertpublisher import DESCRIPTION, DESCRIPTION_ANNOTATION, ROOT_CA, RootCACertPublisher
from kubeling.controllers.serviceaccount import ServiceAccountsController

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def namespace(name, terminating=False):
    meta = {"name": name, **({"deletionTimestamp": "2024-01-01T00:00:00Z"} if terminating else {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": ["kubernetes"]}}


def sa(ns, name="default"):
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def root_ca(ns, data=CA, annotations=None, labels=None):
    meta = {"name": ROOT_CA, "namespace": ns}
    if annotations is not None:
        meta["annotations"] = annotations
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"ca.crt": data}}


async def start(cls, *objs, ca_pem=CA):
    clock = FakeClock()
    client = FakeClient(*objs, clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    ctrl = cls(ControllerContext(client, factory, ca_pem=ca_pem, clock=clock))
    stop = asyncio.Event()
    factory.start(stop)
    assert all((await factory.wait_for_cache_sync(1)).values())
    return client, ctrl, stop, factory


def writes(client):
    return [(a.verb, a.resource, a.name) for a in client.actions if a.verb in ("create", "update", "patch", "delete")]


async def until(pred, timeout=2.0):
    async def loop():
        while not pred():
            await asyncio.sleep(0)
    await asyncio.wait_for(loop(), timeout)


@pytest.mark.parametrize("objs, key, expected", [
    pytest.param([namespace("a")], "a", [("create", "serviceaccounts", "default")], id="missing-is-created"),
    pytest.param([namespace("a"), sa("a")], "a", [], id="present-left-alone"),
    pytest.param([namespace("a"), sa("a", "builder")], "a", [("create", "serviceaccounts", "default")],
                 id="other-accounts-do-not-count"),
    pytest.param([namespace("a", terminating=True)], "a", [], id="terminating-skipped"),
    pytest.param([], "a", [], id="namespace-gone"),
])
def test_serviceaccount_sync(objs, key, expected):
    async def main():
        client, ctrl, stop, factory = await start(ServiceAccountsController, *objs)
        await ctrl.sync(key)
        assert writes(client) == expected
        if expected:
            made = client.object("", "v1", "serviceaccounts", "default", key)
            assert made["metadata"]["namespace"] == key
            assert client.filter_actions("create")[0].options == {"field_manager": "kube-controller-manager"}
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("error", [
    pytest.param(StatusError(409, "AlreadyExists", 'serviceaccounts "default" already exists'), id="already-exists"),
    pytest.param(StatusError(403, "Forbidden", "namespace a is being terminated"), id="namespace-terminating"),
    pytest.param(StatusError(404, "NotFound", 'namespaces "a" not found'), id="namespace-gone"),
])
def test_serviceaccount_create_races_are_success(error):
    async def main():
        client, ctrl, stop, factory = await start(ServiceAccountsController, namespace("a"))

        def race(action):
            raise error

        client.prepend_reactor("create", "serviceaccounts", race)
        await ctrl.sync("a")  # does not raise: nothing to retry
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_serviceaccount_short_run_creates_and_recreates_default():
    async def main():
        client, ctrl, stop, factory = await start(ServiceAccountsController, namespace("a"))
        task = asyncio.create_task(ctrl.run(2, stop))
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "a") is not None)
        await client.create("", "v1", "namespaces", namespace("b"))
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "b") is not None)
        await client.delete("", "v1", "serviceaccounts", "default", namespace="a")
        await until(lambda: client.object("", "v1", "serviceaccounts", "default", "a") is not None)
        assert len(client.filter_actions("create", "serviceaccounts")) == 3
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("objs, expected_writes, labels", [
    pytest.param([namespace("a")], [("create", "configmaps", ROOT_CA)], None, id="missing-is-created"),
    pytest.param([namespace("a"), root_ca("a", annotations={DESCRIPTION_ANNOTATION: DESCRIPTION})], [], None,
                 id="correct-left-alone"),
    pytest.param([namespace("a"), root_ca("a", data="stale", annotations={DESCRIPTION_ANNOTATION: DESCRIPTION},
                                          labels={"keep": "me"})],
                 [("update", "configmaps", ROOT_CA)], {"keep": "me"}, id="stale-ca-repaired-labels-kept"),
    pytest.param([namespace("a"), root_ca("a", annotations={})], [("update", "configmaps", ROOT_CA)], None,
                 id="missing-description-repaired"),
    pytest.param([namespace("a", terminating=True)], [], None, id="terminating-skipped"),
])
def test_root_ca_publisher_sync(objs, expected_writes, labels):
    async def main():
        client, ctrl, stop, factory = await start(RootCACertPublisher, *objs)
        await ctrl.sync("a")
        assert writes(client) == expected_writes
        if expected_writes:
            cm = client.object("", "v1", "configmaps", ROOT_CA, "a")
            assert cm["data"] == {"ca.crt": CA}
            assert cm["metadata"]["annotations"][DESCRIPTION_ANNOTATION] == DESCRIPTION
            assert cm["metadata"].get("labels") == labels
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_root_ca_publisher_without_a_ca_is_idle():
    async def main():
        client, ctrl, stop, factory = await start(RootCACertPublisher, namespace("a"), ca_pem="")
        await ctrl.sync("a")
        assert writes(client) == []
        stop.set()
        await factory.shutdown()

    asyncio.run(main())


def test_root_ca_publisher_short_run_repairs_and_recreates():
    async def main():
        client, ctrl, stop, factory = await start(RootCACertPublisher, namespace("a"))
        task = asyncio.create_task(ctrl.run(2, stop))
        await until(lambda: client.object("", "v1", "configmaps", ROOT_CA, "a") is not None)
        await client.patch("", "v1", "configmaps", ROOT_CA, {"data": {"ca.crt": "tampered"}}, namespace="a")
        await until(lambda: client.object("", "v1", "configmaps", ROOT_CA, "a")["data"]["ca.crt"] == CA)
        await client.delete("", "v1", "configmaps", ROOT_CA, namespace="a")
        await until(lambda: client.object("", "v1", "configmaps", ROOT_CA, "a") is not None)
        # Its informer watches only kube-root-ca.crt objects.
        assert {a.options["field_selector"] for a in client.filter_actions("watch", "configmaps")} == {
            f"metadata.name={ROOT_CA}"}
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()

    asyncio.run(main())
