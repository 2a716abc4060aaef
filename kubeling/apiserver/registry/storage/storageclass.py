"""StorageClasses (upstream ``pkg/registry/storage/storageclass``): cluster-scoped; the
provisioner and parameters are immutable."""

from kubeling.api.defaults import storage as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import other as validation
from kubeling.apiserver.registry.strategy import Strategy


class StorageClassStrategy(Strategy):
    group, resource, kind = "storage.k8s.io", "storageclasses", "StorageClass"
    namespaced = False
    printer = printers.STORAGE_CLASS

    def defaults(self, obj):
        defaults.set_object_defaults_storage_class(obj)

    def validate(self, obj):
        return validation.validate_storage_class(obj)

    def validate_update(self, obj, old):
        return validation.validate_storage_class_update(obj, old)
