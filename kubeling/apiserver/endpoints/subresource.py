"""Requests to ``<resource>/<name>/<subresource>``: routed to the subresource's REST object,
which implements some of get / put / patch / create / connect (see `registry.rest`); a verb it
does not implement is a 405, as upstream answers for a subresource storage without that
interface."""

from __future__ import annotations

from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver.endpoints import options, patch
from kubeling.apiserver.endpoints.request import RequestInfo
from kubeling.apiserver.endpoints.response import respond
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.registry.rest import method_for
from kubeling.apiserver.resources import Served


async def serve(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.StreamResponse:
    cls = served.strategy.subresources.get(info.subresource)
    if cls is None:
        raise errors.method_not_allowed(info.verb, f"{info.resource}/{info.subresource}")
    rest = scope.rest(cls)
    method = method_for(info.verb)
    if hasattr(rest, "connect") and (method == "connect" or not hasattr(rest, method)):
        return await rest.connect(served, info.namespace, info.name, request, info)
    if not hasattr(rest, method):
        raise errors.method_not_allowed(info.verb, f"{info.resource}/{info.subresource}")
    if method == "get":
        ctx = options.context(request, info, served)
        return respond(request, served, await rest.get(served, info.namespace, info.name, ctx))
    ctx = options.context(request, info, served)
    if method == "patch":
        ptype, doc, force = await patch.read(request, served, ctx)
        obj, created = await rest.patch(served, info.namespace, info.name, ptype, doc, ctx, force)
        return respond(request, served, obj, 201 if created else 200, ctx)
    body = await options.body(request, ctx if method == "put" else None)
    if method == "put":
        obj, created = await rest.put(served, info.namespace, info.name, body, ctx)
        return respond(request, served, obj, 201 if created else 200, ctx)
    out, code = await rest.create(served, info.namespace, info.name, options.object_body(body), ctx)
    return respond(request, served, out, code, ctx)
