"""MutatingAdmissionPolicyBindings (``admissionregistration.k8s.io/v1alpha1``): cluster-scoped,
generation, no status; ``policyName``, ``paramRef`` and ``matchResources`` defaulted and
validated as a ValidatingAdmissionPolicyBinding's (no validationActions)."""

from __future__ import annotations

from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, name
from kubeling.apiserver.registry.admissionregistration.validatingadmissionpolicybinding import (
    param_ref_cell,
    set_defaults,
    validate_binding,
)
from kubeling.apiserver.registry.strategy import Strategy

PRINTER = Printer((NAME, Column("PolicyName", "string", doc="policyName references a MutatingAdmissionPolicy name "
                                                            "which the MutatingAdmissionPolicyBinding binds to."),
                   Column("ParamRef", "string", doc="paramRef specifies the parameter resource used to configure "
                                                    "the admission control policy."), AGE),
                  lambda o, now: [name(o), (o.get("spec") or {}).get("policyName") or "", param_ref_cell(o),
                                  age(o, now)])


class MutatingAdmissionPolicyBindingStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "mutatingadmissionpolicybindings", \
        "MutatingAdmissionPolicyBinding"
    namespaced = False
    generation = True
    printer = PRINTER

    def defaults(self, obj):
        set_defaults(obj)

    def validate(self, obj):
        return validate_binding(obj, validating=False)
