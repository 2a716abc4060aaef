"""Structural schema handling: decode checks, pruning, defaulting, value validation, structurality."""


import pytest

from kubeling.api import schema, structural

CRD_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                "port": {"x-kubernetes-int-or-string": True},
                "ratio": {"type": "number", "exclusiveMaximum": True, "maximum": 1},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "minItems": 1,
                         "x-kubernetes-list-type": "set"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                                     "port": {"type": "integer",
                                                                              "default": 80}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 2},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                          "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                "inner": {"type": "object", "x-kubernetes-embedded-resource": True,
                          "x-kubernetes-preserve-unknown-fields": True},
                "nested": {"type": "object", "default": {},
                           "properties": {"level": {"type": "string", "default": "info"}}},
                "maybe": {"type": "string", "nullable": True},
                "either": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                           "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def cr(**spec):
    s = {"size": 5}
    s.update(spec)
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"},
            "spec": s}


# --- check: decode-time type errors and unknown fields ----------------------------------------------

def test_check_builtin_deployment():
    defs = schema.get()
    node = defs.for_gvk("apps", "v1", "Deployment")
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}},
           "spec": {"replicas": "3", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "imagee": "x",
                                                          "ports": [{"containerPort": 80}],
                                                          "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}},
                    "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                    "bogus": True}}
    errs, unknown = structural.check(obj, node, defs)
    assert [(e.field, e.detail) for e in errs] == [
        ("spec.replicas", "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type "
                          "int32")]
    assert unknown == ["spec.template.spec.containers[0].imagee", "spec.bogus"]


@pytest.mark.parametrize("gvk,obj,field", [
    pytest.param(("", "v1", "Pod"), {"spec": {"containers": "nginx"}}, "spec.containers", id="string-for-list"),
    pytest.param(("", "v1", "Pod"), {"spec": {"containers": [{"name": 5}]}}, "spec.containers[0].name",
                 id="number-for-string"),
    pytest.param(("", "v1", "Service"), {"spec": {"ports": [{"port": 80, "targetPort": True}]}},
                 "spec.ports[0].targetPort", id="bool-for-int-or-string"),
    pytest.param(("", "v1", "ConfigMap"), {"data": {"a": 1}}, "data.a", id="number-in-string-map"),
    pytest.param(("", "v1", "Pod"), {"spec": {"hostNetwork": "yes"}}, "spec.hostNetwork", id="string-for-bool"),
    pytest.param(("apps", "v1", "Deployment"), {"spec": {"replicas": 1.5}}, "spec.replicas", id="float-for-int"),
])
def test_check_type_errors(gvk, obj, field):
    defs = schema.get()
    errs, unknown = structural.check(obj, defs.for_gvk(*gvk), defs)
    assert [e.field for e in errs] == [field]
    assert errs[0].kind == "TypeInvalid" and errs[0].detail.startswith("json: cannot unmarshal")
    assert unknown == []


def test_check_accepts_free_form_and_special_types():
    defs = schema.get()
    obj = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {
        "name": "r", "creationTimestamp": "2024-01-01T00:00:00Z",
        "managedFields": [{"manager": "m", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]},
        "data": {"anything": {"goes": [1, "two"]}}, "revision": 1}
    assert structural.check(obj, defs.for_gvk("apps", "v1", "ControllerRevision"), defs) == ([], [])


def test_check_custom_resource():
    obj = cr(size="big", unknownField=1, extra={"free": 1, "known": {"a": "x", "b": 2}},
             inner={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "whatever": 1})
    obj["metadata"]["bogus"] = 1
    obj["topLevel"] = True
    errs, unknown = structural.check(obj, CRD_SCHEMA, None)
    assert [(e.field, e.detail) for e in errs] == [("spec.size", 'spec.size in body must be of type integer: "string"')]
    assert sorted(unknown) == ["metadata.bogus", "spec.extra.known.b", "spec.unknownField", "topLevel"]


# --- prune ------------------------------------------------------------------------------------------

def test_prune():
    obj = cr(unknownField=1, extra={"free": 1, "known": {"a": "x", "b": 2}},
             inner={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {}})
    obj["metadata"]["junk"] = 1
    obj["topLevel"] = True
    structural.prune(obj, CRD_SCHEMA)
    assert obj == {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"},
                   "spec": {"size": 5, "extra": {"free": 1, "known": {"a": "x"}},
                            "inner": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}}}


def test_prune_keeps_everything_under_preserve_unknown_root():
    obj = cr(anything=1)
    structural.prune(obj, {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    assert obj["spec"]["anything"] == 1


# --- defaults ---------------------------------------------------------------------------------------

def test_apply_defaults():
    obj = cr(ports=[{"name": "http"}, {"name": "x", "port": 8080}])
    del obj["spec"]["size"]
    obj["spec"]["mode"] = None  # not nullable: treated as absent
    obj["spec"]["maybe"] = None  # nullable: kept
    structural.apply_defaults(obj, CRD_SCHEMA)
    spec = obj["spec"]
    assert spec["size"] == 3 and spec["mode"] == "fast" and spec["maybe"] is None
    assert spec["ports"] == [{"name": "http", "port": 80}, {"name": "x", "port": 8080}]
    assert spec["nested"] == {"level": "info"}  # defaulted object gets its own nested defaults
    assert "status" not in obj  # no default there


def test_defaults_are_copies():
    a, b = cr(), cr()
    structural.apply_defaults(a, CRD_SCHEMA)
    structural.apply_defaults(b, CRD_SCHEMA)
    a["spec"]["nested"]["level"] = "debug"
    assert b["spec"]["nested"]["level"] == "info"


# --- validate ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    pytest.param({}, [], id="valid"),
    pytest.param({"size": "string"},
                 ['spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"'],
                 id="type"),
    pytest.param({"size": 20}, ["spec.size: Invalid value: 20: spec.size in body should be less than or equal to 10"],
                 id="maximum"),
    pytest.param({"size": 0}, ["spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"],
                 id="minimum"),
    pytest.param({"ratio": 1}, ["spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"],
                 id="exclusive-maximum"),
    pytest.param({"mode": "medium"}, ['spec.mode: Unsupported value: "medium": supported values: "fast", "slow"'],
                 id="enum"),
    pytest.param({"name": "a"}, ['spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long'],
                 id="min-length"),
    pytest.param({"name": "abcdef"}, ["spec.name: Too long: may not be more than 5 bytes"], id="max-length"),
    pytest.param({"name": "AB"}, ['spec.name: Invalid value: "AB": spec.name in body should match \'^[a-z]+$\''],
                 id="pattern"),
    pytest.param({"when": "yesterday"},
                 ['spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday"'],
                 id="format"),
    pytest.param({"when": "2024-01-01T00:00:00Z"}, [], id="format-ok"),
    pytest.param({"tags": []}, ["spec.tags: Invalid value: []: spec.tags in body should have at least 1 items"],
                 id="min-items"),
    pytest.param({"tags": ["a", "b", "c", "d"]}, ["spec.tags: Too many: must have at most 3 items"], id="max-items"),
    pytest.param({"tags": ["a", "a"]}, ['spec.tags[1]: Duplicate value: "a"'], id="list-set"),
    pytest.param({"ports": [{"name": "x"}, {"name": "x"}]}, ['spec.ports[1]: Duplicate value: {"name":"x"}'],
                 id="list-map"),
    pytest.param({"labels": {"a": "1", "b": "2", "c": "3"}},
                 ['spec.labels: Invalid value: {"a":"1","b":"2","c":"3"}: spec.labels in body should have at most '
                  '2 properties'], id="max-properties"),
    pytest.param({"port": 80}, [], id="int-or-string-int"),
    pytest.param({"port": "http"}, [], id="int-or-string-string"),
    pytest.param({"port": 1.5}, ['spec.port: Invalid value: "number": spec.port in body must be of type integer or '
                                 'string: "number"'], id="int-or-string-bad"),
    pytest.param({"mode": None}, ['spec.mode: Invalid value: null: spec.mode in body must be of type string: "null"'],
                 id="not-nullable"),
    pytest.param({"maybe": None}, [], id="nullable"),
    pytest.param({"either": {"a": "1", "b": "2"}},
                 ['spec.either: Invalid value: {"a":"1","b":"2"}: spec.either in body must validate one and only '
                  'one schema (oneOf)'], id="one-of"),
])
def test_validate(spec, expected):
    assert [str(e) for e in structural.validate(cr(**spec), CRD_SCHEMA)] == expected


def test_validate_required():
    obj = cr()
    del obj["spec"]["size"]
    assert [str(e) for e in structural.validate(obj, CRD_SCHEMA)] == ["spec.size: Required value"]


@pytest.mark.parametrize("node,ok", [
    pytest.param({"anyOf": [{"minimum": 5}, {"maximum": 1}], "type": "integer"}, False, id="any-of-fails"),
    pytest.param({"allOf": [{"minimum": 1}, {"maximum": 2}], "type": "integer"}, False, id="all-of-fails"),
    pytest.param({"not": {"maximum": 2}, "type": "integer"}, True, id="not-passes"),
    pytest.param({"type": "integer", "multipleOf": 2}, False, id="multiple-of"),
    pytest.param({"type": "integer", "format": "int32", "maximum": 10_000_000_000}, True, id="int32-in-range"),
])
def test_validate_combinators_at_value_level(node, ok):
    root = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"v": node}}}}
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {}, "spec": {"v": 3}}
    assert (structural.validate(obj, root) == []) is ok


# --- is_structural ----------------------------------------------------------------------------------

@pytest.mark.parametrize("node,expected", [
    pytest.param(CRD_SCHEMA, [], id="structural"),
    pytest.param({"properties": {}}, [(".type", "Required")], id="root-type"),
    pytest.param({"type": "string"}, [(".type", "Invalid")], id="root-object"),
    pytest.param({"type": "object", "properties": {"a": {"properties": {}}}}, [(".properties[a].type", "Required")],
                 id="field-type"),
    pytest.param({"type": "object", "properties": {"a": {"type": "array"}}}, [(".properties[a].items", "Required")],
                 id="array-items"),
    pytest.param({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}},
                                                         "additionalProperties": {"type": "string"}}}},
                 [(".properties[a].additionalProperties", "Forbidden")], id="props-and-additional"),
    pytest.param({"type": "object", "properties": {"a": {"type": "string", "anyOf": [{"type": "integer"}]}}},
                 [(".properties[a].anyOf[0].type", "Forbidden")], id="type-in-any-of"),
    pytest.param({"type": "object", "properties": {"a": {"type": "string", "x-kubernetes-int-or-string": True}}},
                 [(".properties[a].type", "Forbidden")], id="int-or-string-no-type"),
    pytest.param({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
        "labels": {"type": "object"}}}}}, [(".properties[metadata]", "Forbidden")], id="metadata"),
])
def test_is_structural(node, expected):
    assert [(e.field, e.kind) for e in structural.is_structural(node, "")] == expected
