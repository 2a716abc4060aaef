"""Events, as upstream's ``pkg/apis/core/validation/events.go``.

core/v1 Events and events.k8s.io/v1 Events are one stored object (upstream's internal
``core.Event``) seen through two APIs with renamed fields:

    events.k8s.io/v1          core/v1 (storage)        internal name (used in error paths)
    regarding                 involvedObject           involvedObject
    note                      message                  message
    reportingController       reportingComponent       reportingController
    deprecatedCount           count                    count
    deprecatedFirstTimestamp  firstTimestamp           firstTimestamp
    deprecatedLastTimestamp   lastTimestamp            lastTimestamp
    deprecatedSource          source                   source

Which rules apply depends on the API the client wrote through, not on the object's shape:
- every Event passes the *legacy* rules. Without ``eventTime`` (old-style events) they only tie
  the event's namespace to its object's; with ``eventTime`` they also require who reported what
  (``reportingController`` a qualified name, ``reportingInstance``, ``action``, ``reason``) and
  bound the lengths;
- written through core/v1 nothing else is checked. In particular upstream's Event strategy runs no
  ObjectMeta name rule of its own, so only the generic path-segment rule applies to the name
  (``generateName: "p1."`` is accepted there);
- written through events.k8s.io/v1 the *strict* rules follow: ObjectMeta with DNS-subdomain names,
  ``eventTime`` required, ``type`` Normal or Warning, the deprecated fields unset, a valid
  ``series``; on update most fields are immutable.

The checks read either shape (`_internal` picks the field names from the object's apiVersion), so
they hold whether the registry validates the object before or after converting it to storage.
Error paths use the internal names, as upstream's do whichever version was written.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, invalid_value, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.kind import Kind

EVENT_TYPES = ("Normal", "Warning")
REPORTING_INSTANCE_LIMIT = 128
ACTION_LIMIT = 128
REASON_LIMIT = 128
NOTE_LIMIT = 1024
# Events without an involved object's namespace may live only here (old clients wrote them so).
_CLUSTER_EVENT_NAMESPACES = ("default", "kube-system")

# internal name -> (core/v1 name, events.k8s.io/v1 name)
_NAMES = {
    "involvedObject": ("involvedObject", "regarding"),
    "message": ("message", "note"),
    "reportingController": ("reportingComponent", "reportingController"),
    "count": ("count", "deprecatedCount"),
    "firstTimestamp": ("firstTimestamp", "deprecatedFirstTimestamp"),
    "lastTimestamp": ("lastTimestamp", "deprecatedLastTimestamp"),
    "source": ("source", "deprecatedSource"),
}
_SAME = ("reportingInstance", "action", "reason", "type", "eventTime", "series", "related")
# Fields an events.k8s.io/v1 update may not change, in upstream's order; upstream checks
# ``reason`` twice, so a changed reason is reported twice, and so do we.
_IMMUTABLE = ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
              "reason", "type", "eventTime", "action", "related", "reportingController", "reportingInstance")


def _internal(ev: dict) -> dict[str, Any]:
    """The event's fields under upstream's internal names, read from either API's shape."""
    which = 1 if (ev.get("apiVersion") or "").startswith("events.k8s.io/") else 0
    out = {internal: ev.get(names[which]) for internal, names in _NAMES.items()}
    out.update((k, ev.get(k)) for k in _SAME)
    out["namespace"] = (ev.get("metadata") or {}).get("namespace") or ""
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _too_long(ev: dict, key: str, limit: int) -> list[FieldError]:
    if len(_text(ev[key])) > limit:
        return [invalid_value(key, "", f"can have at most {limit} characters")]
    return []


def _legacy(ev: dict) -> list[FieldError]:
    """Rules every Event passes, whichever API wrote it (upstream's legacyValidateEvent)."""
    errs: list[FieldError] = []
    ns = ev["namespace"]
    involved_ns = _text((ev["involvedObject"] or {}).get("namespace"))
    mismatch = invalid_value("involvedObject.namespace", involved_ns, "does not match event.namespace")
    if not ev["eventTime"]:
        # Old-style events: the event lives in its object's namespace, or in default (or none) for
        # cluster-scoped objects.
        if (involved_ns and ns != involved_ns) or (not involved_ns and ns not in ("", "default")):
            errs.append(mismatch)
    else:
        if not involved_ns and ns not in _CLUSTER_EVENT_NAMESPACES:
            errs.append(mismatch)
        controller = _text(ev["reportingController"])
        if not controller:
            errs.append(required("reportingController", ""))
        errs += [invalid_value("reportingController", controller, m) for m in util.is_qualified_name(controller)]
        for key, limit in (("reportingInstance", REPORTING_INSTANCE_LIMIT), ("action", ACTION_LIMIT),
                           ("reason", REASON_LIMIT)):
            if not _text(ev[key]):
                errs.append(required(key, ""))
            errs += _too_long(ev, key, limit)
        errs += _too_long(ev, "message", NOTE_LIMIT)
    errs += [invalid_value("namespace", ns, m) for m in util.is_dns1123_subdomain(ns)]
    return errs


def _series(ev: dict) -> list[FieldError]:
    series = ev["series"]
    if not isinstance(series, dict):
        return []
    errs: list[FieldError] = []
    count = series.get("count")
    if not isinstance(count, int) or count < 2:
        errs.append(invalid_value("series.count", "", "should be at least 2"))
    if not series.get("lastObservedTime"):
        errs.append(required("series.lastObservedTime", ""))
    return errs


def _strict(event: dict) -> list[FieldError]:
    """What events.k8s.io/v1 adds on create (its ObjectMeta rules run with the Kind's name rule)."""
    ev = _internal(event)
    errs = _series(ev)
    if not ev["eventTime"]:
        errs.append(required("eventTime", ""))
    if ev["type"] not in EVENT_TYPES:
        errs.append(invalid_value("type", "", f"has invalid value: {_text(ev['type'])}"))
    for key in ("firstTimestamp", "lastTimestamp", "count"):
        if ev[key]:
            errs.append(invalid_value(key, "", "needs to be unset"))
    source = ev["source"] or {}
    if source.get("component") or source.get("host"):
        errs.append(invalid_value("source", "", "needs to be unset"))
    return errs


def validate_event(event: dict) -> list[FieldError]:
    """The legacy rules: every Event, on create and update, through either API."""
    return _legacy(_internal(event))


def validate_events_v1_update(new: dict, old: dict) -> list[FieldError]:
    """An update written through events.k8s.io/v1: a changed series must be valid, and what was
    reported stays as it was."""
    ev, was = _internal(new), _internal(old)
    errs = _series(ev) if ev["series"] != was["series"] else []
    for key in _IMMUTABLE:
        errs += meta.immutable(ev[key], was[key], key)
    return errs


KINDS = {
    ("", "Event"): Kind(validate_event, name=meta.name_is_path_segment),
    ("events.k8s.io", "Event"): Kind(validate_event, validate_events_v1_update, create_only=_strict),
}
