"""kubeling.cel: the compile/evaluate contract, Kubernetes' extension libraries, error messages,
the runtime bound, schema-derived types and MutatingAdmissionPolicy's object construction."""

from __future__ import annotations

import time

import pytest

from kubeling import cel
from kubeling.cel.objects import rewrite

OBJ = {"spec": {"replicas": 6, "name": "Foo", "tags": ["a", "b"], "items": [3, 1, 2]},
       "metadata": {"name": "w", "labels": {"env": "prod"}}}


def ev(expr: str, **act):
    act.setdefault("self", OBJ)
    return cel.compile(expr, {k: None for k in act}).evaluate(act)


@pytest.mark.parametrize("expr,want", [
    ("self.spec.replicas <= 5", False),
    ("has(self.spec.name) && !has(self.spec.missing)", True),
    ("self.spec.tags.all(t, t.size() == 1)", True),
    ("self.spec.items.exists_one(x, x == 3)", True),
    ("self.spec.items.map(x, x * 2)", [6, 2, 4]),
    ("self.spec.items.filter(x, x > 1)", [3, 2]),
    ("self.metadata.labels.?env.orValue('none')", "prod"),
    ("self.metadata.labels.?team.orValue('none')", "none"),
    ("'env' in self.metadata.labels", True),
    ("cel.bind(x, self.spec.replicas, x * x)", 36),
])
def test_core_language(expr, want):
    assert ev(expr) == want


@pytest.mark.parametrize("expr,want", [
    # strings
    ("'Foo'.lowerAscii() + 'x'.upperAscii()", "fooX"),
    ("'a,b,c'.split(',')", ["a", "b", "c"]),
    ("'a,b,c'.split(',', 2)", ["a", "b,c"]),
    ("['a', 'b'].join('-') + ['c'].join()", "a-bc"),
    ("'  x '.trim()", "x"),
    ("'hello'.replace('l', 'L')", "heLLo"),
    ("'hello'.replace('l', 'L', 1)", "heLlo"),
    ("'hello'.substring(1, 3)", "el"),
    ("'hello'.indexOf('l')", 2),
    ("'hello'.lastIndexOf('l')", 3),
    ("'hello'.charAt(1)", "e"),
    ("'abc'.reverse()", "cba"),
    ("'%s has %d items, %.2f%%'.format(['x', 3, 12.5])", "x has 3 items, 12.50%"),
    ("strings.quote('a\"b')", '"a\\"b"'),
    # lists
    ("[1, 2, 2].isSorted() && ![2, 1].isSorted()", True),
    ("[1, 2, 3].sum()", 6),
    ("[3, 1, 2].min() + [3, 1, 2].max()", 4),
    ("[1, 2, 3].indexOf(2) + ['a', 'b', 'a'].lastIndexOf('a')", 3),
    # regex
    ("'abc123def456'.find('[0-9]+')", "123"),
    ("'abc123def456'.findAll('[0-9]+')", ["123", "456"]),
    ("'abc123def456'.findAll('[0-9]+', 1)", ["123"]),
    ("'abc'.matches('^a')", True),
    # quantity
    ("quantity('1Gi').isGreaterThan(quantity('1G'))", True),
    ("quantity('500m').isLessThan(quantity('1'))", True),
    ("quantity('1Gi').compareTo(quantity('1024Mi'))", 0),
    ("quantity('1Gi').add(quantity('1Gi')).asInteger()", 2 * 1024 ** 3),
    ("quantity('2').sub(1).asInteger()", 1),
    ("isQuantity('10Mi') && !isQuantity('ten')", True),
    ("quantity('1.5').isInteger()", False),
    ("quantity('-3').sign()", -1),
    # url
    ("url('https://user@example.com:8443/a/b?x=1&x=2').getHostname()", "example.com"),
    ("url('https://example.com:8443/a/b').getPort()", "8443"),
    ("url('https://[::1]:80/').getHostname()", "::1"),
    ("url('https://example.com/a/b').getEscapedPath()", "/a/b"),
    ("url('https://example.com/?x=1&x=2').getQuery()", {"x": ["1", "2"]}),
    ("url('https://example.com').getScheme()", "https"),
    ("isURL('https://example.com') && !isURL('not a url')", True),
    # ip / cidr
    ("ip('10.0.0.1').family()", 4),
    ("ip('::1').isLoopback()", True),
    ("cidr('10.0.0.0/8').containsIP('10.1.2.3')", True),
    ("cidr('10.0.0.0/8').containsIP(ip('11.1.2.3'))", False),
    ("cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')", True),
    ("cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')", True),
    ("cidr('10.0.0.0/8').prefixLength()", 8),
    ("isIP('1.2.3.4') && !isIP('1.2.3') && isCIDR('::/0')", True),
    ("jsonpatch.escapeKey('example.com/a~b')", "example.com~1a~0b"),
])
def test_kubernetes_libraries(expr, want):
    assert ev(expr) == want


@pytest.mark.parametrize("expr,fragment", [
    ("self.spec.replicas <=", "Syntax error"),
    ("objectx.spec", "undeclared reference to 'objectx"),
    ("'a'.lowerAscii(1)", "'lowerAscii'"),
    ("1 + 'a'", "found no matching overload for '_+_'"),
])
def test_compile_errors(expr, fragment):
    with pytest.raises(cel.CompileError) as e:
        cel.compile(expr, {"self": None})
    assert fragment in str(e.value)
    assert "ERROR: <input>:1:" in str(e.value)


@pytest.mark.parametrize("expr,message", [
    ("self.spec.nope", "no such key: nope"),
    ("self.spec.replicas / 0", "divide by zero"),
    ("self.spec.replicas + self.spec.name", "no matching overload"),
    ("'abc'.substring(5)", "index out of range: 5"),
    ("quantity('ten')", "quantities must match the regular expression"),
    ("[].min()", "min called on empty list"),
    ("'x'.find('(')", "invalid regex"),
])
def test_evaluation_errors(expr, message):
    with pytest.raises(cel.EvalError) as e:
        ev(expr)
    assert message in str(e.value)


def test_hostile_expression_is_bounded():
    ten = "[1,2,3,4,5,6,7,8,9,10]"
    expr = f"{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, a+b+c+d+e+f > 0))))))"
    prog = cel.compile(expr, {})
    t0 = time.monotonic()
    with pytest.raises(cel.EvalError, match="budget"):
        prog.evaluate({})
    assert time.monotonic() - t0 < 2
    with pytest.raises(cel.CompileError, match="too long"):
        cel.compile("1 + " * 5000 + "1", {})
    with pytest.raises(cel.CompileError, match="cel.bind more than"):
        cel.compile("cel.bind(a, 'x', " * 9 + "a" + ")" * 9, {})
    with pytest.raises(cel.EvalError, match="exceeds"):
        ev("self.items.map(i, self.big).join()", self={"items": [1, 2, 3], "big": "x" * 400_000})
    with pytest.raises(cel.EvalError, match="exceeds"):
        ev("'ab'.replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')"
           ".replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')"
           ".replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')"
           ".replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')")


def test_schema_types_check_at_compile_time():
    schema = {"type": "object", "properties": {"replicas": {"type": "integer"}, "name": {"type": "string"},
                                               "tags": {"type": "array", "items": {"type": "string"}}}}
    assert cel.compile("self.replicas > 1", {"self": schema}).evaluate({"self": {"replicas": 2}}) is True
    with pytest.raises(cel.CompileError, match="no matching overload"):
        cel.compile("self > 'a'", {"self": {"type": "integer"}})
    with pytest.raises(cel.CompileError):
        cel.compile("self.startsWith(1)", {"self": {"type": "string"}})
    prog = cel.compile("self.all(t, t.startsWith('a'))", {"self": schema["properties"]["tags"]})
    assert prog.return_type == "bool"
    assert prog.evaluate({"self": ["ab", "ac"]}) is True


def test_contract_values_are_plain_json():
    prog = cel.compile("{'a': [1, 2.5, 'x', true, null], 'b': {'c': object.metadata.name}}",
                       {"object": None})
    assert prog.evaluate({"object": {"metadata": {"name": "n"}}}) == {
        "a": [1, 2.5, "x", True, None], "b": {"c": "n"}}


def test_authorizer_functions_fail_closed():
    class Authz:
        def __init__(self):
            self.seen = []

        def cel_check(self, attrs):
            self.seen.append(attrs)
            if attrs.get("resource") == "boom":
                raise RuntimeError("authorizer down")
            return attrs.get("verb") == "get", "because", ""

    a = Authz()
    prog = cel.compile("authorizer.group('apps').resource('deployments').namespace('ns').name('d')"
                       ".check('get').allowed()", {"authorizer": "map(string, dyn)"})
    assert prog.evaluate({"authorizer": a}) is True
    assert a.seen[-1] == {"group": "apps", "resource": "deployments", "namespace": "ns", "name": "d", "verb": "get"}
    prog = cel.compile("authorizer.group('').resource('boom').check('get')", {"authorizer": "map(string, dyn)"})
    d = prog.evaluate({"authorizer": a})
    assert d["allowed"] is False and d["error"] == "authorizer down"
    prog = cel.compile("authorizer.serviceAccount('ns', 'sa').path('/healthz').check('get').reason()",
                       {"authorizer": "map(string, dyn)"})
    assert prog.evaluate({"authorizer": a}) == "because"
    assert a.seen[-1]["user"] == "system:serviceaccount:ns:sa"


def test_object_construction_rewrite():
    assert rewrite('Object{spec: Object.spec{replicas: 3, x: {"k": 1}}}') == \
        '{"spec": {"replicas": 3, "x": {"k": 1}}}'
    assert rewrite("[JSONPatch{op: 'add', path: '/a', value: \"Object{b: 1}\"}]") == \
        "[{\"op\": 'add', \"path\": '/a', \"value\": \"Object{b: 1}\"}]"
    assert rewrite("object.spec.x.map(c, Object.spec.x{name: c})") == 'object.spec.x.map(c, {"name": c})'
