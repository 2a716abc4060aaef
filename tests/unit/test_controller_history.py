"""ControllerRevision helpers: hashing, names, collisions, ordering, truncation, apply."""

import asyncio

import pytest

from kubeling.client.fake import FakeClient
from kubeling.controllers import history

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}


def owner(image="busybox", uid="u1"):
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default",
                                                                       "uid": uid},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}},
                                                 "spec": {"containers": [{"name": "c", "image": image}]}}}}


def revision(image="busybox", number=1, collision=None):
    o = owner(image)
    return history.new_controller_revision(o, {"app": "web"}, history.template_patch(o), number, collision)


def test_template_patch_replaces_the_whole_template():
    patch = history.template_patch(owner())
    assert patch == {"spec": {"template": {"metadata": {"labels": {"app": "web"}}, "$patch": "replace",
                                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    back = history.apply_revision(owner("other"), {"data": patch})
    assert back["spec"]["template"] == owner()["spec"]["template"] and back["spec"]["replicas"] == 3


@pytest.mark.parametrize("a, b, same", [
    pytest.param(revision(), revision(), True, id="same-template-same-hash"),
    pytest.param(revision(), revision("busybox:2"), False, id="another-template"),
    pytest.param(revision(), revision(collision=1), False, id="collision-count-changes-the-hash"),
    pytest.param(revision(number=1), revision(number=7), True, id="the-revision-number-is-not-hashed"),
])
def test_hash_and_name(a, b, same):
    assert (a["metadata"]["name"] == b["metadata"]["name"]) is same
    h = a["metadata"]["labels"]["controller-revision-hash"]
    assert a["metadata"]["name"] == f"web-{h}"
    assert not set(h) & set("aeiou")
    assert a["metadata"]["labels"]["app"] == "web"
    assert a["metadata"]["ownerReferences"][0]["controller"] is True


def test_long_owner_names_are_cut_to_fit():
    name = history.revision_name("x" * 300, "bcd")
    assert len(name) == 253 and name.endswith("-bcd")


def test_equal_revisions_and_order():
    r1, r2, r3 = revision(number=2), revision("busybox:2", number=1), revision(number=3)
    r3["metadata"]["name"] = "web-z"
    assert [r["revision"] for r in history.sort_revisions([r3, r1, r2])] == [1, 2, 3]
    assert history.find_equal_revisions([r1, r2, r3], revision()) == [r1, r3]
    assert history.next_revision(history.sort_revisions([r1, r2])) == 3
    assert history.next_revision([]) == 1


def test_create_returns_an_equal_existing_revision_and_bumps_the_count_on_a_collision():
    async def main():
        client = FakeClient(NS)
        o = owner()
        stored, count = await history.create_controller_revision(client, o, revision(), 0)
        again, count2 = await history.create_controller_revision(client, o, revision(), 0)
        assert again["metadata"]["uid"] == stored["metadata"]["uid"] and count == count2 == 0
        # a different revision whose name is taken (a forced collision) gets a new count and name
        clash = revision("busybox:2")
        squatter = revision("busybox:2")
        squatter["data"] = {"spec": {"template": {"something": "else"}}}
        squatter["metadata"]["name"] = f"web-{history.hash_revision(clash, 0)}"
        await client.create("apps", "v1", "controllerrevisions", squatter, namespace="default")
        made, count3 = await history.create_controller_revision(client, o, clash, 0)
        assert count3 == 1 and made["metadata"]["name"] != squatter["metadata"]["name"]
        assert made["metadata"]["labels"]["controller-revision-hash"] == history.hash_revision(clash, 1)
    asyncio.run(main())


@pytest.mark.parametrize("limit, live, left", [
    pytest.param(1, set(), ["r4"], id="keep-the-newest"),
    pytest.param(1, {"r1"}, ["r1", "r4"], id="live-revisions-are-never-deleted"),
    pytest.param(0, set(), [], id="zero-keeps-none"),
    pytest.param(None, set(), ["r1", "r2", "r3", "r4"], id="default-ten"),
])
def test_truncate_history(limit, live, left):
    async def main():
        client = FakeClient(NS)
        revs = []
        for i in range(1, 5):
            r = revision(f"busybox:{i}", number=i)
            r["metadata"]["name"] = f"r{i}"
            revs.append(await client.create("apps", "v1", "controllerrevisions", r, namespace="default"))
        await history.truncate_history(client, revs, live, limit)
        res = client.tracker.resource("apps", "v1", "controllerrevisions")
        assert sorted(r["metadata"]["name"] for r in client.tracker.list(res, "default", None, None)) == left
    asyncio.run(main())
