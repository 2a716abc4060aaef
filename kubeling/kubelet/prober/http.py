"""httpGet probes, and the HTTP/1.1 GET client that lifecycle hooks share.

The client is small on purpose: probes need upstream's exact behaviour and wording, which a
general client hides. What it does, as upstream's probe client does:
- one connection per request (``Connection: close``), no proxy, no compression;
- HTTPS without certificate verification;
- a whole-request timeout (connect, redirects, headers and body);
- redirects (301, 302, 303, 307, 308 with a Location) are followed while they stay on the
  first request's host name (any port or scheme), at most 10 requests; a redirect to another
  host is not followed and its 3xx response is returned as is;
- a ``Host`` header in ``httpHeaders`` overrides the request's host, and survives only
  relative redirects;
- the body is read up to 10 KiB; the rest is never read.

Errors are `GetError`s worded like Go's ``*url.Error``: ``Get "http://10.42.0.5:8080/healthz":
dial tcp 10.42.0.5:8080: connect: connection refused``.

Probe verdicts (`probe_http`): 2xx success (output: the body), 3xx warning ("Probe terminated
redirects, Response body: ..."), anything else ``HTTP probe failed with statuscode: <code>``,
and a transport error is a failure whose output is the error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field, replace

from kubeling.kubelet.prober.probe import (
    KUBE_MAJOR_MINOR,
    MAX_OUTPUT,
    Outcome,
    ProbeError,
    Result,
    dial_error,
    join_host_port,
    resolve_port,
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REQUESTS = 10
_MAX_HEADER_BYTES = 1 << 20
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: (.*))?\r?\n")


class GetError(Exception):
    """The request failed before a usable response; ``str()`` is Go's wording."""


class BodyError(Exception):
    """Reading the response body failed (upstream treats it as a probe error)."""


@dataclass
class Request:
    scheme: str                  # "http" or "https"
    host: str                    # where to connect
    port: int
    target: str                  # the request line's path and query, always starting with "/"
    url_path: str = ""           # path and query as the URL shows them ("" for no path, as Go)
    headers: list[tuple[str, str]] = field(default_factory=list)   # sent as given, in order
    host_header: str = ""        # "" = host:port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{join_host_port(self.host, self.port)}{self.url_path}"


@dataclass
class Response:
    status: int
    headers: dict[str, str]      # lower-case names, last value wins
    body: bytes                  # at most the limit asked for
    url: str


def canonical_header(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-forwarded-for`` -> ``X-Forwarded-For``."""
    if not name or any(c in name for c in " \t:") or not name.isascii():
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def new_request(http_get: dict, container: dict, pod_ip: str, purpose: str = "probe") -> Request:
    """Build a probe (``purpose="probe"``) or hook (``"lifecycle"``) request from an httpGet.

    Raises `ProbeError` when the port cannot be resolved."""
    scheme = (http_get.get("scheme") or "HTTP").lower()
    host = http_get.get("host") or pod_ip
    port = resolve_port(http_get.get("port"), container)
    path = http_get.get("path") or ""
    path = path.split("#", 1)[0]
    raw_path, _, query = path.partition("?")
    escaped = urllib.parse.quote(raw_path, safe="/:@!$&'()*+,;=-._~%")
    if escaped and not escaped.startswith("/"):
        escaped = "/" + escaped
    shown = escaped + ("?" + query if "?" in path else "")
    target = (escaped or "/") + ("?" + query if query else "")

    headers: list[tuple[str, str]] = []
    for h in http_get.get("httpHeaders") or []:
        headers.append((canonical_header(h.get("name", "")), h.get("value", "")))
    names = {n for n, _ in headers}
    if "User-Agent" not in names:
        headers.append(("User-Agent", f"kube-{purpose}/{KUBE_MAJOR_MINOR}"))
    if "Accept" not in names:
        headers.append(("Accept", "*/*"))
    elif not next(v for n, v in headers if n == "Accept"):
        # An Accept header given empty means "send none".
        headers = [(n, v) for n, v in headers if n != "Accept"]
    host_header = next((v for n, v in headers if n == "Host"), "")
    headers = [(n, v) for n, v in headers if n != "Host"]
    return Request(scheme, host, port, target, shown, headers, host_header)


async def do_get(req: Request, timeout: float, max_body: int = MAX_OUTPUT) -> Response:
    """Send ``req``, following redirects as the module docstring says."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first_host = req.host.lower()
    made = 0
    while True:
        made += 1
        resp = await _round_trip(req, deadline, max_body)
        location = resp.headers.get("location")
        if resp.status not in _REDIRECTS or location is None:
            return resp
        nxt = _redirected(req, location)
        if nxt is None or nxt.host.lower() != first_host:
            return resp                       # another host: upstream stops and reports the 3xx
        if made >= _MAX_REQUESTS:
            raise GetError(f'Get "{nxt.url}": stopped after {_MAX_REQUESTS} redirects')
        req = nxt


async def probe_http(req: Request, timeout: float) -> Outcome:
    try:
        resp = await do_get(req, timeout)
    except GetError as e:
        return Outcome(Result.FAILURE, str(e))
    except BodyError as e:
        raise ProbeError(str(e)) from e
    body = resp.body.decode("utf-8", "replace")
    if 200 <= resp.status < 300:
        return Outcome(Result.SUCCESS, body)
    if 300 <= resp.status < 400:
        return Outcome(Result.WARNING, f"Probe terminated redirects, Response body: {body}")
    # Upstream keeps the body out of this message: it can hold secrets.
    return Outcome(Result.FAILURE, f"HTTP probe failed with statuscode: {resp.status}")


def _redirected(req: Request, location: str) -> Request | None:
    url = urllib.parse.urljoin(req.url, location)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    relative = not urllib.parse.urlsplit(location).netloc
    shown = parts.path + (f"?{parts.query}" if parts.query else "")
    return replace(req, scheme=parts.scheme, host=parts.hostname, port=port, target=target,
                   host_header=req.host_header if relative else "", url_path=shown)


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # upstream probes skip verification: pods use self-signed certs
    return ctx


async def _round_trip(req: Request, deadline: float, max_body: int) -> Response:
    url, addr = req.url, join_host_port(req.host, req.port)
    phase = "dial"
    writer = None
    try:
        async with asyncio.timeout_at(deadline):
            try:
                reader, writer = await asyncio.open_connection(req.host, req.port)
            except OSError as e:
                raise GetError(f'Get "{url}": {dial_error(addr, e, req.host)}') from None
            if req.scheme == "https":
                phase = "tls"
                await _start_tls(writer, req, url)
            phase = "headers"
            writer.write(_render(req))
            await writer.drain()
            status, headers = await _read_head(reader, url)
            phase = "body"
            body = await _read_body(reader, status, headers, max_body)
            return Response(status, headers, body, url)
    except TimeoutError:
        if phase == "body":
            raise BodyError("context deadline exceeded "
                            "(Client.Timeout or context cancellation while reading body)") from None
        if phase == "dial":
            raise GetError(f'Get "{url}": dial tcp {addr}: i/o timeout '
                           "(Client.Timeout exceeded while awaiting headers)") from None
        raise GetError(f'Get "{url}": context deadline exceeded '
                       "(Client.Timeout exceeded while awaiting headers)") from None
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        if phase == "body":
            raise BodyError(str(e) or "unexpected EOF") from None
        raise GetError(f'Get "{url}": EOF') from None
    finally:
        if writer is not None:
            writer.transport.abort()   # nothing is reused: no need for a polite close


async def _start_tls(writer: asyncio.StreamWriter, req: Request, url: str) -> None:
    hostname = "" if _is_ip(req.host) else req.host
    try:
        await writer.start_tls(_tls_context(), server_hostname=hostname or None)
    except ssl.SSLError as e:
        if e.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
            raise GetError(f'Get "{url}": http: server gave HTTP response to HTTPS client') from None
        raise GetError(f'Get "{url}": tls: {e.reason or e}') from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _render(req: Request) -> bytes:
    host = req.host_header or join_host_port(req.host, req.port)
    lines = [f"GET {req.target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{n}: {v}" for n, v in req.headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


async def _read_head(reader: asyncio.StreamReader, url: str) -> tuple[int, dict[str, str]]:
    while True:
        line = await reader.readline()
        if not line:
            raise GetError(f'Get "{url}": EOF')
        m = _STATUS_LINE.fullmatch(line)
        if m is None:
            shown = line.rstrip(b"\r\n").decode("latin-1")
            raise GetError(f'Get "{url}": net/http: HTTP/1.x transport connection broken: '
                           f'malformed HTTP response "{shown}"')
        status = int(m.group(1))
        headers: dict[str, str] = {}
        size = 0
        while True:
            hline = await reader.readline()
            size += len(hline)
            if size > _MAX_HEADER_BYTES:
                raise GetError(f'Get "{url}": net/http: server response headers exceeded '
                               f"{_MAX_HEADER_BYTES} bytes; aborted")
            if hline in (b"\r\n", b"\n", b""):
                break
            name, _, value = hline.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            continue            # an interim response (100 Continue): the real one follows
        return status, headers


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str],
                     limit: int) -> bytes:
    if status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while len(out) < limit:
            size_line = await reader.readline()
            if not size_line:
                raise asyncio.IncompleteReadError(bytes(out), None)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            out += await reader.readexactly(size)
            await reader.readline()  # the CRLF after each chunk
        return bytes(out[:limit])
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), limit))
    out = bytearray()
    while len(out) < limit:
        data = await reader.read(limit - len(out))
        if not data:
            break
        out += data
    return bytes(out)
