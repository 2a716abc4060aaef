"""core/v1 kinds other than Pod: Service, Endpoints, ConfigMap, Secret, PV/PVC, Node, quotas, limits."""

import base64
import copy

import pytest

from kubeling.api.validation import validate
from kubeling.api.validation.persistentvolume import PVC_UPDATE_MESSAGE


def obj(kind, body=None, name="x", namespaced=True, api="v1"):
    meta = {"name": name, "uid": "u"}
    if namespaced:
        meta["namespace"] = "default"
    o = {"apiVersion": api, "kind": kind, "metadata": meta}
    o.update(body or {})
    return o


def svc(**spec):
    s = {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
         "selector": {"app": "web"}}
    s.update(spec)
    return obj("Service", {"spec": s}, name="web")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def fields(errs):
    return [(e.field, e.kind) for e in errs]


@pytest.mark.parametrize("o,expected", [
    pytest.param(svc(), [], id="valid"),
    pytest.param(svc(ports=[]), [("spec.ports", "Required")], id="ports-required"),
    pytest.param(svc(ports=[], clusterIP="None"), [], id="headless-no-ports"),
    pytest.param(svc(type="ExternalName", ports=[], externalName="db.example.com"), [], id="external-name"),
    pytest.param(svc(type="ExternalName", ports=[]), [("spec.externalName", "Required")], id="external-name-req"),
    pytest.param(svc(type="Magic"), [("spec.type", "NotSupported")], id="type"),
    pytest.param(svc(ports=[{"port": 0}]), [("spec.ports[0].port", "Invalid")], id="port-range"),
    pytest.param(svc(ports=[{"port": 80, "protocol": "ICMP"}]), [("spec.ports[0].protocol", "NotSupported")],
                 id="protocol"),
    pytest.param(svc(ports=[{"port": 80, "name": "a"}, {"port": 81}]), [("spec.ports[1].name", "Required")],
                 id="names-required-when-many"),
    pytest.param(svc(ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]),
                 [("spec.ports[1].name", "Duplicate")], id="names-unique"),
    pytest.param(svc(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]),
                 [("spec.ports[1]", "Duplicate")], id="port-protocol-unique"),
    pytest.param(svc(type="NodePort", ports=[{"port": 80, "nodePort": 80}]), [("spec.ports[0].nodePort", "Invalid")],
                 id="node-port-range"),
    pytest.param(svc(ports=[{"port": 80, "nodePort": 30080}]), [("spec.ports[0].nodePort", "Forbidden")],
                 id="node-port-on-cluster-ip"),
    pytest.param(svc(clusterIP="1.2.3"), [("spec.clusterIPs[0]", "Invalid")], id="cluster-ip"),
    pytest.param(svc(selector={"app": "-x"}), [("spec.selector", "Invalid")], id="selector"),
    pytest.param(svc(sessionAffinity="Sticky"), [("spec.sessionAffinity", "NotSupported")], id="affinity"),
])
def test_service(o, expected):
    assert fields(validate(o)) == expected


def test_node_port_message():
    errs = validate(svc(type="NodePort", ports=[{"port": 80, "nodePort": 80}]))
    assert errs[0].detail == "provided port is not in the valid range. The range of valid ports is 30000-32767"


def test_cluster_ip_immutable():
    old = svc(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    new = copy.deepcopy(old)
    new["spec"].update(clusterIP="None", clusterIPs=["None"])
    errs = validate(new, old)
    assert [str(e) for e in errs] == ['spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set']


def test_endpoints():
    ep = obj("Endpoints", {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "nope"}],
                                        "ports": [{"port": 80, "protocol": "TCP"}]}]})
    assert fields(validate(ep)) == [("subsets[0].addresses[1].ip", "Invalid")]


@pytest.mark.parametrize("body,expected", [
    pytest.param({"data": {"a.conf": "x", "KEY_1": "y"}}, [], id="valid"),
    pytest.param({"data": {"bad key": "x"}}, [("data[bad key]", "Invalid")], id="key-format"),
    pytest.param({"data": {"..x": "x"}}, [("data[..x]", "Invalid")], id="key-dotdot"),
    pytest.param({"data": {"a": "x"}, "binaryData": {"a": b64("y")}}, [("binaryData[a]", "Invalid")],
                 id="duplicate-key"),
    pytest.param({"data": {"a": "x" * (1024 * 1024 + 1)}}, [("", "TooLong")], id="too-big"),
])
def test_config_map(body, expected):
    assert fields(validate(obj("ConfigMap", body))) == expected


def test_immutable_config_map():
    old = obj("ConfigMap", {"data": {"a": "1"}, "immutable": True})
    new = copy.deepcopy(old)
    new["data"]["a"] = "2"
    assert [str(e) for e in validate(new, old)] == ["data: Forbidden: field is immutable when `immutable` is set"]
    new = copy.deepcopy(old)
    new["immutable"] = False
    assert fields(validate(new, old)) == [("immutable", "Forbidden")]
    mutable = obj("ConfigMap", {"data": {"a": "1"}})
    changed = copy.deepcopy(mutable)
    changed["data"]["a"] = "2"
    assert validate(changed, mutable) == []


@pytest.mark.parametrize("body,expected", [
    pytest.param({"type": "Opaque", "data": {"a": b64("x")}}, [], id="valid"),
    pytest.param({"type": "Opaque", "data": {"a": "!!notbase64"}}, [("data[a]", "Invalid")], id="base64"),
    pytest.param({"type": "kubernetes.io/tls", "data": {"tls.crt": b64("c")}}, [("data[tls.key]", "Required")],
                 id="tls"),
    pytest.param({"type": "kubernetes.io/dockerconfigjson", "data": {}},
                 [("data[.dockerconfigjson]", "Required")], id="dockerconfigjson-required"),
    pytest.param({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64("{nope")}},
                 [("data[.dockerconfigjson]", "Invalid")], id="dockerconfigjson-json"),
    pytest.param({"type": "kubernetes.io/service-account-token"},
                 [("metadata.annotations[kubernetes.io/service-account.name]", "Required")], id="sa-token"),
    pytest.param({"type": "kubernetes.io/basic-auth", "data": {"username": b64("u")}}, [], id="basic-auth"),
    pytest.param({"type": "kubernetes.io/ssh-auth", "data": {}}, [("data[ssh-privatekey]", "Required")],
                 id="ssh-auth"),
])
def test_secret(body, expected):
    assert fields(validate(obj("Secret", body))) == expected


def test_secret_type_immutable():
    old = obj("Secret", {"type": "Opaque", "data": {}})
    new = copy.deepcopy(old)
    new["type"] = "kubernetes.io/basic-auth"
    new["data"] = {"username": b64("u")}
    assert [(e.field, e.detail) for e in validate(new, old)] == [("type", "field is immutable")]


def pv(**spec):
    s = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"},
         "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"}
    s.update(spec)
    return obj("PersistentVolume", {"spec": s}, namespaced=False)


def pvc(**spec):
    s = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}
    s.update(spec)
    return obj("PersistentVolumeClaim", {"spec": s})


@pytest.mark.parametrize("o,expected", [
    pytest.param(pv(), [], id="pv-valid"),
    pytest.param(pv(accessModes=[]), [("spec.accessModes", "Required")], id="pv-access-modes"),
    pytest.param(pv(capacity={}), [("spec.capacity", "Required")], id="pv-capacity"),
    pytest.param(pv(hostPath=None), [("spec", "Required")], id="pv-source"),
    pytest.param(pv(persistentVolumeReclaimPolicy="Shred"), [("spec.persistentVolumeReclaimPolicy",
                                                                "NotSupported")], id="pv-reclaim"),
    pytest.param(pvc(), [], id="pvc-valid"),
    pytest.param(pvc(accessModes=[]), [("spec.accessModes", "Required")], id="pvc-access-modes"),
    pytest.param(pvc(accessModes=["ReadWriteSometimes"]), [("spec.accessModes", "NotSupported")], id="pvc-mode"),
    pytest.param(pvc(resources={}), [("spec.resources[storage]", "Required")], id="pvc-storage"),
    pytest.param(pvc(resources={"requests": {"storage": "0"}}), [("spec.resources.requests[storage]", "Invalid")],
                 id="pvc-storage-zero"),
])
def test_persistent_volumes(o, expected):
    assert fields(validate(o)) == expected


def test_pvc_update_rules():
    old = pvc()
    new = copy.deepcopy(old)
    new["spec"]["volumeName"] = "pv-1"
    assert validate(new, old) == []  # the binder sets volumeName once
    grown = copy.deepcopy(old)
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert [(e.field, e.detail) for e in validate(grown, old)] == [("spec", PVC_UPDATE_MESSAGE)]
    bound = copy.deepcopy(old)
    bound["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    grown = copy.deepcopy(bound)
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert validate(grown, bound) == []


def test_pv_source_immutable():
    old = pv()
    new = copy.deepcopy(old)
    new["spec"]["hostPath"]["path"] = "/other"
    assert fields(validate(new, old)) == [("spec.persistentvolumesource", "Forbidden")]


@pytest.mark.parametrize("o,expected", [
    pytest.param(obj("Node", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}, namespaced=False), [],
                 id="node-valid"),
    pytest.param(obj("Node", {"spec": {"taints": [{"key": "k", "effect": "Maybe"}]}}, namespaced=False),
                 [("spec.taints[0].effect", "NotSupported")], id="node-taint-effect"),
    pytest.param(obj("Node", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}] * 2}}, namespaced=False),
                 [("spec.taints[1]", "Duplicate")], id="node-taint-duplicate"),
    pytest.param(obj("Namespace", {"spec": {"finalizers": ["kubernetes"]}}, name="team-a", namespaced=False), [],
                 id="namespace"),
    pytest.param(obj("ResourceQuota", {"spec": {"hard": {"pods": "10", "requests.cpu": "x"}}}),
                 [("spec.hard[requests.cpu]", "Invalid")], id="quota-quantity"),
    pytest.param(obj("ResourceQuota", {"spec": {"hard": {"pods": "1"}, "scopes": ["Sometimes"]}}),
                 [("spec.scopes[0]", "NotSupported")], id="quota-scope"),
    pytest.param(obj("LimitRange", {"spec": {"limits": [{"type": "Container", "min": {"cpu": "2"},
                                                         "max": {"cpu": "1"}}]}}),
                 [("spec.limits[0].min[cpu]", "Invalid")], id="limitrange-min-max"),
    pytest.param(obj("LimitRange", {"spec": {"limits": [{"type": "Node"}]}}),
                 [("spec.limits[0].type", "NotSupported")], id="limitrange-type"),
    pytest.param(obj("ServiceAccount", {"imagePullSecrets": [{}]}), [("imagePullSecrets[0].name", "Required")],
                 id="serviceaccount"),
    pytest.param(obj("ReplicationController", {"spec": {"replicas": 1, "selector": {"app": "a"}, "template": {
        "metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        [("spec.template.metadata.labels", "Invalid")], id="rc-selector"),
    pytest.param(obj("PodTemplate", {"template": {"spec": {"containers": []}}}),
                 [("template.spec.containers", "Required")], id="podtemplate"),
])
def test_other_core_kinds(o, expected):
    assert fields(validate(o)) == expected
