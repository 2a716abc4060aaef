"""CRD x-kubernetes-validations (`registry/apiextensions/celvalidation`): rules at every level,
transition rules and their correlation (properties, map keys, list-type map and set, never atomic
lists), optionalOldSelf, null values, ratcheting, reasons, fieldPath, messageExpression, evaluation
errors, and the CRD-side compile check."""

from __future__ import annotations

from kubeling.apiserver.registry.apiextensions.celvalidation import Validator, compile_errors, uses_old_self


def rules(*rs, **node):
    return {**node, "x-kubernetes-validations": list(rs)}


def errs(schema, obj, old=None):
    return [str(e) for e in Validator(schema).validate(obj, old)]


SCHEMA = {"type": "object", "properties": {"spec": rules(
    {"rule": "self.min <= self.max", "message": "min must not exceed max"},
    type="object", properties={
        "min": {"type": "integer"}, "max": {"type": "integer"},
        "id": rules({"rule": "self == oldSelf", "message": "id is immutable", "reason": "FieldValueForbidden"},
                    type="string"),
        "labels": {"type": "object", "additionalProperties": rules(
            {"rule": "self.size() <= 3", "messageExpression": "'value too long: ' + self"}, type="string")},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": rules({"rule": "self.port >= oldSelf.port", "message": "ports only grow"},
                                 type="object", properties={"name": {"type": "string"}, "port": {"type": "integer"}})},
        "atomic": {"type": "array", "items": rules({"rule": "self == oldSelf", "message": "never"}, type="integer")},
        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                 "items": rules({"rule": "self == oldSelf", "message": "same"}, type="string")},
        "note": rules({"rule": "self.size() > 100"}, type="string", nullable=True),
        "count": rules({"rule": "self > 0", "fieldPath": ".", "reason": "FieldValueRequired", "message": "positive"},
                       type="integer"),
    })}}


def test_rules_at_every_level_with_upstream_messages():
    obj = {"spec": {"min": 5, "max": 1, "labels": {"a": "long"}, "note": None, "count": 0}}
    assert errs(SCHEMA, obj) == [
        'spec: Invalid value: "object": min must not exceed max',
        "spec.labels[a]: Invalid value: \"string\": value too long: long",
        "spec.count: Required value: positive",
    ]


def test_transition_rules_only_with_a_correlated_old_value():
    new = {"spec": {"min": 1, "max": 2, "id": "b", "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 9}],
                    "atomic": [1], "tags": ["x"]}}
    assert errs(SCHEMA, new) == []  # create: no oldSelf, transition rules skipped
    old = {"spec": {"min": 1, "max": 2, "id": "a", "ports": [{"name": "b", "port": 10}], "atomic": [2], "tags": ["y"]}}
    assert errs(SCHEMA, new, old) == [
        "spec.id: Forbidden: id is immutable",
        'spec.ports[1]: Invalid value: "object": ports only grow',
    ]


def test_ratcheting_keeps_unchanged_values():
    old = {"spec": {"min": 5, "max": 1}}
    assert errs(SCHEMA, {"spec": {"min": 5, "max": 1}}, old) == []
    assert errs(SCHEMA, {"spec": {"min": 6, "max": 1}}, old) == ['spec: Invalid value: "object": min must not exceed max']


def test_optional_old_self_and_root_rules():
    schema = rules({"rule": "!oldSelf.hasValue() || self.spec.v >= oldSelf.value().spec.v", "optionalOldSelf": True,
                    "message": "v goes up"},
                   {"rule": "self.metadata.name.size() < 5"},
                   type="object", properties={"spec": {"type": "object", "properties": {"v": {"type": "integer"}}}})
    assert errs(schema, {"metadata": {"name": "a"}, "spec": {"v": 1}}) == []
    assert errs(schema, {"metadata": {"name": "a"}, "spec": {"v": 1}}, {"metadata": {"name": "a"}, "spec": {"v": 2}}) \
        == ['<nil>: Invalid value: "object": v goes up']
    assert errs(schema, {"metadata": {"name": "abcdef"}, "spec": {"v": 1}}) == \
        ['<nil>: Invalid value: "object": failed rule: self.metadata.name.size() < 5']


def test_evaluation_errors_name_the_rule():
    schema = {"type": "object", "properties": {"spec": rules({"rule": "self.a.b == 1"}, type="object",
                                                             **{"x-kubernetes-preserve-unknown-fields": True})}}
    assert errs(schema, {"spec": {"a": {}}}) == [
        'spec: Invalid value: "object": no such key: b evaluating rule: self.a.b == 1']


def test_uses_old_self_ignores_strings():
    assert uses_old_self("self == oldSelf")
    assert not uses_old_self("self != 'oldSelf'")


def test_crd_compile_errors_with_upstream_paths():
    crd = {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": rules({"rule": "self.x +"}, {"rule": "self.nope()"}, {"rule": ""},
                      {"rule": "true", "messageExpression": "1 +"}, {"rule": "true", "reason": "Other"},
                      {"rule": "true", "fieldPath": "x"}, type="object", properties={"x": {"type": "string"}})}}}}]}}
    out = {e.field: str(e) for e in compile_errors(crd)}
    base = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations"
    assert out[f"{base}[0].rule"].startswith(
        f'{base}[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:"self.x +", Message:"", '
        'MessageExpression:"", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:"", '
        "OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:")
    assert "undeclared reference to 'nope'" in out[f"{base}[1].rule"]
    assert out[f"{base}[2].rule"] == f"{base}[2].rule: Required value"
    assert "messageExpression compilation failed" in out[f"{base}[3].messageExpression"]
    assert "Unsupported value" in out[f"{base}[4].reason"]
    assert "fieldPath must be a valid path" in out[f"{base}[5].fieldPath"]


def test_number_fields_are_doubles():
    schema = {"type": "object", "properties": {"spec": rules(
        {"rule": "self.price * 1.5 < 10.0", "message": "too expensive"}, {"rule": "self.prices.all(p, p > 0.5)"},
        type="object", properties={"price": {"type": "number"},
                                   "prices": {"type": "array", "items": {"type": "number"}}})}}
    assert errs(schema, {"spec": {"price": 2, "prices": [1, 2.5]}}) == []
    assert errs(schema, {"spec": {"price": 20, "prices": [0]}}) == [
        'spec: Invalid value: "object": too expensive',
        'spec: Invalid value: "object": failed rule: self.prices.all(p, p > 0.5)']
