"""ReplicationControllers (upstream ``pkg/registry/core/replicationcontroller``): status and
scale subresources, generation tracking."""

from kubeling.api import fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class ReplicationControllerStrategy(WorkloadStrategy):
    group, resource, kind = "", "replicationcontrollers", "ReplicationController"
    printer = printers.REPLICATION_CONTROLLER
    field_set = fields.REPLICAS
    subresources = status_subresources("scale")

    def defaults(self, obj):
        defaults.set_object_defaults_replication_controller(obj)

    def validate(self, obj):
        return validation.validate_replication_controller(obj)
