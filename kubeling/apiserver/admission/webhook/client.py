"""Calling one webhook (upstream ``apiserver/pkg/util/webhook`` ClientManager and
``plugin/pkg/admission/webhook/request``): an HTTPS POST of an ``AdmissionReview`` v1.

- ``clientConfig.url``: that URL; ``clientConfig.service``: the Service's endpoints, as
  kube-apiserver with ``--enable-aggregator-routing`` resolves them — the Service port
  (``service.port``, default 443) is mapped to its endpoint port through the Service's ports, a
  ready endpoint address is picked (the same candidates ``services/<name>/proxy`` uses), and
  the certificate is verified for ``<service>.<namespace>.svc``. A Service without ready
  endpoints falls back to its ClusterIP.
- TLS verification uses ``clientConfig.caBundle`` (PEM); without one, the system roots.
- ``?timeout=<n>s`` is appended to the URL and the whole call is bounded by the webhook's
  ``timeoutSeconds``, as upstream.

Failures raise `CallError` with upstream's wording (``failed to call webhook: Post "<url>": dial
tcp <addr>: connect: connection refused``, ``... context deadline exceeded``); the dispatcher
turns them into ``failed calling webhook "<name>": ...`` and applies the failure policy.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse

import aiohttp
import orjson

from kubeling.api import errors


class CallError(Exception):
    """Upstream's ErrCallingWebhook reason: the webhook could not be called or answered nonsense."""


class Client:
    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[bytes, ssl.SSLContext] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        raw = b""
        if ca_bundle:
            try:
                raw = base64.b64decode(ca_bundle, validate=False)
            except (ValueError, TypeError):
                raise CallError("could not get REST client: unable to load root certificates: unable to parse bytes "
                                "as PEM block") from None
        ctx = self._contexts.get(raw)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        if raw:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            try:
                ctx.load_verify_locations(cadata=raw.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError):
                raise CallError("could not get REST client: unable to load root certificates: unable to parse bytes "
                                "as PEM block") from None
        if len(self._contexts) > 256:
            self._contexts.clear()
        self._contexts[raw] = ctx
        return ctx

    async def location(self, cc: dict) -> tuple[str, str | None]:
        """(URL to dial, TLS server name to verify or None for the URL's host)."""
        if cc.get("url"):
            return cc["url"], None
        svc = cc.get("service") or {}
        ns, name, port = svc.get("namespace", ""), svc.get("name", ""), int(svc.get("port") or 443)
        path = svc.get("path") or ""
        host, target_port = await self._resolve_service(ns, name, port)
        hostport = f"[{host}]:{target_port}" if ":" in host else f"{host}:{target_port}"
        return f"https://{hostport}{path}", f"{name}.{ns}.svc"

    async def _resolve_service(self, ns: str, name: str, port: int) -> tuple[str, int]:
        from kubeling.apiserver.registry.core.service import ServiceProxyREST  # noqa: PLC0415 - on first use
        from kubeling.apiserver.registry.rest import Deps  # noqa: PLC0415
        services = self.lookup("", "v1", "services")
        try:
            svc = await self.store.get_raw(services, ns, name)
        except errors.StatusError as e:
            if e.code == 404:
                raise CallError(f'service "{name}" not found') from None
            raise CallError(e.message) from None
        spec = svc.get("spec") or {}
        ports = [p for p in spec.get("ports") or [] if p.get("port") == port]
        if not ports:
            raise CallError(f"no service port {port} found for service \"{name}\"")
        if spec.get("type") == "ExternalName":
            return spec.get("externalName", ""), port
        proxy = ServiceProxyREST(Deps(self.store, self.lookup))
        for ip, target_port, target in await proxy._candidates(ns, name, ports[0].get("name") or ""):
            if await proxy._valid(ns, ip, target):
                return ip, target_port
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            return cluster_ip, port
        raise CallError(f'no endpoints available for service "{name}"')

    async def post(self, cc: dict, review: dict, timeout_seconds: int) -> dict:
        """POST the review, return the decoded response body (a dict)."""
        url, server_name = await self.location(cc)
        ssl_ctx = self.ssl_context(cc.get("caBundle"))
        u = urllib.parse.urlsplit(url)
        q = f"timeout={timeout_seconds}s"
        full = urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, f"{u.query}&{q}" if u.query else q, ""))
        shown = f'Post "{full}"'
        try:
            async with asyncio.timeout(timeout_seconds):
                async with self.session().post(
                        full, data=orjson.dumps(review), ssl=ssl_ctx, server_hostname=server_name,
                        headers={"Content-Type": "application/json", "Accept": "application/json"},
                        allow_redirects=False) as resp:
                    body = await resp.read()
                    status = resp.status
        except TimeoutError:
            raise CallError(f"failed to call webhook: {shown}: context deadline exceeded") from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise CallError(f"failed to call webhook: {shown}: tls: failed to verify certificate: "
                            f"x509: {_cert_why(e)}") from None
        except aiohttp.ClientConnectorError as e:
            raise CallError(f"failed to call webhook: {shown}: dial tcp {u.netloc}: {_dial_why(e)}") from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
            raise CallError(f"failed to call webhook: {shown}: {e}") from None
        if not 200 <= status < 300:
            text = body[:1024].decode("utf-8", "replace").strip()
            if text:
                raise CallError(f'failed to call webhook: an error on the server ("{text}") has prevented the '
                                f"request from succeeding")
            raise CallError(f"failed to call webhook: the server responded with the status code {status} but did "
                            f"not return more information")
        try:
            out = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise CallError(f"failed to call webhook: {e}") from None
        if not isinstance(out, dict):
            raise CallError("failed to call webhook: the response is not an object")
        return out


def _dial_why(e: aiohttp.ClientConnectorError) -> str:
    err = e.os_error
    if isinstance(err, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(err, TimeoutError):
        return "i/o timeout"
    strerror = getattr(err, "strerror", None) or str(err)
    return f"connect: {strerror.lower()}" if strerror else "connect: failed"


def _cert_why(e: aiohttp.ClientConnectorCertificateError) -> str:
    cert = getattr(e, "certificate_error", None)
    msg = getattr(cert, "verify_message", "") or str(cert or e)
    if "unable to get local issuer" in msg or "self-signed" in msg or "self signed" in msg:
        return "certificate signed by unknown authority"
    if "hostname mismatch" in msg.lower() or "doesn't match" in msg:
        return f"certificate is not valid for the requested name ({msg})"
    return msg
