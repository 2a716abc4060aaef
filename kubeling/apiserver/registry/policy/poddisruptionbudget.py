"""PodDisruptionBudgets (upstream ``pkg/registry/policy/poddisruptionbudget``): status (the
disruption controller's, and eviction's charge), generation."""

from kubeling.api.printers import other as printers
from kubeling.api.validation import other as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class PodDisruptionBudgetStrategy(WorkloadStrategy):
    group, resource, kind = "policy", "poddisruptionbudgets", "PodDisruptionBudget"
    printer = printers.PDB
    subresources = status_subresources()

    def validate(self, obj):
        return validation.validate_pdb(obj)
