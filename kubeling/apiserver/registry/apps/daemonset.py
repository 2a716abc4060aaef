"""DaemonSets (upstream ``pkg/registry/apps/daemonset``): status, generation."""

from kubeling.api.defaults import apps as defaults
from kubeling.api.printers import apps as printers
from kubeling.api.validation import apps as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class DaemonSetStrategy(WorkloadStrategy):
    group, resource, kind = "apps", "daemonsets", "DaemonSet"
    printer = printers.DAEMON_SET
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_daemon_set(obj)

    def validate(self, obj):
        return validation.validate_daemon_set(obj)

    def validate_update(self, obj, old):
        return validation.validate_selector_update(obj, old)
