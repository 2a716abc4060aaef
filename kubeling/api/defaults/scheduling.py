"""scheduling.k8s.io/v1 defaulting: ``pkg/apis/scheduling/v1/defaults.go``."""

from __future__ import annotations

from kubeling.api.defaults._util import set_ptr


def set_object_defaults_priority_class(obj: dict) -> None:
    set_ptr(obj, "preemptionPolicy", "PreemptLowerPriority")


DEFAULTERS = {
    ("scheduling.k8s.io", "v1", "PriorityClass"): set_object_defaults_priority_class,
}
