"""Endpoints (upstream ``pkg/registry/core/endpoint``): PUT creates a missing object, as the
endpoints controller relies on."""

from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import service as validation
from kubeling.apiserver.registry.strategy import Strategy


class EndpointsStrategy(Strategy):
    group, resource, kind = "", "endpoints", "Endpoints"
    printer = printers.ENDPOINTS
    allow_create_on_update = True

    def defaults(self, obj):
        defaults.set_object_defaults_endpoints(obj)

    def validate(self, obj):
        return validation.validate_endpoints(obj)
