"""Pod and PodSpec validation: containers, ports, env, volumes, mounts, resources, probes, updates."""

import copy

import pytest

from kubeling.api.validation import validate
from kubeling.api.validation.pod import POD_UPDATE_MESSAGE
from kubeling.api.validation.resources import parse_quantity


def pod(**spec):
    s = {"containers": [{"name": "app", "image": "nginx"}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": s}


def ctr(**kw):
    c = {"name": "app", "image": "nginx"}
    c.update(kw)
    return c


def fields(errs):
    return [(e.field, e.kind) for e in errs]


@pytest.mark.parametrize("obj,expected", [
    pytest.param(pod(), [], id="valid"),
    pytest.param(pod(containers=[]), [("spec.containers", "Required")], id="containers-required"),
    pytest.param(pod(containers=[ctr(name="")]), [("spec.containers[0].name", "Required")], id="name-required"),
    pytest.param(pod(containers=[ctr(name="App")]), [("spec.containers[0].name", "Invalid")], id="name-dns-label"),
    pytest.param(pod(containers=[ctr(), ctr()]), [("spec.containers[1].name", "Duplicate")], id="name-unique"),
    pytest.param(pod(initContainers=[ctr()]), [("spec.containers[0].name", "Duplicate")],
                 id="name-unique-across-init"),
    pytest.param(pod(containers=[ctr(image="")]), [("spec.containers[0].image", "Required")], id="image-required"),
    pytest.param(pod(containers=[ctr(image=" nginx")]), [("spec.containers[0].image", "Invalid")],
                 id="image-whitespace"),
    pytest.param(pod(restartPolicy="Sometimes"), [("spec.restartPolicy", "NotSupported")], id="restart-policy"),
    pytest.param(pod(dnsPolicy="Nope"), [("spec.dnsPolicy", "NotSupported")], id="dns-policy"),
    pytest.param(pod(dnsPolicy="None"), [("spec.dnsConfig", "Required")], id="dns-none-needs-config"),
    pytest.param(pod(activeDeadlineSeconds=0), [("spec.activeDeadlineSeconds", "Invalid")], id="deadline"),
    pytest.param(pod(nodeSelector={"disk": "-ssd"}), [("spec.nodeSelector", "Invalid")], id="node-selector"),
    pytest.param(pod(serviceAccountName="Bad_SA"), [("spec.serviceAccountName", "Invalid")], id="sa-name"),
])
def test_pod_spec(obj, expected):
    assert fields(validate(obj)) == expected


@pytest.mark.parametrize("ports,expected", [
    pytest.param([{"containerPort": 80, "protocol": "TCP", "name": "http"}], [], id="valid"),
    pytest.param([{"containerPort": 0}], [("spec.containers[0].ports[0].containerPort", "Required")], id="zero"),
    pytest.param([{"containerPort": 70000}], [("spec.containers[0].ports[0].containerPort", "Invalid")],
                 id="range"),
    pytest.param([{"containerPort": 80, "protocol": "HTTP"}], [("spec.containers[0].ports[0].protocol",
                                                                 "NotSupported")], id="protocol"),
    pytest.param([{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}],
                 [("spec.containers[0].ports[1].name", "Duplicate")], id="duplicate-name"),
    pytest.param([{"containerPort": 80, "name": "Web_Port"}], [("spec.containers[0].ports[0].name", "Invalid")],
                 id="name-format"),
    pytest.param([{"containerPort": 80, "hostPort": 99999}], [("spec.containers[0].ports[0].hostPort", "Invalid")],
                 id="host-port"),
])
def test_container_ports(ports, expected):
    assert fields(validate(pod(containers=[ctr(ports=ports)]))) == expected


def test_port_range_message():
    errs = validate(pod(containers=[ctr(ports=[{"containerPort": 70000}])]))
    assert str(errs[0]) == "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and " \
                           "65535, inclusive"


@pytest.mark.parametrize("env,expected", [
    pytest.param([{"name": "A", "value": "1"}], [], id="valid"),
    pytest.param([{"value": "1"}], [("spec.containers[0].env[0].name", "Required")], id="name-required"),
    pytest.param([{"name": "A=B"}], [("spec.containers[0].env[0].name", "Invalid")], id="name-format"),
    pytest.param([{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 [("spec.containers[0].env[0].valueFrom", "Invalid")], id="value-and-valueFrom"),
    pytest.param([{"name": "A", "valueFrom": {}}], [("spec.containers[0].env[0].valueFrom", "Invalid")],
                 id="valueFrom-empty"),
    pytest.param([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "bad key"}}}],
                 [("spec.containers[0].env[0].valueFrom.configMapKeyRef.key", "Invalid")], id="config-key"),
    pytest.param([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}}],
                 [("spec.containers[0].env[0].valueFrom.fieldRef.fieldPath", "NotSupported")], id="field-path"),
    pytest.param([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}], [],
                 id="field-path-subscript"),
])
def test_env(env, expected):
    assert fields(validate(pod(containers=[ctr(env=env)]))) == expected


@pytest.mark.parametrize("volumes,mounts,expected", [
    pytest.param([{"name": "data", "emptyDir": {}}], [{"name": "data", "mountPath": "/data"}], [], id="valid"),
    pytest.param([{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}], [],
                 [("spec.volumes[1].name", "Duplicate")], id="duplicate-volume"),
    pytest.param([{"name": "data"}], [], [("spec.volumes[0]", "Required")], id="no-source"),
    pytest.param([{"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}}], [],
                 [("spec.volumes[0].emptyDir", "Forbidden")], id="two-sources"),
    pytest.param([{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "../x"}]}}], [],
                 [("spec.volumes[0].configMap.items[0].path", "Invalid")], id="item-path-dotdot"),
    pytest.param([{"name": "s", "secret": {}}], [], [("spec.volumes[0].secret.secretName", "Required")],
                 id="secret-name"),
    pytest.param([{"name": "s", "secret": {"secretName": "x", "defaultMode": 0o1000}}], [],
                 [("spec.volumes[0].secret.defaultMode", "Invalid")], id="mode-range"),
    pytest.param([], [{"name": "missing", "mountPath": "/x"}],
                 [("spec.containers[0].volumeMounts[0].name", "NotFound")], id="mount-unknown-volume"),
    pytest.param([{"name": "d", "emptyDir": {}}], [{"name": "d", "mountPath": "/x"}, {"name": "d", "mountPath": "/x"}],
                 [("spec.containers[0].volumeMounts[1].mountPath", "Invalid")], id="mount-path-unique"),
    pytest.param([{"name": "d", "emptyDir": {}}], [{"name": "d"}],
                 [("spec.containers[0].volumeMounts[0].mountPath", "Required")], id="mount-path-required"),
])
def test_volumes_and_mounts(volumes, mounts, expected):
    assert fields(validate(pod(volumes=volumes, containers=[ctr(volumeMounts=mounts)]))) == expected


@pytest.mark.parametrize("resources,expected", [
    pytest.param({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}, [],
                 id="valid"),
    pytest.param({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                 [("spec.containers[0].resources.requests[cpu]", "Invalid")], id="request-over-limit"),
    pytest.param({"requests": {"memory": "lots"}}, [("spec.containers[0].resources.requests[memory]", "Invalid")],
                 id="unparseable"),
    pytest.param({"limits": {"cpu": "-1"}}, [("spec.containers[0].resources.limits[cpu]", "Invalid")],
                 id="negative"),
    pytest.param({"limits": {"gpu": "1"}}, [("spec.containers[0].resources.limits[gpu]", "Invalid")],
                 id="not-standard"),
    pytest.param({"limits": {"example.com/gpu": "1"}, "requests": {"example.com/gpu": "1"}}, [], id="extended"),
])
def test_resources(resources, expected):
    assert fields(validate(pod(containers=[ctr(resources=resources)]))) == expected


def test_request_over_limit_message():
    errs = validate(pod(containers=[ctr(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})]))
    assert errs[0].detail == "must be less than or equal to cpu limit of 1"


@pytest.mark.parametrize("text,value", [
    pytest.param("100m", "0.1", id="milli"), pytest.param("1Gi", str(2 ** 30), id="binary"),
    pytest.param("1e3", "1000", id="exponent"), pytest.param("2k", "2000", id="kilo"),
])
def test_quantity_parse(text, value):
    from decimal import Decimal
    assert parse_quantity(text) == Decimal(value)


HTTP = {"httpGet": {"port": 8080, "path": "/"}}


@pytest.mark.parametrize("key,probe,expected", [
    pytest.param("livenessProbe", HTTP, [], id="valid"),
    pytest.param("livenessProbe", {"periodSeconds": 5}, [("spec.containers[0].livenessProbe", "Required")],
                 id="no-handler"),
    pytest.param("readinessProbe", {**HTTP, "exec": {"command": ["true"]}},
                 [("spec.containers[0].readinessProbe.httpGet", "Forbidden")], id="two-handlers"),
    pytest.param("livenessProbe", {**HTTP, "successThreshold": 2},
                 [("spec.containers[0].livenessProbe.successThreshold", "Invalid")], id="liveness-success-1"),
    pytest.param("readinessProbe", {**HTTP, "successThreshold": 2}, [], id="readiness-success-any"),
    pytest.param("startupProbe", {"tcpSocket": {"port": "Not A Port"}},
                 [("spec.containers[0].startupProbe.tcpSocket.port", "Invalid")], id="port-name"),
    pytest.param("livenessProbe", {**HTTP, "periodSeconds": -1},
                 [("spec.containers[0].livenessProbe.periodSeconds", "Invalid")], id="negative-period"),
])
def test_probes(key, probe, expected):
    assert fields(validate(pod(containers=[ctr(**{key: probe})]))) == expected


def test_init_container_rules():
    plain = ctr(name="init", livenessProbe=HTTP)
    sidecar = ctr(name="side", restartPolicy="Always", livenessProbe=HTTP)
    assert fields(validate(pod(initContainers=[plain, sidecar]))) == \
        [("spec.initContainers[0].livenessProbe", "Forbidden")]


@pytest.mark.parametrize("tol,expected", [
    pytest.param({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}, [], id="valid"),
    pytest.param({"operator": "Equal", "value": "v"}, [("spec.tolerations[0].operator", "Invalid")],
                 id="empty-key-needs-exists"),
    pytest.param({"key": "k", "operator": "Exists", "value": "v"}, [("spec.tolerations[0].operator", "Invalid")],
                 id="exists-no-value"),
    pytest.param({"key": "k", "operator": "Exists", "tolerationSeconds": 5, "effect": "NoSchedule"},
                 [("spec.tolerations[0].effect", "Invalid")], id="seconds-need-noexecute"),
    pytest.param({"key": "k", "operator": "Exists", "effect": "Sometimes"},
                 [("spec.tolerations[0].effect", "NotSupported")], id="effect"),
])
def test_tolerations(tol, expected):
    assert fields(validate(pod(tolerations=[tol]))) == expected


@pytest.mark.parametrize("change,ok", [
    pytest.param(lambda s: s["containers"][0].update(image="nginx:2"), True, id="image"),
    pytest.param(lambda s: s.update(activeDeadlineSeconds=10), True, id="add-deadline"),
    pytest.param(lambda s: s.setdefault("tolerations", []).append({"key": "k", "operator": "Exists"}), True,
                 id="add-toleration"),
    pytest.param(lambda s: s["containers"][0].update(ports=[{"containerPort": 81}]), False, id="ports"),
    pytest.param(lambda s: s["containers"].append(ctr(name="two")), False, id="add-container"),
    pytest.param(lambda s: s.update(restartPolicy="Never"), False, id="restart-policy"),
])
def test_pod_update(change, ok):
    old = pod()
    new = copy.deepcopy(old)
    change(new["spec"])
    errs = validate(new, old)
    if ok:
        assert errs == []
    else:
        assert fields(errs) == [("spec", "Forbidden")]
        assert errs[0].detail.startswith(POD_UPDATE_MESSAGE)


def test_pod_update_deadline_may_only_shrink():
    old = pod(activeDeadlineSeconds=10)
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 20
    assert [(e.field, e.detail) for e in validate(new, old)] == \
        [("spec.activeDeadlineSeconds", "must be less than or equal to previous value")]
