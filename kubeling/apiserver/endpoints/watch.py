"""WATCH (upstream ``endpoints/handlers/watch.go``): a chunked stream of JSON events.

The stream itself (bookmarks, timeout, shared encoding, slow consumers) is `watchstream`; this
handler parses the options, checks them before the response starts, and counts the watcher.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from kubeling.apiserver import listwatch, negotiation
from kubeling.apiserver.endpoints import options
from kubeling.apiserver.endpoints.request import RequestInfo, query_bool
from kubeling.apiserver.endpoints.scope import Scope
from kubeling.apiserver.resources import Served
from kubeling.apiserver.watchstream import WatchStream

DEFAULT_WATCH_TIMEOUT = 1800


async def watch(request: web.Request, info: RequestInfo, served: Served, scope: Scope) -> web.StreamResponse:
    q = request.query
    match = options.predicate(request, served, info.name)
    accept = negotiation.parse_accept(request.headers.get("Accept"))
    timeout = negotiation.watch_timeout(q.get("timeoutSeconds"), DEFAULT_WATCH_TIMEOUT)
    bookmarks = bool(query_bool(q, "allowWatchBookmarks"))
    send_initial = query_bool(q, "sendInitialEvents", None)
    rv, rv_match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
    negotiation.resource_version(rv, watch=True, resource=info.resource, group=served.res.group)
    listwatch.check_watch_options(rv, send_initial, rv_match)
    state: dict = {}
    events = scope.store.watch(served, info.namespace, match, resource_version=rv, send_initial=send_initial,
                               rv_match=rv_match, state=state)
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Cache-Control": "no-cache, private"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    stream = WatchStream(served, resp, events, bookmarks=bookmarks, start_rv=rv, as_kind=accept.as_kind,
                         as_version=accept.version, include_object=q.get("includeObject", "Metadata"), state=state)
    if scope.metrics is not None:
        scope.metrics.watchers(1)
    try:
        await stream.run(timeout)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if scope.metrics is not None:
            scope.metrics.watchers(-1)
    try:
        await resp.write_eof()
    except (ConnectionResetError, RuntimeError):
        pass
    return resp
