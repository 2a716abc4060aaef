"""`CacheWatcher` over real HTTP: aiohttp's chunked writer and the cacher's direct transport
writes share one response, and clients (aiohttp's, on uvloop, over 127.0.0.1) read it as one
well-formed chunked stream that ends cleanly and leaves the connection reusable."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import web
from test_cacher_support import cm, create, served, settle, until

from kubeling.apiserver.cacher import Cacher
from kubeling.apiserver.watch_cache import SelectionPredicate
from kubeling.apiserver.watchstream import respond
from kubeling.storage import SQLiteStore

CM = ("", "v1", "configmaps")


def serve_app(tmp_path, body, **cacher_kw):
    """A store, a cacher and an aiohttp app whose ``/watch`` handler is the wiring the API
    server uses: register with the cacher, then `watchstream.respond`."""

    async def main():
        store = await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0)
        cacher = Cacher(store, **cacher_kw)
        await cacher.start()
        sv = served(*CM)

        async def watch(request: web.Request) -> web.StreamResponse:
            q = request.query
            w = await cacher.watch(sv, "ns", SelectionPredicate.parse(sv, q.get("labelSelector", "")),
                                   resource_version=q.get("resourceVersion", ""),
                                   bookmarks=q.get("allowWatchBookmarks") == "true")
            return await respond(request, w, float(q.get("timeoutSeconds", 30)))

        app = web.Application()
        app.router.add_get("/watch", watch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
                return await body(store, cacher, s, f"http://127.0.0.1:{port}/watch")
        finally:
            await cacher.stop()
            await runner.cleanup()
            await store.close()

    return uvloop.run(main())


async def read_events(resp) -> list[dict]:
    return [orjson.loads(line) async for line in resp.content if line.strip()]


@pytest.mark.parametrize("initial", [pytest.param(0, id="no-backlog"), pytest.param(300, id="big-backlog")])
def test_backlog_then_live_events_form_one_clean_stream(tmp_path, initial):
    async def body(store, cacher, s, url):
        for i in range(initial):
            await create(store, cm(f"i{i:04d}", "ns", data={"v": "x" * 500}))
        rv = await create(store, cm("start", "ns"))
        await settle(cacher, store)
        async with s.get(url, params={"resourceVersion": "0", "timeoutSeconds": "1"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            await until(lambda: cacher.watcher_count() == 1)
            for i in range(50):  # live events, some while the backlog may still be sent
                await create(store, cm(f"l{i:03d}", "ns"))
            evs = await read_events(r)  # ends at timeoutSeconds with the chunked terminator
        assert [e["object"]["metadata"]["name"] for e in evs] == \
            [f"i{i:04d}" for i in range(initial)] + ["start"] + [f"l{i:03d}" for i in range(50)]
        assert all(e["type"] == "ADDED" for e in evs)
        # The keep-alive connection is reused for the next request (the body ended where it should).
        async with s.get(url, params={"resourceVersion": str(rv), "timeoutSeconds": "0.2"}) as r:
            assert len(await read_events(r)) == 50
        assert cacher.watcher_count() == 0
    serve_app(tmp_path, body)


def test_error_event_and_bookmarks_over_http(tmp_path):
    async def body(store, cacher, s, url):
        rv = await create(store, cm("a", "ns"))
        for i in range(3):
            await create(store, cm(f"b{i}", "ns"))
        await settle(cacher, store)
        async with s.get(url, params={"resourceVersion": str(rv), "timeoutSeconds": "5"}) as r:
            evs = await read_events(r)
        assert [e["type"] for e in evs] == ["ERROR"] and evs[0]["object"]["code"] == 410
        async with s.get(url, params={"resourceVersion": str(rv + 3), "allowWatchBookmarks": "true",
                                      "timeoutSeconds": "0.5"}) as r:
            evs = await read_events(r)
        assert evs and all(e["type"] == "BOOKMARK" for e in evs)
    serve_app(tmp_path, body, capacity=2, bookmark_interval=0.1)


def test_departed_client_is_noticed(tmp_path):
    async def body(store, cacher, s, url):
        await create(store, cm("a", "ns"))
        r = await s.get(url, params={"resourceVersion": "0", "timeoutSeconds": "60"})
        await until(lambda: cacher.watcher_count() == 1)
        r.close()  # the client hangs up without reading to the end
        await until(lambda: cacher.watcher_count() == 0, timeout=5)
        await create(store, cm("b", "ns"))  # nothing is written to the closed transport
        await settle(cacher, store)
    serve_app(tmp_path, body, bookmark_interval=0.2)


def test_client_that_never_reads_its_backlog_is_dropped(tmp_path):
    """A client that stops reading while its backlog is sent: serve waits on the transport, the
    live events it queues meanwhile pass ``pending_limit``, and the connection is aborted."""
    async def body(store, cacher, s, url):
        for i in range(200):  # ~10 MB of backlog: more than loopback socket buffers hold
            await create(store, cm(f"big{i:03d}", "ns", data={"v": "x" * 50_000}))
        await settle(cacher, store)
        host, port = url.split("//")[1].split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /watch?resourceVersion=0&timeoutSeconds=60 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        await until(lambda: cacher.watcher_count() == 1)
        await asyncio.sleep(0.3)  # it fills the socket and waits for the client to read
        for i in range(10):
            await create(store, cm(f"live{i}", "ns"))
        await until(lambda: cacher.watcher_count() == 0, timeout=5)
        got = bytearray()
        try:  # the connection ends (aborted, not a finished body) instead of waiting for ever
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
                got += chunk
        except ConnectionResetError:
            pass
        assert got.startswith(b"HTTP/1.1 200") and not got.endswith(b"0\r\n\r\n")
        writer.close()
    serve_app(tmp_path, body, pending_limit=5)
