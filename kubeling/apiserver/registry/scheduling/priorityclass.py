"""PriorityClasses (upstream ``pkg/registry/scheduling/priorityclass``): cluster-scoped; value
and preemptionPolicy are immutable."""

from kubeling.api.defaults import scheduling as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import other as validation
from kubeling.apiserver.registry.strategy import Strategy


class PriorityClassStrategy(Strategy):
    group, resource, kind = "scheduling.k8s.io", "priorityclasses", "PriorityClass"
    namespaced = False
    printer = printers.PRIORITY_CLASS

    def defaults(self, obj):
        defaults.set_object_defaults_priority_class(obj)

    def validate(self, obj):
        return validation.validate_priority_class(obj)

    def validate_update(self, obj, old):
        return validation.validate_priority_class_update(obj, old)
