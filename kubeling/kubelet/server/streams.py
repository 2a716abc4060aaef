"""The agent's streaming routes: ``/exec``, ``/attach`` and ``/portForward``.

Each accepts the three ways clients connect (see `kubeling.kubelet.streaming`)::

    Upgrade: websocket   + a channel subprotocol        -> wsstream channels
    Upgrade: websocket   + SPDY/3.1+portforward.k8s.io  -> SPDY inside WebSocket messages
    Upgrade: SPDY/3.1    + X-Stream-Protocol-Version    -> SPDY on the hijacked connection

SPDY subprotocol negotiation is upstream's ``httpstream.Handshake``: the first version the client
lists that we serve; none listed means the oldest protocol; no match is ``403`` with
``X-Accepted-Stream-Protocol-Versions``. A request that is not an upgrade is ``400``.
Pod/container lookups fail before any upgrade, with plain-text ``404``.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from kubeling.kubelet.server.handlers import host_of, pod_containers, text_error
from kubeling.kubelet.streaming import portforward, remotecommand, wsstream
from kubeling.kubelet.streaming.spdyconn import SpdyConnection
from kubeling.kubelet.streaming.transport import WebSocketBytes, hijack

PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"


def is_websocket(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


def is_spdy(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower().startswith("spdy/3.1")
            and "upgrade" in request.headers.get("Connection", "").lower())


def spdy_protocol(request: web.Request, supported: tuple[str, ...]) -> str | None:
    offered = [p.strip() for h in request.headers.getall(PROTOCOL_HEADER, []) for p in h.split(",") if p.strip()]
    if not offered:
        return ""
    return next((p for p in offered if p in supported), None)


async def spdy_upgrade(request: web.Request, supported: tuple[str, ...]) -> SpdyConnection | web.Response:
    protocol = spdy_protocol(request, supported)
    if protocol is None:
        offered = request.headers.getall(PROTOCOL_HEADER, [])
        return web.Response(status=403, headers={ACCEPTED_HEADER: ", ".join(supported)},
                            text=f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                                 f"server supports {list(supported)}")
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    if protocol:
        headers[PROTOCOL_HEADER] = protocol
    conn = SpdyConnection(await hijack(request, headers), server=True)
    conn.protocol = protocol
    return conn


def _lookup(request: web.Request, with_container: bool):
    host = host_of(request)
    ns, name = request.match_info["namespace"], request.match_info["pod"]
    pod = host.find_pod(ns, name)
    if pod is None:
        return host, None, text_error(404, f'pod "{name}" does not exist')
    if with_container:
        container = request.match_info["container"]
        if container not in pod_containers(pod):
            return host, pod, text_error(404, f'container not found ("{container}")')
    return host, pod, None


async def exec_(request: web.Request) -> web.StreamResponse:
    return await _remote_command(request, attach=False)


async def attach(request: web.Request) -> web.StreamResponse:
    return await _remote_command(request, attach=True)


async def _remote_command(request: web.Request, *, attach: bool) -> web.StreamResponse:
    host, pod, error = _lookup(request, True)
    if error is not None:
        return error
    opts = remotecommand.Options.from_query(request.query)
    if attach:
        opts.command = []
    problem = opts.check()
    if problem:
        return text_error(400, problem)
    container = request.match_info["container"]
    cid = host.container_id(pod, container)
    if not cid:
        return text_error(404, f'container not found ("{container}")')

    async def start():
        if attach:
            return await host.runtime.attach(cid, tty=opts.tty, stdin=opts.stdin)
        return await host.runtime.exec(cid, opts.command, tty=opts.tty, stdin=opts.stdin)

    if is_websocket(request):
        conn = await wsstream.accept(request, wsstream.REMOTECOMMAND)
        if isinstance(conn, web.Response):
            return conn
        io = remotecommand.WebSocketIO(conn, opts)
        await io.start()
        await remotecommand.run(io, opts, start, attach=attach)
        return conn.ws
    if is_spdy(request):
        conn = await spdy_upgrade(request, remotecommand.SPDY_PROTOCOLS)
        if isinstance(conn, web.Response):
            return conn
        io = remotecommand.SpdyIO(conn, conn.protocol, opts)
        serving = asyncio.create_task(conn.serve())
        io.watch_connection(serving)
        try:
            if await io.collect():
                await remotecommand.run(io, opts, start, attach=attach)
            await conn.close()
        finally:
            serving.cancel()
        return conn.transport.response
    return text_error(400, "Upgrade request required")


def _ports(request: web.Request) -> list[int] | str:
    out: list[int] = []
    for key in ("port", "ports"):
        for raw in request.query.getall(key, []):
            for item in raw.split(","):
                port = portforward.parse_port(item.strip())
                if port is None:
                    return f"invalid port {item.strip()!r}"
                out.append(port)
    return out


async def port_forward(request: web.Request) -> web.StreamResponse:
    host, pod, error = _lookup(request, False)
    if error is not None:
        return error
    meta = pod.get("metadata") or {}
    sandbox = host.sandbox_id(pod)
    if not sandbox:
        return text_error(404, f'pod "{meta.get("name", "")}" has no running sandbox')
    pod_name, uid = f'{meta.get("name", "")}_{meta.get("namespace", "")}', meta.get("uid", "")

    async def dial(port: int):
        return await host.runtime.port_forward(sandbox, port)

    if is_websocket(request):
        if wsstream.TUNNEL_PORTFORWARD in wsstream.requested(request):
            ws = web.WebSocketResponse(protocols=(wsstream.TUNNEL_PORTFORWARD,), max_msg_size=wsstream.MAX_MESSAGE)
            await ws.prepare(request)
            await _serve_spdy_portforward(SpdyConnection(WebSocketBytes(ws), server=True), dial, pod_name, uid)
            return ws
        ports = _ports(request)
        if isinstance(ports, str) or not ports:
            return text_error(400, ports or "query parameter \"port\" is required")
        conn = await wsstream.accept(request, wsstream.PORTFORWARD)
        if isinstance(conn, web.Response):
            return conn
        await portforward.serve_websocket(conn, ports, dial, pod_name, uid)
        return conn.ws
    if is_spdy(request):
        conn = await spdy_upgrade(request, (portforward.PROTOCOL,))
        if isinstance(conn, web.Response):
            return conn
        await _serve_spdy_portforward(conn, dial, pod_name, uid)
        return conn.transport.response
    return text_error(400, "Upgrade request required")


async def _serve_spdy_portforward(conn: SpdyConnection, dial, pod_name: str, uid: str) -> None:
    serving = asyncio.create_task(conn.serve())
    forwarding = asyncio.create_task(portforward.serve_spdy(conn, dial, pod_name, uid))
    try:
        await asyncio.wait([serving, forwarding], return_when=asyncio.FIRST_COMPLETED)
    finally:
        forwarding.cancel()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwarding
        await conn.close()


def add_routes(app: web.Application) -> None:
    for method in ("GET", "POST"):
        app.router.add_route(method, "/exec/{namespace}/{pod}/{container}", exec_)
        app.router.add_route(method, "/attach/{namespace}/{pod}/{container}", attach)
        app.router.add_route(method, "/portForward/{namespace}/{pod}", port_forward)
