"""The HTTP boundary of the client: `Transport` and its aiohttp implementation.

`kubeling.client.rest.RESTClient` builds a `Request` (method, absolute path,
query parameters, headers, body bytes) and hands it to a transport. A transport
knows nothing about Kubernetes: it moves bytes and reports the HTTP status.
That makes it the seam for tests: a fake transport is a class with these three
methods, answering from a dict or a script.

Contract of a transport:

- ``await request(req, timeout=...)`` returns a `Response` for *every* HTTP
  answer, 2xx or not. It raises `TransportError` only when there is no answer
  (connection refused/reset, TLS failure, timeout).
- ``await stream(req)`` sends the request and returns a `StreamResponse` once the
  headers arrived, without reading the body: ``async for line in resp`` yields
  the body split at ``\\n`` (without the newline; a final unterminated line is
  yielded too). The caller must ``await resp.aclose()``. A broken stream raises
  `TransportError` from the iteration.
- ``await close()`` releases connections; the transport is unusable afterwards.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Protocol

import aiohttp

from kubeling.client.exceptions import TransportError


@dataclass
class Request:
    method: str
    path: str  # absolute: "/api/v1/namespaces/default/pods"
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def request(self, req: Request, *, timeout: float | None = None) -> Response: ...

    async def stream(self, req: Request) -> StreamResponse: ...

    async def close(self) -> None: ...


_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError)


class AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except _NETWORK_ERRORS as e:
            raise TransportError(f"reading response: {e!r}") from e

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # Split by hand: aiohttp's readline() refuses lines over 64KiB, and a
        # watch event carrying a big object (a ConfigMap, a CRD) is one line.
        buf = b""
        try:
            async for chunk in self._resp.content.iter_any():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    yield line
        except _NETWORK_ERRORS as e:
            raise TransportError(f"watch stream broken: {e!r}") from e
        if buf:
            yield buf

    async def aclose(self) -> None:
        self._resp.close()


class AiohttpTransport:
    """HTTP(S) to one API server over a pooled aiohttp session.

    ``base_url`` may carry a path prefix (``https://host:6443/prefix``); request
    paths are appended to it. ``server_hostname`` overrides the name checked in
    the server certificate (kubeconfig's ``tls-server-name``).
    """

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, connect_timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession binds to the loop that is running.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def _kwargs(self, req: Request, timeout: aiohttp.ClientTimeout) -> dict:
        kw: dict = {"params": req.params, "headers": req.headers, "data": req.body, "timeout": timeout,
                    "allow_redirects": False}
        if self._server_hostname:
            kw["server_hostname"] = self._server_hostname
        return kw

    async def request(self, req: Request, *, timeout: float | None = None) -> Response:
        t = aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout)
        try:
            async with self._get_session().request(req.method, self.base_url + req.path,
                                                   **self._kwargs(req, t)) as resp:
                body = await resp.read()
                return Response(resp.status, resp.headers, body)
        except _NETWORK_ERRORS as e:
            raise TransportError(f"{req.method} {req.path}: {e!r}") from e

    async def stream(self, req: Request) -> AiohttpStream:
        # No total/read timeout: a watch is quiet for minutes; the server ends it
        # (timeoutSeconds) and the informer's re-watch copes with dead peers.
        t = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        try:
            resp = await self._get_session().request(req.method, self.base_url + req.path,
                                                     **self._kwargs(req, t))
        except _NETWORK_ERRORS as e:
            raise TransportError(f"{req.method} {req.path}: {e!r}") from e
        return AiohttpStream(resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
