"""The API server's way to node agents (upstream: ``pkg/kubelet/client`` for where and how to
connect, ``apimachinery/pkg/util/proxy.UpgradeAwareHandler`` for the relaying).

`KubeletClient` holds the API server's identity towards agents: the client certificate
``<data-dir>/pki/apiserver-kubelet-client.crt`` (CN ``kube-apiserver-kubelet-client``, no group:
the RBAC bootstrap binds it to ``system:kubelet-api-admin``). Agents serve self-signed certificates, which upstream does not verify unless
``--kubelet-certificate-authority`` is set; ``ca`` is that option.

`node_location` picks the agent's address from a Node: the first of ``status.addresses`` by type
preference (InternalIP, ExternalIP, InternalDNS, ExternalDNS, Hostname) and the port from
``status.daemonEndpoints.kubeletEndpoint.Port`` (10250 when unset).

`relay` forwards one request over a fresh TLS connection, speaking HTTP/1.1 on the raw stream so
that upgrades need no special case until the answer:

- ``101 Switching Protocols`` to an upgrade request: the 101 (with the agent's ``Upgrade``,
  ``Sec-WebSocket-*`` and ``X-Stream-Protocol-Version`` headers, so the negotiated subprotocol
  reaches the client) is sent back, the client connection is taken over, and bytes are copied
  both ways until either side closes. Nothing is parsed: WebSocket, SPDY and the SPDY tunnel all
  pass unchanged.
- any other answer: status, headers and body are streamed back as they arrive (chunked or not),
  so ``kubectl logs -f`` stays open as long as the agent writes. ``error_as_status`` turns a
  non-2xx answer into a ``Status`` with the agent's text (what ``pods/log`` does upstream).

Hop-by-hop headers and the client's credentials (``Authorization``, ``Impersonate-*``) are not
forwarded: the agent sees the API server's certificate only.

`relay_to` is the same relay towards any target, in plain HTTP or in TLS: ``services/.../proxy``
and ``pods/.../proxy`` use it with `target_ssl_context` for the ``https`` scheme (upstream's
proxy transport, which does not verify the target's certificate: pods serve whatever they like).
A target that cannot be dialled answers 503 ``error trying to reach service: dial tcp ...``
(or ``pod``). `redirect_to_slash` is upstream's redirect of ``.../proxy`` to ``.../proxy/``.
With ``wrap=True`` (upstream's wrapped transport) a ``Location`` pointing back at the target is
rewritten under the proxy path (`rewrite_location`), so are the URL attributes of ``text/html``
bodies (`rewrite_html`; plain, gzip or deflate, up to `HTML_MAX` bytes), and the target's CORS
headers are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import os
import zlib
from html.parser import HTMLParser
import posixpath
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from kubeling.api import errors
from kubeling.kubelet.streaming.transport import hijack

DEFAULT_PORT = 10250
DIAL_TIMEOUT = 30.0
ADDRESS_PREFERENCE = ("InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS", "Hostname")
MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024

_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "authorization"}


@dataclass
class KubeletClient:
    cert: Path
    key: Path
    ca: Path | None = None
    _ctx: ssl.SSLContext | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.ca is not None:
                ctx.load_verify_locations(str(self.ca))
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(str(self.cert), str(self.key))
            ctx.set_alpn_protocols(["http/1.1"])
            self._ctx = ctx
        return self._ctx


def ensure_client_cert(pki) -> KubeletClient:
    """The API server's agent client, issuing its certificate from the cluster CA if missing."""
    cert, key = pki.dir / "apiserver-kubelet-client.crt", pki.dir / "apiserver-kubelet-client.key"
    if not cert.exists() or not key.exists():
        pki.issue_client(cert, key, "kube-apiserver-kubelet-client", [])
    return KubeletClient(cert, key)


def node_location(node: dict) -> tuple[str, int]:
    status = node.get("status") or {}
    by_type: dict[str, str] = {}
    for a in status.get("addresses") or []:
        by_type.setdefault(a.get("type", ""), a.get("address", ""))
    host = next((by_type[t] for t in ADDRESS_PREFERENCE if by_type.get(t)), "")
    if not host:
        known = [f"{{{a.get('type', '')} {a.get('address', '')}}}" for a in status.get("addresses") or []]
        raise errors.internal(f"no preferred addresses found; known addresses: [{' '.join(known)}]")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_PORT
    return host, int(port)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_upgrade(request: web.Request) -> bool:
    return bool(request.headers.get("Upgrade")) and "upgrade" in request.headers.get("Connection", "").lower()


def _request_head(request: web.Request, host: str, port: int, path: str, query: str, body: bytes | None) -> bytes:
    lines = [f"{request.method} {path}{'?' + query if query else ''} HTTP/1.1", f"Host: {_authority(host, port)}"]
    for name, value in request.headers.items():
        low = name.lower()
        if low in _HOP or low.startswith("impersonate-"):
            continue
        lines.append(f"{name}: {value}")
    if _is_upgrade(request):
        lines += ["Connection: Upgrade", f"Upgrade: {request.headers['Upgrade']}"]
    else:
        lines.append("Connection: close")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader, who: str = "the node agent") -> tuple[int, list[tuple[str, str]]]:
    """The status line and headers. Lines may end in a bare LF (as Go's reader, and CGI
    programs behind busybox httpd, allow)."""
    lines: list[str] = []
    size = 0
    try:
        while True:
            line = await reader.readuntil(b"\n")
            size += len(line)
            if size > MAX_HEAD:
                raise errors.internal(f"error reading the answer of {who}: its header is too long")
            text = line.decode("latin-1").rstrip("\r\n")
            if not text and lines:
                break
            if text:
                lines.append(text)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
        raise errors.internal(f"error reading the answer of {who}: {e or type(e).__name__}") from None
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise errors.internal(f"malformed answer from {who}: {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]):
    """The response body as it arrives: by Content-Length, chunked, or until the connection ends."""
    h = {k.lower(): v for k, v in headers}
    if "chunked" in h.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in h:
        left = int(h["content-length"])
        while left > 0:
            chunk = await reader.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    else:
        while chunk := await reader.read(CHUNK):
            yield chunk


async def relay(request: web.Request, client: KubeletClient, host: str, port: int, path: str, query: str, *,
                error_as_status: bool = False) -> web.StreamResponse:
    return await relay_to(request, host, port, path, query, ssl_ctx=client.ssl_context(),
                          server_hostname=host if client.ca is not None else None, error_as_status=error_as_status)


_TARGET_CTX: ssl.SSLContext | None = None


def target_ssl_context() -> ssl.SSLContext:
    """TLS towards a service's or a pod's ``https`` port: not verified, as upstream's proxy
    transport (``InsecureSkipVerify``)."""
    global _TARGET_CTX
    if _TARGET_CTX is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        _TARGET_CTX = ctx
    return _TARGET_CTX


def redirect_to_slash(request: web.Request) -> web.Response | None:
    """Upstream's UpgradeAwareHandler: ``.../proxy`` with no path (and no upgrade) is answered
    with a 301 to ``.../proxy/``, so that relative links in the target's pages resolve."""
    if _is_upgrade(request) or not request.path.endswith("/proxy"):
        return None
    query = f"?{request.query_string}" if request.query_string else ""
    return web.Response(status=301, headers={"Location": request.path + "/" + query})


def _dial_why(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "i/o timeout"
    if isinstance(e, OSError) and e.errno and not isinstance(e, ssl.SSLError):
        return "connect: " + os.strerror(e.errno).lower()
    return str(e) or type(e).__name__


CORS_HEADERS = {"access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
                "access-control-allow-origin"}


def rewrite_location(location: str, target: str, prefix: str) -> str:
    """Upstream's ``Transport.rewriteURL`` for a ``Location`` the target (``host:port``) sent: an
    absolute path on the target goes under ``prefix`` (the proxy path up to the target's path);
    another host, or a path relative to the current one, is left alone."""
    u = urllib.parse.urlsplit(location)
    if (u.netloc and u.netloc != target) or not u.path.startswith("/"):
        return location
    scheme, netloc = (u.scheme, u.netloc) if u.netloc == target else ("", "")
    new_path = u.path
    if not u.path.startswith(prefix):
        new_path = posixpath.normpath(posixpath.join(prefix, u.path.lstrip("/")))
        if u.path.endswith("/") and not new_path.endswith("/"):
            new_path += "/"
    return urllib.parse.urlunsplit((scheme, netloc, new_path, u.query, u.fragment))


HTML_MAX = 16 << 20
# upstream's atomsToAttrs: the attributes holding URLs, per element
URL_ATTRS = {
    "a": ("href",), "applet": ("codebase",), "area": ("href",), "audio": ("src",), "base": ("href",),
    "blockquote": ("cite",), "body": ("background",), "button": ("formaction",), "command": ("icon",),
    "del": ("cite",), "embed": ("src",), "form": ("action",), "frame": ("longdesc", "src"), "head": ("profile",),
    "html": ("manifest",), "iframe": ("longdesc", "src"), "img": ("longdesc", "src", "usemap"),
    "input": ("src", "usemap", "formaction"), "ins": ("cite",), "link": ("href",),
    "object": ("classid", "codebase", "data", "usemap"), "q": ("cite",), "script": ("src",), "source": ("src",),
    "video": ("poster", "src"),
}


class _StartTags(HTMLParser):
    """Finds the start tags whose URL attributes need rewriting; the rest is never re-emitted."""

    def __init__(self, target: str, prefix: str) -> None:
        super().__init__(convert_charrefs=False)
        self.target, self.prefix = target, prefix
        self.edits: list[tuple[tuple[int, int], str, str]] = []    # (position, raw tag, new tag)

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], close: str) -> None:
        names = URL_ATTRS.get(tag, ())
        new = [(k, rewrite_location(v, self.target, self.prefix) if k in names and v else v) for k, v in attrs]
        raw = self.get_starttag_text()
        if new != attrs and raw:
            parts = [tag] + [k if v is None else f'{k}="{html.escape(v, quote=True)}"' for k, v in new]
            self.edits.append((self.getpos(), raw, "<" + " ".join(parts) + close))

    def handle_starttag(self, tag, attrs):
        self._tag(tag, attrs, ">")

    def handle_startendtag(self, tag, attrs):
        self._tag(tag, attrs, "/>")


def rewrite_html(text: str, target: str, prefix: str) -> str:
    """Upstream's ``rewriteHTML``: the URL attributes of `URL_ATTRS` go through `rewrite_location`;
    everything else is kept byte for byte."""
    parser = _StartTags(target, prefix)
    parser.feed(text)
    parser.close()
    if not parser.edits:
        return text
    line_starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(i + 1)
    out, done = [], 0
    for (line, col), raw, new in parser.edits:
        at = line_starts[line - 1] + col
        if text.startswith(raw, at) and at >= done:
            out += [text[done:at], new]
            done = at + len(raw)
    out.append(text[done:])
    return "".join(out)


def _is_html(headers: list[tuple[str, str]]) -> str | None:
    """The body's content encoding ("" for none) when it is HTML upstream would rewrite."""
    h = {k.lower(): v for k, v in headers}
    if h.get("content-type", "").split(";", 1)[0].strip().lower() != "text/html":
        return None
    enc = h.get("content-encoding", "").strip().lower()
    return enc if enc in ("", "gzip", "deflate") else None


async def _rewritten_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]], encoding: str, target: str,
                          prefix: str):
    """The HTML body with its links rewritten; one that is too large or does not decode passes
    unchanged."""
    chunks, size = [], 0
    body = _body(reader, headers)
    async for chunk in body:
        chunks.append(chunk)
        size += len(chunk)
        if size > HTML_MAX:
            for c in chunks:
                yield c
            async for c in body:
                yield c
            return
    data = b"".join(chunks)
    try:
        raw = gzip.decompress(data) if encoding == "gzip" else zlib.decompress(data) if encoding == "deflate" else data
        text = rewrite_html(raw.decode("latin-1"), target, prefix).encode("latin-1")
        data = gzip.compress(text, mtime=0) if encoding == "gzip" else zlib.compress(text) if encoding == "deflate" \
            else text
    except (OSError, zlib.error, ValueError, AssertionError):
        pass
    yield data


def proxy_prefix(request: web.Request, target_path: str) -> str:
    """The part of the request path in front of the target's path (upstream's PathPrepend)."""
    suffix = target_path
    if request.path.endswith("/") and not suffix.endswith("/"):
        suffix += "/"
    return request.path[:-len(suffix)] if suffix and request.path.endswith(suffix) else request.path


async def relay_to(request: web.Request, host: str, port: int, path: str, query: str, *,
                   ssl_ctx: ssl.SSLContext | None = None, server_hostname: str | None = None,
                   error_as_status: bool = False, target_kind: str = "", wrap: bool = False) -> web.StreamResponse:
    """`relay` to ``host:port`` in TLS (``ssl_ctx``) or plain HTTP. ``target_kind`` ("service",
    "pod") makes a dial failure a 503 naming it, as upstream's service and pod proxies answer;
    without it, a dial failure is the agent relay's 500. ``wrap``: see the module docstring."""
    upgrade = _is_upgrade(request)
    body = None if upgrade or not request.body_exists else await request.read()
    url = f"{'https' if ssl_ctx else 'http'}://{_authority(host, port)}{path}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_ctx, limit=MAX_HEAD,
                                    server_hostname=server_hostname if ssl_ctx else None),
            DIAL_TIMEOUT)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
        why = _dial_why(e)
        if target_kind:
            raise errors.StatusError(503, "ServiceUnavailable", f"error trying to reach {target_kind}: dial tcp "
                                     f"{_authority(host, port)}: {why}") from None
        # Go's wording; a plain error becomes a Status with code 500 and no reason, as upstream's
        # ErrorToAPIStatus does (kubectl: "Error from server: Get ...: connection refused").
        what = "error dialing backend" if upgrade else f'{request.method.capitalize()} "{url}"'
        raise errors.StatusError(500, "", f"{what}: dial tcp {_authority(host, port)}: {why}") from None
    try:
        writer.write(_request_head(request, host, port, path, query, body) + (body or b""))
        await writer.drain()
        status, headers = await _read_head(reader, f"{target_kind} endpoint {_authority(host, port)}" if target_kind
                                           else "the node agent")
        if upgrade and status == 101:
            return await _splice(request, headers, reader, writer)
        if error_as_status and not 200 <= status < 300:
            text = b"".join([c async for c in _body(reader, headers)]).decode("utf-8", "replace").strip()
            raise errors.StatusError(status, _reason(status), text)
        drop = _HOP | {"date", "server"} | (CORS_HEADERS if wrap else set())
        kept = [(k, v) for k, v in headers if k.lower() not in drop]
        if wrap:
            prefix = proxy_prefix(request, path)
            kept = [(k, rewrite_location(v, _authority(host, port), prefix) if k.lower() == "location" else v)
                    for k, v in kept]
        out = web.StreamResponse(status=status, headers=kept)
        await out.prepare(request)
        encoding = _is_html(headers) if wrap and request.method != "HEAD" else None
        chunks = _rewritten_body(reader, headers, encoding, _authority(host, port), proxy_prefix(request, path)) \
            if encoding is not None else _body(reader, headers)
        with contextlib.suppress(ConnectionError):
            async for chunk in chunks:
                await out.write(chunk)
            await out.write_eof()
        return out
    finally:
        writer.close()


def _reason(code: int) -> str:
    return {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
            500: "InternalError", 503: "ServiceUnavailable"}.get(code, "InternalError")


async def _splice(request: web.Request, headers: list[tuple[str, str]], reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> web.StreamResponse:
    """Answer the client's upgrade with the agent's 101 and copy bytes both ways until one ends."""
    keep = [(k, v) for k, v in headers if k.lower() not in ("date", "server", "content-length")]
    client = await hijack(request, keep)

    async def agent_to_client() -> None:
        while chunk := await reader.read(CHUNK):
            await client.write(chunk)

    async def client_to_agent() -> None:
        while chunk := await client.read():
            writer.write(chunk)
            await writer.drain()

    tasks = [asyncio.create_task(agent_to_client()), asyncio.create_task(client_to_agent())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return client.response
