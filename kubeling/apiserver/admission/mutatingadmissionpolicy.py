"""MutatingAdmissionPolicy (upstream ``apiserver/pkg/admission/plugin/policy/mutating``;
``admissionregistration.k8s.io/v1alpha1``).

For every policy (by name) with bindings whose ``matchConstraints`` match the request, for each
binding (by name) whose ``matchResources`` match, for each parameter object: variables, then
``matchConditions`` (any false skips), then each of ``mutations`` in order, each seeing the object
as the previous one left it:

- ``ApplyConfiguration``: the expression builds a partial object (``Object{spec:
  Object.spec{replicas: 3}}``), merged into the object with server-side apply's merge
  (`kubeling.api.patch.apply.merge`: maps merge, lists by their schema's list type and keys,
  atomic values replaced);
- ``JSONPatch``: the expression gives a list of ``JSONPatch{op, path, value, from}``, applied as
  an RFC 6902 patch (``jsonpatch.escapeKey(k)`` escapes a map key for a path).

A mutation that fails (an evaluation error, a bad patch) follows the policy's ``failurePolicy``:
Ignore skips it, Fail refuses the request with ``<resource> "<name>" is forbidden: policy '<p>'
with binding '<b>' denied request: <error>`` (422 Invalid).

The patched object is defaulted again (an added container gets its defaults). Reinvocation
(``reinvocationPolicy: IfNeeded``): once a policy changes the object, every IfNeeded policy
invocation that ran before it runs once more, after the first pass. Reinvocation across plugins
(a webhook's change reinvoking policies) is not done: kubeling's chain runs each mutating plugin
once.
"""

from __future__ import annotations

import asyncio
import logging

from kubeling import cel
from kubeling.api import errors, schema
from kubeling.api.patch import apply as ssa
from kubeling.api.patch import jsonpatch
from kubeling.apiserver.admission import policy as P
from kubeling.cel import objects

log = logging.getLogger(__name__)


def compile_mutation(expression: str):
    """A mutation's expression, object constructions included (raises cel.CompileError)."""
    return cel.compile(objects.rewrite(expression), P.VARIABLES)


class MutatingAdmissionPolicy:
    NAME = "MutatingAdmissionPolicy"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.source = P.Source(store, lookup, "v1alpha1", "mutatingadmissionpolicies",
                               "mutatingadmissionpolicybindings")
        self.matcher = P.Matcher(store, lookup)
        self._compiled: dict[str, tuple[str, P.Compiled, dict]] = {}

    def handles(self, attrs) -> bool:
        return attrs.operation in ("CREATE", "UPDATE") and attrs.served.res.group != P.GROUP and attrs.obj is not None

    async def run(self, stop: asyncio.Event) -> None:
        await self.source.run(stop)

    def compiled(self, pol: dict) -> tuple[P.Compiled, dict]:
        meta = pol["metadata"]
        key = f"{meta.get('uid', '')}/{meta.get('generation') or meta.get('resourceVersion', '')}"
        hit = self._compiled.get(meta["name"])
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        spec = pol.get("spec") or {}
        c = P.Compiled(spec, {
            "variables": [("expression", v.get("expression") or "") for v in spec.get("variables") or []],
            "matchConditions": [("expression", v.get("expression") or "") for v in spec.get("matchConditions") or []],
        })
        mutations: dict = {}
        for i, m in enumerate(spec.get("mutations") or []):
            expr = ((m.get("applyConfiguration") if m.get("patchType") == "ApplyConfiguration"
                     else m.get("jsonPatch")) or {}).get("expression") or ""
            try:
                mutations[i] = compile_mutation(expr)
            except cel.CompileError as e:
                mutations[i] = e
        if len(self._compiled) > 4096:
            self._compiled.clear()
        self._compiled[meta["name"]] = (key, c, mutations)
        return c, mutations

    async def admit(self, attrs) -> None:
        hooks = await self.source.hooks()
        if not hooks:
            return
        ns_cache: list = []

        async def ns_getter():
            if not ns_cache:
                ns_cache.append(await self.matcher.namespace(attrs))
            return ns_cache[0]

        invoked: list[tuple] = []   # IfNeeded invocations run so far
        reinvoke: set[int] = set()  # ids of those to run again
        for pol, bindings in hooks:
            spec = pol.get("spec") or {}
            fail = spec.get("failurePolicy", "Fail") != "Ignore"
            m = await self.matcher.matches(spec.get("matchConstraints"), attrs, ns_getter)
            if m is None:
                continue
            compiled, mutations = self.compiled(pol)
            for b in bindings:
                bspec = b.get("spec") or {}
                try:
                    bm = await self.matcher.matches(bspec.get("matchResources"), attrs, ns_getter, binding=True)
                except Exception as e:  # noqa: BLE001 - a bad selector: a configuration error
                    if fail:
                        raise _refuse(attrs, pol, b, f"failed to configure binding: {e}") from None
                    continue
                if bm is None:
                    continue
                try:
                    params = await P.collect_params(self.store, self.lookup, spec.get("paramKind"),
                                                    bspec.get("paramRef"), attrs)
                except P.ConfigError as e:
                    if fail:
                        raise _refuse(attrs, pol, b, f"failed to configure binding: {e}") from None
                    continue
                if params is None:
                    continue
                ns = await ns_getter()
                for param in params:
                    inv = (pol, b, m, spec, compiled, mutations, param, ns, fail)
                    if self._invoke(attrs, inv):
                        reinvoke.update(id(i) for i in invoked)
                    if spec.get("reinvocationPolicy") == "IfNeeded":
                        invoked.append(inv)
        # Reinvocation, as upstream: once a policy changed the object, the IfNeeded policies that
        # ran before it run once more (a second pass only).
        for inv in invoked:
            if id(inv) in reinvoke:
                self._invoke(attrs, inv)

    def _invoke(self, attrs, inv: tuple) -> bool:
        """Run one (policy, binding, param); True if it changed the object."""
        pol, b, m, spec, compiled, mutations, param, ns, fail = inv
        before = attrs.obj.copy()
        err = self._mutate(attrs, m, spec, compiled, mutations, param, ns)
        if err and fail:
            raise _refuse(attrs, pol, b, err)
        if err:
            log.info("MutatingAdmissionPolicy %s ignored an error: %s", pol["metadata"]["name"], err)
        return attrs.obj != before

    def _mutate(self, attrs, m: P.Match, spec: dict, compiled: P.Compiled, mutations: dict, param, ns) -> str | None:
        served = m.served
        obj = P.versioned(attrs.obj, served)
        act = {
            "object": obj,
            "oldObject": P.versioned(attrs.old, served),
            "request": P.request_object(attrs, m),
            "params": param,
            "namespaceObject": P.namespace_object(ns),
            "authorizer": P.CelAuthorizer(self.lookup, attrs.ctx),
        }
        failed_vars = P.evaluate_variables(spec.get("variables") or [], compiled, act)
        try:
            if not P.match_conditions(spec.get("matchConditions") or [], compiled, act):
                return None
        except cel.EvalError as e:
            return str(e)
        changed = False
        for i, mut in enumerate(spec.get("mutations") or []):
            prog = mutations.get(i)
            if isinstance(prog, Exception) or prog is None:
                return f"compilation failed: {prog}"
            act["object"] = obj
            try:
                result = prog.evaluate(act)
            except cel.EvalError as e:
                return P.explain(str(e), failed_vars)
            try:
                if mut.get("patchType") == "ApplyConfiguration":
                    if not isinstance(result, dict):
                        return "apply configuration must evaluate to an object"
                    node = served.schema
                    schemas = None if served.res.crd else schema.get()
                    new = ssa.merge(obj, result, node, schemas)
                else:
                    if not isinstance(result, list):
                        return "JSONPatch expression must evaluate to a list of JSONPatch"
                    ops = [{k: v for k, v in op.items() if v is not None or k == "value"} for op in result]
                    new = jsonpatch.apply(obj, ops)
            except errors.StatusError as e:
                return e.message
            except Exception as e:  # noqa: BLE001 - a patch that cannot apply is this mutation's error
                return str(e)
            if not isinstance(new, dict):
                return "mutation did not produce an object"
            # identity and type cannot change
            for k in ("apiVersion", "kind"):
                if obj.get(k) is not None:
                    new[k] = obj[k]
            changed = changed or new != obj
            obj = new
        if changed:
            stored = served.strategy.to_storage(obj, served)
            served.strategy.defaults(stored)  # upstream defaults the patched object
            attrs.obj.clear()
            attrs.obj.update(stored)
        return None


def _refuse(attrs, pol: dict, b: dict, message: str) -> errors.StatusError:
    return P.forbidden(attrs, f"policy '{pol['metadata']['name']}' with binding '{b['metadata']['name']}' "
                              f"denied request: {message}")
