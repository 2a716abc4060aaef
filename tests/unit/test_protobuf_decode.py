"""Protobuf bodies -> the JSON dict Go's encoder makes of the same object.

Objects below are written in the exact JSON form Go produces (``creationTimestamp: null`` for a
zero time, ``resources: {}`` for an empty non-pointer struct, pointer zeros kept, omitempty zeros
dropped). Each is encoded as kubectl's gogo marshaller would (`encode_object`) and must decode
back unchanged; the hand-built wire tests pin the rules independently of the encoder. The
schema table is the one `descriptors.load()` finds (``make clients`` installs it).
"""

from __future__ import annotations

import base64

import orjson
import pytest

from kubeling.api import errors, protobuf
from kubeling.api.protobuf import decode as dec
from kubeling.api.protobuf import descriptors, wire
from kubeling.api.protobuf.encode import encode_object, parse_go_duration
from kubeling.apiserver import negotiation

T = "2026-01-02T03:04:05Z"


@pytest.fixture(scope="module")
def table() -> descriptors.Table:
    try:
        return descriptors.load()
    except descriptors.Unavailable as e:
        pytest.fail(str(e), pytrace=False)


def meta(name="x", namespace=None, **extra) -> dict:
    m = {"name": name}
    if namespace:
        m["namespace"] = namespace
    m["creationTimestamp"] = None
    m.update(extra)
    return m


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "resourceVersion": "7", "generation": 2,
                 "creationTimestamp": T, "labels": {"app": "web"},
                 "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u-0",
                                      "controller": True}],
                 "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                                    "time": T, "fieldsType": "FieldsV1",
                                    "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
    "spec": {
        "replicas": 0,  # *int32 set to zero: kept
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {
                "volumes": [{"name": "cfg", "configMap": {"name": "c1", "defaultMode": 420}}],
                "containers": [{
                    "name": "web", "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "b"},
                            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                                      "initialDelaySeconds": 3, "timeoutSeconds": 1, "periodSeconds": 10,
                                      "successThreshold": 1, "failureThreshold": 3},
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "periodSeconds": 5},
                }],
                "terminationGracePeriodSeconds": 0,
                "securityContext": {"runAsUser": 0, "supplementalGroups": [1, 2]},
            },
        },
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
        "revisionHistoryLimit": 10,
    },
    "status": {"replicas": 2, "conditions": [
        {"type": "Available", "status": "True", "lastUpdateTime": T, "lastTransitionTime": T,
         "reason": "MinimumReplicasAvailable", "message": "ok"}]},
}

ROUND_TRIPS = [
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c1", "ns", labels={"a": "b"}),
                  "immutable": False, "data": {"k": "v", "empty": ""},
                  "binaryData": {"bin": base64.b64encode(b"\x00\xff").decode()}}, id="configmap"),
    pytest.param({"apiVersion": "v1", "kind": "Secret", "metadata": meta("s", "ns"),
                  "data": {"k": "dg==", "empty": ""}, "type": "Opaque"}, id="secret-bytes"),
    pytest.param({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("x"), "spec": {}, "status": {}},
                 id="namespace"),
    pytest.param(DEPLOYMENT, id="deployment"),
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": meta("s", "ns"),
                  "spec": {"ports": [{"name": "web", "protocol": "TCP", "port": 80, "targetPort": "http"}],
                           "selector": {"app": "s"}, "type": "ClusterIP"}, "status": {"loadBalancer": {}}},
                 id="service-named-target-port"),
    pytest.param({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "metadata": {"creationTimestamp": None},
                  "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
                  "status": {"allowed": False}}, id="selfsubjectaccessreview"),
    pytest.param({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "metadata": {"creationTimestamp": None},
                  "spec": {"nonResourceAttributes": {"path": "/logs", "verb": "get"}, "user": "u",
                           "groups": ["g"], "extra": {"scopes": ["a", "b"]}},
                  "status": {"allowed": True, "reason": "ok"}}, id="subjectaccessreview-extra-value"),
    pytest.param({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                  "preconditions": {"uid": "abc"}, "orphanDependents": False,
                  "propagationPolicy": "Foreground", "dryRun": ["All"]}, id="deleteoptions-zero-grace"),
    pytest.param({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": meta("p", "ns"),
                  "deleteOptions": {"gracePeriodSeconds": 30}}, id="eviction"),
    pytest.param({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("d", "ns"),
                  "spec": {}, "status": {"replicas": 0}}, id="scale-zero"),
    pytest.param({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta("e", "ns"),
                  "eventTime": "2026-01-02T03:04:05.123456Z",
                  "series": {"count": 2, "lastObservedTime": "2026-01-02T03:04:06.000001Z"},
                  "reportingController": "c", "reportingInstance": "i", "action": "A", "reason": "R",
                  "regarding": {"kind": "Pod", "name": "p"}, "note": "n", "type": "Normal",
                  "deprecatedSource": {}, "deprecatedFirstTimestamp": None,
                  "deprecatedLastTimestamp": None}, id="event-microtime"),
    pytest.param({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta("r", "ns"),
                  "data": {"spec": {"x": [1, "two"]}}, "revision": 3}, id="controllerrevision-raw"),
    pytest.param({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta("cr"),
                  "rules": [{"verbs": ["get"], "nonResourceURLs": ["/logs"]}]}, id="clusterrole"),
]


@pytest.mark.parametrize("obj", ROUND_TRIPS)
def test_round_trip_reproduces_go_json(table, obj):
    assert dec.decode_object(encode_object(obj, table), table=table) == obj


def test_kubectl_style_deployment_drops_omitempty_zeros(table):
    # gogo writes every non-pointer scalar; an all-defaults Deployment decodes to Go's JSON.
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    got = dec.decode_object(encode_object(obj, table), table=table)
    assert got == {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "creationTimestamp": None},
                   "spec": {"template": {"metadata": {"creationTimestamp": None},
                                         "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}},
                            "strategy": {}},
                   "status": {}}


# -- wire rules pinned by hand-built bytes ------------------------------------------------------

def _unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = wire.len_field(1, api_version.encode()) + wire.len_field(2, kind.encode())
    return dec.MAGIC + wire.len_field(1, type_meta) + wire.len_field(2, raw)


def _scale_spec(replicas: int) -> bytes:
    return wire.len_field(2, wire.varint_field(1, replicas))


def test_present_zero_pointer_is_kept_and_plain_zero_dropped(table):
    # DeploymentSpec.replicas is *int32 (kept at 0); ScaleSpec.replicas is int32,omitempty.
    dep = dec.decode_object(_unknown("apps/v1", "Deployment", wire.len_field(2, wire.varint_field(1, 0))),
                            table=table)
    assert dep["spec"] == {"replicas": 0}
    scale = dec.decode_object(_unknown("autoscaling/v1", "Scale", _scale_spec(0)), table=table)
    assert scale["spec"] == {}
    assert dec.decode_object(_unknown("autoscaling/v1", "Scale", _scale_spec(3)), table=table)["spec"] == {
        "replicas": 3}


def test_negative_int32_and_packed_repeated(table):
    ctx_unpacked = wire.varint_field(4, 1) + wire.varint_field(4, 2)  # supplementalGroups
    ctx_packed = wire.len_field(4, wire.varint(1) + wire.varint(2))
    for ctx in (ctx_unpacked, ctx_packed):
        pod_spec = wire.len_field(14, ctx + wire.varint_field(2, -5))  # runAsUser -5
        pod = dec.decode_object(_unknown("v1", "Pod", wire.len_field(2, pod_spec)), table=table)
        assert pod["spec"]["securityContext"] == {"runAsUser": -5, "supplementalGroups": [1, 2]}


def test_unknown_fields_are_skipped(table):
    raw = wire.len_field(2, wire.len_field(1, b"k") + wire.len_field(2, b"v"))  # data: {k: v}
    raw += wire.varint_field(99, 1) + wire.len_field(98, b"junk")
    assert dec.decode_object(_unknown("v1", "ConfigMap", raw), table=table)["data"] == {"k": "v"}


def test_time_keeps_whole_seconds_and_empty_time_is_null(table):
    stamp = wire.varint_field(1, 1767323045) + wire.varint_field(2, 999)
    ns_meta = wire.len_field(1, wire.len_field(8, stamp))
    assert dec.decode_object(_unknown("v1", "Namespace", ns_meta), table=table)["metadata"] == {
        "creationTimestamp": "2026-01-02T03:04:05Z"}
    empty = wire.len_field(1, wire.len_field(8, b""))
    assert dec.decode_object(_unknown("v1", "Namespace", empty), table=table)["metadata"] == {
        "creationTimestamp": None}


def test_int_or_string(table):
    def port(value: bytes) -> object:
        svc_port = wire.varint_field(3, 80) + wire.len_field(4, value)
        svc = dec.decode_object(_unknown("v1", "Service", wire.len_field(2, wire.len_field(1, svc_port))),
                                table=table)
        return svc["spec"]["ports"][0]["targetPort"]

    assert port(wire.varint_field(1, 0) + wire.varint_field(2, 8080)) == 8080
    assert port(wire.varint_field(1, 1) + wire.len_field(3, b"http")) == "http"


def test_nested_protobuf_inside_raw_extension(table):
    inner = _unknown("v1", "ConfigMap", wire.len_field(2, wire.len_field(1, b"a") + wire.len_field(2, b"b")))
    revision = wire.len_field(2, wire.len_field(1, inner))
    got = dec.decode_object(_unknown("apps/v1", "ControllerRevision", revision), table=table)
    assert got["data"] == {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}


@pytest.mark.parametrize("ns,text", [
    pytest.param(0, "0s", id="zero"),
    pytest.param(1, "1ns", id="ns"),
    pytest.param(1500, "1.5µs", id="micro"),
    pytest.param(250_000_000, "250ms", id="milli"),
    pytest.param(90 * 10**9, "1m30s", id="minutes"),
    pytest.param(3600 * 10**9, "1h0m0s", id="hour"),
    pytest.param(-(1500 * 10**6), "-1.5s", id="negative"),
    pytest.param(26 * 3600 * 10**9 + 3 * 10**9 + 5, "26h0m3.000000005s", id="hours-with-nanos"),
])
def test_go_duration_strings(table, ns, text):
    assert dec.go_duration(ns) == text
    assert parse_go_duration(text) == ns
    duration = dec._Decoder(table).message(f"{dec.META}.Duration", wire.varint_field(1, ns))
    assert duration == text


# -- kinds and errors --------------------------------------------------------------------------

@pytest.mark.parametrize("api_version,kind,message", [
    pytest.param("v1", "Event", "k8s.io.api.core.v1.Event", id="core-event"),
    pytest.param("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event", id="events-event"),
    pytest.param("rbac.authorization.k8s.io/v1", "Role", "k8s.io.api.rbac.v1.Role", id="rbac"),
    pytest.param("apps/v1beta1", "Scale", "k8s.io.api.apps.v1beta1.Scale", id="apps-scale"),
    pytest.param("v1", "DeleteOptions", f"{dec.META}.DeleteOptions", id="meta-in-core"),
    pytest.param("apps/v1", "DeleteOptions", f"{dec.META}.DeleteOptions", id="meta-in-group"),
    pytest.param("meta.k8s.io/v1", "DeleteOptions", f"{dec.META}.DeleteOptions", id="meta-group"),
    pytest.param("internal.apiserver.k8s.io/v1alpha1", "StorageVersion",
                 "k8s.io.api.apiserverinternal.v1alpha1.StorageVersion", id="only-candidate"),
])
def test_message_for_kind(table, api_version, kind, message):
    assert dec.message_for(table, api_version, kind) == message


def test_unknown_kind(table):
    with pytest.raises(dec.UnknownKind, match='no kind "Nope" is registered for version "v1"'):
        dec.decode_object(_unknown("v1", "Nope", b""), table=table)


def test_expected_gvk_fills_empty_type_meta(table):
    got = dec.decode_object(dec.MAGIC + wire.len_field(2, wire.len_field(1, wire.len_field(1, b"n"))),
                            expected_gvk=("", "v1", "Namespace"), table=table)
    assert got["apiVersion"] == "v1" and got["kind"] == "Namespace" and got["metadata"]["name"] == "n"


@pytest.mark.parametrize("body", [
    pytest.param(b'{"kind": "ConfigMap"}', id="json-not-protobuf"),
    pytest.param(dec.MAGIC + b"\x0a\x7f", id="truncated-envelope"),
    pytest.param(dec.MAGIC + wire.len_field(2, b"\x0a\x05ab"), id="no-kind"),
])
def test_malformed_bodies_are_400(table, body):
    with pytest.raises(errors.StatusError) as e:
        protobuf.decode_body(body)
    assert e.value.code == 400


def test_truncated_object_is_400(table):
    with pytest.raises(errors.StatusError) as e:
        protobuf.decode_body(_unknown("v1", "ConfigMap", b"\x0a\x7f"))
    assert e.value.code == 400 and "malformed ConfigMap protobuf" in str(e.value.message)


def test_missing_schemas_are_415_with_install_hint(monkeypatch):
    def unavailable():
        raise descriptors.Unavailable("protobuf schemas are unavailable (none); " + descriptors.INSTALL_HINT)

    monkeypatch.setattr(descriptors, "load", unavailable)
    with pytest.raises(errors.StatusError) as e:
        protobuf.decode_body(_unknown("v1", "ConfigMap", b""))
    assert e.value.code == 415 and e.value.reason == "UnsupportedMediaType"
    assert "protobuf schemas are unavailable" in e.value.message and "make clients" in e.value.message


def test_negotiation_decodes_protobuf_bodies(table):
    body = encode_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c"), "data": {"a": "b"}},
                         table)
    got = negotiation.decode_body(body, "application/vnd.kubernetes.protobuf")
    assert orjson.loads(orjson.dumps(got)) == {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "c", "creationTimestamp": None},
                                               "data": {"a": "b"}}
