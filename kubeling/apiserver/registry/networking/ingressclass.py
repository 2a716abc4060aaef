"""IngressClasses (upstream ``pkg/registry/networking/ingressclass``): cluster-scoped."""

from kubeling.api.defaults import networking as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import networking as validation
from kubeling.apiserver.registry.strategy import Strategy


class IngressClassStrategy(Strategy):
    group, resource, kind = "networking.k8s.io", "ingressclasses", "IngressClass"
    namespaced = False
    printer = printers.INGRESS_CLASS

    def defaults(self, obj):
        defaults.set_object_defaults_ingress_class(obj)

    def validate(self, obj):
        return validation.validate_ingress_class(obj)

    def validate_update(self, obj, old):
        return validation.validate_ingress_class_update(obj, old)
