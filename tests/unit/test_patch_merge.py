"""JSON Merge Patch: RFC 7386 appendix A cases and the apiserver's error statuses."""

import copy

import pytest

from kubeling.api import errors
from kubeling.api.patch import merge


@pytest.mark.parametrize("doc,patch,expected", [
    pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="replace-member"),
    pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="add-member"),
    pytest.param({"a": "b"}, {"a": None}, {}, id="null-removes"),
    pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="null-removes-one"),
    pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="array-replaced-by-scalar"),
    pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="scalar-replaced-by-array"),
    pytest.param({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="nested-merge"),
    pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="arrays-replaced-wholesale"),
    pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="existing-null-kept"),
    pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="nulls-in-new-objects-dropped"),
    pytest.param({"a": "foo"}, {"a": {"b": "c"}}, {"a": {"b": "c"}}, id="scalar-replaced-by-object"),
])
def test_merge_patch(doc, patch, expected):
    before = copy.deepcopy(doc)
    assert merge.apply(doc, patch) == expected
    assert doc == before


def test_merge_patch_null_is_400():
    with pytest.raises(errors.StatusError) as exc:
        merge.apply({"a": 1}, None)
    assert (exc.value.code, exc.value.message) == (400, "Invalid JSON Patch")


def test_merge_patch_non_object_is_422_on_patch():
    with pytest.raises(errors.StatusError) as exc:
        merge.apply({"a": 1}, ["x"])
    assert exc.value.code == 422
    assert exc.value.details["causes"][0]["field"] == "patch"
