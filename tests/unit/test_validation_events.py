"""Events: legacy rules for every Event, strict rules for those written through events.k8s.io/v1.

The registry validates an Event after converting it to its storage version (core/v1), passing
the version the client wrote as ``request_version``; the same rules must hold for an
events.k8s.io/v1 object validated as written.
"""

import copy

import pytest

from kubeling.api.validation import validate

NOW = "2024-01-01T00:00:00.000000Z"


def core_event(meta=None, **fields):
    m = {"name": "p1.17a", "namespace": "default"}
    m.update(meta or {})
    ev = {"apiVersion": "v1", "kind": "Event", "metadata": m,
          "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"}}
    ev.update(fields)
    return {k: v for k, v in ev.items() if v is not None}


def new_core_event(**fields):
    """A core/v1 event with eventTime: what events.k8s.io/v1 becomes in storage."""
    base = dict(eventTime=NOW, reportingComponent="kubeling.io/tester", reportingInstance="node-1",
                action="Testing", reason="Tested", type="Normal", message="hello")
    base.update(fields)
    return core_event(**base)


def events_v1(meta=None, **fields):
    m = {"name": "p1.17a", "namespace": "default"}
    m.update(meta or {})
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": m, "eventTime": NOW,
          "reportingController": "kubeling.io/tester", "reportingInstance": "node-1", "action": "Testing",
          "reason": "Tested", "type": "Normal", "note": "hello",
          "regarding": {"kind": "Pod", "name": "p1", "namespace": "default"}}
    ev.update(fields)
    return {k: v for k, v in ev.items() if v is not None}


def fields(errs):
    return [(e.field, e.kind) for e in errs]


CORE = "v1"
EVENTS = "events.k8s.io/v1"


@pytest.mark.parametrize("obj,request_version,expected", [
    # -- legacy rules (every event) ---------------------------------------------------------
    pytest.param(core_event(reason="Started"), CORE, [], id="old-style-valid"),
    pytest.param(core_event(involvedObject={"kind": "Pod", "name": "p", "namespace": "other"}), CORE,
                 [("involvedObject.namespace", "Invalid")], id="old-style-namespace-mismatch"),
    pytest.param(core_event(involvedObject={"kind": "Node", "name": "n1"}), CORE, [],
                 id="old-style-cluster-object-in-default"),
    pytest.param(core_event(meta={"namespace": "team-a"}, involvedObject={"kind": "Node", "name": "n1"}), CORE,
                 [("involvedObject.namespace", "Invalid")], id="old-style-cluster-object-elsewhere"),
    pytest.param(new_core_event(), CORE, [], id="new-style-core-valid"),
    # Legacy rules do not look at the type: only events.k8s.io/v1 restricts it.
    pytest.param(new_core_event(type="Info"), CORE, [], id="core-any-type"),
    pytest.param(new_core_event(reportingComponent=None), CORE,
                 [("reportingController", "Required"), ("reportingController", "Invalid"),
                  ("reportingController", "Invalid")], id="core-reporting-controller-required"),
    pytest.param(new_core_event(reportingComponent="not a name"), CORE, [("reportingController", "Invalid")],
                 id="core-reporting-controller-qualified-name"),
    pytest.param(new_core_event(reportingInstance=None, action="", reason=None), CORE,
                 [("reportingInstance", "Required"), ("action", "Required"), ("reason", "Required")],
                 id="core-who-what-why-required"),
    pytest.param(new_core_event(action="a" * 129, message="m" * 1025), CORE,
                 [("action", "Invalid"), ("message", "Invalid")], id="core-lengths"),
    pytest.param(new_core_event(involvedObject={"kind": "Node", "name": "n1"}), CORE, [],
                 id="new-style-cluster-object-in-default"),
    pytest.param(new_core_event(meta={"namespace": "kube-system"}, involvedObject={"kind": "Node", "name": "n"}),
                 CORE, [], id="new-style-cluster-object-in-kube-system"),
    # A core/v1 event runs no DNS name rule: a generated name's prefix may end in '.'.
    pytest.param(core_event(meta={"name": "p1.x7k2q", "generateName": "p1."}), CORE, [], id="core-generate-name-dot"),
    pytest.param(core_event(meta={"name": "a/b"}), CORE, [("metadata.name", "Invalid")], id="core-name-path-segment"),
    # -- strict rules (written through events.k8s.io/v1) ------------------------------------
    pytest.param(events_v1(), EVENTS, [], id="events-v1-valid"),
    pytest.param(new_core_event(), EVENTS, [], id="events-v1-valid-in-storage-shape"),
    pytest.param(events_v1(meta={"name": "p1.x7k2q", "generateName": "p1."}), EVENTS,
                 [("metadata.generateName", "Invalid")], id="events-v1-generate-name-dns"),
    pytest.param(events_v1(reportingController=None), EVENTS,
                 [("reportingController", "Required"), ("reportingController", "Invalid"),
                  ("reportingController", "Invalid")], id="events-v1-reporting-controller-required"),
    pytest.param(events_v1(eventTime=None), EVENTS, [("eventTime", "Required")], id="events-v1-event-time"),
    pytest.param(events_v1(type="Info", action=None), EVENTS, [("action", "Required"), ("type", "Invalid")],
                 id="events-v1-action-type"),
    pytest.param(events_v1(deprecatedCount=3, deprecatedFirstTimestamp=NOW, deprecatedSource={"component": "x"}),
                 EVENTS, [("firstTimestamp", "Invalid"), ("count", "Invalid"), ("source", "Invalid")],
                 id="events-v1-deprecated-fields-unset"),
    pytest.param(new_core_event(count=3, source={"host": "n1"}), EVENTS,
                 [("count", "Invalid"), ("source", "Invalid")], id="events-v1-deprecated-fields-storage-shape"),
    pytest.param(events_v1(series={"count": 1}), EVENTS,
                 [("series.count", "Invalid"), ("series.lastObservedTime", "Required")], id="events-v1-series"),
    pytest.param(events_v1(series={"count": 2, "lastObservedTime": NOW}), EVENTS, [], id="events-v1-series-valid"),
    pytest.param(events_v1(regarding={"kind": "Node", "name": "n1"}, metadata={"name": "e", "namespace": "team"}),
                 EVENTS, [("involvedObject.namespace", "Invalid")], id="events-v1-cluster-object-namespace"),
])
def test_event_create(obj, request_version, expected):
    assert fields(validate(obj, request_version=request_version)) == expected


@pytest.mark.parametrize("obj,expected", [
    pytest.param(core_event(reason="Started"), [], id="core"),
    pytest.param(events_v1(type="Info"), [("type", "Invalid")], id="events-v1"),
])
def test_event_rules_follow_the_object_without_request_version(obj, expected):
    assert fields(validate(obj)) == expected


def test_event_messages_match_upstream():
    errs = validate(events_v1(reportingController="", type="Info", deprecatedCount=2, note="n" * 1025),
                    request_version=EVENTS)
    assert [str(e) for e in errs] == [
        "reportingController: Required value",
        'reportingController: Invalid value: "": name part must be non-empty',
        'reportingController: Invalid value: "": name part must consist of alphanumeric characters, '
        "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or "
        "'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        'message: Invalid value: "": can have at most 1024 characters',
        'type: Invalid value: "": has invalid value: Info',
        'count: Invalid value: "": needs to be unset',
    ]


@pytest.mark.parametrize("change,expected", [
    pytest.param({"deprecatedCount": 2}, [("count", "Invalid")], id="count"),
    pytest.param({"reason": "Other"}, [("reason", "Invalid"), ("reason", "Invalid")], id="reason-reported-twice"),
    pytest.param({"series": {"count": 1, "lastObservedTime": NOW}}, [("series.count", "Invalid")],
                 id="changed-series-validated"),
    pytest.param({"reportingController": "other.io/x", "reportingInstance": "node-2"},
                 [("reportingController", "Invalid"), ("reportingInstance", "Invalid")], id="reporter"),
    pytest.param({"metadata": {"name": "p1.17a", "namespace": "default", "labels": {"a": "b"}}}, [],
                 id="labels-may-change"),
])
def test_events_v1_update(change, expected):
    old = events_v1()
    new = copy.deepcopy(old)
    new.update(copy.deepcopy(change))
    assert fields(validate(new, old, request_version=EVENTS)) == expected


def test_events_v1_update_keeps_fields_a_core_client_set():
    """The create-only rules do not apply on update: an event written through core/v1 with the
    deprecated fields can be relabelled through events.k8s.io/v1."""
    old = new_core_event(count=3, firstTimestamp=NOW)
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"seen": "yes"}
    assert validate(new, old, request_version=EVENTS) == []


def test_core_update_has_no_immutable_fields():
    old = new_core_event()
    new = copy.deepcopy(old)
    new.update(reason="Other", count=4, message="again")
    assert validate(new, old, request_version=CORE) == []
