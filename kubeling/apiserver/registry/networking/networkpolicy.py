"""NetworkPolicies (upstream ``pkg/registry/networking/networkpolicy``): generation."""

from kubeling.api.defaults import networking as defaults
from kubeling.api.printers import other as printers
from kubeling.api.validation import networking as validation
from kubeling.apiserver.registry.strategy import Strategy


class NetworkPolicyStrategy(Strategy):
    group, resource, kind = "networking.k8s.io", "networkpolicies", "NetworkPolicy"
    printer = printers.NETWORK_POLICY
    generation = True

    def defaults(self, obj):
        defaults.set_object_defaults_network_policy(obj)

    def validate(self, obj):
        return validation.validate_network_policy(obj)
