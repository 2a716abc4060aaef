"""ConfigMaps (upstream ``pkg/registry/core/configmap``): data is immutable once ``immutable``."""

from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy


class ConfigMapStrategy(Strategy):
    group, resource, kind = "", "configmaps", "ConfigMap"
    printer = printers.CONFIG_MAP

    def validate(self, obj):
        return validation.validate_config_map(obj)

    def validate_update(self, obj, old):
        return validation.validate_config_map_update(obj, old)
