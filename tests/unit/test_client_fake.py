"""FakeClient: the in-memory API test seam keeps the server behaviour controllers rely on."""

import asyncio

import pytest

from kubeling.client import ResourceExpired, StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.discovery import RESTMapper, discover
from kubeling.client.fake import FakeClient


def ns(name, **spec):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, **({"spec": spec} if spec else {})}


def cm(name, namespace="default", labels=None, **fields):
    meta = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **fields}


def run(coro):
    return asyncio.run(coro)


def test_create_fills_server_fields_and_get_returns_copies():
    async def main():
        c = FakeClient(ns("default"), clock=FakeClock())
        made = await c.create("", "v1", "configmaps", {"metadata": {"name": "a"}, "data": {"k": "v"}},
                              namespace="default")
        meta = made["metadata"]
        assert (made["apiVersion"], made["kind"]) == ("v1", "ConfigMap")
        assert meta["namespace"] == "default" and meta["uid"] and meta["resourceVersion"]
        assert meta["creationTimestamp"] == "2024-01-01T00:00:00Z" and meta["generation"] == 1
        got = await c.get("", "v1", "configmaps", "a", namespace="default")
        got["data"]["k"] = "changed"
        assert c.object("", "v1", "configmaps", "a", "default")["data"] == {"k": "v"}

    run(main())


def test_generate_name_gives_distinct_names():
    async def main():
        c = FakeClient(ns("default"))
        a = await c.create("", "v1", "configmaps", {"metadata": {"generateName": "x-", "namespace": "default"}})
        b = await c.create("", "v1", "configmaps", {"metadata": {"generateName": "x-", "namespace": "default"}})
        assert a["metadata"]["name"].startswith("x-") and a["metadata"]["name"] != b["metadata"]["name"]

    run(main())


@pytest.mark.parametrize("call, code, reason, message", [
    pytest.param(lambda c: c.get("", "v1", "configmaps", "nope", namespace="default"),
                 404, "NotFound", 'configmaps "nope" not found', id="get-missing"),
    pytest.param(lambda c: c.create("", "v1", "configmaps", cm("a")),
                 409, "AlreadyExists", 'configmaps "a" already exists', id="create-existing"),
    pytest.param(lambda c: c.update("", "v1", "configmaps", {**cm("a"), "metadata": {
        "name": "a", "namespace": "default", "resourceVersion": "1"}}),
                 409, "Conflict", 'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
                 "please apply your changes to the latest version and try again", id="update-stale"),
    pytest.param(lambda c: c.delete("", "v1", "configmaps", "a", namespace="default",
                                    preconditions={"uid": "other"}),
                 409, "Conflict", 'Operation cannot be fulfilled on configmaps "a": Precondition failed: UID in '
                 "precondition: other, UID in object meta: ", id="delete-uid-precondition"),
    pytest.param(lambda c: c.create("", "v1", "configmaps", cm("b", "nowhere")),
                 404, "NotFound", 'namespaces "nowhere" not found', id="create-in-missing-namespace"),
    pytest.param(lambda c: c.create("", "v1", "configmaps", cm("b", "dying")),
                 403, "Forbidden", 'configmaps "b" is forbidden: unable to create new content in namespace dying '
                 "because it is being terminated", id="create-in-terminating-namespace"),
    pytest.param(lambda c: c.get("example.com", "v1", "widgets", "w"),
                 404, "NotFound", "the server could not find the requested resource", id="unknown-resource"),
])
def test_errors_are_status_errors_like_the_server(call, code, reason, message):
    async def main():
        c = FakeClient(ns("default"), {**ns("dying", finalizers=["kubernetes"]),
                                       "metadata": {"name": "dying", "deletionTimestamp": "2024-01-01T00:00:00Z"}})
        await c.create("", "v1", "configmaps", cm("a"))
        with pytest.raises(StatusError) as e:
            await call(c)
        assert (e.value.code, e.value.reason) == (code, reason)
        assert e.value.message.startswith(message)

    run(main())


def test_update_keeps_server_fields_and_status_split():
    async def main():
        c = FakeClient(ns("default"))
        d = await c.create("apps", "v1", "deployments", {"metadata": {"name": "d", "namespace": "default"},
                                                         "spec": {"replicas": 1}, "status": {"replicas": 9}})
        first_uid = d["metadata"]["uid"]
        d["spec"]["replicas"] = 2
        d["status"] = {"replicas": 5}
        d["metadata"]["uid"] = "forged"
        d = await c.update("apps", "v1", "deployments", d)
        assert d["metadata"]["uid"] == first_uid
        assert d["status"] == {"replicas": 9}  # the main resource cannot write status
        assert d["metadata"]["generation"] == 2
        d["status"] = {"replicas": 2}
        d["spec"]["replicas"] = 7
        d = await c.update_status("apps", "v1", "deployments", d)
        assert (d["spec"]["replicas"], d["status"]["replicas"]) == (2, 2)  # status cannot write spec
        assert d["metadata"]["generation"] == 2

    run(main())


@pytest.mark.parametrize("patch_type, patch, labels", [
    pytest.param("merge", {"metadata": {"labels": {"b": "2", "a": None}}}, {"b": "2"}, id="merge"),
    pytest.param("json", [{"op": "add", "path": "/metadata/labels/b", "value": "2"}], {"a": "1", "b": "2"},
                 id="json"),
])
def test_patch(patch_type, patch, labels):
    async def main():
        c = FakeClient(ns("default"))
        await c.create("", "v1", "configmaps", cm("a", labels={"a": "1"}))
        out = await c.patch("", "v1", "configmaps", "a", patch, namespace="default", patch_type=patch_type)
        assert out["metadata"]["labels"] == labels
        assert c.filter_actions("patch")[0].options == {"patch_type": patch_type}

    run(main())


def test_patch_with_stale_resource_version_conflicts():
    async def main():
        c = FakeClient(ns("default"))
        await c.create("", "v1", "configmaps", cm("a"))
        with pytest.raises(StatusError) as e:
            await c.patch("", "v1", "configmaps", "a", {"metadata": {"resourceVersion": "1"}}, namespace="default")
        assert e.value.code == 409

    run(main())


@pytest.mark.parametrize("finalizers, policy, left, fins", [
    pytest.param([], None, False, None, id="no-finalizers-deletes"),
    pytest.param([], "Background", False, None, id="background-deletes"),
    pytest.param([], "Orphan", True, ["orphan"], id="orphan-adds-finalizer"),
    pytest.param([], "Foreground", True, ["foregroundDeletion"], id="foreground-adds-finalizer"),
    pytest.param(["example.com/hold"], None, True, ["example.com/hold"], id="finalizer-holds"),
])
def test_delete_and_propagation(finalizers, policy, left, fins):
    async def main():
        c = FakeClient(ns("default"), clock=FakeClock())
        obj = cm("a")
        obj["metadata"]["finalizers"] = finalizers
        await c.create("", "v1", "configmaps", obj)
        await c.delete("", "v1", "configmaps", "a", namespace="default", propagation_policy=policy)
        stored = c.object("", "v1", "configmaps", "a", "default")
        assert (stored is not None) == left
        if left:
            assert stored["metadata"]["finalizers"] == fins
            assert stored["metadata"]["deletionTimestamp"] == "2024-01-01T00:00:00Z"
        assert c.filter_actions("delete")[0].options["propagation_policy"] == policy

    run(main())


def test_removing_the_last_finalizer_of_a_terminating_object_deletes_it():
    async def main():
        c = FakeClient(ns("default"))
        obj = cm("a")
        obj["metadata"]["finalizers"] = ["x"]
        await c.create("", "v1", "configmaps", obj)
        held = await c.delete("", "v1", "configmaps", "a", namespace="default")
        held["metadata"]["finalizers"] = []
        await c.update("", "v1", "configmaps", held)
        assert c.object("", "v1", "configmaps", "a", "default") is None

    run(main())


def test_namespace_spec_finalizers_hold_until_finalize():
    async def main():
        c = FakeClient()
        await c.create("", "v1", "namespaces", ns("x", finalizers=["kubernetes"]))
        held = await c.delete("", "v1", "namespaces", "x")
        assert held["status"]["phase"] == "Terminating"
        held["spec"]["finalizers"] = []
        await c.update("", "v1", "namespaces", held, subresource="finalize")
        assert c.object("", "v1", "namespaces", "x") is None

    run(main())


def test_list_filters_and_pages_without_type_meta():
    async def main():
        c = FakeClient(ns("default"), ns("other"))
        for name, namespace, labels in [("a", "default", {"app": "x"}), ("b", "default", {"app": "y"}),
                                        ("c", "other", {"app": "x"}), ("d", "default", {"app": "x"})]:
            await c.create("", "v1", "configmaps", cm(name, namespace, labels))
        lst = await c.list("", "v1", "configmaps", label_selector="app=x")
        assert lst["kind"] == "ConfigMapList" and "kind" not in lst["items"][0]
        assert [i["metadata"]["name"] for i in lst["items"]] == ["a", "d", "c"]
        assert [i["metadata"]["name"] for i in
                (await c.list("", "v1", "configmaps", namespace="default", field_selector="metadata.name=b"))
                ["items"]] == ["b"]
        page = await c.list("", "v1", "configmaps", namespace="default", limit=2)
        rest = await c.list("", "v1", "configmaps", namespace="default", limit=2,
                            continue_=page["metadata"]["continue"])
        assert [i["metadata"]["name"] for i in page["items"] + rest["items"]] == ["a", "b", "d"]
        assert "continue" not in rest["metadata"]
        with pytest.raises(StatusError) as e:
            await c.list("", "v1", "configmaps", field_selector="spec.nope=1")
        assert e.value.code == 400

    run(main())


async def _drain(w, n):
    return [(typ, o["metadata"]["name"]) for typ, o in [await w.__anext__() for _ in range(n)]]


def test_watch_replays_from_resource_version_and_follows_selectors():
    async def main():
        c = FakeClient(ns("default"))
        a = await c.create("", "v1", "configmaps", cm("a", labels={"app": "x"}))
        since = a["metadata"]["resourceVersion"]
        await c.create("", "v1", "configmaps", cm("b", labels={"app": "x"}))
        async with c.watch("", "v1", "configmaps", resource_version=since, label_selector="app=x") as w:
            await c.patch("", "v1", "configmaps", "b", {"metadata": {"labels": {"app": "y"}}}, namespace="default")
            await c.patch("", "v1", "configmaps", "b", {"metadata": {"labels": {"app": "x"}}}, namespace="default")
            await c.patch("", "v1", "configmaps", "a", {"data": {"k": "v"}}, namespace="default")
            await c.delete("", "v1", "configmaps", "a", namespace="default")
            assert await _drain(w, 5) == [("ADDED", "b"), ("DELETED", "b"), ("ADDED", "b"), ("MODIFIED", "a"),
                                          ("DELETED", "a")]
            c.end_watches()
            with pytest.raises(StopAsyncIteration):
                await w.__anext__()

    run(main())


def test_watch_without_resource_version_starts_with_adds_and_compaction_expires():
    async def main():
        c = FakeClient(ns("default"))
        old = await c.create("", "v1", "configmaps", cm("a"))
        async with c.watch("", "v1", "configmaps") as w:
            assert await _drain(w, 1) == [("ADDED", "a")]
        await c.create("", "v1", "configmaps", cm("b"))
        c.compact()  # the history up to b's revision is gone; a's revision is older
        with pytest.raises(ResourceExpired):
            async with c.watch("", "v1", "configmaps", resource_version=old["metadata"]["resourceVersion"]):
                pass

    run(main())


def test_discovery_and_rest_mapping():
    async def main():
        c = FakeClient()
        resources = await discover(c)
        by_name = {(r.group, r.resource): r for r in resources}
        assert by_name[("apps", "deployments")].namespaced
        assert not by_name[("", "namespaces")].namespaced
        assert ("extensions", "deployments") not in by_name  # legacy versions are not faked
        assert RESTMapper(resources).for_api_version_kind("apps/v1", "ReplicaSet").resource == "replicasets"

    run(main())


def test_reactors_answer_or_fail_before_the_tracker_and_actions_are_recorded():
    async def main():
        c = FakeClient(ns("default"))
        await c.create("", "v1", "configmaps", cm("a"))

        def fail_deletes(action):
            raise StatusError(500, "InternalError", f"boom deleting {action.name}")

        c.prepend_reactor("delete", "configmaps", fail_deletes)
        c.prepend_reactor("get", "*", lambda action: {"faked": action.name} if action.name == "x" else None)
        with pytest.raises(StatusError) as e:
            await c.delete("", "v1", "configmaps", "a", namespace="default")
        assert e.value.message == "boom deleting a"
        assert await c.get("", "v1", "configmaps", "x", namespace="default") == {"faked": "x"}
        assert (await c.get("", "v1", "configmaps", "a", namespace="default"))["metadata"]["name"] == "a"
        assert [(a.verb, a.name) for a in c.actions] == [("create", "a"), ("delete", "a"), ("get", "x"),
                                                         ("get", "a")]
        c.clear_actions()
        assert c.actions == []

    run(main())
