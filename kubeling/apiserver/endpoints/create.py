"""CREATE (upstream ``endpoints/handlers/create.go``): POST to a collection.

A store-less resource (access reviews, the older ``bindings``) is answered by its REST class.
"""

from __future__ import annotations

from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo
from kubeling.apiserver.endpoints.response import respond
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served


async def create(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    if info.name:
        raise errors.method_not_allowed("create", info.resource)
    ctx = options.context(request, info, served)
    rest_cls = served.strategy.rest
    if rest_cls is not None:
        out, code = await scope.rest(rest_cls).create(served, info.namespace, "",
                                                      options.object_body(await options.body(request)), ctx)
        return respond(request, served, out, code, ctx)
    obj = await scope.store.create(served, await options.body(request, ctx), ctx)
    return respond(request, served, obj, 201, ctx)
