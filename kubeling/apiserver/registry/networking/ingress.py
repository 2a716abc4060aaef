"""Ingresses (upstream ``pkg/registry/networking/ingress``): status (the load balancer's
address), generation."""

from kubeling.api.printers import other as printers
from kubeling.api.validation import networking as validation
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class IngressStrategy(Strategy):
    group, resource, kind = "networking.k8s.io", "ingresses", "Ingress"
    printer = printers.INGRESS
    status_subresource = True
    generation = True
    subresources = status_subresources()

    def validate(self, obj):
        return validation.validate_ingress(obj)
