"""The limits' rules, and the reason for the nesting depth: every recursive walk over a decoded
body works at MAX_NESTING_DEPTH, with the interpreter stack already as deep as the server's."""

from __future__ import annotations

import copy
import sys

import orjson
import pytest

from kubeling.api import errors, limits, schema, structural, validation
from kubeling.api.patch import apply, jsonpatch, managedfields, merge, strategic
from kubeling.apiserver import negotiation

D = limits.MAX_NESTING_DEPTH


@pytest.mark.parametrize("decoded, ratio", [
    pytest.param(1000, 0.99, id="small"), pytest.param(400_000, 0.99, id="range-low"),
    pytest.param(2_200_000, 0.545, id="middle"), pytest.param(4_000_000, 0.10, id="range-high"),
    pytest.param(9_000_000, 0.10, id="beyond"),
])
def test_allowed_alias_ratio_is_go_yamls(decoded, ratio):
    assert limits.allowed_alias_ratio(decoded) == pytest.approx(ratio)


@pytest.mark.parametrize("decoded, aliased, excessive", [
    pytest.param(1000, 999, False, id="too-few-decoded-to-judge"),
    pytest.param(50_000, 100, False, id="too-few-aliased-to-judge"),
    pytest.param(10_000, 9_900, False, id="99-percent-is-allowed"),
    pytest.param(10_000, 9_950, True, id="over-99-percent"),
    pytest.param(4_000_001, 500_000, True, id="large-document-over-10-percent"),
])
def test_excessive_aliasing(decoded, aliased, excessive):
    assert limits.excessive_aliasing(decoded, aliased) is excessive


def nested(depth: int, leaf=1, key: str = "a"):
    v = leaf
    for _ in range(depth):
        v = {key: v}
    return v


@pytest.mark.parametrize("value, limit, exceeds", [
    pytest.param(1, 0, False, id="scalar"),
    pytest.param({}, 0, True, id="empty-object-is-one-level"),
    pytest.param(nested(10), 10, False, id="at-limit"),
    pytest.param(nested(11), 10, True, id="over-limit"),
    pytest.param([[[]]], 3, False, id="lists"),
    pytest.param({"a": [1, {"b": [[]]}]}, 4, True, id="mixed"),
    pytest.param(nested(100_000), D, True, id="far-beyond-the-stack"),
])
def test_depth_exceeds(value, limit, exceeds):
    assert limits.depth_exceeds(value, limit) is exceeds


def test_json_depth_bound_counts_openings():
    assert limits.json_depth_bound(b'{"a":[1,{"b":"{["}]}') == 5


@pytest.mark.parametrize("texts, want", [
    pytest.param(["a", "b", "a", ""], ["a", "b"], id="dedupe-and-drop-empty"),
    pytest.param(["x" * 4000, "y" * 96], ["x" * 4000, "y" * 96], id="exactly-4096-runes-kept-whole"),
    pytest.param(["x" * 4000, "y" * 97], ["x" * 256, "y" * 97], id="over-4096-all-cut-to-256"),
    pytest.param([f"w{i:03d}" + "z" * 300 for i in range(40)],
                 [f"w{i:03d}" + "z" * 252 for i in range(16)], id="stop-once-cut-total-reaches-limit"),
])
def test_truncate_warnings_as_upstreams_recorder(texts, want):
    assert limits.truncate_warnings(texts) == want


# -- every walk at the depth limit -----------------------------------------------------------------

SERVER_STACK = 150  # frames below a handler: event loop, aiohttp, middleware, registry (measured ~60)


def with_stack(frames: int, fn):
    """Call ``fn`` with ``frames`` extra interpreter frames below it."""
    if frames == 0:
        return fn()
    return with_stack(frames - 1, fn)


def free_form_revision(depth: int) -> dict:
    """A ControllerRevision whose free-form ``data`` makes the object ``depth`` levels deep."""
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "r", "namespace": "default"}, "revision": 1, "data": nested(depth - 1, "x")}


def deep_crd(depth: int) -> dict:
    """A CRD whose openAPIV3Schema nests properties until the object is ``depth`` levels deep."""
    s: dict = {"type": "string"}
    for _ in range((depth - 6) // 2):
        s = {"type": "object", "properties": {"a": s}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "things", "singular": "thing", "kind": "Thing", "listKind": "ThingList"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": s}}]}}


def deep_custom_resource(depth: int) -> tuple[dict, dict]:
    node: dict = {"type": "string"}
    value: object = "x"
    for _ in range(depth - 1):
        node = {"type": "object", "properties": {"a": node}}
        value = {"a": value}
    root = {"type": "object", "properties": {"spec": node}}
    return {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": value}, root


def test_the_fixtures_sit_at_the_limit():
    assert not limits.depth_exceeds(free_form_revision(D), D) and limits.depth_exceeds(free_form_revision(D + 1), D)
    assert not limits.depth_exceeds(deep_crd(D), D) and limits.depth_exceeds(deep_crd(D + 2), D)
    obj, _ = deep_custom_resource(D)
    assert not limits.depth_exceeds(obj, D) and limits.depth_exceeds(obj, D - 1)


WALKS = {
    "decode-json": lambda o: negotiation.decode_body(orjson.dumps(o), "application/json"),
    "decode-yaml": lambda o: negotiation.decode_body(negotiation.dump_yaml(o), "application/yaml"),
    "duplicate-fields": lambda o: negotiation.duplicate_fields(orjson.dumps(o) + b" ", "application/json"),
    "deepcopy": copy.deepcopy,
    "dump-yaml": negotiation.dump_yaml,
    "validation": validation.validate,
    "structural-check": lambda o: structural.check(o, schema.get().for_gvk(*_gvk(o)), schema.get()),
    "field-error": lambda o: errors.invalid("X", "", "x", [errors.FieldError("TypeInvalid", "data", "t", o)]),
    "merge-patch": lambda o: merge.apply(o, o),
    "strategic-patch": lambda o: strategic.apply(o, o, schema.get().for_gvk(*_gvk(o)), schema.get()),
    "json-patch": lambda o: jsonpatch.apply(o, [{"op": "test", "path": "", "value": o},
                                                {"op": "copy", "from": "/metadata", "path": "/m"}]),
    "managed-fields": lambda o: _update_then_list(o),
    "server-side-apply": lambda o: _apply_twice(o),
}


def _gvk(obj: dict) -> tuple[str, str, str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    return group, version, obj["kind"]


def _update_then_list(obj: dict) -> bytes:
    new = copy.deepcopy(obj)
    managedfields.update(None, new, "m", "Update", obj["apiVersion"], node=schema.get().for_gvk(*_gvk(obj)),
                         schemas=schema.get())
    managedfields.update(obj, new, "m", "Update", obj["apiVersion"], node=schema.get().for_gvk(*_gvk(obj)),
                         schemas=schema.get())
    # As a list and as a watch event: the deepest shapes the server encodes.
    return orjson.dumps({"kind": "List", "items": [new]}) + orjson.dumps({"type": "ADDED", "object": new})


def _apply_twice(obj: dict) -> bytes:
    node, schemas = schema.get().for_gvk(*_gvk(obj)), schema.get()
    live = apply.apply(None, obj, "a", False, node, schemas, obj["apiVersion"])
    live = apply.apply(live, obj, "b", True, node, schemas, obj["apiVersion"])
    return orjson.dumps({"kind": "List", "items": [live]})


@pytest.mark.parametrize("walk", list(WALKS))
@pytest.mark.parametrize("make", [pytest.param(free_form_revision, id="free-form"),
                                  pytest.param(deep_crd, id="crd-schema")])
def test_every_walk_works_at_the_depth_limit(walk, make):
    assert sys.getrecursionlimit() == 1000
    obj = make(D)
    with_stack(SERVER_STACK, lambda: WALKS[walk](copy.deepcopy(obj)))


@pytest.mark.parametrize("walk", ["prune", "defaults", "validate", "check"])
def test_custom_resource_walks_work_at_the_depth_limit(walk):
    obj, node = deep_custom_resource(D)
    fn = {"prune": lambda: structural.prune(obj, node), "defaults": lambda: structural.apply_defaults(obj, node),
          "validate": lambda: structural.validate(obj, node), "check": lambda: structural.check(obj, node, None)}[walk]
    with_stack(SERVER_STACK, fn)
