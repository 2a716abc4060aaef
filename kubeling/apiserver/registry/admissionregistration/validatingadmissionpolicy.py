"""ValidatingAdmissionPolicies (upstream ``pkg/registry/admissionregistration/
validatingadmissionpolicy``): cluster-scoped, with a status subresource and generation.

Defaults (upstream ``v1/defaults.go``): ``failurePolicy: Fail``; in ``matchConstraints``
``matchPolicy: Equivalent``, ``namespaceSelector: {}``, ``objectSelector: {}`` and each rule's
``scope: "*"``. Validation (upstream ``validation.ValidateValidatingAdmissionPolicy``), with
upstream's field paths: ``matchConstraints`` and its ``resourceRules`` are required, at least one
of ``validations`` / ``auditAnnotations``, every expression must compile (``Invalid value:
"<expr>": compilation failed: ERROR: <input>:1:...``), messages are single-line, reasons are
Unauthorized/Forbidden/Invalid/RequestEntityTooLarge, variables have unique CEL identifiers,
matchConditions unique qualified names, auditAnnotations unique keys.

The helpers here (`validate_match_resources`, `validate_expression`, `validate_variables`,
`validate_param_kind`, ...) serve MutatingAdmissionPolicy too.
"""

from __future__ import annotations

import re
from typing import Any

from kubeling import cel
from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, name
from kubeling.api.validation import meta, util
from kubeling.apiserver.admission.policy import compile_expression
from kubeling.apiserver.registry.admissionregistration import webhook
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources

FAILURE_POLICIES = ("Fail", "Ignore")
MATCH_POLICIES = ("Equivalent", "Exact")
REASONS = ("Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized")
CEL_IDENT = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
                "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}


def default_match_resources(mr: Any) -> None:
    if not isinstance(mr, dict):
        return
    mr.setdefault("matchPolicy", "Equivalent")
    if mr.get("namespaceSelector") is None:
        mr["namespaceSelector"] = {}
    if mr.get("objectSelector") is None:
        mr["objectSelector"] = {}
    for key in ("resourceRules", "excludeResourceRules"):
        for r in mr.get(key) or []:
            if isinstance(r, dict):
                r.setdefault("scope", "*")


def set_defaults(obj: dict) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("failurePolicy", "Fail")
    default_match_resources(spec.get("matchConstraints"))


def validate_expression(expression: Any, path: str, *, required_msg: str = "") -> list[FieldError]:
    if not isinstance(expression, str) or not expression.strip():
        return [required(path, required_msg)]
    try:
        compile_expression(expression)
    except cel.CompileError as e:
        return [invalid_value(path, expression, f"compilation failed: {e}")]
    return []


def validate_match_resources(mr: Any, path: str, *, require_rules: bool) -> list[FieldError]:
    if not isinstance(mr, dict):
        return [invalid_value(path, mr, "must be an object")]
    errs: list[FieldError] = []
    for key in ("namespaceSelector", "objectSelector"):
        if mr.get(key) is not None:
            errs += meta.validate_label_selector(mr[key], f"{path}.{key}")
    mp = mr.get("matchPolicy")
    if mp is not None and mp not in MATCH_POLICIES:
        errs.append(not_supported(f"{path}.matchPolicy", mp, MATCH_POLICIES))
    rules = mr.get("resourceRules") or []
    if require_rules and not rules:
        errs.append(required(f"{path}.resourceRules", ""))
    for key, lst in (("resourceRules", rules), ("excludeResourceRules", mr.get("excludeResourceRules") or [])):
        for i, r in enumerate(lst):
            p = f"{path}.{key}[{i}]"
            errs += webhook.validate_rule_with_operations(r, p)
            if isinstance(r, dict):
                for j, n in enumerate(r.get("resourceNames") or []):
                    if not isinstance(n, str) or not n:
                        errs.append(required(f"{p}.resourceNames[{j}]", ""))
    return errs


def validate_param_kind(pk: Any, path: str) -> list[FieldError]:
    if pk is None:
        return []
    if not isinstance(pk, dict):
        return [invalid_value(path, pk, "must be an object")]
    errs: list[FieldError] = []
    av, kind = pk.get("apiVersion") or "", pk.get("kind") or ""
    if not av:
        errs.append(required(f"{path}.apiVersion", ""))
    elif av.count("/") > 1 or av.startswith("/") or av.endswith("/"):
        errs.append(invalid_value(f"{path}.apiVersion", av, "must be a valid group version"))
    if not kind:
        errs.append(required(f"{path}.kind", ""))
    return errs


def validate_variables(variables: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, v in enumerate(variables or []):
        p = f"{path}[{i}]"
        if not isinstance(v, dict):
            errs.append(invalid_value(p, v, "must be an object"))
            continue
        n = v.get("name") or ""
        if not n:
            errs.append(required(f"{p}.name", "name is not specified"))
        elif not CEL_IDENT.match(n) or n in CEL_RESERVED:
            errs.append(invalid_value(f"{p}.name", n, "name is not a valid CEL identifier"))
        elif n in seen:
            errs.append(duplicate(f"{p}.name", n))
        seen.add(n)
        errs += validate_expression(v.get("expression"), f"{p}.expression", required_msg="expression is not specified")
    return errs


def validate_match_conditions(conds: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    conds = conds or []
    if len(conds) > webhook.MAX_MATCH_CONDITIONS:
        errs.append(FieldError("TooMany", path, f"must have at most {webhook.MAX_MATCH_CONDITIONS} items",
                               len(conds)))
    names: set[str] = set()
    for i, mc in enumerate(conds):
        p = f"{path}[{i}]"
        if not isinstance(mc, dict):
            errs.append(invalid_value(p, mc, "must be an object"))
            continue
        n = mc.get("name") or ""
        if not n:
            errs.append(required(f"{p}.name", ""))
        else:
            errs += meta.qualified_name(n, f"{p}.name")
            if n in names:
                errs.append(duplicate(f"{p}.name", n))
            names.add(n)
        errs += validate_expression(mc.get("expression"), f"{p}.expression")
    return errs


def validate_failure_policy(fp: Any, path: str) -> list[FieldError]:
    if fp is not None and fp not in FAILURE_POLICIES:
        return [not_supported(path, fp, FAILURE_POLICIES)]
    return []


def _validate_validation(v: Any, path: str) -> list[FieldError]:
    if not isinstance(v, dict):
        return [invalid_value(path, v, "must be an object")]
    errs = validate_expression(v.get("expression"), f"{path}.expression")
    msg = v.get("message")
    if msg is not None:
        if "\n" in msg:
            errs.append(invalid_value(f"{path}.message", msg, "message must not contain line breaks"))
        elif msg and not msg.strip():
            errs.append(required(f"{path}.message", "message must be non-empty if specified"))
    me = v.get("messageExpression")
    if me is not None:
        if not me.strip():
            errs.append(required(f"{path}.messageExpression", "must be non-empty if specified"))
        else:
            errs += validate_expression(me, f"{path}.messageExpression")
    reason = v.get("reason")
    if reason is not None and reason not in REASONS:
        errs.append(not_supported(f"{path}.reason", reason, REASONS))
    return errs


def _validate_audit_annotations(anns: Any, path: str, policy_name: str) -> list[FieldError]:
    errs: list[FieldError] = []
    keys: set[str] = set()
    for i, a in enumerate(anns or []):
        p = f"{path}[{i}]"
        if not isinstance(a, dict):
            errs.append(invalid_value(p, a, "must be an object"))
            continue
        key = a.get("key") or ""
        if not key:
            errs.append(required(f"{p}.key", ""))
        else:
            full = f"{policy_name}/{key}"
            errs += [invalid_value(f"{p}.key", key, m) for m in util.is_qualified_name(full)]
            if key in keys:
                errs.append(duplicate(f"{p}.key", key))
            keys.add(key)
        errs += validate_expression(a.get("valueExpression"), f"{p}.valueExpression")
    return errs


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
    validations = spec.get("validations") or []
    if not validations and not spec.get("auditAnnotations"):
        errs.append(required("spec.validations", "validations or auditAnnotations must contain at least one item"))
    for i, v in enumerate(validations):
        errs += _validate_validation(v, f"spec.validations[{i}]")
    errs += validate_match_conditions(spec.get("matchConditions"), "spec.matchConditions")
    errs += validate_variables(spec.get("variables"), "spec.variables")
    errs += _validate_audit_annotations(spec.get("auditAnnotations"), "spec.auditAnnotations",
                                        (obj.get("metadata") or {}).get("name") or "")
    return errs


def param_kind(o: dict) -> str:
    """The ParamKind printer column (shared with MutatingAdmissionPolicy)."""
    pk = (o.get("spec") or {}).get("paramKind")
    if not pk:
        return "<unset>"
    return f"{pk.get('apiVersion', '')}/{pk.get('kind', '')}"


PARAM_KIND = Column("ParamKind", "string", doc="ParamKind specifies the kind of resources used to parameterize "
                                                "this policy")


PRINTER = Printer((NAME, Column("Validations", "integer", doc="Validations indicates the number of validation rules."),
                   PARAM_KIND, AGE),
                  lambda o, now: [name(o), len((o.get("spec") or {}).get("validations") or []), param_kind(o),
                                  age(o, now)])


class ValidatingAdmissionPolicyStrategy(Strategy):
    group, resource, kind = "admissionregistration.k8s.io", "validatingadmissionpolicies", \
        "ValidatingAdmissionPolicy"
    namespaced = False
    generation = True
    status_subresource = True
    subresources = status_subresources()
    printer = PRINTER

    def defaults(self, obj):
        set_defaults(obj)

    def validate(self, obj):
        return validate_policy(obj)
