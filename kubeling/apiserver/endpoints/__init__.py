"""The REST endpoints: one handler per verb, one code path for every kind (upstream
``k8s.io/apiserver/pkg/endpoints``).

`serve` resolves the request to a served resource, then calls the verb's handler with what it
uses — the request, its `RequestInfo`, the `Served` version and the `Scope` — never the server.
Authentication and authorization have already happened (the request pipeline in ``app.py``);
admission happens inside the generic store.
"""

from __future__ import annotations

from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver.endpoints import create, delete, get, patch, subresource, update, watch
from kubeling.apiserver.endpoints.request import RequestInfo, parse_path, query_bool
from kubeling.apiserver.endpoints.response import status_response
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import ResourceMap, Served

NOT_FOUND = errors.StatusError(404, "NotFound", "the server could not find the requested resource", details={})

HANDLERS = {
    "get": get.get,
    "list": get.list_,
    "watch": watch.watch,
    "create": create.create,
    "update": update.update,
    "patch": patch.patch,
    "delete": delete.delete,
    "deletecollection": delete.delete_collection,
}


def resolve(resources: ResourceMap, info: RequestInfo) -> Served:
    """The served resource a request addresses; 404 or 405 as upstream."""
    served = resources.get(info.group, info.version, info.resource)
    if served is None:
        raise NOT_FOUND
    if info.subresource and info.subresource not in served.res.subresources:
        raise NOT_FOUND
    if not info.subresource and info.verb not in served.res.verbs:
        raise errors.method_not_allowed(info.verb, info.resource)
    if not served.res.namespaced and info.namespace and info.resource != "namespaces":
        raise NOT_FOUND
    return served


async def serve(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.StreamResponse:
    if info.subresource:
        return await subresource.serve(request, info, served, scope)
    handler = HANDLERS.get(info.verb)
    if handler is None:
        raise errors.method_not_allowed(info.verb, info.resource)
    return await handler(request, info, served, scope)


__all__ = ["NOT_FOUND", "RequestInfo", "Scope", "parse_path", "query_bool", "resolve", "serve", "status_response"]
