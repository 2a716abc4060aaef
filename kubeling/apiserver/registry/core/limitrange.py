"""LimitRanges (upstream ``pkg/registry/core/limitrange``)."""

from kubeling.api.defaults import core as defaults
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy


class LimitRangeStrategy(Strategy):
    group, resource, kind = "", "limitranges", "LimitRange"

    def defaults(self, obj):
        defaults.set_object_defaults_limit_range(obj)

    def validate(self, obj):
        return validation.validate_limit_range(obj)
