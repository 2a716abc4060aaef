"""The ServiceAccount admission plugin with a store: the account must exist, and pods get
upstream's ``kube-api-access-<suffix>`` projected volume (in-process server, real validation)."""

from __future__ import annotations

import asyncio
import re

import pytest

from kubeling.api import errors
from kubeling.apiserver.admission import Chain
from kubeling.apiserver.admission.service_account import MOUNT_PATH, ServiceAccount, token_volume_source

from inprocess import api_server, ctx

NS = "default"


def run(coro):
    return asyncio.run(coro)


async def server(accounts=({"metadata": {"name": "default", "namespace": NS}},)):
    """An in-process server whose chain has the plugin with a store (as `kubeling server` wires it)."""
    api = await api_server()
    plugins = [ServiceAccount(api.registry, api.lookup, retry_interval=0.01) if p.NAME == "ServiceAccount" else p
               for p in api.admission.plugins]
    api.admission = api.registry.admission = Chain(plugins)
    served = api.lookup("", "v1", "serviceaccounts")
    try:  # exactly the accounts asked for, whatever bootstrapped the server
        await api.registry.delete(served, NS, "default", {}, ctx(NS))
    except errors.StatusError as e:
        assert e.code == 404
    for sa in accounts:
        await api.registry.create(api.lookup("", "v1", "serviceaccounts"), sa, ctx(NS))
    return api


def pod(**spec) -> dict:
    spec.setdefault("containers", [{"name": "c", "image": "busybox"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NS}, "spec": spec}


async def create(api, obj):
    return await api.registry.create(api.lookup("", "v1", "pods"), obj, ctx(NS))


def test_every_container_mounts_the_projected_token_volume():
    async def main():
        api = await server()
        spec = (await create(api, pod(initContainers=[{"name": "init", "image": "busybox"}],
                                      containers=[{"name": "a", "image": "busybox"},
                                                  {"name": "b", "image": "busybox"}])))["spec"]
        vols = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
        assert len(vols) == 1 and re.fullmatch(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}", vols[0]["name"])
        assert vols[0]["projected"] == {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}
        for c in spec["initContainers"] + spec["containers"]:
            assert {"name": vols[0]["name"], "readOnly": True, "mountPath": MOUNT_PATH} in c["volumeMounts"]
        assert spec["serviceAccountName"] == "default"
    run(main())


@pytest.mark.parametrize("pod_spec, sa_extra, mounted", [
    pytest.param({"automountServiceAccountToken": False}, {}, [], id="pod-opts-out"),
    pytest.param({}, {"automountServiceAccountToken": False}, [], id="account-opts-out"),
    pytest.param({"automountServiceAccountToken": True}, {"automountServiceAccountToken": False}, ["a", "b"],
                 id="pod-overrides-account"),
    pytest.param({"containers": [{"name": "a", "image": "busybox", "volumeMounts": [
        {"name": "own", "mountPath": MOUNT_PATH}]}, {"name": "b", "image": "busybox"}],
        "volumes": [{"name": "own", "emptyDir": {}}]}, {}, ["b"], id="own-mount-at-the-path-kept"),
])
def test_when_the_token_is_mounted(pod_spec, sa_extra, mounted):
    async def main():
        api = await server(({"metadata": {"name": "default", "namespace": NS}, **sa_extra},))
        spec = pod_spec.setdefault("containers", [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}])
        spec = (await create(api, pod(**pod_spec)))["spec"]
        got = [c["name"] for c in spec["containers"]
               if any(m["name"].startswith("kube-api-access-") for m in c.get("volumeMounts") or [])]
        assert got == mounted
        has_volume = any(v["name"].startswith("kube-api-access-") for v in spec.get("volumes") or [])
        assert has_volume == bool(mounted)
    run(main())


def test_an_existing_token_volume_is_reused():
    async def main():
        api = await server()
        spec = (await create(api, pod(volumes=[{"name": "kube-api-access-abcde", "projected": token_volume_source()}])))["spec"]
        assert [v["name"] for v in spec["volumes"]] == ["kube-api-access-abcde"]
        assert spec["containers"][0]["volumeMounts"][0]["name"] == "kube-api-access-abcde"
    run(main())


def test_image_pull_secrets_come_from_the_account():
    async def main():
        api = await server(({"metadata": {"name": "default", "namespace": NS}, "imagePullSecrets": [{"name": "reg"}]},))
        assert (await create(api, pod()))["spec"]["imagePullSecrets"] == [{"name": "reg"}]
    run(main())


def test_a_missing_account_refuses_the_pod():
    async def main():
        api = await server(accounts=())
        with pytest.raises(errors.StatusError) as e:
            await create(api, pod(serviceAccountName="builder"))
        assert e.value.code == 403
        assert e.value.message == ('pods "p" is forbidden: error looking up service account default/builder: '
                                   'serviceaccount "builder" not found')
    run(main())


def test_default_is_waited_for_while_the_controller_makes_it():
    async def main():
        api = await server(accounts=())

        async def make_default_later():
            await asyncio.sleep(0.03)
            await api.registry.create(api.lookup("", "v1", "serviceaccounts"),
                                      {"metadata": {"name": "default", "namespace": NS}}, ctx(NS))
        maker = asyncio.create_task(make_default_later())
        spec = (await create(api, pod()))["spec"]
        await maker
        assert any(v["name"].startswith("kube-api-access-") for v in spec["volumes"])
    run(main())


def test_mirror_pods_are_left_alone():
    async def main():
        api = await server(accounts=())
        obj = pod()
        obj["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
        spec = (await create(api, obj))["spec"]
        assert "volumes" not in spec or not spec["volumes"]
    run(main())
