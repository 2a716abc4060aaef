"""The generic store on the in-memory store: the write path every resource shares."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.api import errors
from kubeling.apiserver.registry import generic

from inprocess import api_server, ctx


def run(coro):
    return asyncio.run(coro)


def cm(name: str, data: dict | None = None, ns: str = "default", **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, **meta},
            "data": data or {"k": "v"}}


def deploy(name: str, replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def test_create_sets_system_metadata_and_defaults():
    async def main():
        api = await api_server()
        served = api.lookup("apps", "v1", "deployments")
        obj = await api.registry.create(served, deploy("web"), ctx("default"))
        meta = obj["metadata"]
        assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
        assert int(meta["resourceVersion"]) > 0
        assert obj["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted by the strategy's defaulter
        assert obj["status"] == {}  # status reset on create
        assert meta["managedFields"][0]["manager"] == "test"
    run(main())


def test_spec_write_keeps_status_and_bumps_generation_status_write_keeps_spec():
    async def main():
        api = await api_server()
        served = api.lookup("apps", "v1", "deployments")
        await api.registry.create(served, deploy("web"), ctx("default"))
        cur = await api.registry.get(served, "default", "web")
        cur["status"] = {"replicas": 5}
        cur["spec"]["replicas"] = 3
        upd, _ = await api.registry.update(served, "default", "web", cur, ctx("default"))
        assert upd["metadata"]["generation"] == 2 and upd["status"] == {} and upd["spec"]["replicas"] == 3
        upd["status"] = {"replicas": 3}
        upd["spec"]["replicas"] = 9
        st, _ = await api.registry.update(served, "default", "web", upd, ctx("default", subresource="status"))
        assert st["status"] == {"replicas": 3} and st["spec"]["replicas"] == 3 and st["metadata"]["generation"] == 2
    run(main())


@pytest.mark.parametrize("stale", [pytest.param(True, id="stale-rv-conflicts"), pytest.param(False, id="no-rv-retries")])
def test_update_precondition(stale):
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        first = await api.registry.create(served, cm("a"), ctx("default"))
        await api.registry.update(served, "default", "a", cm("a", {"k": "2"}), ctx("default"))
        body = cm("a", {"k": "3"})
        if stale:
            body["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"]
            with pytest.raises(errors.StatusError) as e:
                await api.registry.update(served, "default", "a", body, ctx("default"))
            assert e.value.code == 409 and "the object has been modified" in e.value.message
        else:
            obj, _ = await api.registry.update(served, "default", "a", body, ctx("default"))
            assert obj["data"] == {"k": "3"}
    run(main())


def test_update_that_changes_nothing_writes_nothing():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        created = await api.registry.create(served, cm("a"), ctx("default"))
        before = await api.registry.current_revision()
        again, _ = await api.registry.update(served, "default", "a", cm("a"), ctx("default"))
        assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        assert await api.registry.current_revision() == before
    run(main())


def test_generate_name_retries_a_taken_name(monkeypatch):
    names = iter(["taken", "taken", "fresh"])
    monkeypatch.setattr(generic, "_generate_name", lambda prefix: prefix + next(names))

    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        await api.registry.create(served, cm("p-taken"), ctx("default"))
        obj = await api.registry.create(served, {"metadata": {"generateName": "p-"}, "data": {}}, ctx("default"))
        assert obj["metadata"]["name"] == "p-fresh"
    run(main())


def test_finalizers_hold_deletion_until_removed():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        await api.registry.create(served, cm("f", finalizers=["example.com/hold"]), ctx("default"))
        obj, now = await api.registry.delete(served, "default", "f", {}, ctx("default"))
        assert not now and obj["metadata"]["deletionTimestamp"]
        obj["metadata"]["finalizers"] = []
        await api.registry.update(served, "default", "f", obj, ctx("default"))
        with pytest.raises(errors.StatusError) as e:
            await api.registry.get(served, "default", "f")
        assert e.value.code == 404
    run(main())


@pytest.mark.parametrize("policy, finalizer", [
    pytest.param("Orphan", "orphan", id="orphan"),
    pytest.param("Foreground", "foregroundDeletion", id="foreground"),
])
def test_propagation_policy_sets_gc_finalizer(policy, finalizer):
    async def main():
        api = await api_server()
        served = api.lookup("apps", "v1", "deployments")
        await api.registry.create(served, deploy("d"), ctx("default"))
        obj, now = await api.registry.delete(served, "default", "d", {"propagationPolicy": policy}, ctx("default"))
        assert not now and obj["metadata"]["finalizers"] == [finalizer]
    run(main())


def test_dry_run_writes_nothing():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        before = await api.registry.current_revision()
        obj = await api.registry.create(served, cm("dry"), ctx("default", dry_run=True))
        assert obj["metadata"]["name"] == "dry"
        assert await api.registry.current_revision() == before
        with pytest.raises(errors.StatusError):
            await api.registry.get(served, "default", "dry")
    run(main())


def test_object_over_the_size_limit_is_413_and_not_stored():
    async def main():
        api = await api_server()
        served = api.lookup("apps", "v1", "controllerrevisions")
        big = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "big", "namespace": "default"},
               "revision": 1, "data": {f"k{i}": "x" * 1000 for i in range(1600)}}
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, big, ctx("default"))
        assert e.value.code == 413 and e.value.reason == "RequestEntityTooLarge"
        with pytest.raises(errors.StatusError):
            await api.registry.get(served, "default", "big")
    run(main())


def test_validation_errors_name_the_field():
    async def main():
        api = await api_server()
        served = api.lookup("apps", "v1", "deployments")
        bad = deploy("web")
        bad["spec"]["replicas"] = -1
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, bad, ctx("default"))
        assert e.value.code == 422
        assert [c["field"] for c in e.value.details["causes"]] == ["spec.replicas"]
    run(main())


def test_legacy_version_is_stored_as_apps_v1_and_read_back_in_its_own_version():
    async def main():
        api = await api_server()
        legacy = api.lookup("extensions", "v1beta1", "deployments")
        body = deploy("old")
        body["apiVersion"] = "extensions/v1beta1"
        obj = await api.registry.create(legacy, body, ctx("default"))
        assert obj["apiVersion"] == "extensions/v1beta1"
        stored = await api.registry.get_raw(legacy, "default", "old")
        assert stored["apiVersion"] == "apps/v1"
        v1 = await api.registry.get(api.lookup("apps", "v1", "deployments"), "default", "old")
        assert v1["apiVersion"] == "apps/v1"
    run(main())


def test_an_undecodable_stored_value_is_a_500_for_that_object_only():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "configmaps")
        await api.registry.create(served, cm("good"), ctx("default"))
        await api.registry.store.create(served.key("default", "broken"), b"{not json")
        with pytest.raises(errors.StatusError) as e:
            await api.registry.get(served, "default", "broken")
        assert e.value.code == 500
        rv, items = await api.registry.list_raw(served, "default")
        assert [o["metadata"]["name"] for o in items if o["metadata"]["name"] in ("good", "broken")] == ["good"]
    run(main())
