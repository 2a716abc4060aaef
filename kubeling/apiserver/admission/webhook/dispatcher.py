"""What the mutating and validating webhook plugins share (upstream
``plugin/pkg/admission/webhook/generic``: the Source of configurations, ``ShouldCallHook``, the
request builder, the response checks).

`Source` keeps every configuration of one kind in a cache fed by list and watch (as upstream's
configuration manager reads an informer); webhooks are taken in the order of their
configurations' names, then their order in the configuration.

The review is ``admission.k8s.io/v1`` (``v1beta1`` for a webhook that lists only that version:
same fields; its answer's apiVersion, kind and uid are not checked, as upstream does not).

`Webhook.invocations` decides whether one webhook is called for one request, as upstream:

1. the rules, against the request's version (``matchPolicy: Exact`` stops there); with
   ``Equivalent``, against every other version the resource is served at (the same stored
   resource: ``apps/v1beta1`` and ``extensions/v1beta1`` Deployments are ``apps/v1`` ones,
   ``events.k8s.io`` Events are core Events). The webhook then gets the object in the version its
   rule named (``kind``/``resource``), and the request's version as ``requestKind`` /
   ``requestResource``;
2. namespaceSelector and objectSelector (`rules`);
3. matchConditions (CEL, with ``object``, ``oldObject``, ``request`` and ``authorizer``): any
   false skips the webhook; an error with none false is a call failure (so failurePolicy decides).

Requests for the admissionregistration.k8s.io resources themselves are never sent to webhooks
(upstream exempts them, so that a broken webhook cannot lock its own configuration).

Failures follow the failure policy: ``Ignore`` goes on (and logs), ``Fail`` answers 500
``Internal error occurred: failed calling webhook "<name>": <why>``. A dry-run request that
matches a webhook whose sideEffects are ``Some`` or ``Unknown`` is refused with 400 ``admission
webhook "<name>" does not support dry run`` whatever the policy. A refusal is the webhook's
Status with ``admission webhook "<name>" denied the request: <message>`` (code 400 unless it gave
one of 400 or more). Warnings from the response go to the client (``Warning: 299`` headers).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from kubeling.api import errors
from kubeling.apiserver.admission.chain import user_info
from kubeling.apiserver.admission.webhook import rules
from kubeling.apiserver.admission.webhook.client import CallError, Client

log = logging.getLogger(__name__)

GROUP = "admissionregistration.k8s.io"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
OPTIONS_KIND = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
MAX_WARNING_LENGTH = 4096


class Source:
    """Every configuration of one kind, kept by list and watch."""

    def __init__(self, store, lookup, resource: str) -> None:
        self.store = store
        self.lookup = lookup
        self.resource = resource
        self.configs: dict[str, dict] = {}
        self.synced = False
        self._hooks: list[tuple[str, dict]] | None = None

    def served(self):
        return self.lookup(GROUP, "v1", self.resource)

    async def hooks(self) -> list[tuple[str, dict]]:
        """(configuration name, webhook) in calling order."""
        if not self.synced:  # before the first list (start-up, in-process tests): read the store
            _, items = await self.store.list_raw(self.served(), None)
            return _ordered({o["metadata"]["name"]: o for o in items})
        if self._hooks is None:
            self._hooks = _ordered(self.configs)
        return self._hooks

    async def run(self, stop: asyncio.Event) -> None:
        def replace(rv: int, items: list[dict]) -> None:
            self.configs = {o["metadata"]["name"]: o for o in items}
            self._hooks = None
            self.synced = True

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                self.configs.pop(obj["metadata"]["name"], None)
            else:
                self.configs[obj["metadata"]["name"]] = obj
            self._hooks = None
        await self.store.reflect(self.served(), replace, apply, what=f"{self.resource} cache")


def _ordered(configs: dict[str, dict]) -> list[tuple[str, dict]]:
    out = []
    for name in sorted(configs):
        for hook in configs[name].get("webhooks") or []:
            if isinstance(hook, dict):
                out.append((name, hook))
    return out


@dataclass
class Invocation:
    """One webhook to call for one request: the version it gets the object in."""

    config: str
    hook: dict
    served: Any          # the matched version (kind / resource sent)
    request_served: Any  # the version the client wrote through (requestKind / requestResource)

    @property
    def name(self) -> str:
        return self.hook.get("name", "")


V1, V1BETA1 = "admission.k8s.io/v1", "admission.k8s.io/v1beta1"


def review_version(hook: dict) -> str:
    """The first AdmissionReview version the webhook lists that this server speaks (upstream's
    request.CreateAdmissionObjects): v1, or v1beta1 for a webhook that only takes that."""
    for v in hook.get("admissionReviewVersions") or ["v1"]:
        if v == "v1":
            return V1
        if v == "v1beta1":
            return V1BETA1
    return V1


def call_failed(name: str, why: str) -> str:
    return f'failed calling webhook "{name}": {why}'


def denied(name: str, status: dict | None) -> errors.StatusError:
    """Upstream's webhookerrors.ToStatusErr."""
    status = dict(status or {})
    code = status.get("code") or 0
    if not isinstance(code, int) or code < 400:
        code = 400
    by = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{by}: {status['message']}"
    elif status.get("reason"):
        message = f"{by}: {status['reason']}"
    else:
        message = f"{by} without explanation"
    return errors.StatusError(code, status.get("reason") or "", message, details=status.get("details") or None)


def dry_run_unsupported(name: str) -> errors.StatusError:
    return errors.bad_request(f'admission webhook "{name}" does not support dry run')


class Webhook:
    """The plugin core: subclasses are MutatingAdmissionWebhook and ValidatingAdmissionWebhook."""

    NAME = ""
    RESOURCE = ""
    MUTATING = False

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.source = Source(store, lookup, self.RESOURCE)
        self.client = Client(store, lookup)
        self._programs: dict[str, Any] = {}

    def handles(self, attrs) -> bool:
        return attrs.operation in OPERATIONS and attrs.served.res.group != GROUP

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.source.run(stop)
        finally:
            await self.client.close()

    # -- matching ---------------------------------------------------------------------------------

    def _target(self, attrs, served) -> rules.Target:
        res = served.res
        return rules.Target(attrs.operation, res.group, res.version, res.resource, attrs.subresource, res.namespaced)

    def _equivalents(self, served) -> list:
        server = getattr(self.lookup, "__self__", None)
        resources = getattr(server, "resources", None)
        every = getattr(resources, "served", None) or []
        out = [s for s in every if s is not served and s.prefix == served.prefix and s.res.kind == served.res.kind]
        # The storage version first, then the others in a stable order, as upstream's equivalent
        # resource mapper lists them.
        out.sort(key=lambda s: (s.res.group_version != s.storage_gv, s.res.group, s.res.version))
        return out

    def match_rules(self, config: str, hook: dict, attrs) -> Invocation | None:
        if rules.rules_match(hook.get("rules"), self._target(attrs, attrs.served)):
            return Invocation(config, hook, attrs.served, attrs.served)
        if hook.get("matchPolicy", "Equivalent") != "Equivalent":
            return None
        for other in self._equivalents(attrs.served):
            if rules.rules_match(hook.get("rules"), self._target(attrs, other)):
                return Invocation(config, hook, other, attrs.served)
        return None

    async def _namespace_labels(self, attrs) -> dict | None:
        res = attrs.served.res
        if res.group == "" and res.resource == "namespaces":
            return ((attrs.obj or attrs.old or {}).get("metadata") or {}).get("labels") or {}
        if not res.namespaced:
            return None
        ns = attrs.namespace or attrs.ctx.namespace
        if not ns:
            return None
        ns_obj = await self.store.get_raw(self.lookup("", "v1", "namespaces"), None, ns)  # 404 if missing
        return (ns_obj.get("metadata") or {}).get("labels") or {}

    async def invocations(self, attrs) -> list[Invocation]:
        out = []
        ns_labels: Any = ...
        for config, hook in await self.source.hooks():
            inv = self.match_rules(config, hook, attrs)
            if inv is None:
                continue
            if not rules.object_labels_match(hook.get("objectSelector"), attrs.obj, attrs.old):
                continue
            if not rules.selector_is_empty(hook.get("namespaceSelector")):
                if ns_labels is ...:
                    ns_labels = await self._namespace_labels(attrs)
                if not rules.namespace_labels_match(hook["namespaceSelector"], ns_labels):
                    continue
            out.append(inv)
        return out

    def _program(self, expression: str):
        prog = self._programs.get(expression)
        if prog is None:
            from kubeling.apiserver.registry.admissionregistration.webhook import compile_match_condition  # noqa: PLC0415
            prog = compile_match_condition(expression)
            if len(self._programs) > 1024:
                self._programs.clear()
            self._programs[expression] = prog
        return prog

    def _authorizer(self, ctx):
        """The ``authorizer`` variable: the request's user checked through the server's
        authorizers (the CEL admission policies' implementation)."""
        try:
            from kubeling.apiserver.admission.policy import CelAuthorizer  # noqa: PLC0415
        except ImportError:
            return None
        return CelAuthorizer(self.lookup, ctx)

    def match_conditions(self, inv: Invocation, request: dict, ctx) -> bool:
        """Whether the webhook's matchConditions let it be called; raises CallError when one
        cannot be evaluated and none is false (upstream's matchconditions.Matcher)."""
        conds = inv.hook.get("matchConditions") or []
        if not conds:
            return True
        activation = {"object": request.get("object"), "oldObject": request.get("oldObject"),
                      "request": {k: v for k, v in request.items() if k not in ("object", "oldObject")},
                      "authorizer": self._authorizer(ctx)}
        failures = []
        for mc in conds:
            try:
                value = self._program(mc.get("expression", "")).evaluate(activation)
            except Exception as e:  # noqa: BLE001 - CompileError, EvalError or a missing CEL: a failure
                failures.append(f"{mc.get('name', '')}: {e}")
                continue
            if value is False:
                return False
            if value is not True:
                failures.append(f"{mc.get('name', '')}: expression did not return a boolean")
        if failures:
            raise CallError("failed evaluating match conditions: " + "; ".join(failures))
        return True

    # -- the request ------------------------------------------------------------------------------

    def versioned(self, obj: dict | None, served) -> dict | None:
        if obj is None:
            return None
        return copy.deepcopy(served.strategy.from_storage(obj, served))

    def review(self, inv: Invocation, attrs, obj: dict | None, old: dict | None, uid: str) -> dict:
        """The AdmissionReview request (upstream's request.CreateV1AdmissionReview)."""
        ctx = attrs.ctx
        res, req_res = inv.served.res, inv.request_served.res
        namespace = attrs.namespace
        if res.group == "" and res.resource == "namespaces":
            namespace = attrs.name
        user = user_info(ctx)
        request = {
            "uid": uid,
            "kind": {"group": res.group, "version": res.version, "kind": res.kind},
            "resource": {"group": res.group, "version": res.version, "resource": res.resource},
            "requestKind": {"group": req_res.group, "version": req_res.version, "kind": req_res.kind},
            "requestResource": {"group": req_res.group, "version": req_res.version, "resource": req_res.resource},
            "name": attrs.name,
            "operation": attrs.operation,
            "userInfo": user,
            "object": obj,
            "oldObject": old,
            "dryRun": bool(ctx.dry_run),
        }
        if attrs.subresource:
            request["subResource"] = request["requestSubResource"] = attrs.subresource
        if namespace:
            request["namespace"] = namespace
        kind = OPTIONS_KIND.get(attrs.operation)
        if kind:
            options = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
            if attrs.operation != "DELETE" and ctx.field_manager:
                options["fieldManager"] = ctx.field_manager
            if ctx.dry_run:
                options["dryRun"] = ["All"]
            request["options"] = options
        return {"apiVersion": review_version(inv.hook), "kind": "AdmissionReview", "request": request}

    async def call(self, inv: Invocation, attrs, obj: dict | None, old: dict | None) -> dict | None:
        """Call the webhook and return its checked ``response`` (None when its matchConditions skip
        it); raises CallError (a failure the policy decides about) or StatusError (a dry-run
        refusal)."""
        hook = inv.hook
        uid = str(uuid.uuid4())
        review = self.review(inv, attrs, obj, old, uid)
        if not self.match_conditions(inv, review["request"], attrs.ctx):
            return None
        if attrs.ctx.dry_run and hook.get("sideEffects") in ("Some", "Unknown", None):
            raise dry_run_unsupported(inv.name)
        timeout = hook.get("timeoutSeconds") or 10
        body = await self.client.post(hook.get("clientConfig") or {}, review, int(timeout))
        version = review["apiVersion"]
        if version == V1 and (body.get("apiVersion") != version or body.get("kind") != "AdmissionReview"):
            raise CallError(f"expected webhook response of {version}, Kind=AdmissionReview, got "
                            f"{body.get('apiVersion', '')}, Kind={body.get('kind', '')}")
        response = body.get("response")
        if not isinstance(response, dict):
            raise CallError("webhook response was absent")
        if version == V1 and response.get("uid") != uid:
            raise CallError(f'expected response.uid="{uid}", got "{response.get("uid", "")}"')
        if response.get("patch") is not None or response.get("patchType") is not None:
            if not self.MUTATING:
                raise CallError("validating webhook may not return a patch")
            if response.get("patchType") != "JSONPatch":
                raise CallError(f'expected patchType JSONPatch, got "{response.get("patchType", "")}"')
        for w in response.get("warnings") or []:
            if isinstance(w, str) and w.strip():
                attrs.ctx.warnings.append(" ".join(w.split())[:MAX_WARNING_LENGTH])
        return response

    def failed(self, inv: Invocation, why: str) -> errors.StatusError | None:
        """A call failure under the webhook's policy: the error to answer, or None to go on."""
        if inv.hook.get("failurePolicy", "Fail") == "Ignore":
            log.warning("failed calling webhook, failing open %s: %s", inv.name, why)
            return None
        log.warning("failed calling webhook, failing closed %s: %s", inv.name, why)
        return errors.internal(call_failed(inv.name, why))
