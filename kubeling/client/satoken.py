"""Service account credentials for a client: upstream's ``SAControllerClientBuilder``.

`ServiceAccountTokenSource` holds a token for one service account, obtained with a
TokenRequest (``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token``) over a *root*
client (the controller manager's own identity, which may create service accounts and their
tokens). It creates the service account first if it is missing, asks for tokens valid
``expiration_seconds`` (upstream: one hour) and asks again once 80% of a token's life has passed
(upstream's 20% leeway), or at once after the server answered 401 (the account was deleted and
recreated, the signing key rotated).

`ServiceAccountRESTClient` is a `RESTClient` that sends every request and watch with the
source's current token and no client certificate (the API server would otherwise authenticate
the certificate first). A 403 from the server is reported to ``on_forbidden(method, path,
message)`` before the caller sees the `StatusError`, so that an under-privileged controller is
loud (the controller manager logs it and records an Event), never silently stuck.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from typing import Any, Callable

from kubeling.api.errors import StatusError
from kubeling.client import kubeconfig as kubeconfig_mod
from kubeling.client.rest import RESTClient, Watch, decode_status_error
from kubeling.client.transport import AiohttpTransport, Request, Response

log = logging.getLogger(__name__)

DEFAULT_EXPIRATION_SECONDS = 3600
REFRESH_FRACTION = 0.8


def _parse_time(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


class ServiceAccountTokenSource:
    """A refreshed TokenRequest token for ``namespace/name``, requested over ``root``."""

    def __init__(self, root: Any, namespace: str, name: str, *,
                 expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
                 now: Callable[[], float] = time.time) -> None:
        self.root = root
        self.namespace = namespace
        self.name = name
        self.expiration_seconds = expiration_seconds
        self._now = now
        self._token = ""
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def invalidate(self) -> None:
        self._refresh_at = 0.0

    async def token(self) -> str:
        if self._token and self._now() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token and self._now() < self._refresh_at:
                return self._token
            await self._ensure_account()
            issued = self._now()
            tr = await self.root.create("", "v1", "serviceaccounts", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": self.expiration_seconds}},
                namespace=self.namespace, name=self.name, subresource="token")
            status = tr.get("status") or {}
            token = status.get("token") or ""
            if not token:
                raise StatusError(500, "InternalError", f"TokenRequest for {self.username} returned no token")
            expires = _parse_time(status.get("expirationTimestamp") or "") or issued + self.expiration_seconds
            self._token = token
            self._refresh_at = issued + max(REFRESH_FRACTION * (expires - issued), 1.0)
            log.debug("token for %s valid until %s", self.username, status.get("expirationTimestamp"))
            return token

    async def _ensure_account(self) -> None:
        try:
            await self.root.get("", "v1", "serviceaccounts", self.name, namespace=self.namespace)
            return
        except StatusError as e:
            if e.code != 404:
                raise
        try:
            await self.root.create("", "v1", "serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": self.name, "namespace": self.namespace}},
                namespace=self.namespace, field_manager="kube-controller-manager")
            log.info("created service account %s/%s", self.namespace, self.name)
        except StatusError as e:
            if e.code != 409:
                raise


class _TokenWatch(Watch):
    async def _open(self) -> None:
        self._req.headers["Authorization"] = f"Bearer {await self._client.source.token()}"
        await super()._open()


class ServiceAccountRESTClient(RESTClient):
    """A `RESTClient` authenticating with a `ServiceAccountTokenSource`'s token."""

    def __init__(self, transport, source: ServiceAccountTokenSource, *,
                 on_forbidden: Callable[[str, str, str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(transport, **kwargs)
        self.source = source
        self.on_forbidden = on_forbidden

    @classmethod
    def for_service_account(cls, cfg: kubeconfig_mod.Config, source: ServiceAccountTokenSource, *,
                            component: str, **kwargs: Any) -> "ServiceAccountRESTClient":
        """A client to ``cfg``'s server that trusts its CA but presents no client certificate."""
        anonymous = dataclasses.replace(cfg, client_certificate_data=None, client_key_data=None, token=None,
                                        username=None, password=None)
        transport = AiohttpTransport(anonymous.server, anonymous.ssl_context(), anonymous.tls_server_name)
        return cls(transport, source, user_agent=f"kubeling/{component}", namespace=cfg.namespace, **kwargs)

    async def _send(self, req: Request) -> Response:
        resp: Response | None = None
        for attempt in range(2):
            token = await self.source.token()
            req.headers["Authorization"] = f"Bearer {token}"
            resp = await super()._send(req)
            if resp.status != 401 or attempt:
                break
            self.source.invalidate()  # a token the server no longer takes: ask for a new one once
        assert resp is not None
        if resp.status == 403 and self.on_forbidden is not None:
            try:
                self.on_forbidden(req.method, req.path, decode_status_error(resp.status, resp.body).message)
            except Exception:  # noqa: BLE001 - reporting never changes the answer
                log.exception("reporting a Forbidden failed")
        return resp

    def watch(self, *args: Any, **kwargs: Any) -> Watch:
        w = super().watch(*args, **kwargs)
        return _TokenWatch(self, w._req)
