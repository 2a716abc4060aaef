"""ControllerRevisions (upstream ``pkg/registry/apps/controllerrevision``): immutable data."""

from kubeling.api.printers import apps as printers
from kubeling.api.validation import apps as validation
from kubeling.apiserver.registry.strategy import Strategy


class ControllerRevisionStrategy(Strategy):
    group, resource, kind = "apps", "controllerrevisions", "ControllerRevision"
    printer = printers.CONTROLLER_REVISION

    def validate(self, obj):
        return validation.validate_controller_revision(obj)

    def validate_update(self, obj, old):
        return validation.validate_controller_revision_update(obj, old)
