"""REST handlers for resources: one code path for every kind, built-in or custom.

A request's URL is parsed into a `RequestInfo` (upstream's name): group, version,
resource, namespace, name, subresource and verb. The handler authorizes it, then
calls the generic `Registry` or the list/watch functions, and encodes the answer
(JSON, YAML, Table, or metadata only) as the client's Accept header asks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from aiohttp import web

from kubeling.api import errors, fields, labels
from kubeling.apiserver import listwatch, negotiation, tables
from kubeling.apiserver.auth import Attributes
from kubeling.apiserver.registry import Context
from kubeling.apiserver.resources import Served
from kubeling.apiserver.watchstream import WatchStream

log = logging.getLogger(__name__)

NAMESPACE_SUBRESOURCES = ("status", "finalize")
RETURNS_DELETED_OBJECT = {("", "pods"), ("", "services"), ("", "namespaces")}
DEFAULT_WATCH_TIMEOUT = 1800


@dataclass
class RequestInfo:
    verb: str
    group: str
    version: str
    resource: str = ""
    namespace: str | None = None
    name: str = ""
    subresource: str = ""
    path: str = ""


def parse_path(method: str, path: str, query) -> RequestInfo | None:
    """``/api/v1/namespaces/ns/pods/name/status`` -> RequestInfo. None for non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) < 2:
            return None
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return None
    watch = query.get("watch") in ("true", "1")
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    info = RequestInfo("", group, version, path=path)
    if len(rest) >= 2 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES) \
            and len(rest) >= 3:
        info.namespace, rest = rest[1], rest[2:]
    elif len(rest) >= 1 and rest[0] == "namespaces":
        # /api/v1/namespaces[/name[/status|finalize]]
        pass
    if not rest:
        return None
    info.resource = rest[0]
    if len(rest) > 1:
        info.name = rest[1]
    if len(rest) > 2:
        info.subresource = rest[2]
    if info.resource == "namespaces" and info.name and info.namespace is None:
        info.namespace = None
    m = method.upper()
    if m == "GET" or m == "HEAD":
        if watch:
            info.verb = "watch"
        else:
            info.verb = "get" if info.name else "list"
    elif m == "POST":
        info.verb = "create"
    elif m == "PUT":
        info.verb = "update"
    elif m == "PATCH":
        info.verb = "patch"
    elif m == "DELETE":
        info.verb = "delete" if info.name else "deletecollection"
    else:
        info.verb = m.lower()
    return info


def status_response(e: errors.StatusError, request: web.Request | None = None) -> web.Response:
    headers = dict(e.headers)
    return web.Response(body=orjson.dumps(e.to_status()), status=e.code, content_type="application/json",
                        headers=headers)


def success_status(served: Served, name: str, uid: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": served.res.group, "kind": served.res.resource, "uid": uid}}


def _warning_headers(ctx: Context) -> list[tuple[str, str]]:
    """RFC 7234 warn-text: quoted, with quotes, backslashes and control characters escaped."""
    out = []
    for w in dict.fromkeys(ctx.warnings):
        text = w.replace("\\", "\\\\").replace('"', '\\"')
        text = "".join(c if 0x20 <= ord(c) < 0x7f or ord(c) > 0x9f else f"\\u{ord(c):04x}" for c in text)
        out.append(("Warning", f'299 - "{text}"'))
    return out


class ResourceHandler:
    """Serves every resource request; `app.APIServer` routes ``/api/*`` and ``/apis/*`` here."""

    def __init__(self, server) -> None:
        self.server = server

    @property
    def registry(self):
        return self.server.registry

    def resolve(self, info: RequestInfo) -> Served:
        served = self.server.resources.get(info.group, info.version, info.resource)
        if served is None:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource",
                                     details={})
        if info.subresource and info.subresource not in served.res.subresources:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource",
                                     details={})
        verbs = served.res.verbs
        base_verb = {"watch": "watch", "list": "list"}.get(info.verb, info.verb)
        if not info.subresource and base_verb not in verbs:
            raise errors.method_not_allowed(info.verb, info.resource)
        if not served.res.namespaced and info.namespace and info.resource != "namespaces":
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource",
                                     details={})
        return served

    def context(self, request: web.Request, info: RequestInfo, served: Served) -> Context:
        q = request.query
        dry = q.getall("dryRun", [])
        for d in dry:
            if d != "All":
                raise errors.invalid("DeleteOptions" if info.verb.startswith("delete") else "CreateOptions",
                                     "meta.k8s.io", "", [errors.not_supported("dryRun", d, ["All"])])
        fv = q.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f"invalid fieldValidation directive: {fv}")
        user = request["user"]
        return Context(user=user.name, groups=user.groups, namespace=info.namespace if served.res.namespaced
                       else None, dry_run=bool(dry), field_manager=q.get("fieldManager", ""),
                       field_validation=fv, subresource=info.subresource,
                       user_agent=request.headers.get("User-Agent", ""))

    async def handle(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        served = self.resolve(info)
        self.server.authorize(request, Attributes(request["user"], info.verb, True, info.path, info.group,
                                                  info.version, info.resource, info.subresource,
                                                  info.namespace or "", info.name))
        if info.subresource:
            return await self.server.subresources.handle(request, info, served)
        if info.verb == "get":
            return await self.get(request, info, served)
        if info.verb == "list":
            return await self.list(request, info, served)
        if info.verb == "watch":
            return await self.watch(request, info, served)
        if info.verb == "create":
            return await self.create(request, info, served)
        if info.verb == "update":
            return await self.update(request, info, served)
        if info.verb == "patch":
            return await self.server.patcher.patch(request, info, served)
        if info.verb == "delete":
            return await self.delete(request, info, served)
        if info.verb == "deletecollection":
            return await self.delete_collection(request, info, served)
        raise errors.method_not_allowed(info.verb, info.resource)

    # -- encoding ------------------------------------------------------------------------------

    def respond(self, request: web.Request, served: Served, obj: dict, status: int = 200,
                ctx: Context | None = None, *, is_list: bool = False) -> web.Response:
        accept = negotiation.parse_accept(request.headers.get("Accept"))
        headers = _warning_headers(ctx) if ctx else []
        if accept.as_kind == "Table" and obj.get("kind") != "Status":
            items = obj["items"] if is_list else [obj]
            body = tables.table(served, items, obj["metadata"].get("resourceVersion", ""),
                                request.query.get("includeObject", "Metadata"), accept.version,
                                no_headers=False)
            if is_list and obj["metadata"].get("continue"):
                body["metadata"]["continue"] = obj["metadata"]["continue"]
                if "remainingItemCount" in obj["metadata"]:
                    body["metadata"]["remainingItemCount"] = obj["metadata"]["remainingItemCount"]
            obj = body
        elif accept.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList") and obj.get("kind") != "Status":
            obj = tables.partial_metadata(obj, is_list, accept.version)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        if accept.media == negotiation.YAML:
            resp = web.Response(body=negotiation.dump_yaml(obj), status=status, content_type="application/yaml")
        else:
            resp = web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")
        for k, v in headers:
            resp.headers.add(k, v)
        return resp

    async def body(self, request: web.Request, ctx: Context | None = None) -> object:
        data = await request.read()
        obj = negotiation.decode_body(data, request.headers.get("Content-Type"))
        if ctx is not None:
            ctx.may_hold_nulls = negotiation.may_hold_nulls(data, request.headers.get("Content-Type"))
        if ctx is not None and ctx.field_validation != "Ignore":
            dups = negotiation.duplicate_fields(data, request.headers.get("Content-Type"))
            if dups and ctx.field_validation == "Strict":
                raise errors.bad_request("strict decoding error: " + ", ".join(
                    f'json: duplicate field "{d}"' for d in dups))
            ctx.warnings.extend(f'duplicate field "{d}"' for d in dups)
        return obj

    # -- verbs ---------------------------------------------------------------------------------

    async def get(self, request, info, served) -> web.Response:
        obj = await self.registry.get(served, info.namespace, info.name)
        return self.respond(request, served, obj)

    def _filter(self, request: web.Request, served: Served):
        q = request.query
        try:
            lsel = labels.parse(q.get("labelSelector", ""))
        except ValueError as e:
            raise errors.bad_request(str(e)) from None
        try:
            fsel = fields.parse(q.get("fieldSelector", ""))
        except ValueError as e:
            raise errors.bad_request(str(e)) from None
        fsel = fields.validate(served.res, fsel)
        if lsel.empty and fsel.empty:
            return listwatch.MATCH_ALL

        def match(obj: dict) -> bool:
            if not lsel.matches(obj.get("metadata", {}).get("labels") or {}):
                return False
            if fsel.empty:
                return True
            return fsel.matches(fields.object_fields(served.res, obj))
        return match

    async def list(self, request, info, served) -> web.Response:
        q = request.query
        match = self._filter(request, served)
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError:
            raise errors.bad_request(f"limit: Invalid value: {q.get('limit')!r}") from None
        items, rv, token, remaining = await listwatch.list_objects(
            self.server.store, served, info.namespace, match, limit=max(limit, 0),
            continue_token=q.get("continue", ""), resource_version=q.get("resourceVersion", ""),
            rv_match=q.get("resourceVersionMatch", ""))
        meta: dict = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        if not served.res.crd:
            for it in items:
                it.pop("apiVersion", None)
                it.pop("kind", None)
        body = {"kind": served.res.list_kind, "apiVersion": served.res.group_version, "metadata": meta,
                "items": items}
        return self.respond(request, served, body, is_list=True)

    async def watch(self, request, info, served) -> web.StreamResponse:
        q = request.query
        match = self._filter(request, served)
        if info.name:
            name = info.name
            inner = match
            match = lambda o: o.get("metadata", {}).get("name") == name and inner(o)  # noqa: E731
        accept = negotiation.parse_accept(request.headers.get("Accept"))
        timeout = q.get("timeoutSeconds")
        try:
            timeout_s = float(timeout) if timeout else DEFAULT_WATCH_TIMEOUT
        except ValueError:
            raise errors.bad_request(f"timeoutSeconds: Invalid value: {timeout!r}") from None
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        sie = q.get("sendInitialEvents")
        send_initial = None if sie is None else sie in ("true", "1")
        listwatch.check_watch_options(q.get("resourceVersion", ""), send_initial, q.get("resourceVersionMatch", ""))
        state: dict = {}
        events = listwatch.watch_objects(self.server.store, served, info.namespace, match,
                                         resource_version=q.get("resourceVersion", ""),
                                         send_initial=send_initial, rv_match=q.get("resourceVersionMatch", ""),
                                         state=state)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        stream = WatchStream(served, resp, events, bookmarks=bookmarks, start_rv=q.get("resourceVersion", ""),
                             as_kind=accept.as_kind, as_version=accept.version,
                             include_object=q.get("includeObject", "Metadata"), state=state)
        self.server.metrics.watchers(1)
        try:
            await stream.run(timeout_s)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.server.metrics.watchers(-1)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def create(self, request, info, served) -> web.Response:
        if info.name:
            raise errors.method_not_allowed("create", info.resource)
        ctx = self.context(request, info, served)
        if served.res.verbs == ("create",):
            return await self.server.subresources.virtual_create(request, info, served, ctx)
        obj = await self.registry.create(served, await self.body(request, ctx), ctx)
        return self.respond(request, served, obj, 201, ctx)

    async def update(self, request, info, served) -> web.Response:
        ctx = self.context(request, info, served)
        obj, created = await self.registry.update(served, info.namespace, info.name, await self.body(request, ctx),
                                                   ctx)
        return self.respond(request, served, obj, 201 if created else 200, ctx)

    async def _delete_options(self, request: web.Request) -> dict:
        data = await request.read()
        opts: dict = {}
        if data.strip():
            body = negotiation.decode_body(data, request.headers.get("Content-Type"))
            if not isinstance(body, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            opts = body
        q = request.query
        if "gracePeriodSeconds" in q:
            try:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from None
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            opts["orphanDependents"] = q["orphanDependents"] in ("true", "1")
        pp = opts.get("propagationPolicy")
        if pp is not None and pp not in ("Orphan", "Background", "Foreground"):
            raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [errors.not_supported(
                "propagationPolicy", pp, ["Foreground", "Background", "Orphan", "nil"])])
        if opts.get("dryRun"):
            for d in opts["dryRun"]:
                if d != "All":
                    raise errors.invalid("DeleteOptions", "meta.k8s.io", "",
                                         [errors.not_supported("dryRun", d, ["All"])])
        return opts

    async def delete(self, request, info, served) -> web.Response:
        ctx = self.context(request, info, served)
        opts = await self._delete_options(request)
        if opts.get("dryRun"):
            ctx.dry_run = True
        obj, deleted = await self.registry.delete(served, info.namespace, info.name, opts, ctx)
        if deleted and (served.res.group, served.res.resource) not in RETURNS_DELETED_OBJECT and not served.res.crd:
            return self.respond(request, served, success_status(served, info.name, obj["metadata"].get("uid", "")),
                                200, ctx)
        return self.respond(request, served, obj, 200, ctx)

    async def delete_collection(self, request, info, served) -> web.Response:
        ctx = self.context(request, info, served)
        opts = await self._delete_options(request)
        if opts.get("dryRun"):
            ctx.dry_run = True
        match = self._filter(request, served)
        items, rv, _, _ = await listwatch.list_objects(self.server.store, served, info.namespace, match)
        deleted = []
        for it in items:
            m = it["metadata"]
            try:
                obj, _ = await self.registry.delete(served, m.get("namespace"), m["name"], opts, ctx)
                deleted.append(obj)
            except errors.StatusError as e:
                if e.code != 404:
                    raise
        if not served.res.crd:
            for it in deleted:
                it.pop("apiVersion", None)
                it.pop("kind", None)
        body = {"kind": served.res.list_kind, "apiVersion": served.res.group_version,
                "metadata": {"resourceVersion": str(rv)}, "items": deleted}
        return self.respond(request, served, body, 200, ctx, is_list=True)
