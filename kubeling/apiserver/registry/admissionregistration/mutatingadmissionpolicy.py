"""MutatingAdmissionPolicies (upstream ``pkg/registry/admissionregistration/
mutatingadmissionpolicy``; ``admissionregistration.k8s.io/v1alpha1``, which upstream serves
behind the MutatingAdmissionPolicy feature gate and kubeling serves always): cluster-scoped,
generation, no status.

Defaults: ``failurePolicy: Fail``, ``reinvocationPolicy: Never``, ``matchConstraints`` as a
ValidatingAdmissionPolicy's. Validation (upstream ``ValidateMutatingAdmissionPolicy``):
``matchConstraints.resourceRules`` required, at least one mutation, each with ``patchType``
ApplyConfiguration (and ``applyConfiguration.expression``) or JSONPatch (and
``jsonPatch.expression``), every expression compiling (object construction ``Object{...}`` /
``JSONPatch{...}`` included, see `kubeling.apiserver.admission.mutatingadmissionpolicy`),
variables and matchConditions as a ValidatingAdmissionPolicy's.
"""

from __future__ import annotations

from typing import Any

from kubeling import cel
from kubeling.api.errors import FieldError, invalid_value, not_supported, required
from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, name
from kubeling.apiserver.registry.admissionregistration.validatingadmissionpolicy import (
    PARAM_KIND,
    default_match_resources,
    param_kind,
    validate_failure_policy,
    validate_match_conditions,
    validate_match_resources,
    validate_param_kind,
    validate_variables,
)
from kubeling.apiserver.registry.strategy import Strategy

PATCH_TYPES = ("ApplyConfiguration", "JSONPatch")
REINVOCATION_POLICIES = ("IfNeeded", "Never")


def set_defaults(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("failurePolicy", "Fail")
    spec.setdefault("reinvocationPolicy", "Never")
    default_match_resources(spec.get("matchConstraints"))


def _validate_mutation_expression(expression: Any, path: str) -> list[FieldError]:
    from kubeling.apiserver.admission.mutatingadmissionpolicy import compile_mutation  # noqa: PLC0415
    if not isinstance(expression, str) or not expression.strip():
        return [required(path, "")]
    try:
        compile_mutation(expression)
    except cel.CompileError as e:
        return [invalid_value(path, expression, f"compilation failed: {e}")]
    return []


def validate_policy(obj: dict) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec", "")]
    errs = validate_failure_policy(spec.get("failurePolicy"), "spec.failurePolicy")
    errs += validate_param_kind(spec.get("paramKind"), "spec.paramKind")
    if spec.get("matchConstraints") is None:
        errs.append(required("spec.matchConstraints", ""))
    else:
        errs += validate_match_resources(spec["matchConstraints"], "spec.matchConstraints", require_rules=True)
    rp = spec.get("reinvocationPolicy")
    if rp is not None and rp not in REINVOCATION_POLICIES:
        errs.append(not_supported("spec.reinvocationPolicy", rp, REINVOCATION_POLICIES))
    mutations = spec.get("mutations") or []
    if not mutations:
        errs.append(required("spec.mutations", "mutations must contain at least one item"))
    for i, m in enumerate(mutations):
        p = f"spec.mutations[{i}]"
        if not isinstance(m, dict):
            errs.append(invalid_value(p, m, "must be an object"))
            continue
        pt = m.get("patchType")
        if not pt:
            errs.append(required(f"{p}.patchType", ""))
        elif pt not in PATCH_TYPES:
            errs.append(not_supported(f"{p}.patchType", pt, PATCH_TYPES))
        elif pt == "ApplyConfiguration":
            ac = m.get("applyConfiguration")
            if not isinstance(ac, dict):
                errs.append(required(f"{p}.applyConfiguration", "applyConfiguration required when patchType is "
                                                                "ApplyConfiguration"))
            else:
                errs += _validate_mutation_expression(ac.get("expression"), f"{p}.applyConfiguration.expression")
        else:
            jp = m.get("jsonPatch")
            if not isinstance(jp, dict):
                errs.append(required(f"{p}.jsonPatch", "jsonPatch required when patchType is JSONPatch"))
            else:
                errs += _validate_mutation_expression(jp.get("expression"), f"{p}.jsonPatch.expression")
    errs += validate_match_conditions(spec.get("matchConditions"), "spec.matchConditions")
    errs += validate_variables(spec.get("variables"), "spec.variables")
    return errs


PRINTER = Printer((NAME, Column("Mutations", "integer", doc="Mutations indicates the number of mutations."),
                   PARAM_KIND, AGE),
                  lambda o, now: [name(o), len((o.get("spec") or {}).get("mutations") or []), param_kind(o),
                                  age(o, now)])


class MutatingAdmissionPolicyStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "mutatingadmissionpolicies", "MutatingAdmissionPolicy"
    namespaced = False
    generation = True
    printer = PRINTER

    def defaults(self, obj):
        set_defaults(obj)

    def validate(self, obj):
        return validate_policy(obj)
