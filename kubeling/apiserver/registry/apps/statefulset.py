"""StatefulSets (upstream ``pkg/registry/apps/statefulset``): status and scale, generation; the
name is a DNS label (it prefixes pod hostnames)."""

from kubeling.api.defaults import apps as defaults
from kubeling.api.printers import apps as printers
from kubeling.api.validation import apps as validation
from kubeling.api.validation import meta
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class StatefulSetStrategy(WorkloadStrategy):
    group, resource, kind = "apps", "statefulsets", "StatefulSet"
    name_rule = staticmethod(meta.name_is_dns_label)
    printer = printers.STATEFUL_SET
    subresources = status_subresources("scale")

    def defaults(self, obj):
        defaults.set_object_defaults_stateful_set(obj)

    def validate(self, obj):
        return validation.validate_stateful_set(obj)

    def validate_update(self, obj, old):
        return validation.validate_stateful_set_update(obj, old)
