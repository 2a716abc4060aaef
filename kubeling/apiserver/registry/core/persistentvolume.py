"""PersistentVolumes (upstream ``pkg/registry/core/persistentvolume``): cluster-scoped, status
starts Pending."""

from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import persistentvolume as validation
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class PersistentVolumeStrategy(Strategy):
    group, resource, kind = "", "persistentvolumes", "PersistentVolume"
    namespaced = False
    printer = printers.PERSISTENT_VOLUME
    status_subresource = True
    subresources = status_subresources()

    def initial_status(self, obj):
        return {"phase": "Pending"}

    def defaults(self, obj):
        defaults.set_object_defaults_persistent_volume(obj)

    def validate(self, obj):
        return validation.validate_pv(obj)

    def validate_update(self, obj, old):
        return validation.validate_pv_update(obj, old)
