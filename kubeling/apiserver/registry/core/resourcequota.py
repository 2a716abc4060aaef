"""ResourceQuotas (upstream ``pkg/registry/core/resourcequota``): status is the quota
controller's, written through ``/status``."""

from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class ResourceQuotaStrategy(Strategy):
    group, resource, kind = "", "resourcequotas", "ResourceQuota"
    printer = printers.RESOURCE_QUOTA
    status_subresource = True
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_resource_quota(obj)

    def validate(self, obj):
        return validation.validate_resource_quota(obj)
