"""ValidatingAdmissionPolicy (upstream ``apiserver/pkg/admission/plugin/policy/validating``).

For every policy (by name) that has bindings, as upstream's dispatcher:

1. the policy's ``matchConstraints`` must match the request (`policy.Matcher`; with
   ``matchPolicy: Equivalent`` the expressions see the object in the version that matched);
2. for each binding of it (by name) whose ``matchResources`` match, the parameters are collected
   (``paramRef``); for each parameter object (or once without a paramKind):
   ``variables`` are evaluated, then ``matchConditions`` (any false skips), then every
   ``validations`` entry. A false validation is a failure with the validation's ``message`` /
   ``messageExpression`` (a string, trimmed, single-line) or ``failed expression: <expr>``;
   ``reason`` (default Invalid) gives the status reason and code;
3. each failure is enforced by the binding's ``validationActions``: Deny refuses the request,
   Warn adds ``Validation failed for ValidatingAdmissionPolicy '<p>' with binding '<b>': <msg>``
   to the response's warnings, Audit records the ``validation.policy.admission.k8s.io/
   validation_failure`` audit annotation;
4. errors (an expression that errors, a binding whose params cannot be found with
   ``parameterNotFoundAction: Deny``, a paramKind that is not served) follow the policy's
   ``failurePolicy``: Ignore goes on, Fail (the default) is a denial;
5. ``auditAnnotations`` add ``<policy>/<key>`` annotations.

The first denial is answered, as upstream:
``<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<p>' with binding '<b>' denied
request: <message>``, code 422 (reason Invalid) unless the validation's reason says otherwise.

Audit annotations go to ``ctx.audit_annotations`` (the audit log's). A background loop writes each
policy's ``status.observedGeneration`` and ``status.typeChecking``, as upstream's status controller.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging

from kubeling import cel
from kubeling.api import errors
from kubeling.apiserver.admission import policy as P

log = logging.getLogger(__name__)

MAX_MESSAGE = 5 * 1024  # upstream's MaxEvaluatedMessageExpressionSizeBytes
MAX_AUDIT_VALUE = 10 * 1024


class ValidatingAdmissionPolicy:
    NAME = "ValidatingAdmissionPolicy"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.source = P.Source(store, lookup, "v1", "validatingadmissionpolicies",
                               "validatingadmissionpolicybindings")
        self.matcher = P.Matcher(store, lookup)
        self._compiled: dict[str, tuple[str, P.Compiled]] = {}

    def handles(self, attrs) -> bool:
        return attrs.operation in ("CREATE", "UPDATE", "DELETE") and attrs.served.res.group != P.GROUP

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self.source.run(stop), self._status_loop())

    async def _status_loop(self) -> None:
        """Upstream's ValidatingAdmissionPolicy status controller: ``status.observedGeneration``
        follows ``metadata.generation``, with ``typeChecking`` (no warnings: objects are typed
        dynamically here)."""
        from kubeling.apiserver.registry.context import Context  # noqa: PLC0415
        served = self.lookup(P.GROUP, "v1", "validatingadmissionpolicies")
        if served is None:
            return
        ctx = Context(user="system:apiserver", groups=("system:masters",), subresource="status",
                      field_manager="validatingadmissionpolicy-status-controller")
        while True:
            await self.source.policies_changed.wait()
            self.source.policies_changed.clear()
            for name, pol in list(self.source.policies.items()):
                gen = pol["metadata"].get("generation", 1)
                if (pol.get("status") or {}).get("observedGeneration") == gen:
                    continue

                async def mutate(current: dict | None, gen=gen, name=name) -> dict:
                    if current is None:
                        raise errors.not_found("validatingadmissionpolicies", P.GROUP, name)
                    new = copy.deepcopy(current)
                    new["status"] = {**(current.get("status") or {}), "observedGeneration":
                                     current["metadata"].get("generation", gen), "typeChecking": {}}
                    return new
                try:
                    await self.store.guaranteed_update(served, None, name, mutate, ctx)
                except errors.StatusError as e:
                    if e.code != 404:
                        log.warning("ValidatingAdmissionPolicy %s: status not written: %s", name, e.message)
                except Exception:  # noqa: BLE001 - a status write never stops admission
                    log.exception("ValidatingAdmissionPolicy %s: status not written", name)

    def compiled(self, pol: dict) -> P.Compiled:
        meta = pol["metadata"]
        key = f"{meta.get('uid', '')}/{meta.get('generation') or meta.get('resourceVersion', '')}"
        hit = self._compiled.get(meta["name"])
        if hit is not None and hit[0] == key:
            return hit[1]
        spec = pol.get("spec") or {}
        lists = {
            "validations": [("expression", v.get("expression") or "") for v in spec.get("validations") or []],
            "messageExpressions": [("messageExpression", v.get("messageExpression") or "")
                                   for v in spec.get("validations") or []],
            "variables": [("expression", v.get("expression") or "") for v in spec.get("variables") or []],
            "matchConditions": [("expression", v.get("expression") or "") for v in spec.get("matchConditions") or []],
            "auditAnnotations": [("valueExpression", v.get("valueExpression") or "")
                                 for v in spec.get("auditAnnotations") or []],
        }
        c = P.Compiled(spec, lists)
        if len(self._compiled) > 4096:
            self._compiled.clear()
        self._compiled[meta["name"]] = (key, c)
        return c

    async def validate(self, attrs) -> None:
        hooks = await self.source.hooks()
        if not hooks:
            return
        denied: list[tuple[dict, dict | None, str, str]] = []  # (policy, binding, message, reason)
        ns_cache: list = []

        async def ns_getter():
            if not ns_cache:
                ns_cache.append(await self.matcher.namespace(attrs))
            return ns_cache[0]

        audit = getattr(attrs.ctx, "audit_annotations", None)
        for pol, bindings in hooks:
            spec = pol.get("spec") or {}
            fail = spec.get("failurePolicy", "Fail") != "Ignore"
            m = await self.matcher.matches(spec.get("matchConstraints"), attrs, ns_getter)
            if m is None:
                continue
            compiled = self.compiled(pol)
            pk = spec.get("paramKind")
            if pk and P.served_for_kind(self.lookup, pk.get("apiVersion") or "", pk.get("kind") or "") is None:
                if fail:
                    denied.append((pol, None, f"failed to configure policy: {P.param_kind_missing(pk)}", "Invalid"))
                continue
            policy_annotations: dict[str, list[str]] = {}
            for b in bindings:
                bspec = b.get("spec") or {}
                actions = bspec.get("validationActions") or []
                try:
                    bm = await self.matcher.matches(bspec.get("matchResources"), attrs, ns_getter, binding=True)
                except Exception as e:  # a bad selector: a configuration error
                    if fail:
                        denied.append((pol, b, f"failed to configure binding: {e}", "Invalid"))
                    continue
                if bm is None:
                    continue
                try:
                    params = await P.collect_params(self.store, self.lookup, spec.get("paramKind"),
                                                    bspec.get("paramRef"), attrs)
                except P.ConfigError as e:
                    if fail:
                        denied.append((pol, b, f"failed to configure binding: {e}", "Invalid"))
                    continue
                if params is None:
                    continue
                ns = await ns_getter()
                for param in params:
                    act = {
                        "object": P.versioned(attrs.obj if attrs.operation != "DELETE" else None, m.served),
                        "oldObject": P.versioned(attrs.old, m.served),
                        "request": P.request_object(attrs, m),
                        "params": param,
                        "namespaceObject": P.namespace_object(ns),
                        "authorizer": P.CelAuthorizer(self.lookup, attrs.ctx),
                        "__request_resource__": _request_resource(attrs, m),
                    }
                    for i, message, reason in self._evaluate(spec, compiled, act, fail):
                        for action in actions:
                            if action == "Deny":
                                denied.append((pol, b, message, reason))
                            elif action == "Warn":
                                attrs.ctx.warnings.append(
                                    f"Validation failed for ValidatingAdmissionPolicy '{pol['metadata']['name']}' "
                                    f"with binding '{b['metadata']['name']}': {message}")
                            elif action == "Audit" and isinstance(audit, dict):
                                audit["validation.policy.admission.k8s.io/validation_failure"] = json.dumps([{
                                    "message": message, "policy": pol["metadata"]["name"],
                                    "binding": b["metadata"]["name"], "expressionIndex": i,
                                    "validationActions": actions}])
                    for key, value, err in self._audit_annotations(spec, compiled, act):
                        if err is not None:
                            if fail:
                                denied.append((pol, b, err, "Invalid"))
                            continue
                        vals = policy_annotations.setdefault(key, [])
                        if value not in vals:
                            vals.append(value)
            if isinstance(audit, dict):
                for key, vals in policy_annotations.items():
                    audit[f"{pol['metadata']['name']}/{key}"] = ", ".join(vals)
        if denied:
            pol, b, message, reason = denied[0]
            if b is not None:
                text = (f"ValidatingAdmissionPolicy '{pol['metadata']['name']}' with binding "
                        f"'{b['metadata']['name']}' denied request: {message}")
            else:
                text = f"ValidatingAdmissionPolicy '{pol['metadata']['name']}' denied request: {message}"
            raise P.forbidden(attrs, text, reason or "Invalid")

    def _evaluate(self, spec: dict, compiled: P.Compiled, act: dict, fail: bool):
        """(validation index, message, reason) of each failed validation (and of each error when
        the failure policy is Fail)."""
        failed_vars = P.evaluate_variables(spec.get("variables") or [], compiled, act)
        try:
            if not P.match_conditions(spec.get("matchConditions") or [], compiled, act):
                return
        except cel.EvalError as e:
            if fail:
                yield -1, str(e), "Invalid"
            return
        for i, v in enumerate(spec.get("validations") or []):
            prog = compiled.get("validations", i, "expression")
            expr = v.get("expression") or ""
            if prog is None:
                if fail:
                    yield i, f"compilation failed: {compiled.errors.get(('validations', i, 'expression'), '')}", \
                        "Invalid"
                continue
            try:
                ok = prog.evaluate(act)
            except cel.EvalError as e:
                if fail:
                    yield i, f"expression '{expr}' resulted in error: {P.explain(str(e), failed_vars)}", "Invalid"
                continue
            if ok is True:
                continue
            if ok is not False:
                if fail:
                    yield i, f"expression '{expr}' resulted in error: must evaluate to bool", "Invalid"
                continue
            yield i, self._message(v, i, compiled, act), v.get("reason") or "Invalid"

    @staticmethod
    def _message(v: dict, i: int, compiled: P.Compiled, act: dict) -> str:
        message = ""
        prog = compiled.get("messageExpressions", i, "messageExpression")
        if prog is not None:
            a = {k: val for k, val in act.items() if k != "authorizer"}
            try:
                out = prog.evaluate(a)
            except cel.EvalError as e:
                log.debug("messageExpression failed: %s", e)
                out = None
            if isinstance(out, str):
                out = out.strip()
                if len(out) <= MAX_MESSAGE and "\n" not in out:
                    message = out
        if not message and (v.get("message") or "").strip():
            message = v["message"].strip()
        if not message:
            message = f"failed expression: {(v.get('expression') or '').strip()}"
        return message

    @staticmethod
    def _audit_annotations(spec: dict, compiled: P.Compiled, act: dict):
        for i, a in enumerate(spec.get("auditAnnotations") or []):
            prog = compiled.get("auditAnnotations", i, "valueExpression")
            if prog is None:
                continue
            try:
                value = prog.evaluate({k: v for k, v in act.items() if k != "authorizer"})
            except cel.EvalError as e:
                yield a.get("key", ""), None, f"valueExpression '{a.get('valueExpression', '')}' resulted in error: {e}"
                continue
            if value is None:
                continue
            if not isinstance(value, str):
                yield a.get("key", ""), None, (
                    f"valueExpression '{a.get('valueExpression', '')}' resulted in unsupported return type: "
                    f"{type(value).__name__}. Return type must be either string or null.")
                continue
            value = value.strip()
            if value:
                yield a.get("key", ""), value[:MAX_AUDIT_VALUE], None


def _request_resource(attrs, m: P.Match) -> dict:
    res = m.served.res
    out = {"group": res.group, "resource": res.resource}
    if attrs.subresource:
        out["subresource"] = attrs.subresource
    ns = attrs.namespace or attrs.ctx.namespace
    if ns and res.namespaced:
        out["namespace"] = ns
    if attrs.name:
        out["name"] = attrs.name
    return out
