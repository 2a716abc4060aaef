"""The audit policy: upstream's rule matching (checker.go) and validation."""

import pytest

from kubeling.apiserver.audit.policy import PolicyError, RequestAttributes, load, parse


def policy(*rules, **top):
    return parse({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": list(rules), **top})


def res(verb="get", resource="pods", ns="default", group="", sub="", name="", user="bob", groups=("dev",)):
    return RequestAttributes(user, tuple(groups), verb, True, "", group, resource, sub, ns, name)


def url(path, verb="get", user="bob", groups=("dev",)):
    return RequestAttributes(user, tuple(groups), verb, False, path)


def test_first_match_wins_and_no_match_is_none():
    p = policy({"level": "None", "users": ["system:kube-proxy"]}, {"level": "Metadata", "verbs": ["get"]},
               {"level": "RequestResponse"})
    assert p.evaluate(res(user="system:kube-proxy")).level == "None"
    assert p.evaluate(res()).level == "Metadata"
    assert p.evaluate(res(verb="create")).level == "RequestResponse"
    assert policy({"level": "Metadata", "users": ["x"]}).evaluate(res()).level == "None"
    assert policy().evaluate(res()).level == "None"


def test_users_groups_verbs():
    p = policy({"level": "Request", "userGroups": ["ops", "dev"], "verbs": ["create", "update"]})
    assert p.evaluate(res(verb="create")).level == "Request"
    assert p.evaluate(res(verb="get")).level == "None"
    assert p.evaluate(res(verb="create", groups=("qa",))).level == "None"


def test_resources_groups_subresources_and_names():
    p = policy({"level": "Metadata", "resources": [{"group": "", "resources": ["pods/log", "configmaps"],
                                                    "resourceNames": ["a"]}]},
               {"level": "Request", "resources": [{"group": "apps"}]},
               {"level": "RequestResponse", "resources": [{"group": "", "resources": ["*/status"]}]},
               {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets/*"]}]})
    assert p.evaluate(res(resource="configmaps", name="a")).level == "Metadata"
    assert p.evaluate(res(resource="configmaps", name="b")).level == "None"
    assert p.evaluate(res(resource="pods", sub="log", name="a")).level == "Metadata"
    assert p.evaluate(res(resource="pods", name="a")).level == "None"      # pods/log is not pods
    assert p.evaluate(res(resource="deployments", group="apps")).level == "Request"
    assert p.evaluate(res(resource="pods", sub="status")).level == "RequestResponse"
    assert p.evaluate(res(resource="secrets", sub="x")).level == "Metadata"
    assert p.evaluate(res(resource="secrets")).level == "Metadata"   # upstream: "secrets/*" covers secrets too
    # a resource rule never matches a non-resource request
    assert p.evaluate(url("/api")).level == "None"


def test_namespaces_cluster_scope_is_empty():
    p = policy({"level": "Metadata", "namespaces": ["kube-system", ""]})
    assert p.evaluate(res(ns="kube-system")).level == "Metadata"
    assert p.evaluate(res(ns="")).level == "Metadata"
    assert p.evaluate(res(ns="default")).level == "None"
    assert p.evaluate(url("/healthz")).level == "None"


def test_non_resource_urls():
    p = policy({"level": "None", "nonResourceURLs": ["/healthz*", "/version"]},
               {"level": "Metadata", "nonResourceURLs": ["*"]})
    assert p.evaluate(url("/healthz/ping")).level == "None"
    assert p.evaluate(url("/version")).level == "None"
    assert p.evaluate(url("/openapi/v2")).level == "Metadata"
    assert policy({"level": "Metadata", "nonResourceURLs": ["/api*"]}).evaluate(res()).level == "None"


def test_omit_stages_union_and_managed_fields():
    p = policy({"level": "Metadata", "omitStages": ["ResponseStarted"], "omitManagedFields": False},
               omitStages=["RequestReceived"], omitManagedFields=True)
    c = p.evaluate(res())
    assert c.omit_stages == {"RequestReceived", "ResponseStarted"} and c.omit_managed_fields is False
    assert policy({"level": "Request"}, omitManagedFields=True).evaluate(res()).omit_managed_fields is True


@pytest.mark.parametrize("rule,msg", [
    ({}, "rules[0].level: Required value"),
    ({"level": "Everything"}, 'rules[0].level: Unsupported value: "Everything"'),
    ({"level": "Metadata", "omitStages": ["Done"]}, 'rules[0].omitStages[0]: Unsupported value: "Done"'),
    ({"level": "Metadata", "nonResourceURLs": ["/x"], "resources": [{"group": ""}]},
     "rules cannot apply to both regular resources and non-resource URLs"),
    ({"level": "Metadata", "nonResourceURLs": ["x"]}, 'must begin with a "/" character'),
    ({"level": "Metadata", "resources": [{"group": "", "resourceNames": ["a"]}]},
     "using resourceNames requires at least one resource"),
    ({"level": "Metadata", "resources": [{"group": "rbac.authorization.k8s.io/v1"}]}, "resources[0].group"),
])
def test_invalid_rules_are_refused(rule, msg):
    with pytest.raises(PolicyError) as e:
        policy(rule)
    assert msg in str(e.value)


def test_load_yaml_and_refuse_wrong_kind(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    assert load(f).evaluate(res()).level == "Metadata"
    f.write_text("apiVersion: audit.k8s.io/v1\nkind: Pod\n")
    with pytest.raises(PolicyError, match="must be \"Policy\""):
        load(f)
    with pytest.raises(PolicyError, match="reading the audit policy"):
        load(tmp_path / "missing.yaml")
