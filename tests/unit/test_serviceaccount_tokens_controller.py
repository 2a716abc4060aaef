"""The tokens controller (``serviceaccount-token``) against the FakeClient, with a real key file."""

from __future__ import annotations

import asyncio
import base64

import pytest

from kubeling.apiserver import serviceaccount as sat
from kubeling.apiserver.certs import PKI
from kubeling.client import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.fake import FakeClient
from kubeling.controllers.base import ControllerContext
from kubeling.controllers.serviceaccount_token import NAME_ANNOTATION, TOKEN_TYPE, UID_ANNOTATION, TokensController

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
NS = "a"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def sa(name="default", uid="sa-uid"):
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS, "uid": uid}}


def secret(name="default-token", sa_name="default", uid=None, data=None, stype=TOKEN_TYPE):
    ann = {NAME_ANNOTATION: sa_name, **({UID_ANNOTATION: uid} if uid else {})}
    return {"apiVersion": "v1", "kind": "Secret", "type": stype, "data": data or {},
            "metadata": {"name": name, "namespace": NS, "uid": f"{name}-uid", "annotations": ann}}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    pki = PKI(tmp_path_factory.mktemp("data"))
    pki.ensure()
    return pki.service_account_key


async def start(key_file, *objs):
    clock = FakeClock()
    client = FakeClient(*objs, clock=clock)
    factory = SharedInformerFactory(client, clock=clock)
    ctrl = TokensController(ControllerContext(client, factory, ca_pem=CA, clock=clock), key_path=str(key_file))
    stop = asyncio.Event()
    factory.start(stop)
    assert all((await factory.wait_for_cache_sync(1)).values())
    return client, ctrl, stop, factory


def writes(client):
    return [(a.verb, a.resource, a.name) for a in client.actions if a.verb in ("create", "update", "patch", "delete")]


@pytest.mark.parametrize("objs, expected", [
    pytest.param([sa(), secret()], [("update", "secrets", "default-token")], id="empty-secret-filled"),
    pytest.param([sa(), secret(uid="sa-uid", data={"token": b64("t"), "namespace": b64(NS), "ca.crt": b64(CA)})],
                 [], id="complete-secret-left-alone"),
    pytest.param([sa(), secret(uid="sa-uid", data={"token": b64("t"), "namespace": b64(NS), "ca.crt": b64("old")})],
                 [("update", "secrets", "default-token")], id="stale-ca-replaced"),
    pytest.param([secret()], [("delete", "secrets", "default-token")], id="account-missing-deletes"),
    pytest.param([sa(uid="new-uid"), secret(uid="sa-uid")], [("delete", "secrets", "default-token")],
                 id="account-recreated-deletes"),
    pytest.param([sa(), secret(stype="Opaque")], [], id="other-types-ignored"),
    pytest.param([sa()], [], id="secret-gone"),
])
def test_sync(key_file, objs, expected):
    async def main():
        client, ctrl, stop, factory = await start(key_file, *objs)
        await ctrl.sync(f"{NS}/default-token")
        assert writes(client) == expected
        if expected and expected[0][0] == "delete":
            assert client.filter_actions("delete")[0].options["preconditions"] == {"uid": "default-token-uid"}
        stop.set()
        await factory.shutdown()
    asyncio.run(main())


def test_filled_secret_holds_a_legacy_token_signed_with_the_key(key_file):
    async def main():
        client, ctrl, stop, factory = await start(key_file, sa(), secret())
        await ctrl.sync(f"{NS}/default-token")
        got = client.object("", "v1", "secrets", "default-token", NS)
        assert got["metadata"]["annotations"] == {NAME_ANNOTATION: "default", UID_ANNOTATION: "sa-uid"}
        data = {k: base64.b64decode(v).decode() for k, v in got["data"].items()}
        assert data["namespace"] == NS and data["ca.crt"] == CA
        claims = sat.verify(sat.Keys(key_file), data["token"])
        assert claims == {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:a:default",
                          "kubernetes.io/serviceaccount/namespace": NS,
                          "kubernetes.io/serviceaccount/secret.name": "default-token",
                          "kubernetes.io/serviceaccount/service-account.name": "default",
                          "kubernetes.io/serviceaccount/service-account.uid": "sa-uid"}
        stop.set()
        await factory.shutdown()
    asyncio.run(main())


def test_a_cache_miss_is_confirmed_before_deleting(key_file):
    """An account newer than the cache: the controller asks the API, finds it, and fills in."""
    async def main():
        client, ctrl, stop, factory = await start(key_file, secret())
        client.prepend_reactor("get", "serviceaccounts", lambda action: sa())
        await ctrl.sync(f"{NS}/default-token")
        assert writes(client) == [("update", "secrets", "default-token")]
        stop.set()
        await factory.shutdown()
    asyncio.run(main())


def test_a_conflict_is_retried(key_file):
    async def main():
        client, ctrl, stop, factory = await start(key_file, sa(), secret())

        def conflict(action):
            raise StatusError(409, "Conflict", "the object has been modified")
        client.prepend_reactor("update", "secrets", conflict)
        with pytest.raises(StatusError):
            await ctrl.sync(f"{NS}/default-token")
        stop.set()
        await factory.shutdown()
    asyncio.run(main())


def test_short_run_fills_new_secrets_and_deletes_them_with_their_account(key_file):
    async def main():
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
        client, ctrl, stop, factory = await start(key_file, ns, sa())
        task = asyncio.create_task(ctrl.run(2, stop))
        await client.create("", "v1", "secrets", secret())

        async def until(pred):
            while not pred():
                await asyncio.sleep(0)
        await asyncio.wait_for(until(lambda: (client.object("", "v1", "secrets", "default-token", NS) or {})
                                     .get("data", {}).get("token")), 2)
        await client.delete("", "v1", "serviceaccounts", "default", namespace=NS)
        await asyncio.wait_for(until(lambda: client.object("", "v1", "secrets", "default-token", NS) is None), 2)
        assert {a.options["field_selector"] for a in client.filter_actions("watch", "secrets")} == {f"type={TOKEN_TYPE}"}
        stop.set()
        await asyncio.wait_for(task, 1)
        await factory.shutdown()
    asyncio.run(main())


def test_without_a_key_the_controller_is_idle():
    async def main():
        client = FakeClient(sa(), secret())
        factory = SharedInformerFactory(client)
        ctrl = TokensController(ControllerContext(client, factory, ca_pem=CA))
        stop = asyncio.Event()
        factory.start(stop)
        await factory.wait_for_cache_sync(1)
        await ctrl.sync(f"{NS}/default-token")
        assert writes(client) == []
        stop.set()
        await factory.shutdown()
    asyncio.run(main())
