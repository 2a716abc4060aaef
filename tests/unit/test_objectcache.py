"""ObjectCache: per-object watches started on first reference, stopped on last, and change callbacks."""

import asyncio

import pytest

from kubeling.client.fake import FakeClient
from kubeling.kubelet.objectcache import (
    NotRegistered,
    NotSynced,
    ObjectCache,
    references,
)


def ns(name="default"):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def cm(name, data, namespace="default"):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


def pod(uid, **spec):
    return {"metadata": {"name": "p-" + uid, "namespace": "default", "uid": uid}, "spec": spec}


POD_ALL = pod("u1", volumes=[{"name": "a", "configMap": {"name": "vol-cm"}},
                             {"name": "b", "secret": {"secretName": "vol-secret"}},
                             {"name": "c", "projected": {"sources": [{"configMap": {"name": "proj-cm"}},
                                                                     {"secret": {"name": "proj-secret"}}]}}],
              initContainers=[{"name": "i", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
              containers=[{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm",
                                                                                              "key": "k"}}},
                                                {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "env-secret",
                                                                                           "key": "k"}}}],
                           "envFrom": [{"secretRef": {"name": "from-secret"}}]}],
              ephemeralContainers=[{"name": "e", "envFrom": [{"configMapRef": {"name": "eph-cm"}}]}],
              imagePullSecrets=[{"name": "pull"}])


@pytest.mark.parametrize("resource,want", [
    pytest.param("configmaps", {"vol-cm", "proj-cm", "init-cm", "env-cm", "eph-cm"}, id="configmaps"),
    pytest.param("secrets", {"vol-secret", "proj-secret", "env-secret", "from-secret", "pull"}, id="secrets"),
])
def test_references(resource, want):
    assert references(POD_ALL, resource) == want


async def _wait(cond, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_get_watch_change_and_delete():
    async def main():
        client = FakeClient(ns(), cm("one", {"k": "v1"}), cm("other", {"k": "x"}))
        cache = ObjectCache(client, "configmaps")
        changes = []
        cache.on_change(lambda n, name: changes.append((n, name)))
        p = pod("u1", volumes=[{"name": "v", "configMap": {"name": "one"}},
                               {"name": "w", "configMap": {"name": "missing"}}])
        cache.register_pod(p)
        assert (await cache.get("default", "one"))["data"] == {"k": "v1"}
        assert await cache.get("default", "missing") is None
        with pytest.raises(NotRegistered):
            await cache.get("default", "other")
        # Only the named objects are listed and watched, each with its field selector.
        lists = client.filter_actions("list", "configmaps")
        assert sorted(a.options["field_selector"] for a in lists) == ["metadata.name=missing", "metadata.name=one"]
        assert changes == []   # the initial list is not a change
        await client.update("", "v1", "configmaps", cm("one", {"k": "v2"}))
        await _wait(lambda: changes == [("default", "one")])
        assert (await cache.get("default", "one"))["data"] == {"k": "v2"}
        await client.create("", "v1", "configmaps", cm("missing", {"now": "here"}))
        await _wait(lambda: ("default", "missing") in changes)
        assert (await cache.get("default", "missing"))["data"] == {"now": "here"}
        await client.delete("", "v1", "configmaps", "one", namespace="default")
        await _wait(lambda: changes.count(("default", "one")) == 2)
        assert await cache.get("default", "one") is None
        await client.update("", "v1", "configmaps", cm("other", {"k": "y"}))  # not watched: no callback
        await asyncio.sleep(0.05)
        assert ("default", "other") not in changes
        await cache.close()
    asyncio.run(main())


def test_refcount_stops_watch_on_last_reference():
    async def main():
        client = FakeClient(ns(), cm("shared", {"k": "v"}))
        cache = ObjectCache(client, "configmaps")
        a = pod("a", volumes=[{"name": "v", "configMap": {"name": "shared"}}])
        b = pod("b", containers=[{"name": "c", "envFrom": [{"configMapRef": {"name": "shared"}}]}])
        cache.register_pod(a)
        cache.register_pod(a)          # idempotent: still one reference from a
        cache.register_pod(b)
        await cache.get("default", "shared")
        assert len(client.filter_actions("list")) == 1
        cache.unregister_pod(a)
        assert cache.registered() == {("default", "shared")}
        await asyncio.sleep(0.01)
        assert len(client.tracker.watchers) == 1
        cache.unregister_pod("b")      # by uid
        assert cache.registered() == set()
        await asyncio.sleep(0.01)
        assert len(client.tracker.watchers) == 0
        # A pod update that drops a reference releases it too.
        cache.register_pod(a)
        await cache.get("default", "shared")
        cache.register_pod(pod("a"))
        assert cache.registered() == set()
        await cache.close()
    asyncio.run(main())


def test_rewatch_after_stream_end_and_relist_after_expired():
    async def main():
        client = FakeClient(ns(), cm("one", {"k": "v1"}))
        cache = ObjectCache(client, "configmaps")
        changes = []
        cache.on_change(lambda n, name: changes.append(name))
        cache.register_pod(pod("u", volumes=[{"name": "v", "configMap": {"name": "one"}}]))
        await cache.get("default", "one")
        client.end_watches()                      # a server timeout: re-watch from the last RV (after a
        # short backoff, since this watch ended at once)
        await _wait(lambda: len(client.tracker.watchers) == 1)
        await client.update("", "v1", "configmaps", cm("one", {"k": "v2"}))
        await _wait(lambda: changes == ["one"])
        assert len(client.filter_actions("list")) == 1
        client.end_watches()
        await client.update("", "v1", "configmaps", cm("one", {"k": "v3"}))  # while no watch is open
        client.compact()                          # history gone: the next watch gets 410 and re-lists
        await _wait(lambda: len(client.filter_actions("list")) == 2)
        await _wait(lambda: changes == ["one", "one"])
        assert (await cache.get("default", "one"))["data"] == {"k": "v3"}
        await cache.close()
    asyncio.run(main())


def test_not_synced_and_list_errors_retry():
    async def main():
        client = FakeClient(ns(), cm("one", {"k": "v"}))
        fails = []

        def reactor(action):
            if len(fails) < 1:
                fails.append(action)
                raise OSError("connection refused")
        client.prepend_reactor("list", "configmaps", reactor)
        cache = ObjectCache(client, "configmaps", sync_timeout=0.05)
        cache.register_pod(pod("u", volumes=[{"name": "v", "configMap": {"name": "one"}}]))
        with pytest.raises(NotSynced):
            await cache.get("default", "one")
        cache.sync_timeout = 5.0                  # the reflector retries after its backoff
        assert (await cache.get("default", "one"))["data"] == {"k": "v"}
        assert cache.not_found_message("x") == 'configmap "x" not found'
        await cache.close()
    asyncio.run(main())
