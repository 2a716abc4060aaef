"""EndpointSlices (upstream ``pkg/registry/discovery/endpointslice``)."""

from kubeling.api.defaults import discovery as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import networking as validation
from kubeling.apiserver.registry.strategy import Strategy


class EndpointSliceStrategy(Strategy):
    group, resource, kind = "discovery.k8s.io", "endpointslices", "EndpointSlice"
    printer = printers.ENDPOINT_SLICE

    def defaults(self, obj):
        defaults.set_object_defaults_endpoint_slice(obj)

    def validate(self, obj):
        return validation.validate_endpoint_slice(obj)

    def validate_update(self, obj, old):
        return validation.validate_endpoint_slice_update(obj, old)
