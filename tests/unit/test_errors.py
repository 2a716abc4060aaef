"""Status objects as upstream writes them, and error messages that stay small whatever was sent."""

from __future__ import annotations

import json

import pytest

from kubeling.api import errors, limits


def nested(depth: int):
    v: object = 1
    for _ in range(depth):
        v = {"a": v}
    return v


# -- Status bytes ----------------------------------------------------------------------------------

def test_status_keys_follow_go_struct_order():
    st = errors.not_found("configmaps", "", "x").to_status()
    assert list(st) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]


@pytest.mark.parametrize("err, want", [
    pytest.param(errors.not_found("configmaps", "", "x"),
                 b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps '
                 b'\\"x\\" not found","reason":"NotFound","details":{"name":"x","kind":"configmaps"},"code":404}\n',
                 id="not-found"),
    pytest.param(errors.not_found("deployments", "apps", "web"),
                 b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps '
                 b'\\"web\\" not found","reason":"NotFound","details":{"name":"web","group":"apps",'
                 b'"kind":"deployments"},"code":404}\n', id="not-found-group"),
    pytest.param(errors.invalid("ConfigMap", "", "x", [errors.invalid_value("metadata.name", "A", "bad")]),
                 b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ConfigMap \\"x\\" '
                 b'is invalid: metadata.name: Invalid value: \\"A\\": bad","reason":"Invalid","details":{"name":"x",'
                 b'"kind":"ConfigMap","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: \\"A\\": bad",'
                 b'"field":"metadata.name"}]},"code":422}\n', id="invalid-with-causes"),
    pytest.param(errors.too_many_requests(retry_after=2),
                 b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Too many requests, '
                 b'please try again later.","reason":"TooManyRequests","details":{"retryAfterSeconds":2},"code":429}\n',
                 id="retry-after"),
    pytest.param(errors.StatusError(422, "Invalid", "the server rejected our request due to an error in our request",
                                    details={}),
                 b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server rejected '
                 b'our request due to an error in our request","reason":"Invalid","details":{},"code":422}\n',
                 id="empty-details-kept"),
])
def test_encode_status_writes_upstreams_bytes(err, want):
    assert errors.encode_status(err) == want


def test_details_keys_follow_go_struct_order_whatever_the_input_order():
    err = errors.StatusError(409, "Conflict", "m", details={"causes": [{"field": "f", "message": "c", "reason": "R"}],
                                                             "kind": "pods", "name": "p", "group": ""})
    assert errors.encode_status(err).endswith(
        b'"details":{"name":"p","kind":"pods","causes":[{"reason":"R","message":"c","field":"f"}]},"code":409}\n')


def test_encode_json_escapes_html_and_line_separators_as_go():
    got = errors.encode_json({"a": "<b>&\u2028\u2029", "k<": 1})
    assert got == b'{"a":"\\u003cb\\u003e\\u0026\\u2028\\u2029","k\\u003c":1}\n'
    assert json.loads(got) == {"a": "<b>&\u2028\u2029", "k<": 1}


def test_encode_status_accepts_a_status_dict():
    st = errors.gone("too old resource version: 1 (5)").to_status()
    assert errors.encode_status(st) == errors.encode_status(errors.gone("too old resource version: 1 (5)"))


def test_request_entity_too_large():
    st = errors.request_entity_too_large(f"limit is {limits.MAX_REQUEST_BODY_BYTES}").to_status()
    assert (st["code"], st["reason"], st["message"]) == (413, "RequestEntityTooLarge",
                                                         "Request entity too large: limit is 3145728")
    assert "details" not in st


def test_body_too_large_is_upstreams_limited_read():
    assert errors.body_too_large().message == "Request entity too large: limit is 3145728"


# -- bounded messages ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    pytest.param("x" * 16_000_000, id="16MB-string"),
    pytest.param(["lol"] * 1_000_000, id="huge-list"),
    pytest.param({f"k{i}": "v" * 100 for i in range(10_000)}, id="huge-map"),
])
def test_echoed_values_are_truncated(value):
    fe = errors.invalid_value("data", value, "must be a string")
    assert len(fe.message) < limits.MAX_ECHOED_VALUE_CHARS + 100
    assert fe.message.startswith("Invalid value: ") and fe.message.endswith("...: must be a string")


def test_short_values_are_echoed_whole():
    assert errors.invalid_value("f", "abc", "d").message == 'Invalid value: "abc": d'
    assert errors.invalid_value("f", {"a": [1, None]}, "d").message == 'Invalid value: {"a":[1,null]}: d'


@pytest.mark.parametrize("value, start", [
    pytest.param(nested(975), 'Invalid value: {"a":{"a":', id="975-deep"),
    pytest.param(2**70, "Invalid value: 1180591620717411303424", id="beyond-64-bits"),
    pytest.param({"n": 2**70}, 'Invalid value: {"n":1180591620717411303424}', id="nested-beyond-64-bits"),
])
def test_values_orjson_cannot_encode_are_still_echoed(value, start):
    msg = errors.FieldError("TypeInvalid", "data", "wrong type", value).message
    assert msg.startswith(start) and len(msg) < limits.MAX_ECHOED_VALUE_CHARS + 100


def test_invalid_dedupes_identical_messages_as_upstreams_aggregate():
    errs = [errors.required("spec.a"), errors.required("spec.a"), errors.required("spec.b")]
    st = errors.invalid("Thing", "", "t", errs).to_status()
    assert st["message"] == 'Thing "t" is invalid: [spec.a: Required value, spec.b: Required value]'
    assert len(st["details"]["causes"]) == 3


def test_invalid_of_one_distinct_error_has_no_brackets():
    st = errors.invalid("Thing", "", "t", [errors.required("spec.a")] * 2).to_status()
    assert st["message"] == 'Thing "t" is invalid: spec.a: Required value'


def test_a_status_with_100k_causes_stays_small():
    errs = [errors.invalid_value(f"metadata.labels[k{i}]", "v" * 300, "must be no more than 63 characters")
            for i in range(100_000)]
    body = errors.encode_status(errors.invalid("ConfigMap", "", "c", errs))
    assert len(body) < 1024 * 1024
    st = json.loads(body)
    assert len(st["message"]) <= limits.MAX_STATUS_MESSAGE_CHARS + 100
    assert st["message"].startswith('ConfigMap "c" is invalid: [metadata.labels[k0]: Invalid value: "vvv')
    assert st["details"]["causes"][0]["field"] == "metadata.labels[k0]"
    assert "more causes omitted" in st["details"]["causes"][-1]["message"]


def test_any_status_message_is_capped():
    err = errors.bad_request("strict decoding error: " + ", ".join(f'unknown field "f{i}"' for i in range(200_000)))
    assert len(err.message) <= limits.MAX_STATUS_MESSAGE_CHARS + 100
    assert err.message.endswith("(truncated)")
    assert err.to_status()["message"] == err.message
