"""DELETE of one object and of a collection (upstream ``endpoints/handlers/delete.go``).

A deleted object is answered with a ``Status`` of success, except for the resources whose
strategy says DELETE returns the object (pods, services, namespaces) and custom resources; an
object only marked for deletion (finalizers, grace) is returned as it now is.
"""

from __future__ import annotations

from aiohttp import web

from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo
from kubeling.apiserver.endpoints.response import respond, success_status
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served


async def delete(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    ctx = options.context(request, info, served)
    opts = await options.delete_options(request)
    if opts.get("dryRun"):
        ctx.dry_run = True
    obj, deleted = await scope.store.delete(served, info.namespace, info.name, opts, ctx)
    if deleted and not served.strategy.returns_deleted_object and not served.res.crd:
        return respond(request, served, success_status(served, info.name, obj["metadata"].get("uid", "")), 200, ctx)
    return respond(request, served, obj, 200, ctx)


async def delete_collection(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.Response:
    ctx = options.context(request, info, served)
    opts = await options.delete_options(request)
    if opts.get("dryRun"):
        ctx.dry_run = True
    deleted, rv = await scope.store.delete_collection(served, info.namespace, options.match(options.predicate(request, served)),
                                                      opts, ctx)
    if not served.res.crd:
        deleted = [{k: v for k, v in it.items() if k not in ("apiVersion", "kind")} for it in deleted]
    body = {"kind": served.res.list_kind, "apiVersion": served.res.group_version,
            "metadata": {"resourceVersion": str(rv)}, "items": deleted}
    return respond(request, served, body, 200, ctx, is_list=True)
