"""Leases (upstream ``pkg/registry/coordination/lease``): leader election and node heartbeats;
PUT creates a missing Lease."""

from kubeling.api.printers import other as printers
from kubeling.api.validation import other as validation
from kubeling.apiserver.registry.strategy import Strategy


class LeaseStrategy(Strategy):
    group, resource, kind = "coordination.k8s.io", "leases", "Lease"
    printer = printers.LEASE
    allow_create_on_update = True

    def validate(self, obj):
        return validation.validate_lease(obj)
