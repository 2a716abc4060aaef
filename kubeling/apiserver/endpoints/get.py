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
    q = request.query
    match = options.predicate(request, served)
    limit = negotiation.list_limit(q.get("limit"))
    negotiation.resource_version(q.get("resourceVersion", ""))
    items, rv, token, remaining = await scope.store.list(
        served, info.namespace, match, limit=limit, continue_token=q.get("continue", ""),
        resource_version=q.get("resourceVersion", ""), rv_match=q.get("resourceVersionMatch", ""))
    meta: dict = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
    if not served.res.crd:  # built-in list items carry no apiVersion/kind, as upstream's typed lists
        items = [{k: v for k, v in it.items() if k not in ("apiVersion", "kind")} for it in items]
    body = {"kind": served.res.list_kind, "apiVersion": served.res.group_version, "metadata": meta, "items": items}
    return respond(request, served, body, is_list=True)
