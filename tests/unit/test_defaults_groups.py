"""Defaults of the smaller API groups, and the dispatcher's contract."""

import copy

import pytest

from kubeling.api.defaults import REGISTRY, apply_defaults, gvk_of
from kubeling.api.kinds import BUILTIN


def defaulted(obj):
    obj = copy.deepcopy(obj)
    apply_defaults(obj)
    return obj


HPA_DEFAULT_METRICS = [{"type": "Resource", "resource": {
    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]


def test_hpa_v2_minimal():
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "maxReplicas": 5}}
    assert defaulted(hpa)["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
        "maxReplicas": 5, "minReplicas": 1, "metrics": HPA_DEFAULT_METRICS,
    }


def test_hpa_v2_behavior_filled_only_when_present():
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "spec": {"maxReplicas": 5, "minReplicas": 2, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    assert defaulted(hpa)["spec"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]},
    }
    assert defaulted(hpa)["spec"]["minReplicas"] == 2


def test_hpa_v1_only_min_replicas():
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"maxReplicas": 3}}
    assert defaulted(hpa)["spec"] == {"maxReplicas": 3, "minReplicas": 1}


@pytest.mark.parametrize("spec,expected", [
    pytest.param({"podSelector": {}}, {"podSelector": {}, "policyTypes": ["Ingress"]}, id="deny-all-ingress"),
    pytest.param({"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]},
                 {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "TCP"}]}],
                  "policyTypes": ["Ingress", "Egress"]}, id="egress-implies-egress-type"),
    pytest.param({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]},
                 {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]},
                 id="explicit-kept"),
])
def test_network_policy(spec, expected):
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "spec": spec}
    assert defaulted(np)["spec"] == expected


def test_ingress_class_and_ingress():
    ic = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
          "spec": {"controller": "x/y", "parameters": {"kind": "P", "name": "p"}}}
    assert defaulted(ic)["spec"]["parameters"]["scope"] == "Cluster"
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {}}]}}]}}
    assert defaulted(ing) == ing  # v1 has no defaults; a missing pathType is invalid


def test_rbac_bindings():
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
          "roleRef": {"kind": "Role", "name": "r"},
          "subjects": [{"kind": "User", "name": "jane"}, {"kind": "Group", "name": "devs"},
                       {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}]}
    out = defaulted(rb)
    assert out["roleRef"] == {"kind": "Role", "name": "r", "apiGroup": "rbac.authorization.k8s.io"}
    assert [s["apiGroup"] for s in out["subjects"]] == ["rbac.authorization.k8s.io"] * 2 + [""]
    crb = dict(rb, kind="ClusterRoleBinding")
    assert defaulted(crb)["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"


@pytest.mark.parametrize("obj,expected", [
    pytest.param({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "p"},
                 {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "p",
                  "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}, id="storage-class"),
    pytest.param({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "p",
                  "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer"},
                 {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "p",
                  "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer"}, id="storage-class-explicit"),
    pytest.param({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 1000},
                 {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 1000,
                  "preemptionPolicy": "PreemptLowerPriority"}, id="priority-class"),
    pytest.param({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                  "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]},
                 {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                  "ports": [{"port": 80, "name": "", "protocol": "TCP"},
                            {"name": "dns", "port": 53, "protocol": "UDP"}]}, id="endpoint-slice"),
    pytest.param({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "spec": {"minAvailable": 1}},
                 {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "spec": {"minAvailable": 1}},
                 id="pdb-has-no-defaults"),
    pytest.param({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}},
                 {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}}, id="unknown-kind-noop"),
])
def test_simple_group_defaults(obj, expected):
    assert defaulted(obj) == expected


def test_crd():
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets"},
                    "versions": [{"name": "v1beta1", "served": True, "storage": False},
                                 {"name": "v1", "served": True, "storage": True}]}}
    out = defaulted(crd)
    assert out["spec"]["names"] == {"kind": "Widget", "plural": "widgets", "singular": "widget",
                                    "listKind": "WidgetList"}
    assert out["spec"]["conversion"] == {"strategy": "None"}
    assert out["status"]["storedVersions"] == ["v1"]
    hooked = copy.deepcopy(crd)
    hooked["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"], "clientConfig": {"service": {"name": "s", "namespace": "n"}}}}
    assert defaulted(hooked)["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"] == 443


def test_gvk_of():
    assert gvk_of({"apiVersion": "v1", "kind": "Pod"}) == ("", "v1", "Pod")
    assert gvk_of({"apiVersion": "apps/v1", "kind": "Deployment"}) == ("apps", "v1", "Deployment")
    assert gvk_of({}) == ("", "", "")


def test_registry_covers_builtin_kinds_with_upstream_defaulters():
    served = {(r.group, r.version, r.kind) for r in BUILTIN}
    # Every registered defaulter is for a kind the apiserver serves (or a storage-only
    # kind such as CSIDriver that may be added later) ...
    assert {k for k in REGISTRY if k[2] != "CSIDriver"} <= served
    # ... and the kinds the brief names are all covered.
    for gvk in [("", "v1", "Pod"), ("", "v1", "Service"), ("apps", "v1", "Deployment"),
                ("apps", "v1", "StatefulSet"), ("batch", "v1", "CronJob"),
                ("autoscaling", "v2", "HorizontalPodAutoscaler"), ("networking.k8s.io", "v1", "NetworkPolicy"),
                ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"), ("storage.k8s.io", "v1", "StorageClass"),
                ("scheduling.k8s.io", "v1", "PriorityClass"), ("discovery.k8s.io", "v1", "EndpointSlice")]:
        assert gvk in REGISTRY, gvk


@pytest.mark.parametrize("gvk", sorted(REGISTRY))
def test_every_defaulter_is_idempotent_and_survives_empty_objects(gvk):
    group, version, kind = gvk
    obj = {"apiVersion": f"{group}/{version}" if group else version, "kind": kind, "metadata": {"name": "x"}}
    once = defaulted(obj)
    assert defaulted(once) == once
    junk = dict(obj, spec=None, status=None)
    defaulted(junk)  # null value-structs decode as empty: must not raise
