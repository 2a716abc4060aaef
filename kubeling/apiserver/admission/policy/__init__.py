"""What ValidatingAdmissionPolicy and MutatingAdmissionPolicy share (upstream
``apiserver/pkg/admission/plugin/policy/generic`` and ``.../policy/matching``):

- `Source`: policies and bindings of one kind, kept by list and watch, and the bindings of each
  policy (in name order, as upstream iterates them);
- `Matcher`: whether a request is matched by a policy's ``matchConstraints`` or a binding's
  ``matchResources`` — ``resourceRules`` (with ``resourceNames``), ``excludeResourceRules``,
  ``namespaceSelector``, ``objectSelector`` and ``matchPolicy`` (``Equivalent``: another served
  version of the same stored resource matches too, and the expressions then see the object in
  the version that matched);
- `collect_params`: the parameter objects of a binding (``paramRef`` by name or selector, in the
  binding's namespace, the request's namespace or cluster-wide, and
  ``parameterNotFoundAction``);
- `activation`: the CEL variables ``object``, ``oldObject``, ``request``, ``params``,
  ``namespaceObject``, ``authorizer`` (a `CelAuthorizer` over the server's authorizer, for the
  request's user) and ``variables``;
- `Compiled`: a policy's expressions compiled once per policy generation (`kubeling.cel`).

Requests for admissionregistration.k8s.io itself are never matched (upstream exempts its
configuration resources, so that a broken policy cannot lock itself in).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from kubeling import cel
from kubeling.api import errors
from kubeling.api.validation.meta import selector_is_empty, selector_matches
from kubeling.apiserver.admission.chain import user_info
from kubeling.apiserver.admission.webhook import rules

log = logging.getLogger(__name__)

GROUP = "admissionregistration.k8s.io"
NAMESPACE_META_FIELDS = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation",
                         "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
                         "annotations", "ownerReferences", "finalizers")


class ConfigError(Exception):
    """A policy or binding that cannot be applied (its failurePolicy decides)."""


# ---------------------------------------------------------------------------------------------
# the cache


class Source:
    """Policies and bindings of one kind (``validatingadmissionpolicies`` /
    ``...bindings``), by list and watch."""

    def __init__(self, store, lookup, version: str, policies: str, bindings: str) -> None:
        self.store = store
        self.lookup = lookup
        self.version = version
        self.resources = (policies, bindings)
        self.policies: dict[str, dict] = {}
        self.bindings: dict[str, dict] = {}
        self.synced = [False, False]
        self._index: list[tuple[dict, list[dict]]] | None = None
        self.policies_changed = asyncio.Event()  # set on every policy event (the status loop waits)

    def served(self, i: int):
        return self.lookup(GROUP, self.version, self.resources[i])

    async def hooks(self) -> list[tuple[dict, list[dict]]]:
        """(policy, its bindings) for every policy with at least one binding, in name order."""
        if not all(self.synced):
            pol = {o["metadata"]["name"]: o for o in (await self.store.list_raw(self.served(0), None))[1]}
            bnd = {o["metadata"]["name"]: o for o in (await self.store.list_raw(self.served(1), None))[1]}
            return _index(pol, bnd)
        if self._index is None:
            self._index = _index(self.policies, self.bindings)
        return self._index

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._reflect(0, self.policies), self._reflect(1, self.bindings))

    async def _reflect(self, i: int, table: dict) -> None:
        served = self.served(i)
        if served is None:
            await asyncio.Event().wait()

        def replace(rv: int, items: list[dict]) -> None:
            table.clear()
            table.update({o["metadata"]["name"]: o for o in items})
            self.synced[i] = True
            self._index = None
            if i == 0:
                self.policies_changed.set()

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                table.pop(obj["metadata"]["name"], None)
            else:
                table[obj["metadata"]["name"]] = obj
            self._index = None
            if i == 0:
                self.policies_changed.set()
        await self.store.reflect(served, replace, apply, what=f"{self.resources[i]} cache")


def _index(policies: dict, bindings: dict) -> list[tuple[dict, list[dict]]]:
    by_policy: dict[str, list[dict]] = {}
    for name in sorted(bindings):
        b = bindings[name]
        by_policy.setdefault((b.get("spec") or {}).get("policyName") or "", []).append(b)
    return [(policies[n], by_policy[n]) for n in sorted(policies) if n in by_policy]


# ---------------------------------------------------------------------------------------------
# matching


@dataclass
class Match:
    served: Any          # the version that matched (the object and request.kind use it)
    request_served: Any  # the version the client used


class Matcher:
    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup

    def _equivalents(self, served) -> list:
        server = getattr(self.lookup, "__self__", None)
        every = getattr(getattr(server, "resources", None), "served", None) or []
        out = [s for s in every if s is not served and s.prefix == served.prefix and s.res.kind == served.res.kind]
        out.sort(key=lambda s: (s.res.group_version != s.storage_gv, s.res.group, s.res.version))
        return out

    @staticmethod
    def _target(attrs, served) -> rules.Target:
        res = served.res
        return rules.Target(attrs.operation, res.group, res.version, res.resource, attrs.subresource, res.namespaced)

    @staticmethod
    def _rule_matches(rule: dict, t: rules.Target, name: str) -> bool:
        if not isinstance(rule, dict) or not rules.rule_matches(rule, t):
            return False
        names = rule.get("resourceNames") or []
        return not names or name in names

    def _rules(self, rule_list: list | None, attrs, served) -> bool:
        t = self._target(attrs, served)
        return any(self._rule_matches(r, t, attrs.name) for r in rule_list or [])

    async def namespace(self, attrs) -> dict | None:
        """The request's Namespace object (None for cluster-scoped requests and Namespaces)."""
        res = attrs.served.res
        if not res.namespaced or (res.group == "" and res.resource == "namespaces"):
            return None
        ns = attrs.namespace or attrs.ctx.namespace
        if not ns:
            return None
        try:
            return await self.store.get_raw(self.lookup("", "v1", "namespaces"), None, ns)
        except errors.StatusError as e:
            if e.code == 404:
                return None
            raise

    async def matches(self, mr: dict | None, attrs, ns_getter, *, binding: bool = False) -> Match | None:
        """The version matched by a policy's ``matchConstraints`` / a binding's
        ``matchResources``, or None."""
        if mr is None:
            return Match(attrs.served, attrs.served) if binding else None
        if not rules.object_labels_match(mr.get("objectSelector"), attrs.obj, attrs.old):
            return None
        sel = mr.get("namespaceSelector")
        if not selector_is_empty(sel):
            res = attrs.served.res
            if res.group == "" and res.resource == "namespaces":
                labels = ((attrs.obj or attrs.old or {}).get("metadata") or {}).get("labels") or {}
            elif not res.namespaced:
                labels = None
            else:
                ns = await ns_getter()
                labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
            if labels is not None and not selector_matches(sel, labels):
                return None
        if self._rules(mr.get("excludeResourceRules"), attrs, attrs.served):
            return None
        rule_list = mr.get("resourceRules")
        if binding and not rule_list:
            return Match(attrs.served, attrs.served)
        if self._rules(rule_list, attrs, attrs.served):
            return Match(attrs.served, attrs.served)
        if mr.get("matchPolicy", "Equivalent") != "Equivalent":
            return None
        for other in self._equivalents(attrs.served):
            if self._rules(rule_list, attrs, other) and not self._rules(mr.get("excludeResourceRules"), attrs, other):
                return Match(other, attrs.served)
        return None


# ---------------------------------------------------------------------------------------------
# params


def served_for_kind(lookup, api_version: str, kind: str):
    group, _, version = api_version.rpartition("/")
    server = getattr(lookup, "__self__", None)
    every = getattr(getattr(server, "resources", None), "served", None) or []
    for s in every:
        if s.res.group == group and s.res.version == version and s.res.kind == kind and "/" not in s.res.resource:
            return s
    return None


def param_kind_missing(param_kind: dict | None) -> str | None:
    """Upstream's policy configuration error for a paramKind that is not served (None if it is
    served or there is none); needs `served_for_kind`'s lookup, so callers pass the message on."""
    if not param_kind:
        return None
    group, _, version = (param_kind.get("apiVersion") or "").rpartition("/")
    return (f"failed to find resource referenced by paramKind: '{group}/{version}, "
            f"Kind={param_kind.get('kind') or ''}'")


async def collect_params(store, lookup, param_kind: dict | None, param_ref: dict | None, attrs) -> list | None:
    """The binding's parameter objects (``[None]`` without a paramKind); None when none was found
    and ``parameterNotFoundAction`` is Allow (the binding is skipped). Raises ConfigError."""
    if not param_kind:
        return [None]
    api_version, kind = param_kind.get("apiVersion") or "", param_kind.get("kind") or ""
    served = served_for_kind(lookup, api_version, kind)
    if served is None:
        raise ConfigError(param_kind_missing(param_kind))
    if not param_ref:
        raise ConfigError(f"paramKind kind `{kind}` is specified but paramRef is not specified")
    namespace = None
    if served.res.namespaced:
        namespace = param_ref.get("namespace") or attrs.namespace or attrs.ctx.namespace
        if not namespace:
            raise ConfigError("cannot use namespaced paramRef in policy binding that matches cluster-scoped "
                              "resources")
    found: list = []
    if param_ref.get("name"):
        try:
            obj = await store.get_raw(served, namespace, param_ref["name"])
            found = [obj]
        except errors.StatusError as e:
            if e.code != 404:
                raise
    else:
        sel = param_ref.get("selector") or {}
        _, items = await store.list_raw(served, namespace)
        found = [o for o in items if selector_matches(sel, (o.get("metadata") or {}).get("labels"))]
        found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
    if not found:
        if param_ref.get("parameterNotFoundAction") == "Deny":
            raise ConfigError("no params found for policy binding with `Deny` parameterNotFoundAction")
        return None
    out = []
    for o in found:
        v = copy.deepcopy(served.strategy.from_storage(o, served))
        v.setdefault("apiVersion", api_version)
        v.setdefault("kind", kind)
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# the activation


class CelAuthorizer:
    """The ``authorizer`` variable: checks for the request's user through the server's
    authorizer chain (RBAC, Node...). An authorizer error is a denial (fail closed)."""

    def __init__(self, lookup, ctx) -> None:
        self.server = getattr(lookup, "__self__", None)
        self.ctx = ctx
        self._cache: dict = {}

    def cel_check(self, a: dict) -> tuple[bool, str, str]:
        from kubeling.apiserver.auth import Attributes, UserInfo  # noqa: PLC0415
        authz = getattr(self.server, "authorizer", None)
        if authz is None:
            return False, "", "no authorizer"
        user = UserInfo(self.ctx.user, self.ctx.uid or "", tuple(self.ctx.groups), dict(self.ctx.extra or {}))
        if a.get("user"):
            ns = a["user"].split(":")[2] if a["user"].count(":") >= 3 else ""
            user = UserInfo(a["user"], "", ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                             "system:authenticated"))
        key = tuple(sorted((k, str(v)) for k, v in a.items()))
        if key in self._cache:
            return self._cache[key]
        if "path" in a:
            attrs = Attributes(user, a["verb"], False, path=a["path"])
        else:
            attrs = Attributes(user, a["verb"], True, group=a.get("group", ""), version="*",
                               resource=a.get("resource", ""), subresource=a.get("subresource", ""),
                               namespace=a.get("namespace", ""), name=a.get("name", ""))
        try:
            d = authz.authorize(attrs)
            out = (bool(d.allowed), d.reason or "", "")
        except Exception as e:  # fail closed
            out = (False, "", str(e))
        self._cache[key] = out
        return out


def request_object(attrs, m: Match) -> dict:
    """The AdmissionRequest the expressions see as ``request`` (without object/oldObject)."""
    ctx = attrs.ctx
    res, req_res = m.served.res, m.request_served.res
    namespace = attrs.namespace or ctx.namespace or ""
    if res.group == "" and res.resource == "namespaces":
        namespace = attrs.name
    user = user_info(ctx)
    req = {
        "uid": getattr(ctx, "audit_id", "") or str(uuid.uuid4()),
        "kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "resource": {"group": res.group, "version": res.version, "resource": res.resource},
        "requestKind": {"group": req_res.group, "version": req_res.version, "kind": req_res.kind},
        "requestResource": {"group": req_res.group, "version": req_res.version, "resource": req_res.resource},
        "name": attrs.name,
        "namespace": namespace,
        "operation": attrs.operation,
        "userInfo": user,
        "dryRun": bool(ctx.dry_run),
    }
    if attrs.subresource:
        req["subResource"] = req["requestSubResource"] = attrs.subresource
    kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}.get(attrs.operation)
    if kind:
        req["options"] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    return req


def namespace_object(ns: dict | None) -> dict | None:
    """Upstream's CreateNamespaceObject: metadata without managedFields, spec, status."""
    if ns is None:
        return None
    meta = ns.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {k: copy.deepcopy(meta[k]) for k in NAMESPACE_META_FIELDS if k in meta},
            "spec": copy.deepcopy(ns.get("spec") or {}), "status": copy.deepcopy(ns.get("status") or {})}


def versioned(obj: dict | None, served) -> dict | None:
    if obj is None:
        return None
    return copy.deepcopy(served.strategy.from_storage(obj, served))


# ---------------------------------------------------------------------------------------------
# compiled expressions

VARIABLES = {"object": None, "oldObject": None, "request": None, "params": None, "namespaceObject": None,
             "authorizer": "map(string, dyn)", "variables": "map(string, dyn)"}


def compile_expression(expression: str):
    return cel.compile(expression, VARIABLES)


class Compiled:
    """A policy's expressions, compiled once per (name, generation/resourceVersion)."""

    def __init__(self, spec: dict, expression_lists: dict[str, list[tuple[str, str]]]) -> None:
        self.programs: dict[tuple[str, int, str], Any] = {}
        self.errors: dict[tuple[str, int, str], str] = {}
        for section, pairs in expression_lists.items():
            for i, (field, expr) in enumerate(pairs):
                if not expr:
                    continue
                try:
                    self.programs[(section, i, field)] = compile_expression(expr)
                except cel.CompileError as e:
                    self.errors[(section, i, field)] = str(e)

    def get(self, section: str, i: int, field: str):
        return self.programs.get((section, i, field))


def evaluate_variables(variables: list, compiled: Compiled, act: dict) -> dict[str, str]:
    """Evaluate the policy's ``variables`` in order into ``act["variables"]``; returns the
    errors by variable name (a use of a failed variable reports its error)."""
    failed: dict[str, str] = {}
    values: dict[str, Any] = {}
    act["variables"] = values
    for i, v in enumerate(variables or []):
        name = v.get("name") or ""
        prog = compiled.get("variables", i, "expression")
        if prog is None:
            failed[name] = compiled.errors.get(("variables", i, "expression"), "not compiled")
            continue
        try:
            values[name] = prog.evaluate(act)
        except cel.EvalError as e:
            failed[name] = str(e)
    return failed


def explain(err: str, failed_vars: dict[str, str]) -> str:
    """A `no such key: <variable>` error names the variable's own failure."""
    if err.startswith("no such key: ") and err[len("no such key: "):] in failed_vars:
        name = err[len("no such key: "):]
        return f'composited variable "{name}" fails to evaluate: {failed_vars[name]}'
    return err


def match_conditions(conds: list, compiled: Compiled, act: dict) -> bool:
    """Upstream's matchconditions.Matcher: any false -> False; errors with none false ->
    raises ConfigError-like EvalError; else True."""
    failures = []
    for i, mc in enumerate(conds or []):
        prog = compiled.get("matchConditions", i, "expression")
        if prog is None:
            failures.append(f"{mc.get('name', '')}: " + compiled.errors.get(("matchConditions", i, "expression"), ""))
            continue
        try:
            value = prog.evaluate(act)
        except cel.EvalError as e:
            failures.append(f"expression '{mc.get('expression', '')}' resulted in error: {e}")
            continue
        if value is False:
            return False
        if value is not True:
            failures.append(f"expression '{mc.get('expression', '')}' must evaluate to bool")
    if failures:
        raise cel.EvalError("; ".join(failures))
    return True


def forbidden(attrs, message: str, reason: str = "Invalid") -> errors.StatusError:
    """Upstream's admission.NewForbidden with the policy's reason and its HTTP code."""
    res = attrs.served.res
    name = attrs.name  # as upstream's extractResourceName: the name, else generateName, else Unknown
    if not name:
        name = ((attrs.obj or {}).get("metadata") or {}).get("generateName") or "Unknown"
    err = errors.forbidden_status(res.resource, res.group, name, message)
    code = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}.get(reason, 422)
    details = dict(err.details or {})
    details["causes"] = list(details.get("causes") or []) + [{"message": message}]
    return errors.StatusError(code, reason or "Invalid", err.message, details=details)
