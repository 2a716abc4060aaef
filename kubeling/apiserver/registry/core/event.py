"""Events (upstream ``pkg/registry/core/event``), served as ``v1`` and ``events.k8s.io/v1``.

Both versions share one storage, in core ``v1``'s shape (as upstream stores events.k8s.io Events
through the core internal type). Between them only field names differ (``regarding`` ↔
``involvedObject``, ``note`` ↔ ``message``, ``deprecatedCount`` ↔ ``count`` ...). Each version is
validated with its own rules (`kubeling.api.validation.events`): events.k8s.io/v1 is strict on
create and keeps what was reported immutable. PUT creates a missing Event, as recorders rely on.
"""

import copy

from kubeling.api import fields, validation
from kubeling.api.printers import core as printers
from kubeling.api.printers import other as other_printers
from kubeling.api.validation import meta
from kubeling.apiserver.registry.strategy import Strategy

# events.k8s.io/v1 field -> core/v1 field
RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedCount": "count",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedSource": "source",
    "reportingController": "reportingComponent",
}


class EventStrategy(Strategy):
    group, resource, kind = "", "events", "Event"
    name_rule = staticmethod(meta.name_is_path_segment)
    printer = printers.EVENT
    field_set = fields.EVENT
    allow_create_on_update = True

    def check(self, obj, old, served=None):
        version = served.res.group_version if served is not None else None
        return validation.validate(obj, old, request_version=version)

    def printer_for(self, served):
        return other_printers.EVENTS_EVENT if served.res.group == "events.k8s.io" else self.printer

    def to_storage(self, obj, served):
        if served.res.group != "events.k8s.io":
            return obj
        out = copy.deepcopy(obj)
        out["apiVersion"] = "v1"
        for new, old in RENAMES.items():
            if new in out:
                out[old] = out.pop(new)
        return out

    def from_storage(self, obj, served):
        if served.res.group != "events.k8s.io" or obj.get("apiVersion") == served.res.group_version:
            return obj
        out = copy.deepcopy(obj)
        out["apiVersion"] = "events.k8s.io/v1"
        for new, old in RENAMES.items():
            if old in out:
                out[new] = out.pop(old)
        return out
