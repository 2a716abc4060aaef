"""Label selectors: upstream's parser, canonical strings, matching, errors, metav1.LabelSelector."""

import pytest

from kubeling.api import labels
from kubeling.api.labels import SelectorError

QNAME_ERR = ("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
             "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
             "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and "
             "'/' (e.g. 'example.com/MyName')")
VALUE_ERR = ("a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
             "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
             "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


@pytest.mark.parametrize("text, canonical", [
    pytest.param("", "", id="empty"),
    pytest.param("a=b", "a=b", id="equals"),
    pytest.param("a==b", "a==b", id="double-equals"),
    pytest.param("a!=b", "a!=b", id="not-equals"),
    pytest.param("a", "a", id="exists"),
    pytest.param("!a", "!a", id="does-not-exist"),
    pytest.param("a in (y,x)", "a in (x,y)", id="in-sorted"),
    pytest.param("a notin (x)", "a notin (x)", id="notin"),
    pytest.param("a>1", "a>1", id="gt"),
    pytest.param("a<3", "a<3", id="lt"),
    pytest.param("  z = 1 ,  a  in(x , y) ,!m  ", "a in (x,y),!m,z=1", id="whitespace-and-sorting"),
    pytest.param("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()", id="empty-values"),
    pytest.param("in in (in, notin)", "in in (in,notin)", id="keywords-as-key-and-values"),
    pytest.param("a=", "a=", id="empty-value"),
    pytest.param("app.kubernetes.io/name=web", "app.kubernetes.io/name=web", id="prefixed-key"),
    pytest.param("a in (x,x)", "a in (x)", id="duplicate-values"),
])
def test_parse_canonical(text, canonical):
    assert str(labels.parse(text)) == canonical
    assert str(labels.parse(canonical)) == canonical  # the canonical form parses back to itself


@pytest.mark.parametrize("text, message", [
    pytest.param("=b", "found '=', expected: !, identifier, or 'end of string'", id="no-key"),
    pytest.param("a=b,", "found '', expected: identifier after ','", id="trailing-comma"),
    pytest.param("a=b c", "found 'c', expected: ',' or 'end of string'", id="missing-comma"),
    pytest.param("!a=b", "found '=', expected: ',' or 'end of string'", id="negated-with-value"),
    pytest.param("a in b", "unable to parse requirement: found 'b' expected: '('", id="in-without-parens"),
    pytest.param("a in (x", "unable to parse requirement: found '', expected: ',' or ')'", id="unclosed-paren"),
    pytest.param("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'", id="missing-set-comma"),
    pytest.param("a!!b", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt",
                 id="bad-operator"),
    pytest.param("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": "
                        "for 'Gt', 'Lt' operators, the value must be an integer", id="gt-not-integer"),
    pytest.param("a/b/c=x", f'unable to parse requirement: <nil>: Invalid value: "a/b/c": {QNAME_ERR}',
                 id="bad-key"),
    pytest.param("a=x@y", f'unable to parse requirement: values[0][a]: Invalid value: "x@y": {VALUE_ERR}',
                 id="bad-value"),
    pytest.param("a<-3", f'unable to parse requirement: values[0][a]: Invalid value: "-3": {VALUE_ERR}',
                 id="lt-negative-is-not-a-label-value"),
    pytest.param("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty',
                 id="empty-prefix"),
    pytest.param("a" * 64, f'unable to parse requirement: <nil>: Invalid value: "{"a" * 64}": '
                           "name part must be no more than 63 characters", id="key-too-long"),
])
def test_parse_errors(text, message):
    with pytest.raises(SelectorError) as e:
        labels.parse(text)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("text, lbls, matches", [
    pytest.param("", {}, True, id="empty-matches-all"),
    pytest.param("a=b", {"a": "b"}, True, id="eq"),
    pytest.param("a=b", {"a": "c"}, False, id="eq-other"),
    pytest.param("a=b", {}, False, id="eq-missing"),
    pytest.param("a!=b", {}, True, id="neq-missing-matches"),
    pytest.param("a!=b", {"a": "b"}, False, id="neq-same"),
    pytest.param("a in (x,y)", {"a": "y"}, True, id="in"),
    pytest.param("a notin (x,y)", {"a": "z"}, True, id="notin"),
    pytest.param("a notin (x,y)", {}, True, id="notin-missing"),
    pytest.param("a", {"a": ""}, True, id="exists-empty-value"),
    pytest.param("!a", {"a": ""}, False, id="not-exists"),
    pytest.param("a>5", {"a": "10"}, True, id="gt"),
    pytest.param("a>5", {"a": "5"}, False, id="gt-equal"),
    pytest.param("a<5", {"a": "x"}, False, id="lt-non-integer-label"),
    pytest.param("a=", {"a": ""}, True, id="empty-value"),
    pytest.param("a=b,c", {"a": "b"}, False, id="and"),
    pytest.param("a=b,c", {"a": "b", "c": "1"}, True, id="and-all"),
])
def test_matches(text, lbls, matches):
    assert labels.parse(text).matches(lbls) is matches


@pytest.mark.parametrize("ls, canonical, lbls, matches", [
    pytest.param({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2", {"a": "1", "b": "2"}, True, id="match-labels"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
                 "env in (dev,prod)", {"env": "dev"}, True, id="in"),
    pytest.param({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
                 "env notin (prod)", {"env": "prod"}, False, id="notin"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Exists"},
                                       {"key": "b", "operator": "DoesNotExist"}]},
                 "a,!b", {"a": "x"}, True, id="exists"),
    pytest.param({}, "", {"any": "thing"}, True, id="empty-selects-everything"),
    pytest.param(None, "", {}, False, id="nil-selects-nothing"),
])
def test_from_label_selector(ls, canonical, lbls, matches):
    sel = labels.from_label_selector(ls)
    assert str(sel) == canonical
    assert sel.matches(lbls) is matches
    assert sel.empty is (ls == {})


@pytest.mark.parametrize("ls, message", [
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
                 '"Equals" is not a valid label selector operator', id="bad-operator"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
                 "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
                 id="in-without-values"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
                 'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
                 id="exists-with-values"),
    pytest.param({"matchLabels": {"a": "b c"}}, f'values[0][a]: Invalid value: "b c": {VALUE_ERR}',
                 id="bad-match-label-value"),
    pytest.param({"matchLabels": {"-a": "b"}},
                 "key: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                 "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                 id="bad-match-label-key"),
])
def test_from_label_selector_errors(ls, message):
    with pytest.raises(SelectorError) as e:
        labels.from_label_selector(ls)
    assert str(e.value) == message


def test_requires_exact_match():
    sel = labels.parse("a=1,b in (2),c in (3,4),d!=5")
    assert [sel.requires_exact_match(k) for k in "abcde"] == ["1", "2", None, None, None]


@pytest.mark.parametrize("ls, expected", [
    pytest.param(None, "<none>", id="nil"),
    pytest.param({}, "<none>", id="empty"),
    pytest.param({"matchLabels": {"app": "web"}}, "app=web", id="labels"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}, "<error>", id="error"),
])
def test_format_label_selector(ls, expected):
    assert labels.format_label_selector(ls) == expected


def test_format_labels():
    assert labels.format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert labels.format_labels({}) == "<none>"


def test_selectors_compare_by_value():
    assert labels.parse("b=2,a=1") == labels.parse("a=1, b=2")
    assert labels.NOTHING != labels.EVERYTHING
    assert not labels.NOTHING.empty and labels.EVERYTHING.empty
