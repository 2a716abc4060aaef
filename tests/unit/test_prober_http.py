"""httpGet probes and the shared GET client, against local aiohttp and raw asyncio servers."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_prober_runners import free_port

from kubeling.kubelet.prober.http import do_get, new_request, probe_http
from kubeling.kubelet.prober.probe import Result


def _app(seen: list) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        path = request.path
        if path == "/ok":
            return web.Response(text="fine")
        if path == "/fail":
            return web.Response(status=500, text="secret details")
        if path == "/hop":
            raise web.HTTPFound(f"/ok?from={request.query.get('n', '')}")
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/away":
            # Another host name for the same loopback address: not followed.
            raise web.HTTPFound(f"http://localhost:{request.url.port}/ok", text="moved")
        if path == "/nolocation":
            return web.Response(status=302, text="where?")
        if path == "/big":
            return web.Response(body=b"y" * 50000)
        if path == "/chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b"ab", b"cd", b"ef"):
                await resp.write(part)
            await resp.write_eof()
            return resp
        if path == "/slow":
            await asyncio.sleep(2)
            return web.Response(text="late")
        return web.Response(status=404)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    return app


@asynccontextmanager
async def serve(ssl_context=None):
    seen: list = []
    runner = web.AppRunner(_app(seen))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


def _probe(path, port, **extra):
    return {"path": path, "port": port, **extra}


@pytest.mark.parametrize("path, result, output, requests", [
    pytest.param("/ok", Result.SUCCESS, "fine", 1, id="200"),
    pytest.param("/fail", Result.FAILURE, "HTTP probe failed with statuscode: 500", 1,
                 id="500-without-body"),
    pytest.param("/hop?n=1", Result.SUCCESS, "fine", 2, id="same-host-redirect-followed"),
    pytest.param("/away", Result.WARNING, "Probe terminated redirects, Response body: moved", 1,
                 id="other-host-redirect-is-warning"),
    pytest.param("/nolocation", Result.WARNING, "Probe terminated redirects, Response body: where?",
                 1, id="3xx-without-location"),
    pytest.param("/big", Result.SUCCESS, "y" * 10240, 1, id="body-read-limited"),
    pytest.param("/chunked", Result.SUCCESS, "abcdef", 1, id="chunked"),
    pytest.param("/missing", Result.FAILURE, "HTTP probe failed with statuscode: 404", 1, id="404"),
])
def test_http_probe_verdicts(path, result, output, requests):
    async def main():
        async with serve() as (port, seen):
            req = new_request(_probe(path, port), {}, "127.0.0.1")
            return await probe_http(req, 2), seen

    outcome, seen = asyncio.run(main())
    assert (outcome.result, outcome.output) == (result, output)
    assert len(seen) == requests


def test_http_probe_redirect_loop_stops_after_10_requests():
    async def main():
        async with serve() as (port, seen):
            return port, await probe_http(new_request(_probe("/loop", port), {}, "127.0.0.1"), 2), seen

    port, outcome, seen = asyncio.run(main())
    assert outcome.result is Result.FAILURE
    assert outcome.output == f'Get "http://127.0.0.1:{port}/loop": stopped after 10 redirects'
    assert len(seen) == 10


def test_http_probe_headers_named_port_and_host_override():
    async def main():
        async with serve() as (port, seen):
            container = {"ports": [{"name": "web", "containerPort": port}]}
            spec = _probe("/ok", "web", httpHeaders=[
                {"name": "x-probe-token", "value": "t1"}, {"name": "Host", "value": "svc.local"}])
            outcome = await probe_http(new_request(spec, container, "127.0.0.1"), 2)
            plain = await probe_http(new_request(_probe("/ok", port), {}, "127.0.0.1"), 2)
            return port, outcome, plain, seen

    port, outcome, plain, seen = asyncio.run(main())
    assert outcome.result is Result.SUCCESS and plain.result is Result.SUCCESS
    first, second = seen
    assert first.headers["User-Agent"] == "kube-probe/1.33"
    assert first.headers["Accept"] == "*/*"
    assert first.headers["X-Probe-Token"] == "t1"
    assert first.headers["Host"] == "svc.local"
    assert second.headers["Host"] == f"127.0.0.1:{port}"
    assert first.headers.get("Connection") == "close"


def test_http_probe_user_agent_and_empty_accept_overrides():
    async def main():
        async with serve() as (port, seen):
            spec = _probe("/ok", port, httpHeaders=[{"name": "User-Agent", "value": "mine"},
                                                   {"name": "Accept", "value": ""}])
            await probe_http(new_request(spec, {}, "127.0.0.1"), 2)
            return seen

    (request,) = asyncio.run(main())
    assert request.headers["User-Agent"] == "mine"
    assert "Accept" not in request.headers


def test_http_probe_refused_and_timeout_messages():
    dead = free_port()

    async def main():
        refused = await probe_http(new_request(_probe("/healthz", dead), {}, "127.0.0.1"), 1)
        async with serve() as (port, _):
            slow = await probe_http(new_request(_probe("/slow", port), {}, "127.0.0.1"), 0.3)
        return refused, slow, port

    refused, slow, port = asyncio.run(main())
    assert refused.output == (f'Get "http://127.0.0.1:{dead}/healthz": dial tcp 127.0.0.1:{dead}: '
                              "connect: connection refused")
    assert slow.result is Result.FAILURE
    assert slow.output == (f'Get "http://127.0.0.1:{port}/slow": context deadline exceeded '
                           "(Client.Timeout exceeded while awaiting headers)")


@pytest.mark.parametrize("answer, output", [
    pytest.param(b"", "EOF", id="closed-without-answer"),
    pytest.param(b"SSH-2.0-OpenSSH\r\n", 'net/http: HTTP/1.x transport connection broken: '
                 'malformed HTTP response "SSH-2.0-OpenSSH"', id="not-http"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", None,
                 id="interim-then-204"),
])
def test_http_probe_raw_peers(answer, output):
    async def main():
        async def peer(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return port, await probe_http(new_request(_probe("", port), {}, "127.0.0.1"), 1)
        finally:
            server.close()
            await server.wait_closed()

    port, outcome = asyncio.run(main())
    if output is None:
        assert outcome.result is Result.SUCCESS
    else:
        # An empty path shows as no path at all, as Go prints the URL.
        assert outcome.output == f'Get "http://127.0.0.1:{port}": {output}'


@pytest.fixture
def tls_context(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return ctx


def test_https_probe_skips_verification_and_follows_to_https(tls_context):
    async def main():
        async with serve(tls_context) as (port, seen):
            outcome = await probe_http(new_request(_probe("/hop", port, scheme="HTTPS"), {},
                                                   "127.0.0.1"), 2)
            return outcome, seen

    outcome, seen = asyncio.run(main())
    assert outcome == outcome.__class__(Result.SUCCESS, "fine")
    assert [r.path for r in seen] == ["/hop", "/ok"]


def test_https_against_plain_http_server():
    async def main():
        async with serve() as (port, _):
            return port, await probe_http(new_request(_probe("/ok", port, scheme="HTTPS"), {},
                                                      "127.0.0.1"), 2)

    port, outcome = asyncio.run(main())
    assert outcome.output == (f'Get "https://127.0.0.1:{port}/ok": '
                              "http: server gave HTTP response to HTTPS client")


def test_do_get_can_skip_the_body():
    async def main():
        async with serve() as (port, _):
            return await do_get(new_request(_probe("/big", port), {}, "127.0.0.1"), 2, max_body=0)

    resp = asyncio.run(main())
    assert resp.status == 200 and resp.body == b""
