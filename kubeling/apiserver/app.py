"""The API server: an aiohttp application over one `Store`.

Filters, then the pipeline (upstream's handler chain)::

    connection guard (serving.py: handshake, header and idle timeouts, connection caps)
    ─► request deadline (filters/timeout.py) ─► authn (x509 | bearer: token file, service
       account JWT (serviceaccount.py), bootstrap token | anonymous, or 401 with
       --anonymous-auth=false) ─► audit (audit/filter.py: policy, events, Audit-Id)
    ─► impersonation (filters/impersonation.py: Impersonate-* headers, each part authorized
       with the impersonate verb; request["user"] becomes the impersonated user)
    ─► in-flight budgets (filters/maxinflight.py, 429) ─► parse RequestInfo
      ├─ resource request: resolve Served ─► authz ─► endpoints.serve ─► generic store
      │                                                       (admission runs inside the store)
      ├─ an aggregated API (an APIService's group/version not served here) ─► aggregator
      └─ non-resource: authz by path ─► /healthz /livez /readyz /version /metrics
                                        /openapi/v2 /openapi/v3[/...]  (built at runtime)
                                        /api /apis /api/v1 /apis/<g>[/<v>]  (discovery)

Every failure leaves as a ``metav1.Status`` with upstream's code and reason; an unexpected
exception is logged and becomes 500 InternalError, never a dropped connection. Concurrency: one
asyncio loop; the store does blocking I/O in its own threads; `resources` is swapped atomically
when CRDs change.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import orjson
from aiohttp import web

from kubeling.api import errors, limits, schema
from kubeling.apiserver import audit, discovery, endpoints, memory, openapi, registry, serviceaccount, serving
from kubeling.apiserver.admission import default_chain
from kubeling.apiserver.authenticator import bootstraptoken
from kubeling.apiserver import rbac
from kubeling.apiserver.authorizer import graph_for, name_from_field_selector
from kubeling.apiserver.auth import ANONYMOUS, Attributes, TokenFile, UserInfo, default_authorizer, \
    user_from_cert, with_authenticated
from kubeling.apiserver.endpoints.response import json_body, status_response
from kubeling.apiserver.filters import impersonation, maxinflight, timeout
from kubeling.apiserver.metrics import Metrics
from kubeling.apiserver.registry.authentication.tokenreview import TokenReviewREST
from kubeling.apiserver.registry.core.serviceaccount import TokenRequestREST
from kubeling.apiserver.registry.generic import storage_status
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.resources import ResourceMap, Served, builtin_served
from kubeling.storage.interface import StorageError

log = logging.getLogger(__name__)

# Everyone on the development-only insecure port is an administrator, as upstream's old insecure port.
INSECURE_USER = UserInfo("system:admin", groups=("system:masters", "system:authenticated"))
NOT_FOUND = endpoints.NOT_FOUND


class TokenRefused(Exception):
    """A bearer token an authenticator recognised and refused (expired, revoked, bad signature)."""


class APIServer:
    def __init__(self, store, *, token_file: str | None = None, advertise_address: str = "127.0.0.1",
                 secure_port: int = 6443, config: registry.Config | None = None,
                 service_account_key_file: str | None = None, authorization_modes=None) -> None:
        self.config = config or registry.Config()
        self.strategies = registry.strategies(self.config)
        self.resources = ResourceMap(builtin_served(self.strategies))
        self.scope = None  # set below; the RBAC authorizer reads its watch cache (scope.cacher) when asked
        self.rbac = rbac.authorizer_for(self)
        self.authorizer = default_authorizer(self.rbac, modes=authorization_modes, graph=graph_for(self))
        self.registry = registry.GenericStore(store)
        self.admission = self.registry.admission = default_chain(self.registry, self.lookup, self.config)
        self.scope = endpoints.Scope(self.registry, Deps(self.registry, self.lookup, self.authorizer))
        rbac.install_escalation_checks(self)
        self.tokens = TokenFile(token_file)
        # Service account tokens: signed by TokenRequest, verified by the bearer authenticator, with one
        # key (ephemeral when no file is given, as in in-process tests) loaded on first use.
        self.service_account_keys = serviceaccount.Keys(service_account_key_file)
        self.service_account_tokens = serviceaccount.Authenticator(
            self.service_account_keys, serviceaccount.StoreGetter(self.registry, self.lookup))
        self.bootstrap_tokens = bootstraptoken.BootstrapTokenAuthenticator(
            serviceaccount.StoreGetter(self.registry, self.lookup))
        self.scope.rest(TokenRequestREST).configure(self.service_account_keys)
        self.scope.rest(TokenReviewREST).configure(self.authenticate_token, (TokenRefused,),
                                                   self.service_account_tokens.api_audiences)
        self.anonymous_auth = True  # --anonymous-auth: a request without credentials is system:anonymous
        self.auditor = audit.Auditor()  # set by server.run from --audit-policy-file and --audit-log-*
        self.metrics = Metrics()
        self.scope.metrics = self.metrics
        for plugin in self.admission.plugins:  # admission plugins' own counters (PodSecurity's)
            if hasattr(plugin, "register_metrics"):
                plugin.register_metrics(self.metrics.registry)
        self.advertise_address = advertise_address
        self.secure_port = secure_port
        self.ready = False
        self.aggregator = None  # set by server.run: answers for aggregated APIs
        self.join = None  # set by server.run: the node join endpoints (join.py), answered before authn
        self._openapi: dict = {}
        self.crd_schemas: dict = {}

    # -- resources -----------------------------------------------------------------------------

    def lookup(self, group: str, version: str, resource: str) -> Served | None:
        return self.resources.get(group, version, resource)

    def set_custom_resources(self, served: list, crd_schemas: dict) -> None:
        """Swap in a new set of CRD-served resources (called by the CRD controller)."""
        self.resources = self.resources.with_custom(served)
        self.crd_schemas = crd_schemas
        self._openapi = {}

    def _v3(self) -> openapi.V3Documents:
        docs = self._openapi.get("v3")
        if docs is None:
            docs = openapi.V3Documents(self.resources.resources(), schema.get(), self.crd_schemas)
            self._openapi["v3"] = docs
        return docs

    def _v2(self, protobuf: bool) -> bytes:
        key = "v2pb" if protobuf else "v2"
        body = self._openapi.get(key)
        if body is None:
            doc = openapi.build_v2(self.resources.resources(), schema.get(), self.crd_schemas)
            body = openapi.v2_protobuf(doc) if protobuf else orjson.dumps(doc)
            self._openapi[key] = body
        return body

    def report_undecodable(self, key: str, why: str) -> None:
        """A stored value that does not decode is left out of lists and watches (by the watch
        cache); this records a Warning Event naming it, so that an operator sees it in
        ``kubectl get events``, and restores from a backup (``kubeling restore``)."""
        served = next((s for s in self.resources.served if key.startswith(s.prefix) and s.res.group_version ==
                       s.storage_gv), None)
        rest = key[len(served.prefix):].split("/") if served else []
        namespace, name = (rest[0], rest[-1]) if served and served.res.namespaced and len(rest) == 2 else \
            (None, rest[-1] if rest else key)
        now = registry.now_rfc3339()
        involved = {"name": name}
        if served is not None:
            involved.update(apiVersion=served.res.group_version, kind=served.res.kind)
        if namespace:
            involved["namespace"] = namespace
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": "undecodable-", "namespace": namespace or "default"},
                 "involvedObject": involved, "reason": "FailedToDecode", "type": "Warning",
                 "message": f"the stored value of {key} cannot be decoded ({why[:200]}); it is left out of lists "
                            f"and watches until it is replaced, deleted or restored from a backup",
                 "source": {"component": "kube-apiserver"}, "reportingComponent": "kube-apiserver",
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        ctx = registry.Context(user="system:apiserver", field_manager="kube-apiserver",
                               namespace=namespace or "default")

        async def record() -> None:
            try:
                await self.registry.create(self.lookup("", "v1", "events"), event, ctx)
            except errors.StatusError as e:
                log.warning("recording that %s does not decode: %s", key, e.message)
        asyncio.get_running_loop().create_task(record())

    # -- auth ----------------------------------------------------------------------------------

    async def authenticate(self, request: web.Request):
        """Upstream's union order: a verified client certificate first, then a bearer token (the
        static token file, then service account JWTs); a bearer token nobody knows is a 401."""
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        user = user_from_cert(peercert)
        if user is not None:
            return with_authenticated(user)
        authz = request.headers.get("Authorization", "")
        if authz:
            scheme, _, token = authz.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                try:
                    user = await self.authenticate_token(token.strip())
                except TokenRefused as e:
                    log.debug("bearer token refused: %s", e)
                    raise errors.unauthorized() from None
                if user is None:
                    raise errors.unauthorized()
                return with_authenticated(user)
            raise errors.unauthorized()
        if request.get("insecure"):
            return INSECURE_USER
        if not self.anonymous_auth:
            raise errors.unauthorized()
        return ANONYMOUS

    async def authenticate_token(self, token: str) -> UserInfo | None:
        """A bearer token's user (without ``system:authenticated``): the static token file, then
        service account JWTs, then bootstrap tokens. None if nobody knows it; `TokenRefused` if
        an authenticator recognises it and refuses it. TokenReview asks this too."""
        user = self.tokens.lookup(token)
        if user is None:
            try:
                user = await self.service_account_tokens.authenticate(token)
            except serviceaccount.TokenInvalid as e:
                raise TokenRefused(str(e)) from None
        if user is None:
            try:   # <id>.<secret>: a bootstrap token Secret in kube-system (authenticator/bootstraptoken.py)
                user = await self.bootstrap_tokens.authenticate(token)
            except bootstraptoken.TokenInvalid as e:
                raise TokenRefused(str(e)) from None
        return user

    def authorize(self, attrs: Attributes, request: web.Request | None = None) -> None:
        d = self.authorizer.authorize(attrs)
        if request is not None:   # upstream's audit annotations of the decision
            self.auditor.annotate(request, audit.filter.DECISION, "allow" if d.allowed else "forbid")
            self.auditor.annotate(request, audit.filter.REASON, d.reason)
        if d.allowed:
            return
        user = attrs.user.name
        if attrs.resource_request:
            resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
            raise errors.forbidden_error(user, attrs.verb, resource, attrs.group, attrs.name, attrs.namespace,
                                         d.reason)
        raise errors.StatusError(403, "Forbidden", f'forbidden: User "{user}" cannot {attrs.verb} path '
                                 f'"{attrs.path}"', details={})

    # -- the application -----------------------------------------------------------------------

    def build_app(self, *, insecure: bool = False, request_timeout: float = timeout.DEFAULT_REQUEST_TIMEOUT,
                  max_requests_inflight: int = maxinflight.DEFAULT_MAX_READONLY,
                  max_mutating_requests_inflight: int = maxinflight.DEFAULT_MAX_MUTATING) -> web.Application:
        """The application, its filters in upstream's order: connection tracking, the request
        deadline, authentication, audit, impersonation, the in-flight budgets, then the pipeline."""

        @web.middleware
        async def authn(request: web.Request, handler):
            request["insecure"] = insecure
            try:
                user = await self.authenticate(request)
            except errors.StatusError as e:
                self.metrics.observe(request.method, "", e.code, 0.0)
                self.auditor.failed_authentication(request, e.code, e.to_status())
                return status_response(e)
            request["user"] = user
            serving.mark_authenticated(request, user.name)
            return await handler(request)

        @web.middleware
        async def pipeline(request: web.Request, handler):
            start = time.monotonic()
            verb, resource = request.method, ""
            try:
                resp, verb, resource = await self.dispatch(request)
            except errors.StatusError as e:
                resp = status_response(e)
            except web.HTTPRequestEntityTooLarge:
                resp = status_response(errors.body_too_large())
            except StorageError as e:  # a read met a datastore fault (writes map theirs in the registry)
                log.warning("%s %s: %s", request.method, request.path, e)
                resp = status_response(storage_status(e))
            except web.HTTPException:
                raise
            except Exception as e:  # noqa: BLE001 - every fault leaves as a Status
                log.exception("%s %s", request.method, request.path)
                resp = status_response(errors.internal(str(e) or type(e).__name__))
            self.metrics.observe(verb, resource, resp.status, time.monotonic() - start)
            if request.get("heavy"):
                memory.release_soon()
            return resp

        filters = [serving.track, timeout.middleware(request_timeout), authn, self.auditor.middleware(),
                   impersonation.middleware(lambda: self.authorizer),
                   maxinflight.middleware(max_requests_inflight, max_mutating_requests_inflight,
                                          registry=self.metrics.registry), pipeline]
        if self.join is not None and not insecure:
            filters.insert(2, self.join.middleware)  # agents joining have no credentials yet
        app = web.Application(middlewares=filters, client_max_size=limits.MAX_REQUEST_BODY_BYTES)
        self.auditor.install(app)  # the Audit-Id header, and ResponseStarted for long-running requests
        app.router.add_route("*", "/{tail:.*}", self._unreachable)
        return app

    async def _unreachable(self, request: web.Request) -> web.Response:  # the pipeline answers everything
        raise NOT_FOUND

    async def dispatch(self, request: web.Request) -> tuple[web.StreamResponse, str, str]:
        path = request.path
        info = endpoints.parse_path(request.method, path, request.query)
        if info is not None:
            if self.resources.get(info.group, info.version, info.resource) is None and self.aggregator is not None \
                    and self.aggregator.serves(info.group, info.version):
                return await self.aggregator.proxy(request, info.group, info.version), info.verb.upper(), \
                    info.resource
            served = endpoints.resolve(self.resources, info)
            self.authorize(Attributes(request["user"], info.verb, True, info.path, info.group, info.version,
                                      info.resource, info.subresource, info.namespace or "",
                                      info.name or name_from_field_selector(info.verb, request.query)), request)
            return await endpoints.serve(request, info, served, self.scope), info.verb.upper(), info.resource
        verb = {"GET": "get", "HEAD": "get", "POST": "post", "PUT": "put", "DELETE": "delete",
                "PATCH": "patch"}.get(request.method, request.method.lower())
        self.authorize(Attributes(request["user"], verb, False, path), request)
        if path.startswith("/v1-k3s/encrypt/") and getattr(self, "secrets_encrypt", None) is not None:
            return await self.secrets_encrypt.handle(request, path), request.method, ""  # secretsencrypt.py
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(verb, "")
        return await self.non_resource(request, path), "GET", ""

    async def non_resource(self, request: web.Request, path: str) -> web.StreamResponse:
        p = path.rstrip("/") or "/"
        if p in ("/healthz", "/livez", "/readyz") or p.startswith(("/healthz/", "/livez/", "/readyz/")):
            return await self.health(request, p)
        if p == "/version":
            return _json(discovery.version_info())
        if p == "/metrics":
            body, ctype = self.metrics.render()
            return web.Response(body=body, headers={"Content-Type": ctype})
        if p == "/openapi/v2":
            if openapi.wants_v2_protobuf(request.headers.get("Accept", "")):
                return web.Response(body=self._v2(True), headers={"Content-Type": openapi.V2_PROTOBUF_MEDIA_TYPE})
            return web.Response(body=self._v2(False), content_type="application/json")
        if p == "/openapi/v3":
            return web.Response(body=self._v3().index_body, content_type="application/json")
        if p.startswith("/openapi/v3/"):
            got = self._v3().get(p[len("/openapi/v3/"):])
            if got is None:
                raise NOT_FOUND
            body, digest = got
            headers = {"ETag": f'"{digest}"', "Cache-Control": "public, immutable" if request.query.get("hash")
                       else "no-cache, private", "Content-Type": "application/json"}
            if request.headers.get("If-None-Match") == f'"{digest}"':
                return web.Response(status=304, headers=headers)
            return web.Response(body=body, headers=headers)
        return self.discovery(request, p)

    def discovery(self, request: web.Request, p: str) -> web.Response:
        resources = self.resources.resources()
        aggregated = discovery.negotiate_aggregated(request.headers.get("Accept"))
        agg_ct = discovery.AGGREGATED_MEDIA_TYPE
        if p == "/api":
            if aggregated:
                return _json(discovery.aggregated_api(resources), agg_ct)
            return _json(discovery.api_versions(f"{self.advertise_address}:{self.secure_port}"))
        if p == "/apis":
            if aggregated:
                return _json(discovery.aggregated_apis(resources), agg_ct)
            doc = discovery.api_group_list(resources)
            if self.aggregator is not None:
                doc["groups"].extend(self.aggregator.discovery_groups(doc["groups"]))
            return _json(doc)
        parts = [x for x in p.split("/") if x]
        if not parts:
            return _json({"paths": self.root_paths()})
        if parts[0] == "api" and len(parts) == 2:
            doc = discovery.api_resource_list(parts[1], resources)
        elif parts[0] == "apis" and len(parts) == 2:
            doc = discovery.api_group(parts[1], resources)
        elif parts[0] == "apis" and len(parts) == 3:
            doc = discovery.api_resource_list(f"{parts[1]}/{parts[2]}", resources)
            if doc is None and self.aggregator is not None and self.aggregator.serves(parts[1], parts[2]):
                raise self.aggregator.unavailable(parts[1], parts[2])
        else:
            doc = None
        if doc is None:
            raise NOT_FOUND
        return _json(doc)

    def root_paths(self) -> list[str]:
        """What ``GET /`` lists, as upstream's index: every API path and the non-resource endpoints."""
        paths = {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/metrics", "/openapi/v2",
                 "/openapi/v3", "/openapi/v3/", "/version"}
        for group, versions in self.resources.groups.items():
            if group:
                paths.add(f"/apis/{group}")
                paths.update(f"/apis/{group}/{v}" for v in versions)
        return sorted(paths)

    async def health(self, request: web.Request, path: str) -> web.Response:
        checks = {"ping": True, "etcd": await self._store_ok(), "poststarthook/crd-informer-synced": self.ready}
        if path.startswith("/livez"):
            checks.pop("poststarthook/crd-informer-synced")
        ok = all(checks.values())
        if "verbose" in request.query:
            lines = [f"[{'+' if v else '-'}]{k} {'ok' if v else 'failed'}" for k, v in checks.items()]
            lines.append(f"{path.strip('/').split('/')[0]} check {'passed' if ok else 'failed'}")
            return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 500)
        return web.Response(text="ok" if ok else "not ready", status=200 if ok else 500)

    async def _store_ok(self) -> bool:
        try:
            await self.registry.health()
            return True
        except Exception:  # noqa: BLE001
            return False


def _json(doc: dict, content_type: str = "application/json") -> web.Response:
    return web.Response(body=json_body(doc), headers={"Content-Type": content_type})


def server_ssl_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))
    ctx.load_verify_locations(str(pki.ca_cert))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
