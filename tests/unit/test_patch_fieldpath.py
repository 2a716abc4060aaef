"""Field sets: FieldsV1 round trips, set algebra, path strings, and which fields an object sets."""

import orjson
import pytest

from kubeling.api import schema
from kubeling.api.patch import fieldpath
from kubeling.api.patch.fieldpath import FieldSet


@pytest.fixture(scope="module")
def schemas():
    return schema.get()


def deployment_node(schemas):
    return schemas.for_gvk("apps", "v1", "Deployment")


# A managedFields entry as kube-apiserver writes it for `kubectl create deployment`.
UPSTREAM_FIELDS = {
    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    "f:spec": {"f:replicas": {}, "f:selector": {},
               "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
               "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                              "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                                  ".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}}}}},
}


def test_fieldsv1_round_trip_keeps_upstream_shape():
    s = FieldSet.from_fieldsv1(UPSTREAM_FIELDS)
    assert s.to_fieldsv1() == UPSTREAM_FIELDS
    assert list(s.to_fieldsv1()["f:spec"]) == ["f:replicas", "f:selector", "f:strategy", "f:template"]
    item = s.to_fieldsv1()["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"nginx"}']
    assert list(item)[0] == "."


def test_fieldsv1_canonicalises_keys():
    s = FieldSet.from_fieldsv1({'k:{"protocol": "TCP", "containerPort": 80}': {}})
    assert s.to_fieldsv1() == {'k:{"containerPort":80,"protocol":"TCP"}': {}}


@pytest.mark.parametrize("bad", [
    pytest.param({"x:foo": {}}, id="unknown-prefix"),
    pytest.param({"f:a": 1}, id="value-not-object"),
    pytest.param(["f:a"], id="not-an-object"),
])
def test_fieldsv1_rejects_malformed(bad):
    with pytest.raises(ValueError):
        FieldSet.from_fieldsv1(bad)


def test_pe_order_is_fields_keys_values_indexes():
    s = FieldSet.of(("i:0",), ('v:"b"',), ("v:2",), ('k:{"name":"a"}',), ("f:z",), ("f:a",))
    assert list(s.to_fieldsv1()) == ["f:a", "f:z", 'k:{"name":"a"}', "v:2", 'v:"b"', "i:0"]


@pytest.mark.parametrize("path,expected", [
    pytest.param(("f:spec", "f:replicas"), ".spec.replicas", id="fields"),
    pytest.param(("f:spec", "f:containers", 'k:{"name":"nginx"}', "f:image"),
                 '.spec.containers[name="nginx"].image', id="keyed-item"),
    pytest.param(("f:ports", 'k:{"containerPort":80,"protocol":"TCP"}'), '.ports[containerPort=80,protocol="TCP"]',
                 id="multi-key"),
    pytest.param(("f:metadata", "f:finalizers", 'v:"foo"'), '.metadata.finalizers[="foo"]', id="set-value"),
    pytest.param(("f:args", "i:3"), ".args[3]", id="index"),
])
def test_path_string(path, expected):
    assert fieldpath.path_string(path) == expected


def test_set_algebra():
    a = FieldSet.of(("f:a", "f:b"), ("f:a", "f:c"), ("f:d",))
    b = FieldSet.of(("f:a", "f:c"), ("f:e",))
    assert (a | b) == FieldSet.of(("f:a", "f:b"), ("f:a", "f:c"), ("f:d",), ("f:e",))
    assert (a & b) == FieldSet.of(("f:a", "f:c"))
    assert (a - b) == FieldSet.of(("f:a", "f:b"), ("f:d",))
    assert not (a - a)
    assert a.covers(("f:a",)) and not a.has(("f:a",)) and a.has(("f:a", "f:b"))
    # difference is exact; recursive difference drops whole subtrees
    parent = FieldSet.of(("f:a",))
    assert (a - parent) == a
    assert a.recursive_difference(parent) == FieldSet.of(("f:d",))


def test_fields_of_deployment(schemas):
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                                          "ports": [{"containerPort": 80}, {"containerPort": 53,
                                                                                           "protocol": "UDP"}],
                                                          "args": ["-v"], "resources": {}}],
                                          "nodeSelector": {"disk": "ssd"}}}}}
    got = fieldpath.fields_of(dep, deployment_node(schemas), schemas).to_fieldsv1()
    assert got == {
        "f:apiVersion": {}, "f:kind": {},
        "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
        "f:spec": {"f:replicas": {},
                   "f:selector": {},  # LabelSelector is an atomic map
                   "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                                  "f:spec": {"f:containers": {'k:{"name":"nginx"}': {
                                      ".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                                      "f:ports": {'k:{"containerPort":53,"protocol":"UDP"}': {
                                          ".": {}, "f:containerPort": {}, "f:protocol": {}},
                                          'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
                                      "f:resources": {}}},
                                      "f:nodeSelector": {}}}}}  # atomic map-type


def test_fields_of_set_list_and_owner_references(schemas):
    node = schemas.for_gvk("", "v1", "ConfigMap")
    cm = {"metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "u1", "name": "o", "kind": "K",
                                                                       "apiVersion": "v1"}]},
          "data": {"k": "v"}}
    got = fieldpath.fields_of(cm, node, schemas).to_fieldsv1()
    assert got["f:metadata"]["f:finalizers"] == {'v:"a"': {}, 'v:"b"': {}}
    # OwnerReference is an atomic struct: the item is owned whole
    assert got["f:metadata"]["f:ownerReferences"] == {'k:{"uid":"u1"}': {}}
    assert got["f:data"] == {"f:k": {}}


def test_fields_of_crd_schema_without_refs():
    node = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                      "items": {"type": "object", "properties": {"id": {"type": "integer"},
                                                                 "v": {"type": "string"}}}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}
    obj = {"spec": {"items": [{"id": 1, "v": "x"}], "tags": ["a"], "free": {"deep": {"er": 1}}}}
    got = fieldpath.fields_of(obj, node, None).to_fieldsv1()
    assert got == {"f:spec": {"f:items": {"k:{\"id\":1}": {".": {}, "f:id": {}, "f:v": {}}},
                              "f:tags": {},  # no list-type: atomic
                              "f:free": {"f:deep": {".": {}, "f:er": {}}}}}


def test_fields_of_without_schema_is_deduced():
    got = fieldpath.fields_of({"a": {"b": 1}, "l": [1, 2]}, None, None).to_fieldsv1()
    assert got == {"f:a": {".": {}, "f:b": {}}, "f:l": {}}


def test_missing_list_map_key_is_an_error(schemas):
    svc = {"spec": {"ports": [{"protocol": "TCP"}]}}
    with pytest.raises(ValueError, match='omits key field "port"'):
        fieldpath.fields_of(svc, schemas.for_gvk("", "v1", "Service"), schemas)


def test_retain_keys_extension_survives_ref(schemas):
    spec = schemas.resolve(deployment_node(schemas)["properties"]["spec"])
    strategy = fieldpath.prop(schemas, spec, "strategy")
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert "rollingUpdate" in strategy["properties"]


def test_list_type_falls_back_to_patch_merge_key():
    assert fieldpath.list_type({"x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "ip"}) == \
        ("map", ["ip"])
    assert fieldpath.list_type({"x-kubernetes-patch-strategy": "merge"}) == ("set", [])
    assert fieldpath.list_type({"x-kubernetes-list-type": "atomic", "x-kubernetes-patch-strategy": "merge"}) == \
        ("atomic", [])
    assert fieldpath.list_type(None) == ("atomic", [])


def test_fieldsv1_serialises_as_compact_json():
    s = FieldSet.of(("f:spec", "f:containers", 'k:{"name":"a"}'), ("f:spec", "f:containers", 'k:{"name":"a"}',
                                                                    "f:image"))
    assert orjson.dumps(s.to_fieldsv1()) == \
        b'{"f:spec":{"f:containers":{"k:{\\"name\\":\\"a\\"}":{".":{},"f:image":{}}}}}'
