"""Listeners: how the API server accepts connections and keeps them healthy (upstream:
``k8s.io/apiserver/pkg/server/secure_serving.go`` and Go's ``net/http`` server timeouts).

One entry point: ``listener = await serving.start(app, host, port, ssl_context, options)``;
``await listener.close()`` stops accepting, closes every connection and cleans the app up.

Figures (`ServingOptions`), with kube-apiserver's values as defaults:

==========================  ========  ==================================================================
``tls_handshake_timeout``   32 s      Go bounds the handshake by the smallest of the server's read/write
                                      timeouts, which for kube-apiserver is ``ReadHeaderTimeout``
``read_header_timeout``     32 s      ``ReadHeaderTimeout`` ("just shy of requestTimeoutUpperBound")
``idle_timeout``            90 s      ``IdleTimeout`` (matches ``http.DefaultTransport``'s keep-alive)
``max_connections``         derived   open-file limit minus `RESERVED_FDS` (upstream has no cap and
                                      relies on Go raising the limit; so do we, see below)
``max_anonymous``           derived   3/4 of ``max_connections``: the rest is headroom that only
                                      authenticated clients can use
``max_anonymous_per_peer``  100       not upstream: bounds what one address can hold without credentials
==========================  ========  ==================================================================

The request timeout (``--request-timeout``, 60 s), which also bounds writing a response to a slow
reader, is a middleware: `kubeling.apiserver.filters.timeout`.

Connection lifecycle. One `Connection` wraps aiohttp's protocol (`RequestHandler`) per accepted
connection; asyncio calls the wrapper, the wrapper calls aiohttp::

    accept ─ TLS handshake (tls_handshake_timeout) ─► admitted? ─ no ─► aborted
                                                        │ yes
                                                        ▼
              ┌────── first byte ───── IDLE ◄─────── response written ──────┐
              ▼                    (idle_timeout)                           │
           HEADERS ── request reaches the app (track middleware) ──► ACTIVE ┘
       (read_header_timeout)                                    (no connection timer:
                                                                 filters.timeout bounds it
                                                                 unless long-running)

A connection starts in HEADERS, as Go reads the first request's headers right after the
handshake. A timer that expires aborts the connection without an answer, as Go does for a read
timeout. Pipelined bytes that arrive while a request is ACTIVE start no header timer: the
connection goes IDLE after the response and the idle timer bounds it.

Why a wrapper protocol: aiohttp's server has a keep-alive timer but no header-read timeout, and its
keep-alive timer measures from the last response to the *end* of the next request's headers, so
it cannot tell an idle connection from a slowloris one. The wrapper only relies on asyncio's
protocol interface and on `web.Server` being a protocol factory (`runner.server`); the listening
socket is opened by `_GuardedSite`, a `web.BaseSite`, so `AppRunner.cleanup()` stops it as it
would a `TCPSite`. aiohttp's own keep-alive timer stays on as a backstop, set beyond our timers.

Admission. A connection is *authenticated* once it presented a client certificate (known right
after the handshake) or once a request on it authenticated as someone other than
``system:anonymous`` (the request pipeline calls `mark_authenticated`). Until then it is
*anonymous*, and counts against ``max_anonymous`` and ``max_anonymous_per_peer`` (by peer IP).
Every connection counts against ``max_connections``. A connection over a cap is aborted right
after the handshake: an anonymous flood (finding 3 of issue 10: 921 idle TLS connections) then
leaves room for the administrator's certificate-authenticated connections. Connections still in
their TLS handshake are not counted (asyncio calls no protocol for them); the handshake timeout
bounds them.

`raise_open_file_limit()` raises the soft ``RLIMIT_NOFILE`` to the hard limit, as the Go runtime
does at start since Go 1.19; `start` calls it unless told not to.

Concurrency: everything runs on the event loop's thread; counters need no locks.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)

RESERVED_FDS = 128  # the store, its WAL, logs, pipes to the controller manager, the event loop
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 32.0
DEFAULT_READ_HEADER_TIMEOUT = 32.0
DEFAULT_IDLE_TIMEOUT = 90.0
DEFAULT_MAX_ANONYMOUS_PER_PEER = 100
ANONYMOUS_USER = "system:anonymous"

IDLE, HEADERS, ACTIVE = "idle", "headers", "active"


@dataclass(frozen=True)
class ServingOptions:
    """Connection figures; ``None`` caps are derived from the open-file limit at `start`."""

    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int | None = None
    max_anonymous: int | None = None
    max_anonymous_per_peer: int = DEFAULT_MAX_ANONYMOUS_PER_PEER
    backlog: int = 1024
    shutdown_timeout: float = 60.0  # how long close() waits for in-flight requests
    raise_open_file_limit: bool = True


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (as Go does); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:  # e.g. a hard limit of "unlimited" on macOS
            log.warning("could not raise the open-file limit from %s to %s: %s", soft, hard, e)
    return soft


def _open_file_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


class ConnectionLimits:
    """Counts of open connections, and whether one more may be admitted.

    Contract: `admit` is called once per connection; if it returned True, `release` is called
    exactly once with the connection's final `authenticated` state; `promote` moves an admitted
    anonymous connection to the authenticated pool (never back).
    """

    def __init__(self, max_connections: int, max_anonymous: int, max_anonymous_per_peer: int) -> None:
        self.max_connections = max_connections
        self.max_anonymous = max_anonymous
        self.max_anonymous_per_peer = max_anonymous_per_peer
        self.total = 0
        self.anonymous = 0
        self.anonymous_by_peer: Counter[str] = Counter()
        self.refused = 0

    @classmethod
    def from_options(cls, options: ServingOptions) -> ConnectionLimits:
        total = options.max_connections or max(16, _open_file_limit() - RESERVED_FDS)
        anonymous = options.max_anonymous or max(1, total * 3 // 4)
        return cls(total, min(anonymous, total), options.max_anonymous_per_peer)

    def admit(self, peer: str, authenticated: bool) -> bool:
        if self.total >= self.max_connections or not authenticated and (
                self.anonymous >= self.max_anonymous
                or self.anonymous_by_peer[peer] >= self.max_anonymous_per_peer):
            self.refused += 1
            return False
        self.total += 1
        if not authenticated:
            self.anonymous += 1
            self.anonymous_by_peer[peer] += 1
        return True

    def promote(self, peer: str) -> None:
        self.anonymous -= 1
        self._drop_peer(peer)

    def release(self, peer: str, authenticated: bool) -> None:
        self.total -= 1
        if not authenticated:
            self.anonymous -= 1
            self._drop_peer(peer)

    def _drop_peer(self, peer: str) -> None:
        self.anonymous_by_peer[peer] -= 1
        if self.anonymous_by_peer[peer] <= 0:
            del self.anonymous_by_peer[peer]


class Connection(asyncio.Protocol):
    """One accepted connection: admission, the IDLE/HEADERS/ACTIVE timers, then aiohttp.

    The aiohttp protocol (`inner`) is created only once the connection is admitted, and sees the
    real transport: it writes to it directly, and ``transport.get_protocol()`` is this object,
    which is how `track` and `mark_authenticated` find it from a request.
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.authenticated = False
        self.state = HEADERS
        self.active = 0
        self.closed_by: str | None = None  # which timer closed it, for stats and tests
        self._deadline = 0.0  # when the current state's timer expires (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio's protocol interface ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else str(peername or "")
        self.authenticated = bool(transport.get_extra_info("peercert"))
        if not self.listener.limits.admit(self.peer, self.authenticated):
            self.listener.note_refused(self.peer)
            transport.abort()
            return
        self.listener.connections.add(self)
        self.inner = self.listener.runner.server()  # aiohttp's RequestHandler
        self.inner.connection_made(transport)
        self._arm(HEADERS, self.listener.options.read_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == IDLE:
            self._arm(HEADERS, self.listener.options.read_header_timeout)
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.inner is None:
            return  # refused: never admitted, nothing to release
        self.listener.connections.discard(self)
        self.listener.limits.release(self.peer, self.authenticated)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    # -- request tracking (called through `track` and `mark_authenticated`) ----------------------

    def request_started(self) -> None:
        # No timer call here: a pending timer that finds the connection ACTIVE does nothing.
        self.active += 1
        self.state = ACTIVE

    def request_finished(self) -> None:
        self.active -= 1
        if self.active == 0 and self.inner is not None:
            self._arm(IDLE, self.listener.options.idle_timeout)

    def authenticate(self) -> None:
        if not self.authenticated and self.inner is not None:
            self.listener.limits.promote(self.peer)
            self.authenticated = True

    # -- timers ----------------------------------------------------------------------------------

    def _arm(self, state: str, seconds: float) -> None:
        """Enter ``state`` with a deadline ``seconds`` away. One timer handle per connection is
        kept and only moved when the deadline comes earlier than it; a timer that fires early
        re-arms itself (as aiohttp's keep-alive timer does), so a request costs no timer churn."""
        self.state = state
        if not seconds or seconds <= 0:
            self._deadline = float("inf")
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + seconds
        if self._timer is not None and self._timer_at <= self._deadline:
            return
        self._cancel_timer()
        self._schedule(loop, self._deadline)

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer_at = when
        self._timer = loop.call_at(when, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.state == ACTIVE or self.transport is None or self._deadline == float("inf"):
            return  # request_finished arms it again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._schedule(loop, self._deadline)
            return
        state = self.state
        self.closed_by = state
        self.listener.timeouts[state] += 1
        log.debug("closing %s connection from %s after its %s timeout", "authenticated" if self.authenticated
                  else "anonymous", self.peer, "idle" if state == IDLE else "header-read")
        # abort, not close: nothing is owed to the peer, and it frees the write buffer at once.
        self.transport.abort()


class _GuardedSite(web.BaseSite):
    """A `TCPSite` whose protocol factory wraps aiohttp's in a `Connection`."""

    def __init__(self, listener: Listener, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(listener.runner, ssl_context=ssl_context, backlog=listener.options.backlog)
        self._listener = listener
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        extra = {"ssl_handshake_timeout": self._listener.options.tls_handshake_timeout} if self._ssl_context else {}
        self._server = await loop.create_server(lambda: Connection(self._listener), self._host, self._port,
                                                ssl=self._ssl_context, backlog=self._backlog, **extra)

    @property
    def sockets(self) -> list:
        return list(self._server.sockets) if self._server is not None else []


class Listener:
    """A listening socket serving one aiohttp app through `Connection`s (see module docstring)."""

    def __init__(self, runner: web.AppRunner, options: ServingOptions, limits: ConnectionLimits) -> None:
        self.runner = runner
        self.options = options
        self.limits = limits
        self.connections: set[Connection] = set()
        self.timeouts: Counter[str] = Counter()
        self.site: _GuardedSite | None = None
        self._refusal_logged_at = 0.0

    @property
    def port(self) -> int:
        return self.site.sockets[0].getsockname()[1]

    def note_refused(self, peer: str) -> None:
        # An anonymous flood produces one refusal per connection: log at most one line a minute.
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged_at >= 60:
            self._refusal_logged_at = now
            log.warning("refusing connections over the limits (last from %s): %d open, %d anonymous, "
                        "%d refused so far", peer, self.limits.total, self.limits.anonymous, self.limits.refused)

    def stats(self) -> dict:
        """Counts for tests and metrics: open, anonymous, refused, closed by each timer."""
        return {"open": self.limits.total, "anonymous": self.limits.anonymous, "refused": self.limits.refused,
                "header_timeouts": self.timeouts[HEADERS], "idle_timeouts": self.timeouts[IDLE]}

    async def close(self) -> None:
        """Stop accepting, close every connection (waiting up to ``shutdown_timeout`` for
        requests in flight), run the app's cleanup. Idempotent."""
        await self.runner.cleanup()


async def start(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                options: ServingOptions | None = None, *, limits: ConnectionLimits | None = None) -> Listener:
    """Serve ``app`` on ``host:port`` (port 0: any free port, see `Listener.port`).

    ``limits`` may be shared by several listeners of one process so that their connections
    count against one budget; by default each listener derives its own from ``options``.
    """
    options = options or ServingOptions()
    if options.raise_open_file_limit:
        raise_open_file_limit()
    # aiohttp's keep-alive timer is only a backstop behind ours, so it is set beyond both.
    backstop = options.idle_timeout + options.read_header_timeout + 1
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, keepalive_timeout=backstop,
                           shutdown_timeout=options.shutdown_timeout)
    await runner.setup()
    listener = Listener(runner, options, limits or ConnectionLimits.from_options(options))
    try:
        listener.site = _GuardedSite(listener, host, port, ssl_context)
        await listener.site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return listener


def connection_of(request: web.Request) -> Connection | None:
    """The `Connection` a request arrived on (None outside a `Listener`, e.g. in test clients)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, Connection) else None


def mark_authenticated(request: web.Request, user_name: str) -> None:
    """Record that a request authenticated as ``user_name``: unless it is ``system:anonymous``,
    its connection leaves the anonymous pool. The pipeline calls this right after authentication,
    so that a token-authenticated watch does not hold an anonymous slot for hours."""
    if user_name != ANONYMOUS_USER:
        conn = connection_of(request)
        if conn is not None:
            conn.authenticate()


@web.middleware
async def track(request: web.Request, handler) -> web.StreamResponse:
    """The outermost middleware: tells the request's `Connection` when a request starts and ends,
    which is what moves it between HEADERS/ACTIVE/IDLE. Must come before `filters.timeout`, which
    writes the response before returning, so that "ends" means "was written"."""
    conn = connection_of(request)
    if conn is None:
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_finished()
