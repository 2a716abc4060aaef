"""Connection hygiene of `kubeling.apiserver.serving` and the request deadline of
`kubeling.apiserver.filters.timeout`, on in-process aiohttp apps served by `serving.start` on
127.0.0.1 with short timeouts.

Every connection test runs on asyncio's loop and on uvloop (the server's loop): their TLS
transports differ. Clients are raw streams, so that the tests control exactly which bytes are
sent and when (a slowloris, a reader that never reads).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
import tracemalloc

import pytest
import uvloop
from aiohttp import web

from kubeling.apiserver import serving
from kubeling.apiserver.app import server_ssl_context
from kubeling.apiserver.certs import PKI
from kubeling.apiserver.filters import timeout

LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio"), pytest.param(uvloop.new_event_loop, id="uvloop")]
SHORT = serving.ServingOptions(tls_handshake_timeout=0.5, read_header_timeout=0.5, idle_timeout=0.6,
                               raise_open_file_limit=False)
BIG = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = PKI(tmp_path_factory.mktemp("pki"), hosts=["127.0.0.1"])
    p.ensure()
    return p


def run(loop_factory, coro):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def client_tls(pki, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if cert:
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(*middlewares, routes=()) -> web.Application:
    app = web.Application(middlewares=[serving.track, *middlewares])
    app.router.add_get("/", hello)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app


async def closed_after(reader: asyncio.StreamReader, limit: float = 5.0) -> float:
    """Seconds until the server closes the connection (EOF or reset), reading whatever comes."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except (ConnectionError, ssl.SSLError):
        pass
    return time.monotonic() - start


async def get(reader, writer, path: str = "/") -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
    return head + await reader.readexactly(length)


# -- timers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_tls_connection_without_a_request_is_closed_after_the_header_timeout(pki, loop_factory):
    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, False))
            waited = await closed_after(reader)
            writer.close()
            return waited, listener.stats()
        finally:
            await listener.close()

    waited, stats = run(loop_factory, main())
    assert 0.4 <= waited < 2.0
    assert stats["header_timeouts"] == 1 and stats["open"] == 0


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_tcp_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout(pki, loop_factory):
    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            waited = await closed_after(reader)
            writer.close()
            return waited
        finally:
            await listener.close()

    assert 0.4 <= run(loop_factory, main()) < 2.0


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_slowloris_is_cut_at_the_header_timeout_although_it_keeps_sending(pki, loop_factory):
    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, False))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

            async def trickle():
                for i in range(50):
                    await asyncio.sleep(0.1)
                    writer.write(f"X-Slow-{i}: 1\r\n".encode())

            dripping = asyncio.create_task(trickle())
            waited = await closed_after(reader)
            dripping.cancel()
            writer.close()
            return waited, listener.stats()
        finally:
            await listener.close()

    waited, stats = run(loop_factory, main())
    assert 0.4 <= waited < 2.0
    assert stats["header_timeouts"] == 1


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_idle_keep_alive_connection_is_closed_and_each_request_restarts_the_idle_timer(pki, loop_factory):
    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, True))
            answers = []
            for _ in range(3):  # 3 x 0.4 s > idle_timeout: only the reset timer keeps it open
                answers.append(await get(reader, writer))
                await asyncio.sleep(0.4)
            waited = await closed_after(reader)
            writer.close()
            return answers, waited, listener.stats()
        finally:
            await listener.close()

    answers, waited, stats = run(loop_factory, main())
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"ok") for a in answers)
    assert waited < 1.0  # 0.6 s idle timeout, 0.4 s of it already spent
    assert stats["idle_timeouts"] == 1 and stats["header_timeouts"] == 0


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_requests_in_progress_are_not_cut_by_connection_timers(pki, loop_factory):
    async def slow(request):
        await asyncio.sleep(1.0)  # longer than the header and idle timeouts
        return web.Response(text="slow")

    async def stream(request):  # a long-running response that keeps writing, like a watch
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(6):
            await resp.write(b"event\n")
            await asyncio.sleep(0.2)
        await resp.write_eof()
        return resp

    async def main():
        app = make_app(routes=[("GET", "/slow", slow), ("GET", "/watch", stream)])
        listener = await serving.start(app, "127.0.0.1", 0, server_ssl_context(pki), SHORT)
        try:
            r1, w1 = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, False))
            r2, w2 = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, False))
            w2.write(b"GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
            body = await get(r1, w1, "/slow")
            streamed = await r2.readuntil(b"0\r\n\r\n")
            for w in (w1, w2):
                w.close()
            return body, streamed
        finally:
            await listener.close()

    body, streamed = run(loop_factory, main())
    assert body.endswith(b"slow")
    assert streamed.count(b"event") == 6


# -- admission ---------------------------------------------------------------------------------


async def _open(port, ctx, n):
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection("127.0.0.1", port, ssl=ctx))
    await asyncio.sleep(0.1)  # let the server run connection_made for the last ones
    return conns


async def _alive(conn) -> bool:
    reader, writer = conn
    try:
        return (await asyncio.wait_for(get(reader, writer), 2)).startswith(b"HTTP/1.1 200")
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
        return False


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_anonymous_connections_per_peer_are_capped_and_a_certificate_still_gets_in(pki, loop_factory):
    opts = serving.ServingOptions(read_header_timeout=30, idle_timeout=30, max_connections=50,
                                  max_anonymous_per_peer=5, raise_open_file_limit=False)

    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), opts)
        try:
            anonymous = await _open(listener.port, client_tls(pki, False), 8)
            admin = await _open(listener.port, client_tls(pki, True), 3)
            stats = listener.stats()
            alive = [await _alive(c) for c in anonymous + admin]
            for _, w in anonymous + admin:
                w.close()
            return stats, alive
        finally:
            await listener.close()

    stats, alive = run(loop_factory, main())
    assert stats["anonymous"] == 5 and stats["refused"] == 3 and stats["open"] == 8
    assert alive == [True] * 5 + [False] * 3 + [True] * 3


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_global_anonymous_cap_leaves_headroom_for_authenticated_connections(pki, loop_factory):
    opts = serving.ServingOptions(read_header_timeout=30, idle_timeout=30, max_connections=6, max_anonymous=3,
                                  max_anonymous_per_peer=100, raise_open_file_limit=False)

    async def main():
        listener = await serving.start(make_app(), "127.0.0.1", 0, server_ssl_context(pki), opts)
        try:
            anonymous = await _open(listener.port, client_tls(pki, False), 5)
            admin = await _open(listener.port, client_tls(pki, True), 4)
            alive = [await _alive(c) for c in anonymous + admin]
            for _, w in anonymous + admin:
                w.close()
            return alive
        finally:
            await listener.close()

    # 3 anonymous fit; the other 2 are refused; 3 of the 4 certificates fill the total of 6.
    assert run(loop_factory, main()) == [True] * 3 + [False] * 2 + [True] * 3 + [False]


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_request_that_authenticates_frees_its_anonymous_slot(pki, loop_factory):
    @web.middleware
    async def token_authn(request, handler):
        if request.headers.get("Authorization") == "Bearer good":
            serving.mark_authenticated(request, "alice")
        return await handler(request)

    opts = serving.ServingOptions(read_header_timeout=30, idle_timeout=30, max_connections=50,
                                  max_anonymous_per_peer=1, raise_open_file_limit=False)

    async def main():
        listener = await serving.start(make_app(token_authn), "127.0.0.1", 0, server_ssl_context(pki), opts)
        try:
            ctx = client_tls(pki, False)
            [(reader, writer)] = await _open(listener.port, ctx, 1)
            before = listener.stats()["anonymous"]
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n")
            await reader.readuntil(b"ok")
            after = listener.stats()["anonymous"]
            second = await _open(listener.port, ctx, 1)
            ok = await _alive(second[0])
            writer.close()
            second[0][1].close()
            return before, after, ok
        finally:
            await listener.close()

    assert run(loop_factory, main()) == (1, 0, True)


def test_limits_release_what_they_admitted():
    limits = serving.ConnectionLimits(max_connections=3, max_anonymous=2, max_anonymous_per_peer=2)
    assert limits.admit("a", False) and limits.admit("a", False)
    assert not limits.admit("a", False)  # per peer and global anonymous caps
    assert limits.admit("b", True)
    assert not limits.admit("c", True)  # total cap
    limits.promote("a")
    limits.release("a", True)
    limits.release("a", False)
    limits.release("b", True)
    assert (limits.total, limits.anonymous, dict(limits.anonymous_by_peer), limits.refused) == (0, 0, {}, 2)


def test_default_caps_come_from_the_open_file_limit(monkeypatch):
    monkeypatch.setattr(serving.resource, "getrlimit", lambda _: (1000, 1000))
    limits = serving.ConnectionLimits.from_options(serving.ServingOptions())
    assert (limits.max_connections, limits.max_anonymous, limits.max_anonymous_per_peer) == (872, 654, 100)


# -- the request deadline (filters.timeout) ---------------------------------------------------


def _deadline_app(request_timeout: float) -> web.Application:
    async def slow(request):
        await asyncio.sleep(float(request.query.get("sleep", "5")))
        return web.Response(text="late")

    async def big(request):
        return web.Response(body=b"x" * BIG)

    async def watch(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        await asyncio.sleep(1.0)
        await resp.write(b"still here")
        return resp

    return make_app(timeout.middleware(request_timeout),
                    routes=[("GET", "/slow", slow), ("GET", "/big", big), ("GET", "/api/v1/pods", watch)])


@pytest.mark.parametrize("path, status, body", [
    pytest.param("/slow", 504, b'"reason":"Timeout"', id="handler-over-the-deadline"),
    pytest.param("/slow?timeout=100ms&sleep=0.4", 504, b"Timeout: request did not complete within the allotted "
                 b"timeout", id="client-asks-for-less"),
    pytest.param("/slow?timeout=10m&sleep=0.2", 200, b"late", id="client-cannot-ask-for-more-than-the-max"),
    pytest.param("/slow?timeout=0&sleep=0.2", 200, b"late", id="zero-means-the-max"),
    pytest.param("/slow?timeout=abc", 400, b'invalid timeout specified in the request URL - time: invalid '
                 b'duration \\"abc\\"', id="malformed"),
    pytest.param("/api/v1/pods?watch=true", 200, b"still here", id="watch-is-long-running"),
])
def test_request_deadline(path, status, body):
    async def main():
        app = _deadline_app(request_timeout=0.5)
        listener = await serving.start(app, "127.0.0.1", 0, None, SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
            return raw
        finally:
            await listener.close()

    raw = run(asyncio.new_event_loop, main())
    assert raw.startswith(f"HTTP/1.1 {status}".encode()), raw[:300]
    assert body in raw


@pytest.mark.parametrize("tls", [pytest.param(True, id="tls"), pytest.param(False, id="plain")])
@pytest.mark.parametrize("loop_factory", LOOPS)
def test_slow_reader_of_a_large_response_is_disconnected_and_the_response_freed(pki, loop_factory, tls):
    async def main():
        server_tls = server_ssl_context(pki) if tls else None
        # Connection timers far away: only the request deadline may close this connection.
        opts = serving.ServingOptions(read_header_timeout=30, idle_timeout=30, raise_open_file_limit=False)
        listener = await serving.start(_deadline_app(request_timeout=0.5), "127.0.0.1", 0, server_tls, opts)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", listener.port, limit=1024,
                                                      ssl=client_tls(pki, True) if tls else None)
            await asyncio.sleep(0.1)
            writer.transport.pause_reading()  # a client that asks and never reads
            gc.collect()
            tracemalloc.start()
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.3)
            stuck = tracemalloc.get_traced_memory()[0]
            for _ in range(40):
                await asyncio.sleep(0.05)
                if listener.stats()["open"] == 0:
                    break
            await asyncio.sleep(0.2)  # let aiohttp's connection task see the abort and drop the response
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            writer.transport.abort()
            return stuck, after, listener.stats()
        finally:
            await listener.close()

    stuck, after, stats = run(loop_factory, main())
    assert stats["open"] == 0  # the server closed it although the client never did
    assert stuck > BIG // 2 and after < BIG // 10, (stuck, after)


def test_large_bodies_are_sent_whole_to_a_reader_that_reads(pki):
    async def main():
        listener = await serving.start(_deadline_app(request_timeout=5), "127.0.0.1", 0, server_ssl_context(pki),
                                       SHORT)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_tls(pki, True))
            got = await get(reader, writer, "/big")
            writer.close()
            return got
        finally:
            await listener.close()

    head, _, body = run(uvloop.new_event_loop, main()).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {BIG}".encode() in head
    assert body == b"x" * BIG
