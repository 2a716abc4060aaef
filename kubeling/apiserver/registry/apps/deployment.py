"""Deployments (upstream ``pkg/registry/apps/deployment``): status and scale subresources,
generation tracking, and the legacy versions.

``extensions/v1beta1``, ``apps/v1beta1`` and ``apps/v1beta2`` (the seed's manifests use the
first) are served by conversion to the ``apps/v1`` storage version, with each version's own old
defaults applied before converting (`kubeling.api.convert`). Deleting through a legacy version
orphans dependents by default, as upstream did for those versions.
"""

from kubeling.api import convert
from kubeling.api.defaults import apps as defaults
from kubeling.api.printers import apps as printers
from kubeling.api.validation import apps as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class DeploymentStrategy(WorkloadStrategy):
    group, resource, kind = "apps", "deployments", "Deployment"
    printer = printers.DEPLOYMENT
    subresources = status_subresources("scale")

    def defaults(self, obj):
        defaults.set_object_defaults_deployment(obj)

    def validate(self, obj):
        return validation.validate_deployment(obj)

    def validate_update(self, obj, old):
        return validation.validate_selector_update(obj, old)

    def to_storage(self, obj, served):
        return convert.to_storage(obj) if served.res.storage_version else obj

    def from_storage(self, obj, served):
        if not served.res.storage_version or obj.get("apiVersion") == served.res.group_version:
            return obj
        return convert.from_storage(obj, served.res.group_version)
