"""Acceptance 2: ``kubernetes_asyncio``, unchanged, against kubeling.

kubernetes_asyncio writes boolean query parameters the way Python prints them: ``watch=True``,
``force=True``. Upstream reads any value but ``0`` and (case-insensitively) ``false`` as true, so
its watches stream events and its forced server-side applies take ownership. Written as a new user
would: CRUD, a `watch.Watch().stream(...)` that sees ADDED, MODIFIED and DELETED, and a forced
apply that takes a field from another manager.
"""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

APPLY = "application/apply-patch+yaml"


async def _api(cluster) -> client.ApiClient:
    return await config.new_client_from_config(config_file=str(cluster.kubeconfig))


def configmap(name: str, data: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_configmap_crud(cluster, namespace):
    async def run():
        async with await _api(cluster) as api:
            core = client.CoreV1Api(api)
            created = await core.create_namespaced_config_map(namespace, configmap("cm", {"k": "v"}))
            assert created.metadata.uid and created.data == {"k": "v"}
            got = await core.read_namespaced_config_map("cm", namespace)
            got.data["k2"] = "v2"
            replaced = await core.replace_namespaced_config_map("cm", namespace, got)
            assert replaced.data == {"k": "v", "k2": "v2"}
            listed = await core.list_namespaced_config_map(namespace)
            assert [c.metadata.name for c in listed.items if c.metadata.name == "cm"] == ["cm"]
            await core.delete_namespaced_config_map("cm", namespace)
            try:
                await core.read_namespaced_config_map("cm", namespace)
            except ApiException as e:
                return e.status
            return None

    assert asyncio.run(run()) == 404


def test_watch_sees_added_modified_deleted(cluster, namespace):
    """`Watch().stream` sends ``watch=True``; the server must stream events, not answer a List."""
    async def run():
        async with await _api(cluster) as api:
            core = client.CoreV1Api(api)
            # Only this test's object: controllers add their own ConfigMaps to a new namespace
            # (kube-root-ca.crt) at any moment.
            only = "metadata.name=watched"
            rv = (await core.list_namespaced_config_map(namespace, field_selector=only)).metadata.resource_version
            w = watch.Watch()
            seen: list[tuple[str, str, str | None]] = []

            async def consume():
                async for ev in w.stream(core.list_namespaced_config_map, namespace, field_selector=only,
                                         resource_version=rv, timeout_seconds=20):
                    obj = ev["object"]
                    seen.append((ev["type"], obj.metadata.name, (obj.data or {}).get("k")))
                    if ev["type"] == "DELETED":
                        w.stop()

            task = asyncio.create_task(consume())
            await core.create_namespaced_config_map(namespace, configmap("watched", {"k": "1"}))
            await core.patch_namespaced_config_map("watched", namespace, {"data": {"k": "2"}})
            await core.delete_namespaced_config_map("watched", namespace)
            await asyncio.wait_for(task, 30)
            return seen

    assert asyncio.run(run()) == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"),
                                  ("DELETED", "watched", "2")]


def test_forced_apply_takes_ownership(cluster, namespace):
    """Two managers apply the same field; without force the second gets a 409 Conflict naming the
    first, with ``force=True`` it becomes the field's only owner."""
    async def run():
        async with await _api(cluster) as api:
            core = client.CoreV1Api(api)
            await core.patch_namespaced_config_map(
                "owned", namespace, configmap("owned", {"k": "from-a"}),
                field_manager="manager-a", _content_type=APPLY)
            try:
                await core.patch_namespaced_config_map(
                    "owned", namespace, configmap("owned", {"k": "from-b"}),
                    field_manager="manager-b", _content_type=APPLY)
                conflict = None
            except ApiException as e:
                conflict = (e.status, e.reason)
            forced = await core.patch_namespaced_config_map(
                "owned", namespace, configmap("owned", {"k": "from-b"}),
                field_manager="manager-b", force=True, _content_type=APPLY)
            owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
            return conflict, forced.data, owners

    conflict, data, owners = asyncio.run(run())
    assert conflict == (409, "Conflict")
    assert data == {"k": "from-b"}
    assert owners["manager-b"] == {"f:data": {"f:k": {}}}
    # manager-a lost its only field, so it no longer appears at all.
    assert "manager-a" not in owners
