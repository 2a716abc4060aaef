"""UPDATE (upstream ``endpoints/handlers/update.go``): PUT of one object; creates it where the
resource allows (Endpoints, Events, Leases)."""

from __future__ import annotations

from aiohttp import web

from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo
from kubeling.apiserver.endpoints.response import respond
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served


async def update(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    ctx = options.context(request, info, served)
    obj, created = await scope.store.update(served, info.namespace, info.name, await options.body(request, ctx), ctx)
    return respond(request, served, obj, 201 if created else 200, ctx)
