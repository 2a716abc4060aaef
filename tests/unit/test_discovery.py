"""Discovery documents: /version, /api, /apis, APIResourceList, aggregated apidiscovery.k8s.io/v2."""

from __future__ import annotations

import platform
import re

import pytest

from kubeling.api import kinds, schema
from kubeling.api.kinds import Resource
from kubeling.apiserver import discovery

# The same CRD group served in three versions, none GA-first in the list.
CRDS = [
    Resource("stable.example.com", version, "crontabs", "CronTab", True, ("ct",), ("all",), ("status", "scale"),
             crd=True)
    for version in ("v1beta1", "v2alpha1", "v1")
]
RESOURCES = [*kinds.BUILTIN, *CRDS]


def _by_name(resource_list: dict) -> dict[str, dict]:
    return {r["name"]: r for r in resource_list["resources"]}


def test_version_info():
    info = discovery.version_info()
    major, minor, _ = schema.KUBE_VERSION.split(".")
    assert (info["major"], info["minor"]) == (major, minor) == ("1", "33")
    assert info["gitVersion"] == "v1.33.0-kubeling"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["buildDate"])
    os_name, arch = info["platform"].split("/")
    assert os_name == "linux" or os_name == platform.system().lower()
    assert arch and arch != "x86_64"  # Go's names: amd64, arm64
    for key in ("goVersion", "compiler", "gitCommit", "gitTreeState"):
        assert key in info


def test_api_versions():
    doc = discovery.api_versions("10.0.0.1:6443")
    assert doc == {"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}]}


def test_api_group_list():
    doc = discovery.api_group_list(RESOURCES)
    assert (doc["kind"], doc["apiVersion"]) == ("APIGroupList", "v1")
    groups = {g["name"]: g for g in doc["groups"]}
    assert [g["name"] for g in doc["groups"]][:2] == ["apps", "events.k8s.io"]
    assert doc["groups"][-1]["name"] == "stable.example.com"  # after every built-in group
    # Legacy Deployment versions are discoverable (kubectl maps kinds through discovery), after v1.
    assert groups["extensions"]["versions"] == [{"groupVersion": "extensions/v1beta1", "version": "v1beta1"}]
    assert groups["apps"]["versions"][0] == {"groupVersion": "apps/v1", "version": "v1"}
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    autoscaling = groups["autoscaling"]
    assert autoscaling["preferredVersion"] == {"groupVersion": "autoscaling/v2", "version": "v2"}
    assert [v["version"] for v in autoscaling["versions"]] == ["v2", "v1"]
    crd = groups["stable.example.com"]
    assert crd["preferredVersion"] == {"groupVersion": "stable.example.com/v1", "version": "v1"}
    assert [v["version"] for v in crd["versions"]] == ["v1", "v1beta1", "v2alpha1"]


def test_api_group():
    doc = discovery.api_group("autoscaling", RESOURCES)
    assert (doc["kind"], doc["apiVersion"], doc["name"]) == ("APIGroup", "v1", "autoscaling")
    assert doc["preferredVersion"]["version"] == "v2"
    assert discovery.api_group("extensions", RESOURCES)["preferredVersion"]["version"] == "v1beta1"
    assert discovery.api_group("nope.example.com", RESOURCES) is None
    assert discovery.api_group("", RESOURCES) is None


@pytest.mark.parametrize("unsorted,expected", [
    pytest.param(["v1", "v2", "v1beta1", "v10", "v1alpha1", "v1beta2"],
                 ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1"], id="kube-versions"),
    pytest.param(["foo10", "v12alpha1", "foo1", "v3beta1", "v11alpha2", "v10beta3", "v11beta2"],
                 ["v11beta2", "v10beta3", "v3beta1", "v12alpha1", "v11alpha2", "foo1", "foo10"], id="others-last"),
])
def test_version_priority(unsorted, expected):
    assert sorted(unsorted, key=discovery.version_priority_key) == expected


def test_core_resource_list():
    doc = discovery.api_resource_list("v1", RESOURCES)
    assert (doc["kind"], doc["groupVersion"]) == ("APIResourceList", "v1")
    names = [r["name"] for r in doc["resources"]]
    assert names == sorted(names)
    res = _by_name(doc)
    assert res["pods"] == {
        "name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["po"], "categories": ["all"], "storageVersionHash": "xPOwRZ+Yhw8="}
    assert res["namespaces"]["namespaced"] is False


SUBRESOURCES = [
    pytest.param("v1", "pods/status", None, "Pod", ["get", "patch", "update"], id="status"),
    pytest.param("v1", "pods/binding", None, "Binding", ["create"], id="binding"),
    pytest.param("v1", "pods/eviction", ("policy", "v1"), "Eviction", ["create"], id="eviction"),
    pytest.param("v1", "pods/log", None, "Pod", ["get"], id="log"),
    pytest.param("v1", "pods/exec", None, "PodExecOptions", ["create", "get"], id="exec"),
    pytest.param("v1", "pods/attach", None, "PodAttachOptions", ["create", "get"], id="attach"),
    pytest.param("v1", "pods/portforward", None, "PodPortForwardOptions", ["create", "get"], id="portforward"),
    pytest.param("v1", "pods/proxy", None, "PodProxyOptions", ["create", "delete", "get", "patch", "update"],
                 id="pod-proxy"),
    pytest.param("v1", "nodes/proxy", None, "NodeProxyOptions", ["create", "delete", "get", "patch", "update"],
                 id="node-proxy"),
    pytest.param("v1", "pods/ephemeralcontainers", None, "Pod", ["get", "patch", "update"], id="ephemeral"),
    pytest.param("v1", "namespaces/finalize", None, "Namespace", ["update"], id="finalize"),
    pytest.param("v1", "serviceaccounts/token", ("authentication.k8s.io", "v1"), "TokenRequest", ["create"],
                 id="token"),
    pytest.param("v1", "replicationcontrollers/scale", ("autoscaling", "v1"), "Scale", ["get", "patch", "update"],
                 id="rc-scale"),
    pytest.param("apps/v1", "deployments/scale", ("autoscaling", "v1"), "Scale", ["get", "patch", "update"],
                 id="deployment-scale"),
    pytest.param("stable.example.com/v1", "crontabs/scale", ("autoscaling", "v1"), "Scale",
                 ["get", "patch", "update"], id="crd-scale"),
]


@pytest.mark.parametrize("group_version,name,group_version_pair,kind,verbs", SUBRESOURCES)
def test_subresources(group_version, name, group_version_pair, kind, verbs):
    entry = _by_name(discovery.api_resource_list(group_version, RESOURCES))[name]
    assert entry["kind"] == kind
    assert entry["verbs"] == verbs
    assert entry["singularName"] == ""
    assert "storageVersionHash" not in entry
    if group_version_pair:
        assert (entry["group"], entry["version"]) == group_version_pair
    else:
        assert "group" not in entry and "version" not in entry


@pytest.mark.parametrize("group_version,resource,expected", [
    # Values from upstream's storage-version-hash fixtures.
    pytest.param("v1", "configmaps", "qFsyl6wFWjQ=", id="configmaps"),
    pytest.param("v1", "namespaces", "Q3oi5N2YM8M=", id="namespaces"),
    pytest.param("apps/v1", "deployments", "8aSe+NMegvE=", id="deployments"),
    pytest.param("batch/v1", "cronjobs", "sd5LIXh4Fjs=", id="cronjobs"),
    pytest.param("autoscaling/v1", "horizontalpodautoscalers", "qwQve8ut294=", id="hpa-stored-as-v2"),
    pytest.param("events.k8s.io/v1", "events", "r2yiGXH7wu8=", id="events-stored-in-core"),
    pytest.param("rbac.authorization.k8s.io/v1", "clusterroles", "bYE5ZWDrJ44=", id="clusterroles"),
])
def test_storage_version_hash(group_version, resource, expected):
    assert _by_name(discovery.api_resource_list(group_version, RESOURCES))[resource]["storageVersionHash"] == expected


def test_review_resources_have_no_storage_hash():
    entry = _by_name(discovery.api_resource_list("authorization.k8s.io/v1", RESOURCES))["selfsubjectaccessreviews"]
    assert entry["verbs"] == ["create"]
    assert "storageVersionHash" not in entry


def test_legacy_versions_list_only_deployments():
    for gv in ("apps/v1beta1", "apps/v1beta2", "extensions/v1beta1"):
        names = [r["name"] for r in discovery.api_resource_list(gv, RESOURCES)["resources"]]
        assert names == ["deployments", "deployments/scale", "deployments/status"], gv
    assert discovery.api_resource_list("nope/v1", RESOURCES) is None


def test_aggregated_api():
    doc = discovery.aggregated_api(RESOURCES)
    assert (doc["kind"], doc["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    [core] = doc["items"]
    assert "name" not in core["metadata"]
    [v1] = core["versions"]
    assert (v1["version"], v1["freshness"]) == ("v1", "Current")
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert (pods["scope"], pods["singularResource"], pods["shortNames"], pods["categories"]) == (
        "Namespaced", "pod", ["po"], ["all"])
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert set(subs) == {"status", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy",
                         "ephemeralcontainers"}
    assert list(subs) == sorted(subs)
    assert subs["eviction"] == {"subresource": "eviction",
                                "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"},
                                "verbs": ["create"]}
    assert subs["status"]["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    nodes = next(r for r in v1["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster"
    secrets = next(r for r in v1["resources"] if r["resource"] == "secrets")
    assert "shortNames" not in secrets and "subresources" not in secrets


def test_aggregated_apis():
    doc = discovery.aggregated_apis(RESOURCES)
    groups = {g["metadata"]["name"]: g for g in doc["items"]}
    assert doc["items"][0]["metadata"]["name"] == "apps"
    assert [v["version"] for v in groups["extensions"]["versions"]] == ["v1beta1"]
    assert [v["version"] for v in groups["apps"]["versions"]][0] == "v1"
    deployments = next(r for r in groups["apps"]["versions"][0]["resources"] if r["resource"] == "deployments")
    assert [(s["subresource"], s["responseKind"]["kind"]) for s in deployments["subresources"]] == [
        ("scale", "Scale"), ("status", "Deployment")]
    assert [v["version"] for v in groups["autoscaling"]["versions"]] == ["v2", "v1"]
    crd = groups["stable.example.com"]
    assert [v["version"] for v in crd["versions"]] == ["v1", "v1beta1", "v2alpha1"]
    crontabs = crd["versions"][0]["resources"][0]
    assert crontabs["responseKind"] == {"group": "stable.example.com", "version": "v1", "kind": "CronTab"}
    assert all(v["freshness"] == "Current" for g in doc["items"] for v in g["versions"])


@pytest.mark.parametrize("accept,expected", [
    pytest.param("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                 "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                 True, id="kubectl"),
    pytest.param("application/json; g=apidiscovery.k8s.io; v=v2; as=APIGroupDiscoveryList", True, id="spaces"),
    pytest.param("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                 False, id="v2beta1-only"),
    pytest.param("application/json", False, id="plain"),
    pytest.param(None, False, id="none"),
])
def test_negotiate_aggregated(accept, expected):
    assert discovery.negotiate_aggregated(accept) is expected
