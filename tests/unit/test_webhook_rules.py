"""Admission webhooks: which requests a webhook's rules and selectors match (upstream's
predicates/rules tests), the configurations' defaults and validation, and how a refusal or a
failed call is reported."""

from __future__ import annotations

import pytest

from kubeling.apiserver.admission.webhook import dispatcher, rules
from kubeling.apiserver.admission.webhook.rules import Target
from kubeling.apiserver.registry.admissionregistration import webhook as config


def rule(ops=("*",), groups=("*",), versions=("*",), resources=("*",), scope=None) -> dict:
    r = {"operations": list(ops), "apiGroups": list(groups), "apiVersions": list(versions),
         "resources": list(resources)}
    if scope:
        r["scope"] = scope
    return r


POD = Target("CREATE", "", "v1", "pods", "", True)
POD_STATUS = Target("UPDATE", "", "v1", "pods", "status", True)
NODE = Target("CREATE", "", "v1", "nodes", "", False)
DEPLOY = Target("CREATE", "apps", "v1", "deployments", "", True)


@pytest.mark.parametrize("r,target,want", [
    (rule(), POD, True),
    (rule(ops=["CREATE"]), POD, True),
    (rule(ops=["UPDATE", "DELETE"]), POD, False),
    (rule(ops=["*"]), Target("CONNECT", "", "v1", "pods", "exec", True), False),  # '*' has no subresources
    (rule(ops=["CONNECT"], resources=["pods/exec"]), Target("CONNECT", "", "v1", "pods", "exec", True), True),
    (rule(groups=[""], versions=["v1"], resources=["pods"]), POD, True),
    (rule(groups=["apps"]), POD, False),
    (rule(versions=["v1beta1"]), POD, False),
    (rule(resources=["pods"]), POD_STATUS, False),
    (rule(resources=["pods/status"]), POD_STATUS, True),
    (rule(resources=["pods/*"]), POD_STATUS, True),
    (rule(resources=["pods/*"]), POD, True),                 # upstream: 'pods/*' includes the resource
    (rule(resources=["*/status"]), POD_STATUS, True),
    (rule(resources=["*/status"]), POD, False),
    (rule(resources=["*"]), POD_STATUS, False),              # '*' is every resource, no subresources
    (rule(resources=["*/*"]), POD_STATUS, True),
    (rule(resources=["deployments"]), POD, False),
    (rule(scope="Namespaced"), POD, True),
    (rule(scope="Namespaced"), NODE, False),
    (rule(scope="Cluster"), NODE, True),
    (rule(scope="Cluster"), POD, False),
    (rule(scope="*"), NODE, True),
    (rule(groups=["apps"], versions=["v1"], resources=["deployments"]), DEPLOY, True),
])
def test_webhook_rule_matches(r, target, want):
    assert rules.rule_matches(r, target) is want


def test_webhook_rules_any_of():
    assert rules.rules_match([rule(groups=["apps"]), rule(groups=[""])], POD)
    assert not rules.rules_match([], POD)
    assert not rules.rules_match(None, POD)


def test_webhook_selectors():
    sel = {"matchLabels": {"team": "a"}}
    new, old = {"metadata": {"labels": {"team": "a"}}}, {"metadata": {"labels": {"team": "b"}}}
    assert rules.object_labels_match({}, new, None)
    assert rules.object_labels_match(None, new, None)
    assert rules.object_labels_match(sel, new, old)
    assert rules.object_labels_match(sel, old, new)           # the old object's labels count too
    assert not rules.object_labels_match(sel, old, None)
    assert rules.object_labels_match(sel, None, new)          # DELETE: only the old object
    expr = {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}
    assert rules.namespace_labels_match(expr, {"env": "dev"})
    assert not rules.namespace_labels_match(expr, {"env": "prod"})
    assert rules.namespace_labels_match(expr, None)           # cluster-scoped: always
    assert not rules.namespace_labels_match(sel, {})


def valid_hook(**over) -> dict:
    h = {"name": "a.b.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
         "clientConfig": {"url": "https://hooks.example.com/validate"},
         "rules": [rule(ops=["CREATE"], groups=[""], versions=["v1"], resources=["pods"])]}
    h.update(over)
    return h


def errs(*hooks, old=None, mutating=False) -> list[str]:
    obj = {"metadata": {"name": "x"}, "webhooks": list(hooks)}
    return [str(e) for e in config.validate_configuration(obj, old, mutating)]


def test_webhook_configuration_valid():
    assert errs(valid_hook()) == []
    assert errs(valid_hook(clientConfig={"service": {"namespace": "ns", "name": "svc", "path": "/v/x",
                                                     "port": 8443}})) == []


@pytest.mark.parametrize("over,want", [
    ({"name": "short.name"}, 'webhooks[0].name: Invalid value: "short.name": should be a domain with at least three '
                             "segments separated by dots"),
    ({"name": ""}, "webhooks[0].name: Required value"),
    ({"sideEffects": None}, "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"),
    ({"sideEffects": "Some"}, 'webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", '
                              '"NoneOnDryRun"'),
    ({"timeoutSeconds": 0}, "webhooks[0].timeoutSeconds: Invalid value: 0: the timeout value must be between 1 and 30 "
                            "seconds"),
    ({"failurePolicy": "Sometimes"}, 'webhooks[0].failurePolicy: Unsupported value: "Sometimes"'),
    ({"matchPolicy": "Loose"}, 'webhooks[0].matchPolicy: Unsupported value: "Loose"'),
    ({"admissionReviewVersions": []}, "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, "
                                      "v1beta1"),
    ({"admissionReviewVersions": ["v2"]}, "webhooks[0].admissionReviewVersions: Invalid value:"),
    ({"clientConfig": {}}, "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
    ({"clientConfig": {"url": "https://user:pw@h.example.com/"}},
     "webhooks[0].clientConfig.url: Invalid value: \"user:pw\": user information is not permitted in the URL"),
    ({"clientConfig": {"url": "https://h.example.com/#frag"}},
     'webhooks[0].clientConfig.url: Invalid value: "frag": fragments are not permitted in the URL'),
    ({"clientConfig": {"url": "http://h.example.com/"}},
     "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: "
     "https://host[/path]"),
    ({"clientConfig": {"service": {"namespace": "ns", "name": "s", "port": 70000}}},
     "webhooks[0].clientConfig.service.port: Invalid value: 70000: port is not valid: must be between 1 and 65535, "
     "inclusive"),
    ({"clientConfig": {"service": {"name": "s"}}},
     "webhooks[0].clientConfig.service.namespace: Required value: service namespace is required"),
    ({"clientConfig": {"service": {"namespace": "ns", "name": "s", "path": "foo"}}},
     "webhooks[0].clientConfig.service.path: Invalid value: \"foo\": must start with a '/'"),
    ({"rules": [rule(ops=[])]}, "webhooks[0].rules[0].operations: Required value"),
    ({"rules": [rule(ops=["PATCH"])]}, 'webhooks[0].rules[0].operations[0]: Unsupported value: "PATCH"'),
    ({"rules": [rule(groups=["apps", "*"])]}, "if '*' is present, must not specify other API groups"),
    ({"rules": [rule(resources=["*/*", "pods"])]}, "if '*/*' is present, must not specify other resources"),
    ({"rules": [rule(resources=["pods/*", "pods/status"])]},
     "webhooks[0].rules[0].resources[1]: Invalid value: \"pods/status\": if 'pods/*' is present, must not specify "
     "pods/status"),
    ({"rules": [rule(scope="Everywhere")]}, 'webhooks[0].rules[0].scope: Unsupported value: "Everywhere"'),
    ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
     "webhooks[0].namespaceSelector.matchExpressions[0].operator: Invalid value: \"Near\""),
    ({"matchConditions": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]},
     'webhooks[0].matchConditions[1].name: Duplicate value: "a"'),
    ({"matchConditions": [{"name": "a", "expression": " "}]},
     "webhooks[0].matchConditions[0].expression: Required value"),
    ({"matchConditions": [{"name": f"c{i}", "expression": "true"} for i in range(65)]},
     "must have at most 64 items"),
])
def test_webhook_configuration_invalid(over, want):
    got = errs(valid_hook(**over))
    assert any(want in e for e in got), got


def test_webhook_configuration_names_unique_and_reinvocation():
    got = errs(valid_hook(), valid_hook())
    assert 'webhooks[1].name: Duplicate value: "a.b.example.com"' in got
    got = errs(valid_hook(reinvocationPolicy="Always"), mutating=True)
    assert any('webhooks[0].reinvocationPolicy: Unsupported value: "Always"' in e for e in got)
    # an update keeps what an older server let in (upstream's ratcheting)
    old = {"webhooks": [valid_hook(sideEffects="Unknown"), valid_hook(sideEffects="Unknown")]}
    assert errs(valid_hook(sideEffects="Unknown"), valid_hook(sideEffects="Unknown"), old=old) == []


def test_webhook_match_condition_compiles():
    got = errs(valid_hook(matchConditions=[{"name": "bad", "expression": "object.metadata.("}]))
    assert any(e.startswith("webhooks[0].matchConditions[0].expression: Invalid value:") and
               "compilation failed" in e for e in got), got
    assert errs(valid_hook(matchConditions=[{"name": "ok", "expression": "request.userInfo.username != 'x'"}])) == []


def test_webhook_defaults():
    obj = {"webhooks": [{"name": "a.b.c", "rules": [{"operations": ["*"]}],
                         "clientConfig": {"service": {"namespace": "n", "name": "s"}}}]}
    config.set_defaults(obj, mutating=True)
    h = obj["webhooks"][0]
    assert (h["failurePolicy"], h["matchPolicy"], h["timeoutSeconds"], h["reinvocationPolicy"]) == \
        ("Fail", "Equivalent", 10, "Never")
    assert h["namespaceSelector"] == {} and h["objectSelector"] == {}
    assert h["rules"][0]["scope"] == "*" and h["clientConfig"]["service"]["port"] == 443
    assert "sideEffects" not in h and "admissionReviewVersions" not in h   # required in v1, no default
    obj = {"webhooks": [{"name": "a.b.c"}]}
    config.set_defaults(obj, mutating=False)
    assert "reinvocationPolicy" not in obj["webhooks"][0]


def test_webhook_denied_status():
    e = dispatcher.denied("x.example.com", {"code": 403, "reason": "Forbidden", "message": "no"})
    assert (e.code, e.reason, e.message) == (403, "Forbidden", 'admission webhook "x.example.com" denied the '
                                                               'request: no')
    e = dispatcher.denied("x.example.com", {"code": 200})
    assert e.code == 400 and e.message == 'admission webhook "x.example.com" denied the request without explanation'
    e = dispatcher.denied("x.example.com", {"reason": "Because"})
    assert e.message.endswith("denied the request: Because")
    e = dispatcher.dry_run_unsupported("x.example.com")
    assert (e.code, e.message) == (400, 'admission webhook "x.example.com" does not support dry run')
