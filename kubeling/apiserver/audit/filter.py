"""The audit filter (upstream: ``k8s.io/apiserver/pkg/endpoints/filters/audit.go`` ``WithAudit``,
``WithAuditInit`` and ``WithFailedAuthenticationAudit``).

Every response carries an ``Audit-Id`` header (the client's ``Audit-ID`` when it sent one, a
fresh UUID otherwise). When a policy is configured, each request is evaluated against it with
the *authenticated* user (before impersonation, as upstream) and, at level Metadata or above,
produces ``audit.k8s.io/v1`` Events, one per stage not omitted:

- ``RequestReceived``: as soon as the request is authenticated;
- ``ResponseStarted``: when the headers of a long-running response (watch, exec, logs -f, ...)
  are sent;
- ``ResponseComplete``: when the handler is done;
- ``Panic``: when the handler failed unexpectedly.

An event carries level, auditID, stage, requestURI, verb (upstream's request verbs for
resources, the lower-cased method otherwise), user, impersonatedUser, sourceIPs, userAgent,
objectRef, responseStatus, requestReceivedTimestamp, stageTimestamp and annotations (the
authorization decision and reason, added by `annotate`, and what admission plugins put in the
registry Context's ``audit_annotations``, such as PodSecurity's). At level Request the request body is
``requestObject``; at RequestResponse the response body is ``responseObject`` too. A request
whose authentication failed is audited once (stage ResponseStarted, 401), as upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from aiohttp import web

from kubeling.apiserver import negotiation
from kubeling.apiserver.audit.policy import AuditConfig, Policy, RequestAttributes, level_at_least
from kubeling.apiserver.endpoints.request import parse_path
from kubeling.apiserver.filters.longrunning import is_long_running

log = logging.getLogger(__name__)

HEADER_AUDIT_ID = "Audit-Id"
DECISION = "authorization.k8s.io/decision"
REASON = "authorization.k8s.io/reason"


@dataclass
class AuditContext:
    """One request's audit state."""

    audit_id: str
    config: AuditConfig = field(default_factory=AuditConfig)
    event: dict | None = None      # the event being built (None when not audited)
    long_running: bool = False
    started: bool = False          # ResponseStarted processed
    # the registry Context's audit_annotations: endpoints/options.py keeps that dict in
    # request["audit_annotations"], where admission plugins fill it
    admission_annotations: dict = field(default_factory=dict)


AUDIT = web.RequestKey("audit", AuditContext)


def micro_time(t: float | None = None) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    d = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}Z"


def user_info(user) -> dict:
    out: dict = {"username": user.name}
    if user.uid:
        out["uid"] = user.uid
    if user.groups:
        out["groups"] = list(user.groups)
    if user.extra:
        out["extra"] = {k: list(v) for k, v in user.extra.items()}
    return out


def source_ips(request: web.Request) -> list[str]:
    """Upstream's utilnet.SourceIPs: X-Forwarded-For, X-Real-Ip, then the peer address."""
    ips: list[str] = []
    for part in request.headers.get("X-Forwarded-For", "").split(","):
        if part.strip():
            ips.append(part.strip())
    real = request.headers.get("X-Real-Ip", "").strip()
    if real and real not in ips:
        ips.append(real)
    remote = request.remote or ""
    if remote and remote not in ips:
        ips.append(remote)
    return ips


def request_attributes(request: web.Request, user) -> tuple[RequestAttributes, dict | None]:
    """The policy's view of the request and the event's objectRef (None for other paths)."""
    try:
        info = parse_path(request.method, request.path, request.query)
    except Exception:  # noqa: BLE001 - a malformed URL is audited as a non-resource request
        info = None
    name = user.name if user is not None else ""
    groups = tuple(user.groups) if user is not None else ()
    if info is None:
        return RequestAttributes(name, groups, request.method.lower(), False, request.path), None
    ref = {"resource": info.resource}
    if info.namespace:
        ref["namespace"] = info.namespace
    if info.name:
        ref["name"] = info.name
    if info.group:
        ref["apiGroup"] = info.group
    ref["apiVersion"] = info.version
    if info.subresource:
        ref["subresource"] = info.subresource
    return RequestAttributes(name, groups, info.verb, True, request.path, info.group, info.resource,
                             info.subresource, info.namespace or "", info.name), ref


HEAVY_BYTES = 128 * 1024   # bodies over this are decoded on a worker thread


async def _decode(data: bytes, content_type: str | None):
    """A request or response body as JSON-like data; None if it does not decode."""
    try:
        if len(data) > HEAVY_BYTES:
            return await asyncio.to_thread(negotiation.decode_body, data, content_type)
        return negotiation.decode_body(data, content_type)
    except Exception:  # noqa: BLE001 - an undecodable body is left out of the event
        return None


def _strip_managed_fields(obj):
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        if isinstance(obj.get("items"), list):
            obj = {**obj, "items": [_strip_managed_fields(i) for i in obj["items"]]}
    return obj


def _response_status(resp: web.StreamResponse | None, code: int) -> dict:
    """upstream: the bounded fields of a Status answer, else just the code."""
    status: dict = {"metadata": {}, "code": code}
    if isinstance(resp, web.Response) and isinstance(resp.body, (bytes, bytearray)) and resp.body[:1] == b"{" \
            and b'"Status"' in resp.body[:64] and resp.content_type == "application/json":
        try:
            doc = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            return status
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            for k in ("status", "message", "reason", "details"):
                if doc.get(k):
                    status[k] = doc[k]
    return status


class Auditor:
    """The audit filter for one server: a policy (None: nothing is audited, only the Audit-Id
    header is set) and a backend with ``process(event)``."""

    def __init__(self, policy: Policy | None = None, backend=None) -> None:
        self.policy = policy
        self.backend = backend

    @property
    def enabled(self) -> bool:
        return self.policy is not None and self.backend is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Until the server stops; then the backend writes (or sends) what is queued and closes."""
        if self.backend is not None and hasattr(self.backend, "start"):
            await self.backend.start()
        try:
            await stop.wait()
        finally:
            if self.backend is not None and hasattr(self.backend, "aclose"):
                await self.backend.aclose()

    # -- the hooks -----------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._on_prepare)

    def context(self, request: web.Request) -> AuditContext:
        ctx = request.get(AUDIT)
        if ctx is None:
            asked = request.headers.get("Audit-ID", "").strip()
            ctx = request[AUDIT] = AuditContext(asked or str(uuid.uuid4()))
        return ctx

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        ctx = self.context(request)
        response.headers[HEADER_AUDIT_ID] = ctx.audit_id
        if ctx.event is not None and ctx.long_running and not ctx.started:
            ctx.started = True
            ctx.event["responseStatus"] = {"metadata": {}, "code": response.status}
            self._emit(ctx, "ResponseStarted")

    def annotate(self, request: web.Request, key: str, value: str) -> None:
        ctx = request.get(AUDIT)
        if ctx is not None and ctx.event is not None:
            ctx.event.setdefault("annotations", {}).setdefault(key, value)

    def failed_authentication(self, request: web.Request, code: int, status: dict) -> None:
        """Upstream's WithFailedAuthenticationAudit: one ResponseStarted event, no user."""
        ctx = self.context(request)
        if not self.enabled:
            return
        attrs, ref = request_attributes(request, None)
        ctx.config = self.policy.evaluate(attrs)
        if ctx.config.level == "None":
            return
        ctx.event = self._new_event(request, ctx, attrs, ref, None)
        ctx.event["responseStatus"] = {"metadata": {}, **{k: v for k, v in status.items()
                                                          if k in ("status", "message", "reason")}, "code": code}
        self._emit(ctx, "ResponseStarted")

    # -- the middleware ------------------------------------------------------------------------

    def middleware(self):
        @web.middleware
        async def audit(request: web.Request, handler):
            ctx = self.context(request)
            if not self.enabled:
                return await handler(request)
            attrs, ref = request_attributes(request, request.get("user"))
            ctx.config = self.policy.evaluate(attrs)
            if ctx.config.level == "None":
                return await handler(request)
            ctx.long_running = is_long_running(request.method, request.path, request.query)
            ctx.admission_annotations = request.setdefault("audit_annotations", {})
            ctx.event = self._new_event(request, ctx, attrs, ref, request.get("user"))
            self._emit(ctx, "RequestReceived")
            try:
                resp = await handler(request)
            except web.HTTPException as e:
                await self._complete(request, ctx, e, e.status)
                raise
            except asyncio.CancelledError:
                # the request deadline (filters/timeout.py) or the server stopping
                ctx.event["responseStatus"] = {"metadata": {}, "status": "Failure", "reason": "Timeout",
                                               "message": "request did not complete", "code": 504}
                self._impersonated(request, ctx)
                self._emit(ctx, "ResponseComplete")
                raise
            except Exception as e:
                ctx.event["responseStatus"] = {"metadata": {}, "status": "Failure", "reason": "InternalError",
                                               "message": f"APIServer panic'd: {e}", "code": 500}
                self._impersonated(request, ctx)
                self._emit(ctx, "Panic")
                raise
            await self._complete(request, ctx, resp, resp.status)
            return resp

        return audit

    # -- events --------------------------------------------------------------------------------

    def _new_event(self, request, ctx: AuditContext, attrs: RequestAttributes, ref, user) -> dict:
        ev: dict = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": ctx.config.level,
                    "auditID": ctx.audit_id, "stage": "", "requestURI": request.raw_path, "verb": attrs.verb,
                    "user": user_info(user) if user is not None else {}, "sourceIPs": source_ips(request)}
        ua = request.headers.get("User-Agent")
        if ua:
            ev["userAgent"] = ua
        if ref is not None:
            ev["objectRef"] = ref
        ev["requestReceivedTimestamp"] = micro_time()
        return ev

    async def _complete(self, request, ctx: AuditContext, resp, code: int) -> None:
        ctx.event["responseStatus"] = _response_status(resp, code)
        if ctx.long_running and not ctx.started and "ResponseStarted" not in ctx.config.omit_stages:
            # a long-running request answered without streaming (an error): started, then complete
            ctx.started = True
            self._emit(ctx, "ResponseStarted")
        self._impersonated(request, ctx)
        await self._request_object(request, ctx)
        if level_at_least(ctx.config.level, "RequestResponse") and isinstance(resp, web.Response) and \
                isinstance(resp.body, (bytes, bytearray)) and resp.body and \
                resp.content_type in ("application/json", "application/yaml"):
            body = bytes(resp.body)
            if resp.content_type == "application/json" and not ctx.config.omit_managed_fields and \
                    b"\n" not in body and b"\r" not in body:
                # our own compact JSON: embedded as it is, never decoded and encoded again
                ctx.event["responseObject"] = orjson.Fragment(body)
            else:
                obj = await _decode(body, resp.content_type)
                if isinstance(obj, (dict, list)):
                    ctx.event["responseObject"] = _strip_managed_fields(obj) if ctx.config.omit_managed_fields \
                        else obj
        self._emit(ctx, "ResponseComplete")

    @staticmethod
    def _impersonated(request, ctx: AuditContext) -> None:
        imp = request.get("impersonated_user")
        if imp is not None:
            ctx.event["impersonatedUser"] = user_info(imp)

    async def _request_object(self, request, ctx: AuditContext) -> None:
        """The request body, if the handler read it: it completes objectRef (upstream's
        LogRequestObject) and, from level Request, is requestObject."""
        data = getattr(request, "_read_bytes", None)   # aiohttp keeps the body the handler read
        if not data:
            return
        obj = await _decode(data, request.headers.get("Content-Type"))
        if not isinstance(obj, (dict, list)):
            return
        ev = ctx.event
        ref = ev.get("objectRef")
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if ref is not None and isinstance(meta, dict):
            for k in ("namespace", "name", "uid", "resourceVersion"):
                if not ref.get(k) and isinstance(meta.get(k), str) and meta.get(k):
                    ref[k] = meta[k]
        if level_at_least(ctx.config.level, "Request"):
            ev["requestObject"] = _strip_managed_fields(obj) if ctx.config.omit_managed_fields else obj

    def _emit(self, ctx: AuditContext, stage: str) -> None:
        if stage in ctx.config.omit_stages:
            return
        ev = ctx.event
        if ctx.admission_annotations:   # admission's (PodSecurity, ValidatingAdmissionPolicy), once known
            anns = ev.setdefault("annotations", {})
            for k, v in ctx.admission_annotations.items():
                anns.setdefault(k, v)
        ev["stage"] = stage
        ev["stageTimestamp"] = micro_time()
        try:
            self.backend.process(ev)   # serialised at once: later changes to ev do not reach it
        except Exception:  # noqa: BLE001 - auditing never fails a request
            log.exception("audit backend")
