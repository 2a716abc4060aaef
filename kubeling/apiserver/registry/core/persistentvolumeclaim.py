"""PersistentVolumeClaims (upstream ``pkg/registry/core/persistentvolumeclaim``): status
starts Pending; the spec is mostly immutable once bound."""

from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import persistentvolume as validation
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class PersistentVolumeClaimStrategy(Strategy):
    group, resource, kind = "", "persistentvolumeclaims", "PersistentVolumeClaim"
    printer = printers.PERSISTENT_VOLUME_CLAIM
    status_subresource = True
    subresources = status_subresources()

    def initial_status(self, obj):
        return {"phase": "Pending"}

    def defaults(self, obj):
        defaults.set_object_defaults_persistent_volume_claim(obj)

    def validate(self, obj):
        return validation.validate_pvc(obj)

    def validate_update(self, obj, old):
        return validation.validate_pvc_update(obj, old)
