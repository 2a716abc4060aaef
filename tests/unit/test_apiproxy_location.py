"""The API server's ``services/<[scheme:]name[:port]>/proxy`` and ``pods/.../proxy``, in-process:
a real HTTP server on loopback stands for the Service's endpoint (no mock), reached through the
Endpoints object or, without one, the EndpointSlices; upstream's errors and redirect."""

from __future__ import annotations

import asyncio
import contextlib
import gzip

from aiohttp import WSMsgType, web

from kubeling.apiserver.proxy import rewrite_location

from inprocess import api_server, http

NS = "default"
PAGE = ('<html><head><link rel="stylesheet" href="/static/a.css"><script>var s = \'<a href="/no">\';</script>'
        '</head><body>&amp; <a href="/docs/">docs</a> <a href="rel">rel</a> <img src=/i.png alt=x>'
        '<!-- <a href="/comment"> --></body></html>')


def run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def target():
    """An HTTP server on 127.0.0.1 answering what it was asked (and a WebSocket echo at /ws)."""
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/redirect"):
            where = {"/redirect": "/login?next=1", "/redirect-self": f"http://{request.host}/self/",
                     "/redirect-away": "http://example.invalid/x", "/redirect-rel": "sub/page"}[request.path]
            return web.Response(status=302, headers={"Location": where, "Access-Control-Allow-Origin": "*"})
        if request.path.startswith("/page"):
            body = PAGE.encode()
            headers = {"Content-Type": "text/html; charset=utf-8"}
            if request.path == "/page.gz":
                body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
            if request.path == "/page.txt":
                headers["Content-Type"] = "text/plain"
            return web.Response(body=body, headers=headers)
        if request.path == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
            return ws
        return web.json_response({"method": request.method, "path": request.path, "query": request.query_string,
                                  "body": (await request.read()).decode(),
                                  "authorization": request.headers.get("Authorization", "")},
                                 headers={"X-Target": "yes"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def create(c, path: str, obj: dict) -> dict:
    r = await c.post(path, json=obj)
    assert r.status == 201, await r.text()
    return await r.json()


def service(name: str, ports: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": ports}}


def endpoints(name: str, ip: str, ports: list[dict], target_ref: dict | None = None) -> dict:
    addr = {"ip": ip, **({"targetRef": target_ref} if target_ref else {})}
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [addr], "ports": ports}]}


SVC = f"/api/v1/namespaces/{NS}/services"
EPS = f"/api/v1/namespaces/{NS}/endpoints"


def test_service_proxy_relays_to_an_endpoint_by_port_number_or_name():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("web", [{"name": "http", "port": 80, "targetPort": port}]))
            await create(c, EPS, endpoints("web", "127.0.0.1", [{"name": "http", "port": port}]))
            for ident in ("web:80", "web:http", "http:web:80"):
                r = await c.get(f"{SVC}/{ident}/proxy/hello/there?x=1&y=2")
                assert r.status == 200, await r.text()
                got = await r.json()
                assert got == {"method": "GET", "path": "/hello/there", "query": "x=1&y=2", "body": "",
                               "authorization": ""}
                assert r.headers["X-Target"] == "yes"
            r = await c.post(f"{SVC}/web:80/proxy/submit", data=b"payload")
            assert (await r.json())["body"] == "payload" and (await r.json())["method"] == "POST"
            r = await c.get(f"{SVC}/web:80/proxy/")
            assert (await r.json())["path"] == "/"
            # no path: upstream's redirect to the trailing slash, query kept
            r = await c.get(f"{SVC}/web:80/proxy?a=b", allow_redirects=False)
            assert r.status == 301 and r.headers["Location"] == f"{SVC}/web:80/proxy/?a=b"
    run(main())


def test_service_proxy_upgrades_to_websocket():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("ws", [{"port": 80, "targetPort": port}]))
            await create(c, EPS, endpoints("ws", "127.0.0.1", [{"port": port}]))
            async with c.ws_connect(f"{SVC}/ws/proxy/ws") as ws:   # an unnamed single port: no port needed
                await ws.send_str("ping")
                msg = await ws.receive(timeout=5)
                assert msg.data == "echo:ping"
    run(main())


def test_service_proxy_errors_are_upstreams():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("web", [{"name": "http", "port": 80, "targetPort": port}]))
            await create(c, EPS, endpoints("web", "127.0.0.1", [{"name": "http", "port": port}]))
            await create(c, SVC, service("empty", [{"port": 80}]))
            await create(c, SVC, service("down", [{"port": 80}]))
            await create(c, EPS, endpoints("down", "127.0.0.1", [{"port": 1}]))
            cases = [
                ("missing:80", 404, 'services "missing" not found'),
                ("web:81", 503, 'no service port 81 found for service "web"'),
                ("web:nope", 503, 'no endpoints available for service "web:nope"'),
                ("web", 503, 'no endpoints available for service "web"'),      # the port is named: say it
                ("empty:80", 503, 'no endpoints available for service "empty:80"'),
                ("down:80", 503, "error trying to reach service: dial tcp 127.0.0.1:1: connect: connection refused"),
            ]
            for ident, code, text in cases:
                r = await c.get(f"{SVC}/{ident}/proxy/")
                body = await r.json()
                assert (r.status, body["message"]) == (code, text), (ident, body)
                assert body["kind"] == "Status" and body["code"] == code
            r = await c.get(f"{SVC}/a:b:c:d/proxy/")
            assert r.status == 400
    run(main())


def test_service_proxy_skips_an_address_whose_pod_is_gone():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("ghost", [{"port": 80}]))
            ref = {"kind": "Pod", "namespace": NS, "name": "gone", "uid": "u1"}
            await create(c, EPS, endpoints("ghost", "127.0.0.1", [{"port": port}], target_ref=ref))
            r = await c.get(f"{SVC}/ghost:80/proxy/")
            assert r.status == 503 and (await r.json())["message"] == 'no endpoints available for service "ghost:80"'
    run(main())


def test_service_proxy_falls_back_to_endpointslices():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("sliced", [{"name": "web", "port": 80}]))
            slices = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
            base = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                    "ports": [{"name": "web", "port": port, "protocol": "TCP"}]}
            await create(c, slices, {**base, "metadata": {"name": "sliced-a",
                                                          "labels": {"kubernetes.io/service-name": "sliced"}},
                                     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]})
            r = await c.get(f"{SVC}/sliced:80/proxy/x")
            assert r.status == 200 and (await r.json())["path"] == "/x"
            # a not-ready endpoint is never a target
            await create(c, SVC, service("unready", [{"name": "web", "port": 80}]))
            await create(c, slices, {**base, "metadata": {"name": "unready-a",
                                                          "labels": {"kubernetes.io/service-name": "unready"}},
                                     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": False}}]})
            r = await c.get(f"{SVC}/unready:80/proxy/x")
            assert r.status == 503
    run(main())


def test_pod_proxy_needs_a_routable_pod_ip():
    async def main():
        api = await api_server()
        async with http(api) as c:
            pods = f"/api/v1/namespaces/{NS}/pods"
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 8080}]}]}}
            await create(c, pods, pod)
            r = await c.get(f"{pods}/p/proxy/")
            assert r.status == 400 and (await r.json())["message"] == "address not allowed"
            r = await c.get(f"{pods}/nope:80/proxy/")
            assert r.status == 404
            cur = await (await c.get(f"{pods}/p")).json()
            cur["status"] = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
            r = await c.put(f"{pods}/p/status", json=cur)
            assert r.status == 200, await r.text()
            r = await c.get(f"{pods}/p:8080/proxy/")
            assert r.status == 400 and (await r.json())["message"] == "address not allowed"
    run(main())


def test_rewrite_location_is_upstreams():
    prefix = "/api/v1/namespaces/ns/services/web:80/proxy"
    t = "10.42.1.5:8080"
    assert rewrite_location("/login?a=1#f", t, prefix) == prefix + "/login?a=1#f"
    assert rewrite_location("/dir/", t, prefix) == prefix + "/dir/"
    assert rewrite_location(prefix + "/x", t, prefix) == prefix + "/x"          # already under the proxy
    assert rewrite_location("http://10.42.1.5:8080/x", t, prefix) == "http://10.42.1.5:8080" + prefix + "/x"
    assert rewrite_location("http://elsewhere/x", t, prefix) == "http://elsewhere/x"
    assert rewrite_location("page.html", t, prefix) == "page.html"


def test_service_proxy_rewrites_redirects_and_drops_cors_headers():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("web", [{"port": 80, "targetPort": port}]))
            await create(c, EPS, endpoints("web", "127.0.0.1", [{"port": port}]))
            base = f"{SVC}/web:80/proxy"
            want = {"redirect": f"{base}/login?next=1", "redirect-self": f"http://127.0.0.1:{port}{base}/self/",
                    "redirect-away": "http://example.invalid/x", "redirect-rel": "sub/page"}
            for path, location in want.items():
                r = await c.get(f"{base}/{path}", allow_redirects=False)
                assert r.status == 302 and r.headers["Location"] == location, (path, r.headers.get("Location"))
                assert "Access-Control-Allow-Origin" not in r.headers
    run(main())


def test_service_proxy_rewrites_links_in_html():
    async def main():
        api = await api_server()
        async with target() as port, http(api) as c:
            await create(c, SVC, service("web", [{"port": 80, "targetPort": port}]))
            await create(c, EPS, endpoints("web", "127.0.0.1", [{"port": port}]))
            base = f"{SVC}/web:80/proxy"
            want = PAGE.replace('href="/static', f'href="{base}/static').replace(
                'href="/docs/', f'href="{base}/docs/').replace("<img src=/i.png alt=x>",
                                                               f'<img src="{base}/i.png" alt="x">')
            for page in ("page", "page.gz"):
                r = await c.get(f"{base}/{page}", headers={"Accept-Encoding": "identity"}, auto_decompress=False)
                raw = await r.read()
                text = (gzip.decompress(raw) if page.endswith(".gz") else raw).decode()
                assert text == want, (page, text)
            r = await c.get(f"{base}/page.txt")
            assert await r.text() == PAGE          # not HTML: untouched
    run(main())
