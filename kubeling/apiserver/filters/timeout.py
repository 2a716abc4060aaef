"""The request deadline for non-long-running requests: upstream's ``WithRequestDeadline`` and
``WithTimeoutForNonLongRunningRequests`` (``server/filters/timeout.go``), in one middleware.

Every request that is not long-running (`filters.longrunning`) gets a deadline of
``--request-timeout`` (60 s by default) from the moment it reaches this middleware, or less when
the client asks for less with the ``timeout`` query parameter (a Go duration such as ``5s`` or
``1m30s``; client-go sends it for ``kubectl --request-timeout``). A value of ``0``, a negative
value or one above the server's maximum means the server's maximum, as upstream. A malformed
value is ``400 BadRequest`` "invalid timeout specified in the request URL - <Go's parse error>".

The deadline covers the whole request, *including writing the response*, because that is where
a slow reader holds memory: Go writes the body inside the handler, so upstream's timeout covers
it; aiohttp writes a returned `web.Response` after the middlewares return, so this middleware
prepares and writes the response itself, under the same deadline. When the deadline passes:

- before anything was written: the handler is cancelled and the answer is ``504 Timeout``
  "Timeout: request did not complete within the allotted timeout" (upstream's `Status`);
- after the response started (a slow reader, or a streaming handler): nothing else can be said
  on this connection, so it is aborted (upstream panics with ``http.ErrAbortHandler`` for the same
  reason). Aborting drops the transport's buffer at once, which is what frees a slow reader's
  30 MB list. Large bodies are written in slices (`SlicedBody`) so that the wait for a slow
  reader happens here, under the deadline, also over TLS.

As upstream, a handler that is cancelled by the deadline may already have had effects (a write
that committed); the 504 says the outcome is unknown, not that nothing happened.

Place this middleware outside (before) every middleware that builds or changes the response;
the connection tracker of `kubeling.apiserver.serving` is the only one that belongs outside it.
The deadline, as a loop time, is left in ``request[DEADLINE]`` for handlers that want to bound
their own waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiohttp import payload, web

from kubeling.api import errors
from kubeling.apiserver import memory
from kubeling.apiserver.filters import longrunning

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 60.0  # kube-apiserver --request-timeout
INVALID_TIMEOUT = "invalid timeout specified in the request URL"
DEADLINE = web.RequestKey("deadline", float)  # request[DEADLINE]: the loop time the request must end by
TIMEOUT_MESSAGE = "Timeout: request did not complete within the allotted timeout"

# Go's time.ParseDuration units, in nanoseconds (both spellings of micro are accepted).
_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
_MAX_NS = (1 << 63) - 1
DEFAULT_GRANULARITY = 0.25  # how late past its deadline a request may be cancelled
SLICE = 64 * 1024  # aiohttp's drain threshold: one slice in flight before waiting for the peer


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``300ms``, ``-1.5h``, ``2h45m``); ValueError with Go's
    wording (``time: invalid duration "x"``) otherwise."""
    orig, s = text, text
    neg = False
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {_quote(orig)}")
    total = 0
    while s:
        i = 0
        while i < len(s) and s[i].isdigit():
            i += 1
        whole, s = s[:i], s[i:]
        frac = ""
        if s.startswith("."):
            j = 1
            while j < len(s) and s[j].isdigit():
                j += 1
            frac, s = s[1:j], s[j:]
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
        j = 0
        while j < len(s) and s[j] != "." and not s[j].isdigit():
            j += 1
        unit, s = s[:j], s[j:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_quote(unit)} in duration {_quote(orig)}")
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > _MAX_NS:
            raise ValueError(f"time: invalid duration {_quote(orig)}")
    return (-total if neg else total) / 1e9


def deadline_seconds(query_timeout: str, request_timeout: float) -> float:
    """The time a non-long-running request may take (see the module docstring)."""
    if not query_timeout:
        return request_timeout
    try:
        asked = parse_go_duration(query_timeout)
    except ValueError as e:
        raise errors.bad_request(f"{INVALID_TIMEOUT} - {e}") from None
    return asked if 0 < asked < request_timeout else request_timeout


def _status(e: errors.StatusError) -> web.Response:
    return web.Response(status=e.code, body=orjson.dumps(e.to_status()), content_type="application/json",
                        headers=e.headers)


class Deadlines:
    """The deadlines of the requests in flight, enforced by one sweeper task.

    A per-request timer (``asyncio.timeout``) cost about a quarter of a trivial request's time;
    here a request only enters and leaves a dict. The sweeper wakes every ``granularity``
    seconds while requests are in flight, and cancels the task of each request past its
    deadline after recording it in `expired`, so that the middleware can tell its own
    cancellation from a client's disconnection. Deadlines are kept to within ``granularity``.
    Runs on one event loop; no locks.
    """

    def __init__(self, granularity: float) -> None:
        self.granularity = granularity
        self.pending: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    def add(self, task: asyncio.Task, when: float) -> None:
        self.pending[task] = when
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="request-deadlines")

    def remove(self, task: asyncio.Task) -> bool:
        """Forget ``task``; True if its deadline had passed."""
        self.pending.pop(task, None)
        if task in self.expired:
            self.expired.discard(task)
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            await asyncio.sleep(self.granularity)
            now = loop.time()
            for task, when in list(self.pending.items()):
                if when <= now:
                    del self.pending[task]
                    self.expired.add(task)
                    task.cancel()


def middleware(request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
               is_long_running: Callable[[web.Request], bool] = longrunning.of_request, *,
               granularity: float = DEFAULT_GRANULARITY):
    """An aiohttp middleware putting every non-long-running request under a deadline."""
    deadlines = Deadlines(granularity)

    @web.middleware
    async def deadline(request: web.Request, handler) -> web.StreamResponse:
        if is_long_running(request):
            return await handler(request)
        try:
            seconds = deadline_seconds(request.query.get("timeout", ""), request_timeout)
        except errors.StatusError as e:
            return _status(e)
        task = asyncio.current_task()
        request[DEADLINE] = when = asyncio.get_running_loop().time() + seconds
        deadlines.add(task, when)
        resp = None
        try:
            resp = await handler(request)
            if isinstance(resp, web.Response) and isinstance(resp.body, (bytes, bytearray)) \
                    and len(resp.body) > SLICE and not resp.prepared:
                resp.body = SlicedBody(resp.body, resp.content_type)
            await resp.prepare(request)
            await resp.write_eof()
        except asyncio.CancelledError:
            if not deadlines.remove(task):
                raise  # not ours: the client went away, or the server is stopping
            task.uncancel()
            if request.writer.output_size > 0:  # the answer had started: nothing else can be said
                _abort(request, "while the client was not reading its response" if resp is not None
                       else "while streaming its response")
                return resp if resp is not None else web.Response(status=504)  # never sent
            log.info("request timed out after %.1fs: %s %s", seconds, request.method, request.path_qs)
            return _status(errors.StatusError(504, "Timeout", TIMEOUT_MESSAGE, details={}))
        except ConnectionError:
            if resp is None:
                raise  # from the handler: aiohttp ignores a client that went away
            # while writing: aiohttp's own write of `resp` meets the closed transport quietly
        finally:
            deadlines.remove(task)
        return resp

    return deadline


class SlicedBody(payload.Payload):
    """A bytes body written in `SLICE`-sized pieces, waiting for the peer between them.

    aiohttp hands a `web.Response` body to the transport in one write. Over TLS that defeats
    flow control: the TLS layer encrypts all of it at once into the socket transport's buffer,
    the application is never paused, and a reader that never reads pins the whole body in a
    buffer no deadline can see. Written in slices, the TLS layer fills up after one slice,
    aiohttp's drain waits, and the deadline can abort the connection."""

    _autoclose = True  # plain bytes: nothing to close

    def __init__(self, value: bytes | bytearray, content_type: str) -> None:
        super().__init__(value, content_type=content_type)
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer) -> None:
        view = memoryview(self._value)
        for start in range(0, len(view), SLICE):
            await writer.write(view[start:start + SLICE])


def _abort(request: web.Request, why: str) -> None:
    log.info("closing the connection of %s %s from %s: deadline passed %s", request.method, request.path,
             request.remote, why)
    if request.transport is not None:
        request.transport.abort()
    # glibc keeps the freed body's pages otherwise: RSS would stay hundreds of MB up after
    # slow readers are cut (finding 4).
    memory.release_soon()
