"""WATCH (upstream ``endpoints/handlers/watch.go``): a chunked stream of JSON events, served by
the watch cache (`cacher`). The stream itself (bookmarks, timeout, shared encoding, slow
consumers) is `watchstream.CacheWatcher`; this handler parses the options, checks them before the
response starts, and counts the watcher.
"""

from __future__ import annotations

from aiohttp import web

from kubeling.apiserver import negotiation, watchstream
from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo, query_bool
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served

DEFAULT_WATCH_TIMEOUT = 1800


async def watch(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.StreamResponse:
    q = request.query
    pred = options.predicate(request, served, info.name)
    accept = negotiation.parse_accept(request.headers.get("Accept"))
    timeout = negotiation.watch_timeout(q.get("timeoutSeconds"), DEFAULT_WATCH_TIMEOUT)
    rv, rv_match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
    negotiation.resource_version(rv, watch=True, resource=info.resource, group=served.res.group)
    render = watchstream.renderer(served, accept.as_kind, accept.version, q.get("includeObject", "Metadata"))
    watcher = await scope.cacher.watch(served, info.namespace, pred, resource_version=rv,
                                       send_initial=query_bool(q, "sendInitialEvents", None), rv_match=rv_match,
                                       bookmarks=bool(query_bool(q, "allowWatchBookmarks")), render=render)
    if scope.metrics is not None:
        scope.metrics.watchers(1)
    try:
        return await watchstream.respond(request, watcher, timeout)
    finally:
        if scope.metrics is not None:
            scope.metrics.watchers(-1)
