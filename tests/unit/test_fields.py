"""Field selectors: parsing and escaping, per-kind selectable fields, unsupported-label errors."""

import pytest

from kubeling.api import errors, fields, kinds
from kubeling.api.fields import SelectorError

RES = {(r.group, r.kind): r for r in kinds.BUILTIN if r.discoverable}


@pytest.mark.parametrize("text, canonical, terms", [
    pytest.param("", "", [], id="empty"),
    pytest.param("status.phase=Running", "status.phase=Running", [("status.phase", "=", "Running")], id="eq"),
    pytest.param("a==b", "a=b", [("a", "=", "b")], id="double-eq"),
    pytest.param("a!=b", "a!=b", [("a", "!=", "b")], id="neq"),
    pytest.param("b=2,a=1", "a=1,b=2", [("a", "=", "1"), ("b", "=", "2")], id="sorted-and"),
    pytest.param("a=", "a=", [("a", "=", "")], id="empty-value"),
    pytest.param(r"a=x\,y\=z\\w", r"a=x\,y\=z\\w", [("a", "=", "x,y=z\\w")], id="escapes"),
    pytest.param("a=1,,b=2", "a=1,b=2", [("a", "=", "1"), ("b", "=", "2")], id="empty-term-skipped"),
    pytest.param("a!==b", r"a!=\=b", None, id="leftmost-operator-wins"),
])
def test_parse(text, canonical, terms):
    if terms is None:
        with pytest.raises(SelectorError):
            fields.parse(text)
        return
    sel = fields.parse(text)
    assert [(t.field, t.op, t.value) for t in sel.terms] == terms
    assert str(sel) == canonical
    assert fields.parse(str(sel)) == sel


@pytest.mark.parametrize("text, message", [
    pytest.param("bad", "invalid selector: 'bad'; can't understand 'bad'", id="no-operator"),
    pytest.param("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'", id="second-term"),
    pytest.param(r"a=b\q", r"invalid field selector: invalid escape sequence: \q", id="bad-escape"),
    pytest.param("a=b\\", "invalid field selector: invalid escape sequence: \\", id="trailing-backslash"),
    pytest.param("a=b=c", "invalid field selector: unescaped character in value: 61", id="unescaped-equals"),
])
def test_parse_errors(text, message):
    with pytest.raises(SelectorError) as e:
        fields.parse(text)
    assert str(e.value) == message


POD = {"metadata": {"name": "web-1", "namespace": "prod"},
       "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "serviceAccountName": "default", "hostNetwork": True},
       "status": {"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}]}}


@pytest.mark.parametrize("selector, matches", [
    pytest.param("spec.nodeName=n1", True, id="node"),
    pytest.param("spec.nodeName=", False, id="unscheduled"),
    pytest.param("status.phase!=Running", False, id="phase"),
    pytest.param("status.phase=Running,metadata.namespace=prod", True, id="and"),
    pytest.param("spec.hostNetwork=true", True, id="host-network"),
    pytest.param("status.podIP=10.0.0.7", True, id="pod-ip"),
    pytest.param("status.nominatedNodeName=", True, id="no-nominated-node"),
    pytest.param("metadata.name=web-1", True, id="name"),
])
def test_pod_fields(selector, matches):
    r = RES[("", "Pod")]
    sel = fields.validate(r, selector)
    assert sel.matches(fields.object_fields(r, POD)) is matches


def test_pod_fields_values():
    got = fields.object_fields(RES[("", "Pod")], {"metadata": {"name": "p", "namespace": "d"}})
    assert got == {"metadata.name": "p", "metadata.namespace": "d", "spec.nodeName": "", "spec.restartPolicy": "",
                   "spec.schedulerName": "", "spec.serviceAccountName": "", "spec.hostNetwork": "false",
                   "status.phase": "", "status.podIP": "", "status.nominatedNodeName": ""}


CORE_EVENT = {"metadata": {"name": "e1", "namespace": "default"}, "type": "Warning", "reason": "BackOff",
              "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u-1",
                                 "apiVersion": "v1", "resourceVersion": "12", "fieldPath": "spec.containers{c}"},
              "source": {"component": "kubelet", "host": "n1"}}
NEW_EVENT = {"metadata": {"name": "e2", "namespace": "default"}, "type": "Normal", "reason": "Scheduled",
             "regarding": {"kind": "Pod", "name": "web-2", "namespace": "default"},
             "reportingController": "default-scheduler"}


@pytest.mark.parametrize("group, obj, selector, matches", [
    pytest.param("", CORE_EVENT, "involvedObject.kind=Pod,involvedObject.name=web-1", True, id="core-involved"),
    pytest.param("", CORE_EVENT, "involvedObject.uid=u-1,involvedObject.resourceVersion=12", True, id="core-uid"),
    pytest.param("", CORE_EVENT, "involvedObject.fieldPath=spec.containers{c}", True, id="core-fieldpath"),
    pytest.param("", CORE_EVENT, "type!=Normal,reason=BackOff,source=kubelet", True, id="core-type-reason-source"),
    pytest.param("", CORE_EVENT, "reportingComponent=kubelet", False, id="core-no-reporting-component"),
    pytest.param("events.k8s.io", NEW_EVENT, "involvedObject.name=web-2,reportingComponent=default-scheduler",
                 True, id="new-api-regarding"),
    pytest.param("events.k8s.io", NEW_EVENT, "source=default-scheduler", True, id="new-api-source-fallback"),
])
def test_event_fields(group, obj, selector, matches):
    r = RES[(group, "Event")]
    assert fields.validate(r, selector).matches(fields.object_fields(r, obj)) is matches


@pytest.mark.parametrize("group, kind, obj, expected", [
    pytest.param("", "Secret", {"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls"},
                 {"type": "kubernetes.io/tls"}, id="secret"),
    pytest.param("", "Namespace", {"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}},
                 {"status.phase": "Terminating"}, id="namespace"),
    pytest.param("", "Node", {"metadata": {"name": "n"}, "spec": {"unschedulable": True}},
                 {"spec.unschedulable": "true"}, id="node"),
    pytest.param("apps", "ReplicaSet", {"metadata": {"name": "r", "namespace": "d"}, "status": {"replicas": 3}},
                 {"status.replicas": "3"}, id="replicaset"),
    pytest.param("", "ReplicationController", {"metadata": {"name": "r", "namespace": "d"}},
                 {"status.replicas": "0"}, id="rc"),
    pytest.param("batch", "Job", {"metadata": {"name": "j", "namespace": "d"}, "status": {"succeeded": 1}},
                 {"status.successful": "1"}, id="job"),
    pytest.param("", "Service", {"metadata": {"name": "s", "namespace": "d"},
                                 "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}},
                 {"spec.clusterIP": "10.96.0.1", "spec.type": "ClusterIP"}, id="service"),
])
def test_kind_fields(group, kind, obj, expected):
    got = fields.object_fields(RES[(group, kind)], obj)
    assert {k: got[k] for k in expected} == expected
    assert got["metadata.name"] == obj["metadata"]["name"]
    assert ("metadata.namespace" in got) is RES[(group, kind)].namespaced


@pytest.mark.parametrize("group, kind, selector, message", [
    pytest.param("", "Pod", "status.hostIP=1.2.3.4", "field label not supported: status.hostIP", id="pod"),
    pytest.param("", "Node", "metadata.namespace=x", "field label not supported: metadata.namespace", id="node"),
    pytest.param("", "Event", "note=x", "field label not supported: note", id="event"),
    pytest.param("networking.k8s.io", "Ingress", "foo.bar=baz",
                 '"foo.bar" is not a known field selector: only "metadata.name", "metadata.namespace"',
                 id="default-conversion"),
    pytest.param("apps", "Deployment", "spec.replicas=1",
                 '"spec.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"',
                 id="deployment"),
    pytest.param("", "ConfigMap", "bad", "invalid selector: 'bad'; can't understand 'bad'", id="parse-error"),
])
def test_validate_rejects(group, kind, selector, message):
    with pytest.raises(errors.StatusError) as e:
        fields.validate(RES[(group, kind)], selector)
    assert (e.value.code, e.value.reason, e.value.message) == (400, "BadRequest", message)


def test_validate_renames_legacy_pod_label():
    assert str(fields.validate(RES[("", "Pod")], "spec.host=n1")) == "spec.nodeName=n1"


def test_custom_resource_selectable_fields():
    r = kinds.Resource("stable.example.com", "v1", "shirts", "Shirt", crd=True,
                       extra={"selectableFields": [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.size"},
                                                   {"jsonPath": ".spec.count"}]})
    obj = {"metadata": {"name": "s1", "namespace": "d"}, "spec": {"color": "blue", "count": 3}}
    assert fields.object_fields(r, obj) == {"metadata.name": "s1", "metadata.namespace": "d",
                                            "spec.color": "blue", "spec.count": "3"}
    assert fields.validate(r, "spec.color=blue,spec.size=").matches(fields.object_fields(r, obj))
    with pytest.raises(errors.StatusError) as e:
        fields.validate(r, "spec.weight=1")
    assert e.value.message == "field label not supported: spec.weight"


def test_cluster_scoped_custom_resource_has_no_namespace_field():
    r = kinds.Resource("example.com", "v1", "things", "Thing", namespaced=False, crd=True)
    assert fields.object_fields(r, {"metadata": {"name": "t"}}) == {"metadata.name": "t"}
    with pytest.raises(errors.StatusError):
        fields.validate(r, "metadata.namespace=x")


def test_requires_exact_match():
    sel = fields.parse("spec.nodeName=n1,status.phase!=Failed")
    assert sel.requires_exact_match("spec.nodeName") == "n1"
    assert sel.requires_exact_match("status.phase") is None
