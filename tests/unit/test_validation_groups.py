"""networking, discovery, RBAC, autoscaling, policy, coordination, scheduling, storage, events and CRDs."""

import copy

import pytest

from kubeling.api.validation import validate


def obj(api, kind, body=None, name="x", namespaced=True):
    meta = {"name": name}
    if namespaced:
        meta["namespace"] = "default"
    o = {"apiVersion": api, "kind": kind, "metadata": meta}
    o.update(body or {})
    return o


def fields(errs):
    return [(e.field, e.kind) for e in errs]


BACKEND = {"service": {"name": "web", "port": {"number": 80}}}


def ingress(**spec):
    s = {"rules": [{"host": "example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                                                "backend": copy.deepcopy(BACKEND)}]}}]}
    s.update(spec)
    return obj("networking.k8s.io/v1", "Ingress", {"spec": s})


def path_rule(**p):
    rule = {"path": "/", "pathType": "Prefix", "backend": copy.deepcopy(BACKEND)}
    rule.update(p)
    return [{"http": {"paths": [rule]}}]


@pytest.mark.parametrize("o,expected", [
    pytest.param(ingress(), [], id="valid"),
    pytest.param(ingress(rules=[]), [("spec.rules", "Invalid")], id="rules-or-default-backend"),
    pytest.param(ingress(rules=[], defaultBackend=BACKEND), [], id="default-backend"),
    pytest.param(ingress(rules=[{"host": "10.0.0.1", "http": {"paths": path_rule()[0]["http"]["paths"]}}]),
                 [("spec.rules[0].host", "Invalid")], id="host-ip"),
    pytest.param(ingress(rules=[{"host": "*.example.com", "http": {"paths": path_rule()[0]["http"]["paths"]}}]),
                 [], id="wildcard-host"),
    pytest.param(ingress(rules=path_rule(pathType=None)), [("spec.rules[0].http.paths[0].pathType", "Required")],
                 id="path-type-required"),
    pytest.param(ingress(rules=path_rule(pathType="Regex")),
                 [("spec.rules[0].http.paths[0].pathType", "NotSupported")], id="path-type"),
    pytest.param(ingress(rules=path_rule(path="api")), [("spec.rules[0].http.paths[0].path", "Invalid")],
                 id="path-absolute"),
    pytest.param(ingress(rules=path_rule(path="/a//b")), [("spec.rules[0].http.paths[0].path", "Invalid")],
                 id="path-double-slash"),
    pytest.param(ingress(rules=path_rule(backend={"service": {"name": "web", "port": {}}})),
                 [("spec.rules[0].http.paths[0].backend.service.port", "Required")], id="backend-port"),
    pytest.param(ingress(rules=[{"http": {"paths": []}}]), [("spec.rules[0].http.paths", "Required")], id="paths"),
    pytest.param(obj("networking.k8s.io/v1", "IngressClass", {"spec": {"controller": "nginx"}}, namespaced=False),
                 [("spec.controller", "Invalid")], id="ingressclass-controller"),
    pytest.param(obj("networking.k8s.io/v1", "IngressClass", {"spec": {"controller": "k8s.io/ingress-nginx"}},
                     namespaced=False), [], id="ingressclass-valid"),
    pytest.param(obj("networking.k8s.io/v1", "NetworkPolicy", {"spec": {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}}),
        [("spec.ingress[0].from[0]", "Forbidden")], id="netpol-peer-exclusive"),
    pytest.param(obj("networking.k8s.io/v1", "NetworkPolicy", {"spec": {"podSelector": {}, "policyTypes": ["Both"]}}),
                 [("spec.policyTypes[0]", "NotSupported")], id="netpol-policy-types"),
    pytest.param(obj("networking.k8s.io/v1", "NetworkPolicy", {"spec": {"podSelector": {}, "egress": [
        {"ports": [{"port": 100, "endPort": 50}]}]}}), [("spec.egress[0].ports[0].endPort", "Invalid")],
        id="netpol-end-port"),
    pytest.param(obj("discovery.k8s.io/v1", "EndpointSlice", {"addressType": "IPv4", "endpoints": [
        {"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}), [],
        id="endpointslice-valid"),
    pytest.param(obj("discovery.k8s.io/v1", "EndpointSlice", {"addressType": "IPv5"}),
                 [("addressType", "NotSupported")], id="endpointslice-address-type"),
    pytest.param(obj("discovery.k8s.io/v1", "EndpointSlice", {"addressType": "IPv4", "endpoints": [
        {"addresses": ["x.y"]}]}), [("endpoints[0].addresses[0]", "Invalid")], id="endpointslice-address"),
])
def test_networking(o, expected):
    assert fields(validate(o)) == expected


RBAC = "rbac.authorization.k8s.io/v1"


@pytest.mark.parametrize("o,expected", [
    pytest.param(obj(RBAC, "Role", {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}), [],
                 id="role-valid"),
    pytest.param(obj(RBAC, "Role", {"rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
                 [("rules[0].verbs", "Required")], id="verbs-required"),
    pytest.param(obj(RBAC, "Role", {"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
                 [("rules[0].nonResourceURLs", "Invalid")], id="namespaced-non-resource"),
    pytest.param(obj(RBAC, "ClusterRole", {"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]},
                     namespaced=False), [], id="cluster-non-resource"),
    pytest.param(obj(RBAC, "ClusterRole", {"rules": [{"verbs": ["get"], "resources": ["pods"]}]}, namespaced=False),
                 [("rules[0].apiGroups", "Required")], id="api-groups-required"),
    pytest.param(obj(RBAC, "RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                       "name": "r"},
                                           "subjects": [{"kind": "ServiceAccount", "name": "default"}]}), [],
                 id="binding-valid"),
    pytest.param(obj(RBAC, "RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Pod",
                                                       "name": "r"}}), [("roleRef.kind", "NotSupported")],
                 id="binding-ref-kind"),
    pytest.param(obj(RBAC, "ClusterRoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                              "kind": "ClusterRole", "name": "r"},
                                                  "subjects": [{"kind": "ServiceAccount", "name": "sa"}]},
                     namespaced=False), [("subjects[0].namespace", "Required")], id="crb-sa-namespace"),
    pytest.param(obj(RBAC, "ClusterRoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                              "kind": "ClusterRole", "name": "r"},
                                                  "subjects": [{"kind": "Robot", "name": "r2"}]},
                     namespaced=False), [("subjects[0].kind", "NotSupported")], id="subject-kind"),
])
def test_rbac(o, expected):
    assert fields(validate(o)) == expected


def test_role_ref_immutable():
    old = obj(RBAC, "RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                "name": "a"}})
    new = copy.deepcopy(old)
    new["roleRef"]["name"] = "b"
    assert [(e.field, e.detail) for e in validate(new, old)] == [("roleRef", "cannot change roleRef")]


def hpa(**spec):
    s = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1,
         "maxReplicas": 5}
    s.update(spec)
    return obj("autoscaling/v2", "HorizontalPodAutoscaler", {"spec": s})


@pytest.mark.parametrize("o,expected", [
    pytest.param(hpa(), [], id="hpa-valid"),
    pytest.param(hpa(scaleTargetRef={"kind": "Deployment"}), [("spec.scaleTargetRef.name", "Required")],
                 id="hpa-target-name"),
    pytest.param(hpa(minReplicas=6), [("spec.maxReplicas", "Invalid")], id="hpa-min-over-max"),
    pytest.param(hpa(maxReplicas=0, minReplicas=None), [("spec.maxReplicas", "Invalid")], id="hpa-max-zero"),
    pytest.param(hpa(metrics=[{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Ratio"}}}]),
                 [("spec.metrics[0].resource.target.type", "NotSupported")], id="hpa-target-type"),
    pytest.param(obj("policy/v1", "PodDisruptionBudget", {"spec": {"minAvailable": 1, "maxUnavailable": 1}}),
                 [("spec", "Invalid")], id="pdb-both"),
    pytest.param(obj("policy/v1", "PodDisruptionBudget", {"spec": {"minAvailable": "50%"}}), [], id="pdb-percent"),
    pytest.param(obj("policy/v1", "PodDisruptionBudget", {"spec": {"maxUnavailable": "x%"}}),
                 [("spec.maxUnavailable", "Invalid")], id="pdb-bad-percent"),
    pytest.param(obj("coordination.k8s.io/v1", "Lease", {"spec": {"leaseDurationSeconds": 0}}),
                 [("spec.leaseDurationSeconds", "Invalid")], id="lease-duration"),
    pytest.param(obj("scheduling.k8s.io/v1", "PriorityClass", {"value": 2_000_000_000}, namespaced=False),
                 [("value", "Forbidden")], id="priority-user-max"),
    pytest.param(obj("scheduling.k8s.io/v1", "PriorityClass", {"value": 100}, name="system-mine", namespaced=False),
                 [("metadata.name", "Forbidden")], id="priority-system-prefix"),
    pytest.param(obj("storage.k8s.io/v1", "StorageClass", {}, namespaced=False), [("provisioner", "Required")],
                 id="storageclass-provisioner"),
    pytest.param(obj("storage.k8s.io/v1", "StorageClass", {"provisioner": "rancher.io/local-path",
                                                           "volumeBindingMode": "Later"}, namespaced=False),
                 [("volumeBindingMode", "NotSupported")], id="storageclass-binding-mode"),
    pytest.param(obj("v1", "Event", {"involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}}),
                 [("involvedObject.namespace", "Invalid")], id="event-namespace"),
    pytest.param(obj("v1", "Event", {"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                                     "reason": "Started"}), [], id="event-valid"),
    pytest.param(obj("events.k8s.io/v1", "Event", {"eventTime": "2024-01-01T00:00:00.000000Z",
                                                   "reportingController": "kubelet", "reportingInstance": "n1",
                                                   "action": "Start", "reason": "Started", "type": "Normal",
                                                   "regarding": {"kind": "Pod", "namespace": "default"}}), [],
                 id="events-v1-valid"),
    pytest.param(obj("events.k8s.io/v1", "Event", {"eventTime": "2024-01-01T00:00:00.000000Z",
                                                   "reportingController": "kubelet", "reportingInstance": "n1",
                                                   "reason": "Started", "type": "Info"}),
                 [("action", "Required"), ("type", "Invalid")], id="events-v1-action-type"),
])
def test_other_groups(o, expected):
    assert fields(validate(o)) == expected


def test_priority_class_value_immutable():
    old = obj("scheduling.k8s.io/v1", "PriorityClass", {"value": 1}, namespaced=False)
    new = copy.deepcopy(old)
    new["value"] = 2
    assert [str(e) for e in validate(new, old)] == ["value: Forbidden: may not be changed in an update."]


def test_storage_class_parameters_immutable():
    old = obj("storage.k8s.io/v1", "StorageClass", {"provisioner": "x.io/p", "parameters": {"a": "1"}},
              namespaced=False)
    new = copy.deepcopy(old)
    new["parameters"]["a"] = "2"
    assert [str(e) for e in validate(new, old)] == ["parameters: Forbidden: updates to parameters are forbidden."]


SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "size": {"type": "integer"}}}}}


def crd(**spec):
    s = {"group": "example.com", "scope": "Namespaced",
         "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
         "versions": [{"name": "v1", "served": True, "storage": True,
                       "schema": {"openAPIV3Schema": copy.deepcopy(SCHEMA)}}]}
    s.update(spec)
    return obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", {"spec": s}, name="widgets.example.com",
               namespaced=False)


def version(name="v1", served=True, storage=True, schema=SCHEMA):
    v = {"name": name, "served": served, "storage": storage}
    if schema is not None:
        v["schema"] = {"openAPIV3Schema": copy.deepcopy(schema)}
    return v


@pytest.mark.parametrize("o,expected", [
    pytest.param(crd(), [], id="valid"),
    pytest.param(crd(group="example"), [("spec.group", "Invalid"), ("metadata.name", "Invalid")],
                 id="group-needs-dot"),
    pytest.param(crd(scope="Global"), [("spec.scope", "NotSupported")], id="scope"),
    pytest.param(crd(names={"plural": "widgets", "kind": "Widget", "listKind": "Widget"}),
                 [("spec.names.listKind", "Invalid")], id="list-kind-differs"),
    pytest.param(crd(versions=[version(), version("v2")]), [("spec.versions", "Invalid")], id="two-storage"),
    pytest.param(crd(versions=[version(served=False)]), [("spec.versions", "Invalid")], id="none-served"),
    pytest.param(crd(versions=[version(), version(storage=False)]), [("spec.versions", "Invalid")],
                 id="duplicate-version"),
    pytest.param(crd(versions=[version("V1")]), [("spec.versions[0].name", "Invalid")], id="version-name"),
    pytest.param(crd(versions=[version(schema=None)]), [("spec.versions[0].schema.openAPIV3Schema", "Required")],
                 id="schema-required"),
    pytest.param(crd(versions=[version(schema={"type": "object", "properties": {"spec": {"properties": {}}}})]),
                 [("spec.versions[0].schema.openAPIV3Schema.properties[spec].type", "Required")],
                 id="schema-structural"),
])
def test_crd(o, expected):
    assert fields(validate(o)) == expected


def test_crd_name_message():
    o = crd()
    o["metadata"]["name"] = "gadgets.example.com"
    assert [str(e) for e in validate(o)] == \
        ['metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group']


def test_crd_scope_immutable_and_stored_versions_kept():
    old = crd()
    old["status"] = {"storedVersions": ["v1"]}
    new = copy.deepcopy(old)
    new["spec"]["scope"] = "Cluster"
    new["spec"]["versions"] = [version("v2")]
    assert fields(validate(new, old)) == [("spec.scope", "Invalid"), ("status.storedVersions[0]", "Invalid")]
