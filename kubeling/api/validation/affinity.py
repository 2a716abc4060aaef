"""Scheduling constraints in a PodSpec: ``affinity`` (node, pod and pod anti-affinity) and
``topologySpreadConstraints``, with upstream's field paths and messages (``ValidateAffinity``,
``ValidateNodeSelector``, ``validatePodAffinityTerm``, ``validateTopologySpreadConstraints``).
The scheduler trusts what passed here."""

from __future__ import annotations

from typing import Any

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.validation import meta, util
from kubeling.api.validation.meta import forbidden

NOT_POSITIVE = "must be greater than zero"
WEIGHT_RANGE = "must be in the range 1-100"
SCHEDULE_ACTIONS = ("DoNotSchedule", "ScheduleAnyway")


def _key(key: Any, path: str) -> list[FieldError]:
    return [invalid_value(path, key, m) for m in util.is_qualified_name(key if isinstance(key, str) else "")]


def validate_node_selector_requirement(req: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    op, values = req.get("operator", ""), req.get("values") or []
    if op in ("In", "NotIn"):
        if not values:
            errs.append(required(path + ".values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            errs.append(forbidden(path + ".values", "may not be specified when `operator` is 'Exists' or "
                                                    "'DoesNotExist'"))
    elif op in ("Gt", "Lt"):
        if len(values) != 1:
            errs.append(required(path + ".values", "must be specified single value when `operator` is 'Lt' or 'Gt'"))
    else:
        errs.append(invalid_value(path + ".operator", op, "not a valid selector operator"))
    return errs + _key(req.get("key", ""), path + ".key")


def validate_node_field_selector_requirement(req: dict, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    op, values = req.get("operator", ""), req.get("values") or []
    if op in ("In", "NotIn"):
        if len(values) != 1:
            errs.append(required(path + ".values", "must be only one value when `operator` is 'In' or 'NotIn' "
                                                   "for node field selector"))
    else:
        errs.append(invalid_value(path + ".operator", op, "not a valid selector operator"))
    if req.get("key") != "metadata.name":
        errs.append(invalid_value(path + ".key", req.get("key", ""), "not a valid field selector key"))
    else:
        for i, v in enumerate(values):
            errs += [invalid_value(f"{path}.values[{i}]", v, m) for m in util.is_dns1123_subdomain(v)]
    return errs


def validate_node_selector_term(term: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    term = term if isinstance(term, dict) else {}
    for i, req in enumerate(term.get("matchExpressions") or ()):
        errs += validate_node_selector_requirement(req, f"{path}.matchExpressions[{i}]")
    for i, req in enumerate(term.get("matchFields") or ()):
        errs += validate_node_field_selector_requirement(req, f"{path}.matchFields[{i}]")
    return errs


def validate_node_selector(sel: Any, path: str) -> list[FieldError]:
    terms = (sel or {}).get("nodeSelectorTerms") or []
    if not terms:
        return [required(path + ".nodeSelectorTerms", "must have at least one node selector term")]
    errs: list[FieldError] = []
    for i, term in enumerate(terms):
        errs += validate_node_selector_term(term, f"{path}.nodeSelectorTerms[{i}]")
    return errs


def _weight(w: Any, path: str) -> list[FieldError]:
    if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 100:
        return [invalid_value(path, w, WEIGHT_RANGE)]
    return []


def validate_pod_affinity_term(term: Any, path: str) -> list[FieldError]:
    term = term if isinstance(term, dict) else {}
    errs = meta.validate_label_selector(term.get("labelSelector"), path + ".labelSelector")
    errs += meta.validate_label_selector(term.get("namespaceSelector"), path + ".namespaceSelector")
    for name in term.get("namespaces") or ():
        errs += [invalid_value(path + ".namespace", name, m) for m in util.is_dns1123_label(name)]
    topology = term.get("topologyKey") or ""
    if not topology:
        errs.append(required(path + ".topologyKey", "can not be empty"))
    else:
        errs += _key(topology, path + ".topologyKey")
    return errs


def _pod_affinity(aff: Any, path: str) -> list[FieldError]:
    aff = aff if isinstance(aff, dict) else {}
    errs: list[FieldError] = []
    req_path = path + ".requiredDuringSchedulingIgnoredDuringExecution"
    for i, term in enumerate(aff.get("requiredDuringSchedulingIgnoredDuringExecution") or ()):
        errs += validate_pod_affinity_term(term, f"{req_path}[{i}]")
    pref_path = path + ".preferredDuringSchedulingIgnoredDuringExecution"
    for i, w in enumerate(aff.get("preferredDuringSchedulingIgnoredDuringExecution") or ()):
        w = w if isinstance(w, dict) else {}
        errs += _weight(w.get("weight"), f"{pref_path}[{i}].weight")
        errs += validate_pod_affinity_term(w.get("podAffinityTerm"), f"{pref_path}[{i}].podAffinityTerm")
    return errs


def validate_affinity(aff: Any, path: str) -> list[FieldError]:
    if not isinstance(aff, dict):
        return []
    errs: list[FieldError] = []
    node = aff.get("nodeAffinity")
    if isinstance(node, dict):
        p = path + ".nodeAffinity"
        if node.get("requiredDuringSchedulingIgnoredDuringExecution") is not None:
            errs += validate_node_selector(node["requiredDuringSchedulingIgnoredDuringExecution"],
                                           p + ".requiredDuringSchedulingIgnoredDuringExecution")
        pref = p + ".preferredDuringSchedulingIgnoredDuringExecution"
        for i, t in enumerate(node.get("preferredDuringSchedulingIgnoredDuringExecution") or ()):
            t = t if isinstance(t, dict) else {}
            errs += _weight(t.get("weight"), f"{pref}[{i}].weight")
            errs += validate_node_selector_term(t.get("preference"), f"{pref}[{i}].preference")
    errs += _pod_affinity(aff.get("podAffinity"), path + ".podAffinity")
    errs += _pod_affinity(aff.get("podAntiAffinity"), path + ".podAntiAffinity")
    return errs


def validate_topology_spread_constraints(constraints: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(constraints or ()):
        p = f"{path}[{i}]"
        c = c if isinstance(c, dict) else {}
        skew = c.get("maxSkew")
        if not isinstance(skew, int) or skew <= 0:
            errs.append(invalid_value(p + ".maxSkew", skew, NOT_POSITIVE))
        key = c.get("topologyKey") or ""
        if not key:
            errs.append(required(p + ".topologyKey", "can not be empty"))
        else:
            errs += _key(key, p + ".topologyKey")
        action = c.get("whenUnsatisfiable") or ""
        if not action:
            errs.append(required(p + ".whenUnsatisfiable", "can not be empty"))
        elif action not in SCHEDULE_ACTIONS:
            errs.append(not_supported(p + ".whenUnsatisfiable", action, SCHEDULE_ACTIONS))
        min_domains = c.get("minDomains")
        if min_domains is not None:
            if not isinstance(min_domains, int) or min_domains <= 0:
                errs.append(invalid_value(p + ".minDomains", min_domains, NOT_POSITIVE))
            elif action != "DoNotSchedule":
                errs.append(invalid_value(p + ".minDomains", min_domains,
                                          f"can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"))
        if (key, action) in seen:
            errs.append(duplicate(p + ".{topologyKey, whenUnsatisfiable}", f"{{{key}, {action}}}"))
        seen.add((key, action))
        errs += meta.validate_label_selector(c.get("labelSelector"), p + ".labelSelector")
    return errs
