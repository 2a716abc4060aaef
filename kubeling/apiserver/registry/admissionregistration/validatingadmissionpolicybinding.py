"""ValidatingAdmissionPolicyBindings (upstream ``pkg/registry/admissionregistration/
validatingadmissionpolicybinding``): cluster-scoped, generation, no status.

Defaults: ``matchResources`` as a policy's ``matchConstraints``; ``paramRef.
parameterNotFoundAction: Deny``. Validation (upstream
``ValidateValidatingAdmissionPolicyBinding``): ``policyName`` required; ``validationActions``
required, unique, among Deny/Warn/Audit and never both Deny and Warn; ``paramRef`` has exactly
one of ``name`` and ``selector``, a DNS-label ``namespace`` and ``parameterNotFoundAction``
Allow or Deny; ``matchResources`` rules and selectors as a policy's.

The helpers serve MutatingAdmissionPolicyBinding too.
"""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, duplicate, forbidden, invalid_value, not_supported, required
from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, name
from kubeling.api.validation import meta, util
from kubeling.apiserver.registry.admissionregistration.validatingadmissionpolicy import (
    default_match_resources,
    validate_match_resources,
)
from kubeling.apiserver.registry.strategy import Strategy

VALIDATION_ACTIONS = ("Audit", "Deny", "Warn")
NOT_FOUND_ACTIONS = ("Allow", "Deny")


def set_defaults(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    default_match_resources(spec.get("matchResources"))
    pr = spec.get("paramRef")
    if isinstance(pr, dict):
        pr.setdefault("parameterNotFoundAction", "Deny")


def validate_param_ref(pr: Any, path: str) -> list[FieldError]:
    if pr is None:
        return []
    if not isinstance(pr, dict):
        return [invalid_value(path, pr, "must be an object")]
    errs: list[FieldError] = []
    has_name, has_sel = bool(pr.get("name")), pr.get("selector") is not None
    if has_name and has_sel:
        errs.append(forbidden(f"{path}.name", "name and selector are mutually exclusive"))
        errs.append(forbidden(f"{path}.selector", "name and selector are mutually exclusive"))
    if not has_name and not has_sel:
        errs.append(required(path, "one of name or selector must be specified"))
    if has_name:
        errs += [invalid_value(f"{path}.name", pr["name"], m) for m in util.is_dns1123_subdomain(pr["name"])]
    if has_sel:
        errs += meta.validate_label_selector(pr["selector"], f"{path}.selector")
    if pr.get("namespace"):
        errs += [invalid_value(f"{path}.namespace", pr["namespace"], m)
                 for m in util.is_dns1123_label(pr["namespace"])]
    act = pr.get("parameterNotFoundAction")
    if act is None:
        errs.append(required(f"{path}.parameterNotFoundAction", ""))
    elif act not in NOT_FOUND_ACTIONS:
        errs.append(not_supported(f"{path}.parameterNotFoundAction", act, NOT_FOUND_ACTIONS))
    return errs


def validate_binding(obj: dict, *, validating: bool = True) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec", "")]
    errs: list[FieldError] = []
    if not spec.get("policyName"):
        errs.append(required("spec.policyName", ""))
    if spec.get("matchResources") is not None:
        errs += validate_match_resources(spec["matchResources"], "spec.matchResources", require_rules=False)
    errs += validate_param_ref(spec.get("paramRef"), "spec.paramRef")
    if validating:
        actions = spec.get("validationActions") or []
        if not actions:
            errs.append(required("spec.validationActions", "at least one validation action is required"))
        seen: set[str] = set()
        for i, a in enumerate(actions):
            p = f"spec.validationActions[{i}]"
            if a in seen:
                errs.append(duplicate(p, a))
            elif a not in VALIDATION_ACTIONS:
                errs.append(not_supported(p, a, VALIDATION_ACTIONS))
            seen.add(a)
        if "Deny" in seen and "Warn" in seen:
            errs.append(invalid_value("spec.validationActions", actions,
                                      "must not contain both Deny and Warn (repeating the same validation failure "
                                      "information in the API response and headers serves no purpose)"))
    return errs


def param_ref_cell(o: dict) -> str:
    pr = (o.get("spec") or {}).get("paramRef")
    if not pr:
        return "<unset>"
    ns = pr.get("namespace") or "*"
    if pr.get("name"):
        return f"{ns}/{pr['name']}"
    return f"{ns}/*[{meta_selector(pr.get('selector'))}]"


def meta_selector(sel: Any) -> str:
    from kubeling.api.printers.common import selector_string  # noqa: PLC0415
    return selector_string(sel) if isinstance(sel, dict) else ""


PRINTER = Printer((NAME, Column("PolicyName", "string", doc="PolicyName references a ValidatingAdmissionPolicy name "
                                                            "which the ValidatingAdmissionPolicyBinding binds to."),
                   Column("ParamRef", "string", doc="ParamRef specifies the parameter resource used to configure "
                                                    "the admission control policy."), AGE),
                  lambda o, now: [name(o), (o.get("spec") or {}).get("policyName") or "", param_ref_cell(o),
                                  age(o, now)])


class ValidatingAdmissionPolicyBindingStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "validatingadmissionpolicybindings", \
        "ValidatingAdmissionPolicyBinding"
    namespaced = False
    generation = True
    printer = PRINTER

    def defaults(self, obj):
        set_defaults(obj)

    def validate(self, obj):
        return validate_binding(obj)
