"""Body decoding under hostile input, and the query numbers upstream parses as Go integers.

Every refusal is a 4xx `StatusError` raised quickly; nothing recurses without a bound.
"""

from __future__ import annotations

import time

import pytest

from kubeling.api import errors, limits
from kubeling.apiserver import negotiation

YAML = "application/yaml"
JSON = "application/json"
APPLY = "application/apply-patch+yaml"

# The billion laughs: 9 levels of 10 aliases, 10**9 leaves, about 500 bytes.
LAUGHS = b"a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8))

# The ControllerRevision of finding 1: 10**7 leaves through anchors, under 500 bytes.
REVISION_BOMB = (b"apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {name: bomb}\nrevision: 1\n"
                 b"data:\n  a: &a [x,x,x,x,x,x,x,x,x,x]\n"
                 + b"".join(f"  {chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n".encode()
                            for i in range(6)))

# YAML merge keys copy a mapping's pairs into another; each level doubles the pairs.
MERGE_BOMB = b"a0: &a0 {k0: v, k1: v}\n" + b"".join(
    f"a{i + 1}: &a{i + 1} {{<<: [*a{i}, *a{i}], k{i + 2}: v}}\n".encode() for i in range(40))


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_flow_yaml(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_block_yaml(depth: int) -> bytes:
    return b"".join(b"  " * i + b"a:\n" for i in range(depth - 1)) + b"  " * (depth - 1) + b"a: 1\n"


def refuse(data: bytes, ctype: str) -> errors.StatusError:
    start = time.monotonic()
    with pytest.raises(errors.StatusError) as e:
        negotiation.decode_body(data, ctype)
    assert time.monotonic() - start < 2, "a refusal must not expand the document first"
    assert e.value.code == 400 and e.value.reason == "BadRequest", e.value.to_status()
    assert len(e.value.message) < 300, e.value.message
    return e.value


@pytest.mark.parametrize("data, ctype, words", [
    pytest.param(LAUGHS, YAML, "excessive aliasing", id="billion-laughs"),
    pytest.param(LAUGHS, APPLY, "excessive aliasing", id="billion-laughs-apply"),
    pytest.param(REVISION_BOMB, YAML, "excessive aliasing", id="controllerrevision-bomb"),
    pytest.param(MERGE_BOMB, YAML, "excessive aliasing", id="merge-key-bomb"),
    pytest.param(b"a: &a [1, *a]\n", YAML, "contains itself", id="recursive-sequence"),
    pytest.param(b"a: &a {x: 1, y: *a}\n", YAML, "contains itself", id="recursive-mapping"),
    pytest.param(nested_flow_yaml(999), YAML, "exceeded max depth", id="yaml-flow-999"),
    pytest.param(nested_block_yaml(999), YAML, "exceeded max depth", id="yaml-block-999"),
    pytest.param(nested_json(491), JSON, "exceeded max depth", id="json-491"),
    pytest.param(nested_json(975), JSON, "exceeded max depth", id="json-975"),
    pytest.param(nested_json(100_000), JSON, "", id="json-100k"),
    pytest.param(b"deep: &d " + nested_flow_yaml(150) + b"\nmore: " + b"[" * 52 + b"*d" + b"]" * 52 + b"\n", YAML,
                 "exceeded max depth", id="depth-through-alias"),
])
def test_hostile_bodies_are_refused(data, ctype, words):
    err = refuse(data, ctype)
    assert words in err.message


def test_go_yaml_limit_case_many_aliases_of_a_large_anchor():
    # go-yaml's own limit test, at a tenth of its size: ~100 KB of small maps, 100 aliases of them.
    data = (b"{a: &a [{a}" + b",{a}" * (100 * 1024 // 4 - 100) + b"], b: &b [*a" + b",*a" * 99 + b"]}")
    assert "excessive aliasing" in refuse(data, YAML).message


def test_a_document_of_aliased_strings_may_not_expand_beyond_a_body():
    big = "x" * 60_000
    data = f"a: &a {big}\nb: [{', '.join(['*a'] * 60)}]\n".encode()  # 3.6 MB once written out
    assert "excessive aliasing" in refuse(data, YAML).message


@pytest.mark.parametrize("data, want", [
    pytest.param(b"a: &a {x: 1}\nb: *a\n", {"a": {"x": 1}, "b": {"x": 1}}, id="one-alias"),
    pytest.param(b"base: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\n", {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}},
                 id="merge-key"),
    pytest.param(b"env: &e [{name: A, value: '1'}]\n" + b"".join(f"c{i}: *e\n".encode() for i in range(50)),
                 {"env": [{"name": "A", "value": "1"}], **{f"c{i}": [{"name": "A", "value": "1"}] for i in range(50)}},
                 id="shared-env"),
    pytest.param(b"s: 'a*b'\nt: [1, 2]\n", {"s": "a*b", "t": [1, 2]}, id="star-in-a-string"),
    pytest.param(b"t: 2024-01-02T03:04:05Z\n", {"t": "2024-01-02T03:04:05Z"}, id="timestamps-stay-strings"),
])
def test_ordinary_yaml_with_aliases_decodes(data, want):
    assert negotiation.decode_body(data, YAML) == want


def test_go_yaml_limit_case_a_large_document_without_aliases_decodes():
    data = b"a: &a [{a}" + b",{a}" * (100 * 1024 // 4 - 1) + b"]"
    assert len(negotiation.decode_body(data, YAML)["a"]) == 100 * 1024 // 4


@pytest.mark.parametrize("make, ctype", [
    pytest.param(nested_json, JSON, id="json"),
    pytest.param(nested_flow_yaml, YAML, id="yaml-flow"),
    pytest.param(nested_block_yaml, YAML, id="yaml-block"),
])
def test_depth_limit_is_exact(make, ctype):
    negotiation.decode_body(make(limits.MAX_NESTING_DEPTH), ctype)
    refuse(make(limits.MAX_NESTING_DEPTH + 1), ctype)


def test_wide_bodies_are_not_mistaken_for_deep_ones():
    body = b'{"data":{' + b",".join(b'"k%d":[{"a":[1]}]' % i for i in range(5000)) + b"}}"
    assert len(negotiation.decode_body(body, JSON)["data"]) == 5000


@pytest.mark.parametrize("depth", [491, 975, 5000])
def test_duplicate_field_check_survives_any_depth(depth):
    data = b'{"a":1,"a":' * depth + b"1" + b"}" * depth
    got = negotiation.duplicate_fields(data, JSON)
    assert got in ([], ["a"])


# -- query numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    pytest.param("nan", 'strconv.ParseInt: parsing "nan": invalid syntax', id="nan"),
    pytest.param("inf", 'strconv.ParseInt: parsing "inf": invalid syntax', id="inf"),
    pytest.param("1e308", 'strconv.ParseInt: parsing "1e308": invalid syntax', id="exponent"),
    pytest.param("1.5", 'strconv.ParseInt: parsing "1.5": invalid syntax', id="fraction"),
    pytest.param("1_000", 'strconv.ParseInt: parsing "1_000": invalid syntax', id="underscore"),
    pytest.param(" 1", 'strconv.ParseInt: parsing " 1": invalid syntax', id="space"),
    pytest.param("", 'strconv.ParseInt: parsing "": invalid syntax', id="empty"),
    pytest.param("٣", 'strconv.ParseInt: parsing "٣": invalid syntax', id="arabic-digit"),
    pytest.param("9223372036854775808", 'strconv.ParseInt: parsing "9223372036854775808": value out of range',
                 id="above-int64"),
    pytest.param("-9223372036854775809", 'strconv.ParseInt: parsing "-9223372036854775809": value out of range',
                 id="below-int64"),
])
def test_int64_params_refuse_what_go_refuses(raw, message):
    with pytest.raises(errors.StatusError) as e:
        negotiation.int64_param(raw)
    assert (e.value.code, e.value.reason, e.value.message) == (400, "BadRequest", message)


@pytest.mark.parametrize("raw, want", [
    pytest.param("0", 0, id="zero"), pytest.param("+5", 5, id="plus"), pytest.param("-5", -5, id="minus"),
    pytest.param("007", 7, id="leading-zeros"),
    pytest.param("9223372036854775807", 2**63 - 1, id="max-int64"),
])
def test_int64_params_accept_what_go_accepts(raw, want):
    assert negotiation.int64_param(raw) == want


@pytest.mark.parametrize("raw, want", [
    pytest.param(None, 1800.0, id="absent-is-default"),
    pytest.param("0", 1800.0, id="zero-is-default"),
    pytest.param("5", 5.0, id="seconds"),
    pytest.param("-5", 0.0, id="negative-ends-at-once"),
    pytest.param("9223372036854775807", float(limits.MAX_WATCH_TIMEOUT_SECONDS), id="clamped-to-go-duration"),
])
def test_watch_timeout(raw, want):
    assert negotiation.watch_timeout(raw, default=1800.0) == want


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e308", "1.5"])
def test_watch_timeout_refuses_non_integers(raw):
    with pytest.raises(errors.StatusError) as e:
        negotiation.watch_timeout(raw, default=1800.0)
    assert e.value.code == 400


@pytest.mark.parametrize("raw, want", [
    pytest.param(None, 0, id="absent"), pytest.param("0", 0, id="zero"), pytest.param("-3", 0, id="negative"),
    pytest.param("500", 500, id="some"), pytest.param("9223372036854775807", 2**63 - 1, id="max-int64"),
])
def test_list_limit(raw, want):
    assert negotiation.list_limit(raw) == want


def test_list_limit_beyond_int64_is_refused():
    with pytest.raises(errors.StatusError) as e:
        negotiation.list_limit("99999999999999999999")
    assert e.value.code == 400 and "value out of range" in e.value.message


@pytest.mark.parametrize("raw, want", [
    pytest.param("", 0, id="empty"), pytest.param("0", 0, id="zero"), pytest.param("42", 42, id="number"),
    pytest.param("18446744073709551615", 2**64 - 1, id="max-uint64"),
])
def test_resource_version_parses_as_uint64(raw, want):
    assert negotiation.resource_version(raw) == want


def test_list_resource_version_beyond_uint64_is_a_bad_request():
    with pytest.raises(errors.StatusError) as e:
        negotiation.resource_version("99999999999999999999")
    assert e.value.code == 400
    assert e.value.message == ('invalid resource version: resourceVersion: Invalid value: "99999999999999999999": '
                               'strconv.ParseUint: parsing "99999999999999999999": value out of range')


def test_watch_resource_version_beyond_uint64_is_invalid():
    with pytest.raises(errors.StatusError) as e:
        negotiation.resource_version("99999999999999999999", watch=True, resource="configmaps")
    st = e.value.to_status()
    assert (st["code"], st["reason"]) == (422, "Invalid")
    assert st["message"] == ('configmaps "" is invalid: resourceVersion: Invalid value: "99999999999999999999": '
                             'strconv.ParseUint: parsing "99999999999999999999": value out of range')
    assert st["details"]["causes"][0]["field"] == "resourceVersion"


@pytest.mark.parametrize("raw", ["-1", "+1", "abc", "1.0"])
def test_resource_version_syntax(raw):
    with pytest.raises(errors.StatusError) as e:
        negotiation.resource_version(raw)
    assert e.value.code == 400 and "invalid syntax" in e.value.message

