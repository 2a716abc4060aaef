"""GET of one object and LIST of a collection (upstream ``endpoints/handlers/get.go``)."""

from __future__ import annotations

from aiohttp import web

from kubeling.apiserver import negotiation
from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo
from kubeling.apiserver.endpoints.response import respond
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served


async def get(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    return respond(request, served, await scope.store.get(served, info.namespace, info.name))


async def list_(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    """From the watch cache (which leaves to the store the lists upstream's cacher leaves to
    etcd); a plain JSON list from the cache is a join of each object's encoded bytes."""
    q = request.query
    limit = negotiation.list_limit(q.get("limit"))
    negotiation.resource_version(q.get("resourceVersion", ""))
    page = await scope.cacher.list(served, info.namespace, options.predicate(request, served), limit=limit,
                                   continue_token=q.get("continue", ""),
                                   resource_version=q.get("resourceVersion", ""),
                                   rv_match=q.get("resourceVersionMatch", ""))
    accept = negotiation.parse_accept(request.headers.get("Accept"))
    skipped = scope.cacher.skipped(served.list_prefix(info.namespace))
    if accept.media == negotiation.JSON and not accept.as_kind and request.method != "HEAD":
        resp = web.Response(body=page.json(), content_type="application/json")
    else:
        resp = respond(request, served, page.body(), is_list=True)
    if skipped:
        resp.headers.add("Warning", f'299 - "{len(skipped)} stored objects cannot be decoded and are left out of '
                                    f'this list: {", ".join(skipped[:5])}"')
    return resp
