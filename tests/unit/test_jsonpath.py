"""kubectl's JSONPath dialect: evaluation, filters, ranges, rendering and errors."""

import pytest

from kubeling.api import jsonpath
from kubeling.api.jsonpath import JSONPathError

NODE_LIST = {
    "kind": "List",
    "items": [
        {"metadata": {"name": "n1", "labels": {"zone": "a", "role": "cp"},
                      "annotations": {"kubernetes.io/hostname": "host-1"}},
         "spec": {"unschedulable": True},
         "status": {"capacity": {"cpu": "4"}, "allocatable": {"pods": 110},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                  {"type": "Hostname", "address": "n1"}],
                    "conditions": [{"type": "MemoryPressure", "status": "False"},
                                   {"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "n2", "labels": {"zone": "b"}},
         "status": {"capacity": {"cpu": "8"}, "allocatable": {"pods": 50},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                    "conditions": [{"type": "Ready", "status": "False"}]}},
    ],
}


@pytest.mark.parametrize("expr, expected", [
    pytest.param("{.kind}", ["List"], id="field"),
    pytest.param(".kind", ["List"], id="no-braces"),
    pytest.param("$.kind", ["List"], id="root"),
    pytest.param("{.items[0].metadata.name}", ["n1"], id="index"),
    pytest.param("{.items[-1].metadata.name}", ["n2"], id="negative-index"),
    pytest.param("{.items[0:1].metadata.name}", ["n1"], id="slice"),
    pytest.param("{.items[::-1].metadata.name}", ["n2", "n1"], id="slice-step"),
    pytest.param("{.items[*].metadata.name}", ["n1", "n2"], id="wildcard"),
    pytest.param("{.items[0].metadata.labels.*}", ["cp", "a"], id="map-wildcard-sorted-by-key"),
    pytest.param("{.items[*].status.capacity.cpu}", ["4", "8"], id="wildcard-then-field"),
    pytest.param("{.items[0].metadata.annotations['kubernetes.io/hostname']}", ["host-1"], id="quoted-key"),
    pytest.param(r"{.items[0].metadata.annotations.kubernetes\.io/hostname}", ["host-1"], id="escaped-dot"),
    pytest.param('{.items[*].status.conditions[?(@.type=="Ready")].status}', ["True", "False"], id="filter-eq"),
    pytest.param("{.items[*].status.conditions[?(@.type!='Ready')].type}", ["MemoryPressure"], id="filter-neq"),
    pytest.param("{.items[?(@.status.allocatable.pods>100)].metadata.name}", ["n1"], id="filter-gt-number"),
    pytest.param("{.items[?(@.status.allocatable.pods<=50)].metadata.name}", ["n2"], id="filter-le"),
    pytest.param("{.items[?(@.spec.unschedulable)].metadata.name}", ["n1"], id="filter-exists"),
    pytest.param("{.items[?(@.spec.unschedulable==true)].metadata.name}", ["n1"], id="filter-bool"),
    pytest.param("{..address}", ["10.0.0.1", "n1", "10.0.0.2"], id="recursive"),
    pytest.param("{.items[0]['metadata', 'kind']}", [NODE_LIST["items"][0]["metadata"]], id="union-keys"),
    pytest.param("{.items[1,0].metadata.name}", ["n2", "n1"], id="union-indexes"),
    pytest.param("{.items[0].metadata.name}{.items[1].metadata.name}", ["n1", "n2"], id="two-actions"),
    pytest.param("{.missing.deeper}", [], id="missing"),
    pytest.param("{.items[5].metadata.name}", [], id="index-out-of-range"),
    pytest.param("{.kind[0]}", [], id="index-on-non-list"),
    pytest.param("{range .items[*]}{.metadata.name}{end}", ["n1", "n2"], id="range"),
])
def test_evaluate(expr, expected):
    assert jsonpath.evaluate(expr, NODE_LIST) == expected


@pytest.mark.parametrize("template, expected", [
    pytest.param("{.items[*].metadata.name}", "n1 n2", id="values-joined-by-space"),
    pytest.param('{range .items[*]}{.metadata.name}{"\\t"}{.status.capacity.cpu}{"\\n"}{end}',
                 "n1\t4\nn2\t8\n", id="range-with-literals"),
    pytest.param("name={.items[0].metadata.name} labels={.items[1].metadata.labels}",
                 'name=n1 labels={"zone":"b"}', id="text-and-json"),
    pytest.param("{.items[0].spec.unschedulable} {.items[0].status.allocatable.pods}", "true 110",
                 id="bool-and-int"),
    pytest.param("{.items[*].status.addresses[?(@.type==\"InternalIP\")].address}", "10.0.0.1 10.0.0.2",
                 id="internal-ips"),
])
def test_render(template, expected):
    assert jsonpath.render(template, NODE_LIST) == expected


@pytest.mark.parametrize("expr", [
    pytest.param("{.a", id="unclosed-action"),
    pytest.param("{.a[}", id="bad-index"),
    pytest.param("{.a[?(@.x ~ 1)]}", id="bad-filter-operator"),
    pytest.param("{end}", id="end-without-range"),
    pytest.param("{range .items[*]}{.x}", id="range-without-end"),
    pytest.param('{"unterminated}', id="unterminated-string"),
])
def test_syntax_errors(expr):
    with pytest.raises(JSONPathError):
        jsonpath.evaluate(expr, NODE_LIST)


@pytest.mark.parametrize("expr, message", [
    pytest.param("{.missing}", "missing is not found", id="missing-field"),
    pytest.param("{.items[9]}", "array index out of bounds: index 9, length 2", id="out-of-bounds"),
])
def test_strict_missing(expr, message):
    with pytest.raises(JSONPathError) as e:
        jsonpath.evaluate(expr, NODE_LIST, allow_missing=False)
    assert str(e.value) == message


def test_recursive_descent_is_not_strict_about_missing_children():
    assert jsonpath.evaluate("{..cpu}", NODE_LIST, allow_missing=False) == ["4", "8"]


def test_filter_comparing_two_elements_is_an_error():
    data = {"a": [{"b": [1, 2]}]}
    with pytest.raises(JSONPathError, match="one element at a time"):
        jsonpath.evaluate("{.a[?(@.b[*]==1)]}", data)


@pytest.mark.parametrize("value, text", [
    pytest.param("s", "s", id="string"),
    pytest.param(3, "3", id="int"),
    pytest.param(2.0, "2", id="integral-float"),
    pytest.param(1.5, "1.5", id="float"),
    pytest.param(False, "false", id="bool"),
    pytest.param(None, "null", id="null"),
    pytest.param({"a": [1, "x"]}, '{"a":[1,"x"]}', id="map"),
])
def test_format_value(value, text):
    assert jsonpath.format_value(value) == text
