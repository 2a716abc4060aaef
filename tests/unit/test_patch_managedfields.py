"""managedFields for Update operations: who gets which fields on create, update and patch."""

import copy
import datetime as dt

import pytest

from kubeling.api import schema
from kubeling.api.patch import managedfields
from kubeling.api.patch.fieldpath import FieldSet, parse_path

T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z"


@pytest.fixture(scope="module")
def schemas():
    return schema.get()


@pytest.fixture(scope="module")
def node(schemas):
    return schemas.for_gvk("apps", "v1", "Deployment")


def deployment(replicas=1, image="nginx:1", **labels):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "1",
                         "labels": labels or {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": image}]}}}}


def entries(obj):
    return {(e["manager"], e["operation"], e.get("subresource", "")): e for e in obj["metadata"]["managedFields"]}


def update(schemas, node, old, new, manager, when, **kw):
    managedfields.update(old, new, manager, "Update", "apps/v1", node=node, schemas=schemas, now=when, **kw)
    return new


def created(schemas, node):
    return update(schemas, node, None, deployment(), "kubectl-create", T0)


def test_create_gives_everything_to_the_creator(schemas, node):
    obj = created(schemas, node)
    [entry] = obj["metadata"]["managedFields"]
    assert entry == {
        "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                     "f:spec": {"f:replicas": {}, "f:selector": {},
                                "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                                               "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                                                   ".": {}, "f:image": {}, "f:name": {}}}}}}}}


def test_update_moves_changed_fields_to_the_writer(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    update(schemas, node, old, new, "kubectl-set", T1)
    got = entries(new)
    assert got[("kubectl-set", "Update", "")]["fieldsV1"] == {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"nginx"}': {"f:image": {}}}}}}}
    assert "f:image" not in got[("kubectl-create", "Update", "")]["fieldsV1"]["f:spec"]["f:template"]["f:spec"][
        "f:containers"]['k:{"name":"nginx"}']
    assert got[("kubectl-create", "Update", "")]["time"] == T0


def test_removed_fields_leave_their_owner(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    del new["metadata"]["labels"]
    update(schemas, node, old, new, "editor", T1)
    creator = entries(new)[("kubectl-create", "Update", "")]["fieldsV1"]
    assert "f:metadata" not in creator
    assert creator["f:spec"]["f:replicas"] == {}
    assert ("editor", "Update", "") not in entries(new)  # removing gives nothing


def test_added_optional_list_owns_itself_required_one_does_not(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    update(schemas, node, old, new, "env-setter", T1)
    got = entries(new)[("env-setter", "Update", "")]["fieldsV1"]
    assert got["f:spec"]["f:template"]["f:spec"]["f:containers"] == {'k:{"name":"nginx"}': {"f:env": {
        ".": {}, 'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}}}}
    creator = entries(new)[("kubectl-create", "Update", "")]["fieldsV1"]
    assert "." not in creator["f:spec"]["f:template"]["f:spec"]["f:containers"]  # containers is required


def test_entry_that_loses_everything_disappears(schemas, node):
    old = update(schemas, node, None, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                                       "spec": {"replicas": 1}}, "first", T0)
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 2
    update(schemas, node, old, new, "second", T1)
    assert [e["manager"] for e in new["metadata"]["managedFields"]] == ["second"]


def test_same_manager_accumulates_and_refreshes_time(schemas, node):
    old = created(schemas, node)
    mid = copy.deepcopy(old)
    mid["spec"]["replicas"] = 3
    update(schemas, node, old, mid, "scaler", T1)
    new = copy.deepcopy(mid)
    new["metadata"]["labels"]["tier"] = "front"
    update(schemas, node, mid, new, "scaler", T2)
    scaler = entries(new)[("scaler", "Update", "")]
    assert scaler["time"] == T2
    assert scaler["fieldsV1"] == {"f:metadata": {"f:labels": {"f:tier": {}}}, "f:spec": {"f:replicas": {}}}


def test_no_change_records_nothing(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    update(schemas, node, old, new, "noop", T1)
    assert new["metadata"]["managedFields"] == old["metadata"]["managedFields"]


def test_subresource_entries_are_separate(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 1}
    managedfields.update(old, new, "kube-controller-manager", "Update", "apps/v1", subresource="status",
                         node=node, schemas=schemas, now=T1)
    entry = entries(new)[("kube-controller-manager", "Update", "status")]
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:replicas": {}}}


def test_ignored_fields_are_not_recorded(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 1}
    new["spec"]["replicas"] = 4
    update(schemas, node, old, new, "writer", T1, ignored=FieldSet.of(parse_path("status")))
    assert entries(new)[("writer", "Update", "")]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}


def test_existing_object_without_managed_fields_stays_untracked(schemas, node):
    old = deployment()
    new = deployment(replicas=2)
    update(schemas, node, old, new, "late", T1)
    assert "managedFields" not in new["metadata"]


def test_client_sent_managed_fields_are_honoured_and_can_be_reset(schemas, node):
    old = created(schemas, node)
    new = copy.deepcopy(old)
    new["metadata"]["managedFields"] = [{}]  # upstream's documented way to clear them
    update(schemas, node, old, new, "resetter", T1)
    assert "managedFields" not in new["metadata"]
    dropped = copy.deepcopy(old)
    del dropped["metadata"]["managedFields"]  # a client that does not know about them
    update(schemas, node, old, dropped, "unaware", T1)
    assert dropped["metadata"]["managedFields"] == old["metadata"]["managedFields"]


def test_server_set_metadata_is_never_owned(schemas, node):
    new = deployment()
    new["metadata"].update(generation=3, creationTimestamp=T0, managedFields=None)
    update(schemas, node, None, new, "creator", T0)
    meta = entries(new)[("creator", "Update", "")]["fieldsV1"]["f:metadata"]
    assert set(meta) == {"f:labels"}


def test_entries_are_sorted_like_upstream(schemas, node):
    old = created(schemas, node)
    old["metadata"]["managedFields"].insert(0, {"manager": "zeta", "operation": "Apply", "apiVersion": "apps/v1",
                                                "time": T2, "fieldsType": "FieldsV1",
                                                "fieldsV1": {"f:metadata": {"f:labels": {"f:z": {}}}}})
    old["metadata"]["labels"]["z"] = "1"
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 9
    update(schemas, node, old, new, "alpha", T1)
    order = [(e["operation"], e["manager"]) for e in new["metadata"]["managedFields"]]
    assert order == [("Apply", "zeta"), ("Update", "kubectl-create"), ("Update", "alpha")]


def test_update_managers_are_capped(schemas, node):
    obj = created(schemas, node)
    for i in range(12):
        new = copy.deepcopy(obj)
        new["metadata"]["labels"][f"l{i}"] = "x"
        update(schemas, node, obj, new, f"m{i}", dt.datetime(2024, 5, 2, 0, i, tzinfo=dt.timezone.utc))
        obj = new
    managers = [e["manager"] for e in obj["metadata"]["managedFields"]]
    assert len(managers) == managedfields.MAX_UPDATE_MANAGERS
    assert managers[0] == "ancient-changes" and "m11" in managers and "kubectl-create" not in managers
    ancient = entries(obj)[("ancient-changes", "Update", "")]["fieldsV1"]
    assert "f:replicas" in ancient["f:spec"] and "f:l0" in ancient["f:metadata"]["f:labels"]


def test_time_formats():
    assert managedfields.format_time(dt.datetime(2024, 1, 2, 3, 4, 5, 999, tzinfo=dt.timezone.utc)) == \
        "2024-01-02T03:04:05Z"
    assert managedfields.format_time(dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == \
        "2024-01-02T03:04:05Z"


@pytest.mark.parametrize("lhs,rhs,added,modified,removed", [
    pytest.param({"a": 1}, {"a": 2}, [], [("f:a",)], [], id="modified-leaf"),
    pytest.param({}, {"m": {"k": "v"}}, [("f:m",), ("f:m", "f:k")], [], [], id="added-map-owns-itself"),
    pytest.param({"m": {"k": "v"}}, {}, [], [], [("f:m",), ("f:m", "f:k")], id="removed-map"),
    pytest.param({"m": {}}, {"m": {}}, [], [], [], id="empty-maps-equal"),
    pytest.param({}, {"m": {}}, [("f:m",)], [], [], id="empty-map-is-a-leaf"),
    pytest.param({"l": [1]}, {"l": [1, 2]}, [], [("f:l",)], [], id="deduced-list-is-atomic"),
])
def test_compare_without_schema(lhs, rhs, added, modified, removed):
    c = managedfields.compare(lhs, rhs, None, None)
    assert (c.added, c.modified, c.removed) == (FieldSet.of(*added), FieldSet.of(*modified), FieldSet.of(*removed))
