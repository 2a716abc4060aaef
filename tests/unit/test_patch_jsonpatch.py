"""JSON Patch: RFC 6902 appendix A cases and the apiserver's error statuses."""

import copy
import time

import pytest

from kubeling.api import errors, limits
from kubeling.api.patch import jsonpatch


@pytest.mark.parametrize("doc,ops,expected", [
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"},
                 id="A1-add-object-member"),
    pytest.param({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
                 {"foo": ["bar", "qux", "baz"]}, id="A2-add-array-element"),
    pytest.param({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"},
                 id="A3-remove-object-member"),
    pytest.param({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]},
                 id="A4-remove-array-element"),
    pytest.param({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
                 {"baz": "boo", "foo": "bar"}, id="A5-replace"),
    pytest.param({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
                 [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
                 {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}, id="A6-move-value"),
    pytest.param({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
                 {"foo": ["all", "cows", "eat", "grass"]}, id="A7-move-array-element"),
    pytest.param({"baz": "qux", "foo": ["a", 2, "c"]},
                 [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
                 {"baz": "qux", "foo": ["a", 2, "c"]}, id="A8-test-success"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
                 {"foo": "bar", "child": {"grandchild": {}}}, id="A10-add-nested-member"),
    pytest.param({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
                 {"foo": ["bar", ["abc", "def"]]}, id="A16-append-array-value"),
    pytest.param({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10},
                                      {"op": "replace", "path": "/~1", "value": 1}],
                 {"/": 1, "~1": 10}, id="A14-escaping"),
    pytest.param({"foo": ["a", "b", "c"]}, [{"op": "remove", "path": "/foo/-1"}], {"foo": ["a", "b"]},
                 id="negative-index-counts-from-the-end"),
    pytest.param({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}, {"op": "replace", "path": "/c/b",
                                                                               "value": 2}],
                 {"a": {"b": 1}, "c": {"b": 2}}, id="copy-is-deep"),
    pytest.param({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}, id="replace-root"),
    pytest.param({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}},
                 [{"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1name"}], {"metadata": {"labels": {}}},
                 id="label-key-with-slash"),
    pytest.param({"a": 1}, [{"op": "test", "path": "/missing", "value": None}], {"a": 1},
                 id="test-missing-equals-null"),
])
def test_json_patch(doc, ops, expected):
    before = copy.deepcopy(doc)
    assert jsonpatch.apply(doc, ops) == expected
    assert doc == before


@pytest.mark.parametrize("doc,ops", [
    pytest.param({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], id="A9-test-failure"),
    pytest.param({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], id="A12-missing-parent"),
    pytest.param({"foo": 1}, [{"op": "test", "path": "/foo", "value": True}], id="bool-is-not-number"),
    pytest.param({"foo": "bar"}, [{"op": "remove", "path": "/nope"}], id="remove-missing-key"),
    pytest.param({"foo": "bar"}, [{"op": "replace", "path": "/nope", "value": 1}], id="replace-missing-key"),
    pytest.param({"foo": [1]}, [{"op": "add", "path": "/foo/5", "value": 1}], id="index-out-of-range"),
    pytest.param({"foo": [1]}, [{"op": "add", "path": "/foo/x", "value": 1}], id="index-not-a-number"),
    pytest.param({"foo": 1}, [{"op": "frobnicate", "path": "/foo"}], id="unknown-op"),
    pytest.param({"foo": 1}, [{"op": "add", "value": 1}], id="missing-path"),
    pytest.param({"foo": 1}, [{"op": "add", "path": "/bar"}], id="missing-value"),
    pytest.param({"foo": {"a": 1}}, [{"op": "move", "from": "/foo", "path": "/foo/a/b"}], id="move-into-own-child"),
    pytest.param({"foo": 1}, [{"op": "add", "path": "foo", "value": 1}], id="pointer-without-slash"),
])
def test_json_patch_failures_are_422(doc, ops):
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply(doc, ops)
    assert (exc.value.code, exc.value.reason) == (422, "Invalid")
    assert exc.value.message == "the server rejected our request due to an error in our request"


def test_operation_failure_reason_is_reported():
    with pytest.raises(jsonpatch.PatchFailed, match="missing"):
        jsonpatch.apply_operation({"a": 1}, {"op": "remove", "path": "/b"})


@pytest.mark.parametrize("ops", [
    pytest.param({"op": "add"}, id="object-not-list"),
    pytest.param(["add"], id="element-not-object"),
])
def test_malformed_json_patch_is_400(ops):
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply({}, ops)
    assert exc.value.code == 400


def test_too_many_operations_is_413():
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply({}, [{"op": "test", "path": "", "value": {}}] * 10001)
    assert exc.value.code == 413
    assert "got 10001" in exc.value.message


@pytest.mark.parametrize("a,b,equal", [
    pytest.param(1, 1.0, True, id="int-float"),
    pytest.param(True, 1, False, id="bool-int"),
    pytest.param({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True, id="nested"),
    pytest.param([1, 2], [2, 1], False, id="order-matters"),
    pytest.param({"a": 1}, {"a": 1, "b": 2}, False, id="extra-key"),
    pytest.param("1", 1, False, id="string-number"),
])
def test_json_equal(a, b, equal):
    assert jsonpatch.json_equal(a, b) is equal


# -- bounds: copies, depth, equality of deep values ------------------------------------------------

def _deep(depth: int, leaf=1):
    v = leaf
    for _ in range(depth):
        v = {"a": v}
    return v


def test_copy_bomb_is_refused_quickly():
    # Finding 2: each op copies /data into itself, doubling it; n = 16 killed the server.
    doc = {"data": {"k": "x" * 10_000}}
    ops = [{"op": "copy", "from": "/data", "path": f"/data/c{i}"} for i in range(16)]
    start = time.monotonic()
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply(doc, ops)
    assert time.monotonic() - start < 2
    assert (exc.value.code, exc.value.reason) == (422, "Invalid")
    assert len(errors.encode_status(exc.value)) < 1000


def test_copies_within_the_limit_apply():
    doc = {"data": {"k": "x" * 10_000}}
    ops = [{"op": "copy", "from": "/data", "path": f"/data/c{i}"} for i in range(6)]
    out = jsonpatch.apply(doc, ops)
    assert len(out["data"]) == 7 and out["data"]["c0"] == {"k": "x" * 10_000}


@pytest.mark.parametrize("copies, ok", [pytest.param(20, True, id="at-limit"), pytest.param(21, False, id="over")])
def test_accumulated_copy_size_counts_the_json_bytes_copied(copies, ok):
    # json-patch's AccumulatedCopySizeLimit: '"bar"' is 5 bytes, so 20 copies fit in 100.
    ops = [{"op": "copy", "from": "/foo/0", "path": "/foo/-"}] * copies
    if ok:
        assert jsonpatch.apply({"foo": ["bar"]}, ops, max_copy_bytes=100)["foo"] == ["bar"] * (copies + 1)
    else:
        with pytest.raises(errors.StatusError) as exc:
            jsonpatch.apply({"foo": ["bar"]}, ops, max_copy_bytes=100)
        assert exc.value.code == 422


def test_copies_do_not_share_values():
    out = jsonpatch.apply({"a": {"b": [1]}}, [{"op": "copy", "from": "/a", "path": "/c"},
                                              {"op": "add", "path": "/c/b/-", "value": 2}])
    assert out == {"a": {"b": [1]}, "c": {"b": [1, 2]}}


def test_a_result_nested_beyond_the_limit_is_refused():
    ops, path = [], ""
    for _ in range(limits.MAX_NESTING_DEPTH + 5):
        ops.append({"op": "add", "path": path + "/a", "value": {}})
        path += "/a"
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply({}, ops)
    assert exc.value.code == 422


def test_moves_that_double_the_depth_are_refused_not_crashed():
    # Moving a deep subtree under its deep sibling's leaf doubles the depth at each step.
    doc = {"x": _deep(150), "y": _deep(150)}
    ops = [{"op": "move", "from": "/x", "path": "/y" + "/a" * 150}]
    with pytest.raises(errors.StatusError) as exc:
        jsonpatch.apply(doc, ops)
    assert exc.value.code == 422


def test_a_document_already_deeper_than_the_limit_may_still_be_patched():
    # Stored objects carry managedFields a few levels deeper than the object itself.
    doc = {"metadata": {"managedFields": [{"fieldsV1": _deep(limits.MAX_NESTING_DEPTH + 3, {})}]}, "data": {}}
    out = jsonpatch.apply(doc, [{"op": "add", "path": "/data/k", "value": "v"}])
    assert out["data"] == {"k": "v"}


def test_json_equal_handles_any_depth():
    assert jsonpatch.json_equal(_deep(5000), _deep(5000))
    assert not jsonpatch.json_equal(_deep(5000), _deep(5000, 2))
