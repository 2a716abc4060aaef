"""PATCH (upstream ``endpoints/handlers/patch.go``): JSON, merge, strategic merge and apply
patches of an object or of a subresource that can be patched (status, scale)."""

from __future__ import annotations

from aiohttp import web

from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo, query_bool
from kubeling.apiserver.endpoints.response import respond
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.registry import patch as patching
from kubeling.apiserver.registry.generic import off_loop
from kubeling.apiserver.resources import Served


async def read(request: web.Request, served: Served, ctx) -> tuple[str, object, bool]:
    """The patch type, document and ``force`` of a PATCH request, checked (PatchOptions)."""
    ptype = patching.patch_type(request.headers.get("Content-Type"), served)
    data = await request.read()
    options.mark_heavy(request, data, ctx)
    doc = await off_loop(ctx, patching.decode_patch, data, ptype)
    force = query_bool(request.query, "force", None)
    patching.check_options(ptype, force, ctx)
    return ptype, doc, bool(force)


async def patch(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    ctx = options.context(request, info, served)
    ptype, doc, force = await read(request, served, ctx)
    obj, created = await patching.patch_object(scope.store, served, info.namespace, info.name, ptype, doc, ctx,
                                               force)
    return respond(request, served, obj, 201 if created else 200, ctx)
