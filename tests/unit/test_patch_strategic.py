"""Strategic merge patch: upstream's patch_test.go cases on a MergeItem-like schema, and real kinds."""

import copy
import time

import pytest

from kubeling.api import errors, schema
from kubeling.api.patch import strategic

# The shape of upstream's test type ``MergeItem``, as a CRD-style schema (no $refs).
MERGE_ITEM: dict = {"type": "object", "properties": {
    "name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"},
    "nonMergingList": {"type": "array"},
    "mergingIntList": {"type": "array", "items": {"type": "integer"}, "x-kubernetes-patch-strategy": "merge"},
    "nonMergingIntList": {"type": "array", "items": {"type": "integer"}},
    "simpleMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "replacingItem": {"type": "object", "x-kubernetes-patch-strategy": "replace"},
}}
MERGE_ITEM["properties"]["mergingList"] = {"type": "array", "items": MERGE_ITEM, "x-kubernetes-patch-strategy": "merge",
                                           "x-kubernetes-patch-merge-key": "name"}
MERGE_ITEM["properties"]["nonMergingList"]["items"] = MERGE_ITEM
MERGE_ITEM["properties"]["retainKeysMap"] = {"type": "object", "properties": MERGE_ITEM["properties"],
                                             "x-kubernetes-patch-strategy": "retainKeys"}
MERGE_ITEM["properties"]["retainKeysMergingList"] = {
    "type": "array", "items": MERGE_ITEM, "x-kubernetes-patch-strategy": "merge,retainKeys",
    "x-kubernetes-patch-merge-key": "name"}


def smp(doc, patch):
    return strategic.apply(doc, patch, MERGE_ITEM, None)


@pytest.mark.parametrize("original,patch,expected", [
    pytest.param({"mergingIntList": [1, 2]}, {"mergingIntList": [2, 3]}, {"mergingIntList": [1, 2, 3]},
                 id="unique-scalars-when-merging-lists"),
    pytest.param({"simpleMap": {"key1": "1", "key2": "1"}}, {"simpleMap": {"$patch": "delete"}}, {"simpleMap": {}},
                 id="delete-map-from-nested-map"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "2"}]}, {"mergingList": [{"$patch": "replace"}]},
                 {"mergingList": []}, id="delete-all-items-via-replace"),
    pytest.param({"mergingList": []}, {"mergingList": []}, {"mergingList": []}, id="merge-empty-merging-lists"),
    pytest.param({"name": "1", "value": "1"}, {"$patch": "replace"}, {}, id="delete-all-keys-from-map"),
    pytest.param({"name": "1", "value": "1"}, {"other": "a", "$patch": "replace"}, {"other": "a"},
                 id="add-key-and-delete-all-keys"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "1"}, {"name": "2", "value": "a"}, {"name": "3"}]},
                 {"mergingList": [{"name": "1", "$patch": "delete"}]},
                 {"mergingList": [{"name": "2", "value": "a"}, {"name": "3"}]}, id="delete-removes-all-duplicates"),
    pytest.param({"retainKeysMap": {"name": "foo"}}, {"retainKeysMap": {"value": "bar"}},
                 {"retainKeysMap": {"name": "foo", "value": "bar"}}, id="retainkeys-map-add-without-directive"),
    pytest.param({"retainKeysMap": {"name": "foo", "value": "a"}}, {"retainKeysMap": {"value": None}},
                 {"retainKeysMap": {"name": "foo"}}, id="retainkeys-map-delete-field"),
    pytest.param({"retainKeysMap": {"name": "foo", "value": "a"}},
                 {"retainKeysMap": {"$retainKeys": ["value"], "value": "b"}},
                 {"retainKeysMap": {"value": "b"}}, id="retainkeys-directive-clears-other-keys"),
    pytest.param({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]},
                 {"retainKeysMergingList": [{"name": "foo", "value": "b"}]},
                 {"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "b"}]},
                 id="retainkeys-list-change-field"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]},
                 {"mergingList": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"},
                                  {"name": "2", "other": "x"}]},
                 {"mergingList": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"},
                                  {"name": "2", "value": "b", "other": "x"}]}, id="preserve-patch-order"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]},
                 {"mergingList": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"}]},
                 {"mergingList": [{"name": "2", "value": "b"}, {"name": "3", "value": "c"},
                                  {"name": "1", "value": "a"}]},
                 id="preserve-patch-order-with-server-only-item"),
    pytest.param({"mergingIntList": [1, 2, 3]}, {"mergingIntList": [3, 1]}, {"mergingIntList": [2, 3, 1]},
                 id="preserve-patch-order-int-list"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "3"}]},
                 {"$setElementOrder/mergingList": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                  "mergingList": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]},
                 {"mergingList": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]},
                 id="set-element-order-mentions-missing-item"),
    pytest.param({"mergingIntList": [1, 3]}, {"$setElementOrder/mergingIntList": [3, 2, 1]},
                 {"mergingIntList": [3, 1]}, id="set-element-order-int-list"),
    pytest.param({"mergingIntList": [1, 2, 3, 4]},
                 {"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]},
                 {"mergingIntList": [1, 2, 4]}, id="delete-from-primitive-list-keeps-server-items"),
    pytest.param({"mergingIntList": [1, 2, 3, 3, 4]}, {"$deleteFromPrimitiveList/mergingIntList": [3]},
                 {"mergingIntList": [1, 2, 4]}, id="delete-from-primitive-list-all-duplicates"),
    pytest.param({"mergingIntList": [1, 2, 3]},
                 {"$setElementOrder/mergingIntList": [1, 2, 4], "$deleteFromPrimitiveList/mergingIntList": [3],
                  "mergingIntList": [4]}, {"mergingIntList": [1, 2, 4]}, id="add-and-delete-primitives"),
    pytest.param({"mergingList": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"}]},
                 {"$setElementOrder/mergingList": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                  "mergingList": [{"name": "4", "value": "4"}, {"name": "3", "value": "3"}]},
                 {"mergingList": [{"name": "4", "value": "4"}, {"name": "1", "other": "a"},
                                  {"name": "2", "value": "2", "other": "b"}, {"name": "3", "value": "3"}]},
                 id="merge-lists-of-maps-with-order"),
    pytest.param({"nonMergingIntList": [1, 2]}, {"nonMergingIntList": [2, 3]}, {"nonMergingIntList": [2, 3]},
                 id="replace-list-of-scalars"),
    pytest.param({"nonMergingList": [{"name": "1", "value": "a"}]}, {"nonMergingList": [{"name": "1"}]},
                 {"nonMergingList": [{"name": "1"}]}, id="replace-non-merging-list-of-maps"),
    pytest.param({"replacingItem": {"a": 1, "b": 2}}, {"replacingItem": {"c": 3}}, {"replacingItem": {"c": 3}},
                 id="replace-strategy-map"),
    pytest.param({"name": "1", "other": "a"}, {"name": None, "value": "1", "missing": None},
                 {"other": "a", "value": "1"}, id="null-deletes-and-unmatched-null-ignored"),
    pytest.param({"name": "a"}, {"name": {"x": 1}}, {"name": {"x": 1}}, id="type-change-replaces"),
    pytest.param({}, {"mergingList": [{"name": "1", "$patch": "delete"}, {"name": "2", "value": None}]},
                 {"mergingList": [{"name": "2"}]}, id="new-list-directives-apply-to-nothing"),
])
def test_upstream_cases(original, patch, expected):
    assert smp(original, patch) == expected


@pytest.mark.parametrize("original,patch,code,fragment", [
    pytest.param({"mergingList": [{"name": "1", "value": "a"}]}, {"mergingList": [{"value": "b"}]}, 400,
                 "does not contain declared merge key: name", id="missing-merge-key"),
    pytest.param({"mergingList": [{"name": "1"}, {"name": "3"}, {"name": "2"}]},
                 {"$setElementOrder/mergingList": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                  "mergingList": [{"name": "3", "value": "3"}, {"name": "1", "value": "1"}]}, 400, "doesn't match",
                 id="set-element-order-mismatch"),
    pytest.param({"name": "1"}, {"$patch": "explode"}, 400, "unknown patch type: explode", id="unknown-directive"),
    pytest.param({"mergingList": [{"name": "1"}]}, {"mergingList": [{"name": "1", "$patch": "merge"}]}, 400,
                 "merging lists cannot yet be specified", id="merge-directive-in-list"),
    pytest.param({"retainKeysMap": {"name": "a"}}, {"retainKeysMap": {"$retainKeys": ["name"], "value": "b"}}, 400,
                 "invalid patch format of retainKeys", id="retain-keys-must-list-patched-keys"),
    pytest.param({"retainKeysMap": {"name": "a"}}, {"retainKeysMap": {"$retainKeys": "name"}}, 400,
                 "invalid patch format of retainKeys", id="retain-keys-not-a-list"),
    pytest.param({"mergingIntList": [1]}, {"$deleteFromPrimitiveList/mergingIntList": 1}, 400,
                 "invalid patch format of primitive list", id="delete-list-not-a-list"),
    pytest.param({"mergingIntList": [[1]]}, {"mergingIntList": [[2]]}, 422,
                 "the server rejected our request", id="lists-of-lists"),
])
def test_errors(original, patch, code, fragment):
    with pytest.raises(errors.StatusError) as exc:
        smp(original, patch)
    assert exc.value.code == code
    assert fragment in exc.value.message


def test_patch_must_be_an_object():
    with pytest.raises(errors.StatusError) as exc:
        smp({}, [1])
    assert exc.value.code == 400


def test_inputs_are_not_modified():
    original = {"mergingList": [{"name": "1", "value": "a"}], "simpleMap": {"k": "v"}}
    patch = {"mergingList": [{"name": "1", "value": "b"}], "simpleMap": {"k": None}}
    before = copy.deepcopy((original, patch))
    smp(original, patch)
    assert (original, patch) == before


# ---------------------------------------------------------------- real kinds

@pytest.fixture(scope="module")
def schemas():
    return schema.get()


def pod(containers, **meta):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **meta}, "spec": {"containers": containers}}


def deployment(strategy):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1, "strategy": strategy, "template": {"spec": {"containers": [{"name": "a"}]}}}}


def pod_patch(schemas, doc, patch):
    return strategic.apply(doc, patch, schemas.for_gvk("", "v1", "Pod"), schemas)


@pytest.mark.parametrize("containers,patch,expected", [
    pytest.param([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                 [{"name": "b", "image": "b:2"}],
                 [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}], id="containers-merged-by-name"),
    pytest.param([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                 [{"name": "c", "image": "c:1"}],
                 # upstream places new items ahead of live-only items that follow no patched one
                 [{"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                 id="new-container-added"),
    pytest.param([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                 [{"name": "a", "$patch": "delete"}], [{"name": "b", "image": "b:1"}],
                 id="container-deleted-with-patch-delete"),
    pytest.param([{"name": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}],
                 [{"name": "a", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}],
                 [{"name": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                                        {"name": "C", "value": "4"}]}], id="env-merged-by-name"),
    pytest.param([{"name": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}],
                 [{"name": "a", "env": [{"name": "A", "value": None, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}],
                 [{"name": "a", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},
                                        {"name": "B", "value": "2"}]}], id="env-item-field-deleted-with-null"),
    pytest.param([{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}],
                 [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}],
                 [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}],
                 id="ports-merged-by-container-port"),
    pytest.param([{"name": "a"}, {"name": "b"}], [{"$patch": "replace"}, {"name": "x"}], [{"name": "x"}],
                 id="replace-whole-list"),
])
def test_pod_containers(schemas, containers, patch, expected):
    out = pod_patch(schemas, pod(containers), {"spec": {"containers": patch}})
    assert out["spec"]["containers"] == expected


def test_set_element_order_reorders_containers(schemas):
    doc = pod([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    out = pod_patch(schemas, doc, {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"},
                                                                            {"name": "b"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["c", "a", "b"]


def test_set_element_order_with_changes_like_kubectl_apply(schemas):
    doc = pod([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    patch = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "new"}, {"name": "a"}],
                      "containers": [{"name": "new", "image": "n:1"}, {"name": "a", "image": "a:2"}]}}
    out = pod_patch(schemas, doc, patch)
    assert out["spec"]["containers"] == [{"name": "b", "image": "b:1"}, {"name": "new", "image": "n:1"},
                                         {"name": "a", "image": "a:2"}]


def test_kubectl_apply_style_container_removal(schemas):
    doc = pod([{"name": "old", "image": "o"}, {"name": "keep", "image": "k:1"}])
    patch = {"spec": {"$setElementOrder/containers": [{"name": "keep"}],
                      "containers": [{"name": "keep", "image": "k:2"}, {"$patch": "delete", "name": "old"}]}}
    assert pod_patch(schemas, doc, patch)["spec"]["containers"] == [{"name": "keep", "image": "k:2"}]


@pytest.mark.parametrize("patch,expected", [
    pytest.param({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}, ["a", "c"], id="delete-one"),
    pytest.param({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c", "zz"]}}, ["b"], id="delete-many"),
    pytest.param({"metadata": {"finalizers": ["d", "a"]}}, ["d", "a", "b", "c"], id="merge-is-a-union"),
    pytest.param({"metadata": {"$setElementOrder/finalizers": ["c", "a"],
                               "$deleteFromPrimitiveList/finalizers": ["b"]}},
                 ["c", "a"], id="kubectl-apply-style-removal"),
    pytest.param({"metadata": {"finalizers": None}}, None, id="null-drops-the-list"),
])
def test_finalizers(schemas, patch, expected):
    out = pod_patch(schemas, pod([{"name": "a"}], finalizers=["a", "b", "c"]), patch)
    assert out["metadata"].get("finalizers") == expected


def test_labels_merge_and_delete(schemas):
    out = pod_patch(schemas, pod([{"name": "a"}], labels={"x": "1", "y": "2"}),
                    {"metadata": {"labels": {"x": None, "z": "3"}}})
    assert out["metadata"]["labels"] == {"y": "2", "z": "3"}


def test_atomic_list_is_replaced(schemas):
    doc = pod([{"name": "a"}])
    doc["spec"]["tolerations"] = [{"key": "a", "operator": "Exists"}]
    out = pod_patch(schemas, doc, {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}})
    assert out["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_without_schema_lists_are_replaced():
    doc = {"spec": {"items": [{"name": "a"}], "x": 1}}
    out = strategic.apply(doc, {"spec": {"items": [{"name": "b"}]}}, None, None)
    assert out == {"spec": {"items": [{"name": "b"}], "x": 1}}


def test_retain_keys_switches_rolling_update_to_recreate(schemas):
    node = schemas.for_gvk("apps", "v1", "Deployment")
    doc = deployment({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    out = strategic.apply(doc, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, node, schemas)
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["spec"]["replicas"] == 1
    # Without the directive, upstream keeps rollingUpdate (validation then rejects the object).
    kept = strategic.apply(doc, {"spec": {"strategy": {"type": "Recreate"}}}, node, schemas)
    assert kept["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_volumes_merge_retain_keys(schemas):
    doc = pod([{"name": "a"}])
    doc["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]
    patch = {"spec": {"volumes": [{"$retainKeys": ["name", "configMap"], "name": "v", "configMap": {"name": "cm"}}]}}
    out = pod_patch(schemas, doc, patch)
    assert out["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "emptyDir": {}}]


# -- cost: merging lists is linear, not a product of both sizes ------------------------------------

@pytest.mark.parametrize("live_names, patch_items", [
    pytest.param(range(5000), [{"name": f"n{i}", "value": "x"} for i in range(5000, 10000)], id="append-5000"),
    pytest.param(range(5000), [{"name": f"n{i}", "value": "x"} for i in range(5000)], id="merge-5000"),
    pytest.param(range(5000), [{"name": f"n{i}", "$patch": "delete"} for i in range(5000)], id="delete-5000"),
])
def test_large_merging_lists_merge_in_linear_time(live_names, patch_items):
    live = {"mergingList": [{"name": f"n{i}", "other": "o"} for i in live_names]}
    start = time.monotonic()
    out = smp(live, {"mergingList": patch_items})
    assert time.monotonic() - start < 2
    deleted = patch_items[0].get("$patch") == "delete"
    assert len(out["mergingList"]) == len({*(f"n{i}" for i in live_names),
                                           *(p["name"] for p in patch_items)}) - (5000 if deleted else 0)


@pytest.mark.parametrize("key_a, key_b, same", [
    pytest.param(80, 80.0, True, id="int-matches-float"),
    pytest.param(1, True, False, id="int-is-not-bool"),
    pytest.param("80", 80, False, id="string-is-not-number"),
])
def test_merge_keys_match_as_json_values(key_a, key_b, same):
    item = {"type": "array", "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "port",
            "items": {"type": "object"}}
    node = {"type": "object", "properties": {"ports": item}}
    out = strategic.apply({"ports": [{"port": key_a, "a": 1}]}, {"ports": [{"port": key_b, "b": 2}]}, node, None)
    assert len(out["ports"]) == (1 if same else 2)
