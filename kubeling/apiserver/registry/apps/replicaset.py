"""ReplicaSets (upstream ``pkg/registry/apps/replicaset``): status and scale, generation."""

from kubeling.api import fields
from kubeling.api.defaults import apps as defaults
from kubeling.api.printers import apps as printers
from kubeling.api.validation import apps as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class ReplicaSetStrategy(WorkloadStrategy):
    group, resource, kind = "apps", "replicasets", "ReplicaSet"
    printer = printers.REPLICA_SET
    field_set = fields.REPLICAS
    subresources = status_subresources("scale")

    def defaults(self, obj):
        defaults.set_object_defaults_replica_set(obj)

    def validate(self, obj):
        return validation.validate_replica_set(obj)

    def validate_update(self, obj, old):
        return validation.validate_selector_update(obj, old)
