"""ObjectMeta validation and the string rules behind it (names, labels, annotations, selectors)."""

import copy

import pytest

from kubeling.api.validation import util, validate, validate_meta
from kubeling.api.validation.meta import selector_matches, validate_label_selector

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                 "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
                 "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def cm(**meta):
    m = {"name": "cfg", "namespace": "default"}
    m.update(meta)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {k: v for k, v in m.items() if v is not None}}


def fields(errs):
    return [(e.field, e.kind) for e in errs]


def test_messages_match_upstream_wording():
    errs = validate(cm(name="Bad_Name"))
    assert [str(e) for e in errs] == [f'metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN_MSG}']
    assert util.is_dns1123_label("a.b") == ["must not contain dots"]
    assert util.is_dns1123_label("A") == [LABEL_MSG]


@pytest.mark.parametrize("obj,expected", [
    pytest.param(cm(), [], id="valid"),
    pytest.param(cm(name=None), [("metadata.name", "Required")], id="name-required"),
    pytest.param(cm(name=None, generateName="web-"), [], id="generate-name-trailing-dash"),
    pytest.param(cm(name=None, generateName="Web-"), [("metadata.generateName", "Invalid")], id="bad-generate-name"),
    pytest.param(cm(name="a" * 254), [("metadata.name", "Invalid")], id="name-too-long"),
    pytest.param(cm(namespace=None), [("metadata.namespace", "Required")], id="namespace-required"),
    pytest.param(cm(namespace="Bad"), [("metadata.namespace", "Invalid")], id="namespace-format"),
    pytest.param(cm(labels={"app": "web", "example.com/tier": "front"}), [], id="labels-ok"),
    pytest.param(cm(labels={"a/b/c": "x"}), [("metadata.labels", "Invalid")], id="label-key-two-slashes"),
    pytest.param(cm(labels={"app": "x" * 64}), [("metadata.labels", "Invalid")], id="label-value-too-long"),
    pytest.param(cm(labels={"app": "-bad"}), [("metadata.labels", "Invalid")], id="label-value-format"),
    pytest.param(cm(annotations={"Example.com/Key": "v"}), [], id="annotation-key-case-insensitive"),
    pytest.param(cm(annotations={"bad key": "v"}), [("metadata.annotations", "Invalid")], id="annotation-key"),
    pytest.param(cm(annotations={"big": "x" * (256 * 1024)}), [("metadata.annotations", "TooLong")],
                 id="annotations-too-big"),
    pytest.param(cm(finalizers=["example.com/cleanup", "bad/fin/alizer"]), [("metadata.finalizers", "Invalid")],
                 id="finalizers"),
    pytest.param(cm(ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": ""}]),
                 [("metadata.ownerReferences[0].uid", "Invalid")], id="owner-uid-required"),
    pytest.param(cm(ownerReferences=[
        {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": True}]),
        [("metadata.ownerReferences", "Invalid")], id="two-controllers"),
])
def test_object_meta(obj, expected):
    assert fields(validate(obj)) == expected


@pytest.mark.parametrize("obj,expected", [
    pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}},
                 [("metadata.name", "Invalid")], id="namespace-is-dns-label"),
    pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "namespace": "x"}},
                 [("metadata.namespace", "Forbidden")], id="cluster-scoped-no-namespace"),
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1svc", "namespace": "d"},
                  "spec": {"clusterIP": "None"}}, [("metadata.name", "Invalid")], id="service-is-dns1035"),
    pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": "system:controller:x"}}, [], id="rbac-path-segment-allows-colons"),
    pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": "a/b"}}, [("metadata.name", "Invalid")], id="rbac-no-slash"),
    pytest.param({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}}, [], id="unknown-kind-no-op"),
])
def test_name_rules_per_kind(obj, expected):
    assert fields(validate(obj)) == expected


@pytest.mark.parametrize("key,new_value", [
    pytest.param("name", "other", id="name"),
    pytest.param("namespace", "other", id="namespace"),
    pytest.param("uid", "2", id="uid"),
    pytest.param("creationTimestamp", "2024-01-02T00:00:00Z", id="creationTimestamp"),
])
def test_identity_is_immutable(key, new_value):
    old = cm(uid="1", creationTimestamp="2024-01-01T00:00:00Z")
    new = copy.deepcopy(old)
    new["metadata"][key] = new_value
    errs = validate(new, old)
    assert [(e.field, e.detail) for e in errs if e.field == f"metadata.{key}"] == \
        [(f"metadata.{key}", "field is immutable")]


def test_labels_may_change_on_update():
    old = cm(uid="1")
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"a": "b"}
    assert validate(new, old) == []


def test_validate_meta_for_custom_resources():
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert fields(validate_meta(obj, namespaced=True)) == [("metadata.namespace", "Required")]


@pytest.mark.parametrize("sel,expected", [
    pytest.param({"matchLabels": {"a": "b"}}, [], id="match-labels"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
                 [("s.matchExpressions[0].values", "Required")], id="in-needs-values"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
                 [("s.matchExpressions[0].values", "Forbidden")], id="exists-no-values"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "Near"}]},
                 [("s.matchExpressions[0].operator", "Invalid")], id="bad-operator"),
])
def test_label_selector(sel, expected):
    assert fields(validate_label_selector(sel, "s")) == expected


@pytest.mark.parametrize("sel,labels,match", [
    pytest.param({}, {"a": "b"}, True, id="empty-matches-all"),
    pytest.param({"matchLabels": {"a": "b"}}, {"a": "b", "c": "d"}, True, id="subset"),
    pytest.param({"matchLabels": {"a": "b"}}, {"a": "c"}, False, id="mismatch"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {}, True, id="notin"),
    pytest.param({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False, id="dne"),
])
def test_selector_matches(sel, labels, match):
    assert selector_matches(sel, labels) is match


@pytest.mark.parametrize("fn,value,ok", [
    pytest.param(util.is_qualified_name, "example.com/name", True, id="qualified-prefixed"),
    pytest.param(util.is_qualified_name, "/name", False, id="qualified-empty-prefix"),
    pytest.param(util.is_config_map_key, "..data", False, id="config-key-dotdot"),
    pytest.param(util.is_config_map_key, "app.properties", True, id="config-key"),
    pytest.param(util.is_env_var_name, "MY-VAR.1", True, id="relaxed-env-name"),
    pytest.param(util.is_env_var_name, "A=B", False, id="env-name-equals"),
    pytest.param(util.is_valid_port_name, "http-80", True, id="port-name"),
    pytest.param(util.is_valid_port_name, "1234", False, id="port-name-needs-letter"),
    pytest.param(util.is_valid_ip, "10.0.0.1", True, id="ip"),
    pytest.param(util.is_valid_cidr, "10.0.0.0/8", True, id="cidr"),
    pytest.param(util.is_valid_cidr, "10.0.0.1", False, id="cidr-needs-mask"),
])
def test_string_rules(fn, value, ok):
    assert (fn(value) == []) is ok
