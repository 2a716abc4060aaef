"""Unit tests of the API server's pure pieces: URL parsing, content negotiation, continue tokens,
version conversion and per-kind strategies."""

from __future__ import annotations

import base64

import pytest

from kubeling.api import errors
from kubeling.apiserver import conversion, listwatch, negotiation
from kubeling.apiserver.endpoints.request import parse_path
from kubeling.apiserver.registry import strategy as strategies
from kubeling.api.resource import compute_qos
from kubeling.apiserver import registry
from kubeling.apiserver.resources import ResourceMap, builtin_served

RESOURCES = ResourceMap(builtin_served(registry.strategies()))


@pytest.mark.parametrize("method, path, query, want", [
    pytest.param("GET", "/api/v1/namespaces/ns/pods/p/status", {}, ("get", "", "v1", "pods", "ns", "p", "status"),
                 id="pod-status"),
    pytest.param("GET", "/api/v1/pods", {}, ("list", "", "v1", "pods", None, "", ""), id="all-namespaces"),
    pytest.param("GET", "/api/v1/namespaces", {"watch": "true"}, ("watch", "", "v1", "namespaces", None, "", ""),
                 id="watch-param"),
    pytest.param("GET", "/api/v1/watch/namespaces/ns/configmaps", {},
                 ("watch", "", "v1", "configmaps", "ns", "", ""), id="legacy-watch-path"),
    pytest.param("PUT", "/api/v1/namespaces/ns/finalize", {}, ("update", "", "v1", "namespaces", None, "ns", "finalize"),
                 id="namespace-finalize"),
    pytest.param("GET", "/api/v1/namespaces/ns", {}, ("get", "", "v1", "namespaces", None, "ns", ""), id="namespace"),
    pytest.param("DELETE", "/apis/apps/v1/namespaces/ns/deployments", {},
                 ("deletecollection", "apps", "v1", "deployments", "ns", "", ""), id="deletecollection"),
    pytest.param("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
                 ("patch", "apps", "v1", "deployments", "ns", "d", "scale"), id="scale"),
    pytest.param("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {},
                 ("create", "rbac.authorization.k8s.io", "v1", "clusterroles", None, "", ""), id="cluster-scoped"),
])
def test_parse_path(method, path, query, want):
    info = parse_path(method, path, query)
    assert (info.verb, info.group, info.version, info.resource, info.namespace, info.name, info.subresource) == want


@pytest.mark.parametrize("path", ["/", "/api", "/apis", "/apis/apps", "/healthz", "/api/v1"])
def test_non_resource_paths(path):
    assert parse_path("GET", path, {}) is None


@pytest.mark.parametrize("header, media, as_kind", [
    pytest.param(None, "application/json", "", id="none"),
    pytest.param("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
                 "g=meta.k8s.io,application/json", "application/json", "Table", id="kubectl-get"),
    pytest.param("application/vnd.kubernetes.protobuf,application/json", "application/json", "", id="typed-client"),
    pytest.param("application/yaml", "application/yaml", "", id="yaml"),
    pytest.param("application/json;as=Widget;g=x;v=v1, application/json", "application/json", "", id="unknown-as"),
    pytest.param("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", "application/json",
                 "PartialObjectMetadataList", id="metadata"),
])
def test_parse_accept(header, media, as_kind):
    acc = negotiation.parse_accept(header)
    assert (acc.media, acc.as_kind) == (media, as_kind)


def test_only_protobuf_is_not_acceptable():
    with pytest.raises(errors.StatusError) as e:
        negotiation.parse_accept("application/vnd.kubernetes.protobuf")
    assert e.value.code == 406


@pytest.mark.parametrize("data, ctype, code", [
    pytest.param(b"{", "application/json", 400, id="bad-json"),
    pytest.param(b"a: [", "application/yaml", 400, id="bad-yaml"),
    pytest.param(b"a=b", "text/plain", 415, id="unknown-media"),
    pytest.param(b"  ", "application/json", 400, id="empty"),
])
def test_decode_body_errors(data, ctype, code):
    with pytest.raises(errors.StatusError) as e:
        negotiation.decode_body(data, ctype)
    assert e.value.code == code


def test_yaml_keeps_timestamps_as_strings():
    assert negotiation.decode_body(b"t: 2024-01-02T03:04:05Z\n", "application/yaml") == {"t": "2024-01-02T03:04:05Z"}


def test_duplicate_fields_are_found():
    assert negotiation.duplicate_fields(b'{"a":1,"b":{"c":1,"c":2},"a":2}', "application/json") == ["c", "a"]
    assert negotiation.duplicate_fields(b'{"a":1}', "application/json") == []


def test_continue_token_round_trip_and_tampering():
    tok = listwatch.encode_continue(42, "/registry/core/configmaps/ns/b")
    assert listwatch.decode_continue(tok, "/registry/core/configmaps/ns/") == (42, "/registry/core/configmaps/ns/b")
    with pytest.raises(errors.StatusError) as e:
        listwatch.decode_continue(tok, "/registry/core/secrets/")  # a token for another collection
    assert e.value.code == 400
    bogus = base64.urlsafe_b64encode(b'{"v":"meta.k8s.io/v1","rv":-1,"start":"x"}').decode()
    with pytest.raises(errors.StatusError):
        listwatch.decode_continue(bogus, "")


def test_hpa_v1_round_trips_through_v2_storage():
    served = RESOURCES.get("autoscaling", "v1", "horizontalpodautoscalers")
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
          "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5,
                   "targetCPUUtilizationPercentage": 70}}
    stored = conversion.to_storage(served, v1)
    assert stored["apiVersion"] == "autoscaling/v2"
    assert stored["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert conversion.from_storage(served, stored)["spec"]["targetCPUUtilizationPercentage"] == 70


def test_events_k8s_io_shares_core_storage():
    served = RESOURCES.get("events.k8s.io", "v1", "events")
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
          "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started"}
    stored = conversion.to_storage(served, ev)
    assert stored["involvedObject"] == {"kind": "Pod", "name": "p"} and stored["message"] == "hello"
    assert conversion.from_storage(served, stored)["note"] == "hello"
    assert served.prefix == RESOURCES.get("", "v1", "events").prefix


def test_secret_string_data_becomes_data():
    served = RESOURCES.get("", "v1", "secrets")
    s = conversion.to_storage(served, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                       "data": {"a": "eA=="}, "stringData": {"b": "y"}})
    assert s["data"] == {"a": "eA==", "b": "eQ=="} and "stringData" not in s


def test_legacy_deployments_share_apps_storage():
    legacy = RESOURCES.get("extensions", "v1beta1", "deployments")
    assert legacy.prefix == RESOURCES.get("apps", "v1", "deployments").prefix
    assert legacy.storage_gv == "apps/v1"


def test_initial_status_zero_values_follow_the_schema():
    assert strategies.zero_status({"apiVersion": "apps/v1", "kind": "ReplicaSet"}) == {"replicas": 0}
    assert strategies.zero_status({"apiVersion": "apps/v1", "kind": "Deployment"}) == {}
    assert strategies.zero_status({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget"}) == {
        "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}


@pytest.mark.parametrize("spec, qos", [
    pytest.param({"containers": [{"name": "c"}]}, "BestEffort", id="best-effort"),
    pytest.param({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                                              "requests": {"cpu": "1000m", "memory": "1Gi"}}}]},
                 "Guaranteed", id="guaranteed"),
    pytest.param({"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]}, "Burstable",
                 id="burstable"),
])
def test_pod_qos_class(spec, qos):
    assert compute_qos({"spec": spec}) == qos


def test_status_update_changes_only_status():
    strat = RESOURCES.get("apps", "v1", "deployments").strategy
    old = {"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {"replicas": 0}}
    new = {"metadata": {"name": "d", "labels": {"a": "2"}}, "spec": {"replicas": 9}, "status": {"replicas": 3}}
    strat.prepare_for_status_update(new, old)
    assert new["spec"] == {"replicas": 1} and new["status"] == {"replicas": 3}
    assert new["metadata"]["labels"] == {"a": "2"}
