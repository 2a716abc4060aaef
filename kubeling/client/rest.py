"""`RESTClient`: the Kubernetes REST verbs over a `Transport`, with plain dicts.

Every resource is addressed by ``(group, version, resource)`` — the lower-case
plural as in URLs — plus ``namespace``, ``name`` and ``subresource``; `path`
turns them into ``/api/v1/namespaces/ns/pods/name/status`` or
``/apis/apps/v1/...``. Verbs return the decoded JSON body.

Contracts:

- A non-2xx answer raises `kubeling.api.errors.StatusError` rebuilt from the
  returned ``Status`` (code, reason, message, details), so ``e.code == 409``
  works; 410 raises the subclass `ResourceExpired`. No answer at all raises
  `TransportError`. See `kubeling.client.exceptions`.
- Requests pass a client-side token bucket (``qps``/``burst``) first; a 429 with
  ``Retry-After`` is retried after that many seconds, up to ``max_retries``.
- ``watch(...)`` returns a `Watch`: an async iterator of ``(type, object)``
  pairs — ``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK`` (only ``metadata
  .resourceVersion`` is meaningful). An ``ERROR`` event ends it by raising the
  StatusError it carries (`ResourceExpired` for 410). The stream ending
  normally (server timeout) ends the iteration. Use ``async with`` (or call
  ``aclose()``) so the connection is released when you stop early.
- A client is bound to the event loop that first uses it; ``await close()``
  releases its connections.
"""

from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import quote

import orjson

from kubeling.api.errors import StatusError
from kubeling.client import kubeconfig as kubeconfig_mod
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.exceptions import TransportError, status_error
from kubeling.client.flowcontrol import TokenBucket
from kubeling.client.transport import AiohttpTransport, Request, Response, StreamResponse, Transport

PATCH_CONTENT_TYPES = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

# Reasons for a non-Status error body, as apimachinery's generic server response.
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}


def path(group: str, version: str, resource: str, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:
    """The URL path of a collection, object or subresource."""
    parts = [f"/apis/{group}/{version}" if group else f"/api/{version}"]
    if namespace and not (not group and resource == "namespaces"):
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(resource)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        if not name:
            raise ValueError("a subresource needs a name")
        parts.append(subresource)
    return "/".join(parts)


def decode_status_error(status: int, body: bytes) -> StatusError:
    """Rebuild the StatusError a non-2xx answer stands for."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        return status_error(int(doc.get("code") or status), doc.get("reason") or _REASONS.get(status, "Unknown"),
                            doc.get("message") or "", doc.get("details"))
    text = body.decode("utf-8", "replace").strip() if body else ""
    message = text or f"the server responded with the status code {status} but did not return more information"
    return status_error(status, _REASONS.get(status, "Unknown"), message, None)


def _selector_params(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    params = []
    if label_selector:
        params.append(("labelSelector", label_selector))
    if field_selector:
        params.append(("fieldSelector", field_selector))
    return params


class Watch:
    """One watch request: ``async with client.watch(...) as w: async for typ, obj in w``."""

    def __init__(self, client: "RESTClient", req: Request) -> None:
        self._client = client
        self._req = req
        self._resp: StreamResponse | None = None
        self._lines = None
        self._closed = False

    async def _open(self) -> None:
        await self._client._throttle()
        resp = await self._client.transport.stream(self._req)
        if not 200 <= resp.status < 300:
            try:
                body = await resp.read()
            finally:
                await resp.aclose()
            self._closed = True
            raise decode_status_error(resp.status, body)
        self._resp = resp
        self._lines = resp.__aiter__()

    async def __aenter__(self) -> "Watch":
        if self._resp is None and not self._closed:
            await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> tuple[str, dict]:
        if self._closed:
            raise StopAsyncIteration
        if self._resp is None:
            await self._open()
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                await self.aclose()
                raise
            except BaseException:
                await self.aclose()
                raise
            if line.strip():
                break
        try:
            event = orjson.loads(line)
            typ, obj = event["type"], event["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            await self.aclose()
            raise TransportError(f"malformed watch event: {line[:200]!r}") from e
        if typ == "ERROR":
            await self.aclose()
            obj = obj if isinstance(obj, dict) else {}
            raise status_error(int(obj.get("code") or 500), obj.get("reason") or "InternalError",
                               obj.get("message") or "watch error", obj.get("details"))
        return typ, obj

    async def aclose(self) -> None:
        self._closed = True
        lines, self._lines = self._lines, None
        if lines is not None and hasattr(lines, "aclose"):
            try:
                await lines.aclose()  # finalize the line generator now, not at GC time
            except RuntimeError:
                pass  # it is being iterated by another task; closing the response ends it
        if self._resp is not None:
            resp, self._resp = self._resp, None
            await resp.aclose()


class RESTClient:
    """Kubernetes API verbs over one transport. See the module docstring for the contracts."""

    def __init__(self, transport: Transport, *, headers: dict[str, str] | None = None,
                 user_agent: str = "kubeling/client", qps: float = 100.0, burst: int = 200,
                 max_retries: int = 5, timeout: float = 60.0, namespace: str = "default",
                 clock: Clock | None = None) -> None:
        self.transport = transport
        self.namespace = namespace  # the kubeconfig context's namespace, for callers that want it
        self.timeout = timeout
        self.max_retries = max_retries
        self._clock = clock or REAL_CLOCK
        self._headers = {"Accept": "application/json", "User-Agent": user_agent, **(headers or {})}
        self._bucket = TokenBucket(qps, burst, self._clock) if qps > 0 else None

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None, *,
                        component: str = "client", **kwargs: Any) -> "RESTClient":
        """A client for ``context`` of the kubeconfig at ``path`` (default: ``$KUBECONFIG``, ``~/.kube/config``)."""
        cfg = kubeconfig_mod.load(path, context)
        return cls.from_config(cfg, component=component, **kwargs)

    @classmethod
    def from_config(cls, cfg: kubeconfig_mod.Config, *, component: str = "client", **kwargs: Any) -> "RESTClient":
        transport = AiohttpTransport(cfg.server, cfg.ssl_context(), cfg.tls_server_name)
        return cls(transport, headers=cfg.auth_headers(), user_agent=f"kubeling/{component}",
                   namespace=cfg.namespace, **kwargs)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> "RESTClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------

    async def _throttle(self) -> None:
        if self._bucket is not None:
            await self._bucket.wait()

    async def request(self, method: str, url_path: str, *, params: Iterable[tuple[str, str]] = (),
                      body: Any = None, content_type: str = "application/json") -> Any:
        """Send one request and return the decoded JSON body (``None`` if empty).

        ``body`` may be a dict/list (sent as JSON), ``str`` or ``bytes`` (sent as is).
        This is the escape hatch for non-resource paths (``/version``, ``/apis``).
        """
        headers = dict(self._headers)
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) \
                else orjson.dumps(body)
            headers["Content-Type"] = content_type
        req = Request(method, url_path, [(k, v) for k, v in params], headers, data)
        resp = await self._send(req)
        if not 200 <= resp.status < 300:
            raise decode_status_error(resp.status, resp.body)
        if not resp.body:
            return None
        try:
            return orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            try:
                return json.loads(resp.body)  # tolerate NaN etc. from odd servers
            except ValueError as e:
                raise TransportError(f"{method} {url_path}: response is not JSON") from e

    async def _send(self, req: Request) -> Response:
        attempt = 0
        while True:
            await self._throttle()
            resp = await self.transport.request(req, timeout=self.timeout)
            retry_after = resp.headers.get("Retry-After") if resp.status == 429 else None
            if retry_after is None or attempt >= self.max_retries:
                return resp
            attempt += 1
            try:
                delay = min(float(retry_after), 60.0)
            except ValueError:
                delay = 1.0
            await self._clock.sleep(delay)

    # -- verbs ------------------------------------------------------------

    async def get(self, group: str, version: str, resource: str, name: str, *, namespace: str | None = None,
                  subresource: str | None = None, params: Iterable[tuple[str, str]] = ()) -> dict:
        return await self.request("GET", path(group, version, resource, namespace, name, subresource),
                                  params=params)

    async def list(self, group: str, version: str, resource: str, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None, resource_version: str | None = None,
                   resource_version_match: str | None = None, timeout_seconds: int | None = None) -> dict:
        """One page of a collection (a ``<Kind>List`` dict; ``metadata.continue`` when more remain)."""
        params = _selector_params(label_selector, field_selector)
        if limit:
            params.append(("limit", str(limit)))
        if continue_:
            params.append(("continue", continue_))
        if resource_version is not None:
            params.append(("resourceVersion", resource_version))
        if resource_version_match:
            params.append(("resourceVersionMatch", resource_version_match))
        if timeout_seconds is not None:
            params.append(("timeoutSeconds", str(timeout_seconds)))
        return await self.request("GET", path(group, version, resource, namespace), params=params)

    async def create(self, group: str, version: str, resource: str, obj: dict, *, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None, field_manager: str | None = None,
                     dry_run: bool = False) -> dict:
        """POST ``obj``; the namespace defaults to ``obj.metadata.namespace``.

        With ``subresource`` (``binding``, ``eviction``, ``token``) ``name`` is the parent object's name.
        """
        ns = namespace if namespace is not None else (obj.get("metadata") or {}).get("namespace")
        return await self.request("POST", path(group, version, resource, ns, name, subresource), body=obj,
                                  params=_write_params(field_manager, dry_run))

    async def update(self, group: str, version: str, resource: str, obj: dict, *, namespace: str | None = None,
                     subresource: str | None = None, field_manager: str | None = None,
                     dry_run: bool = False) -> dict:
        """PUT ``obj`` to its own name; ``metadata.resourceVersion`` makes it a compare-and-swap."""
        meta = obj.get("metadata") or {}
        ns = namespace if namespace is not None else meta.get("namespace")
        if not meta.get("name"):
            raise ValueError("update needs obj.metadata.name")
        return await self.request("PUT", path(group, version, resource, ns, meta["name"], subresource), body=obj,
                                  params=_write_params(field_manager, dry_run))

    async def update_status(self, group: str, version: str, resource: str, obj: dict, *,
                            namespace: str | None = None, field_manager: str | None = None) -> dict:
        return await self.update(group, version, resource, obj, namespace=namespace, subresource="status",
                                 field_manager=field_manager)

    async def patch(self, group: str, version: str, resource: str, name: str, patch: Any, *,
                    namespace: str | None = None, subresource: str | None = None, patch_type: str = "merge",
                    field_manager: str | None = None, force: bool | None = None, dry_run: bool = False) -> dict:
        """PATCH with ``patch_type`` ``json`` | ``merge`` | ``strategic`` | ``apply``.

        ``apply`` (server-side apply) needs ``field_manager``; ``force=True`` takes
        over conflicting fields. ``patch`` is a dict/list (sent as JSON) or str/bytes.
        """
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}; use one of {sorted(PATCH_CONTENT_TYPES)}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        params = _write_params(field_manager, dry_run)
        if force is not None:
            params.append(("force", "true" if force else "false"))
        return await self.request("PATCH", path(group, version, resource, namespace, name, subresource),
                                  params=params, body=patch, content_type=PATCH_CONTENT_TYPES[patch_type])

    async def delete(self, group: str, version: str, resource: str, name: str, *, namespace: str | None = None,
                     propagation_policy: str | None = None, grace_period_seconds: int | None = None,
                     preconditions: dict | None = None, dry_run: bool = False) -> dict:
        """DELETE; returns the object (still there while finalizers/grace run) or a Success Status.

        ``preconditions`` is ``{"uid": ..., "resourceVersion": ...}``;
        ``propagation_policy`` is ``Orphan`` | ``Background`` | ``Foreground``.
        """
        return await self.request("DELETE", path(group, version, resource, namespace, name),
                                  body=_delete_options(propagation_policy, grace_period_seconds, preconditions,
                                                       dry_run))

    async def delete_collection(self, group: str, version: str, resource: str, *, namespace: str | None = None,
                                label_selector: str | None = None, field_selector: str | None = None,
                                propagation_policy: str | None = None) -> dict:
        return await self.request("DELETE", path(group, version, resource, namespace),
                                  params=_selector_params(label_selector, field_selector),
                                  body=_delete_options(propagation_policy, None, None, False))

    def watch(self, group: str, version: str, resource: str, *, namespace: str | None = None,
              name: str | None = None, label_selector: str | None = None, field_selector: str | None = None,
              resource_version: str | None = None, allow_watch_bookmarks: bool = True,
              timeout_seconds: int | None = None, send_initial_events: bool | None = None) -> Watch:
        """Watch a collection (or one object, by ``name``) from ``resource_version``.

        Without a resourceVersion the server first sends ADDED for every existing
        object; with one, only changes after it.
        """
        if name:
            by_name = f"metadata.name={name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        params = [("watch", "true"), *_selector_params(label_selector, field_selector)]
        if resource_version is not None:
            params.append(("resourceVersion", resource_version))
        if allow_watch_bookmarks:
            params.append(("allowWatchBookmarks", "true"))
        if timeout_seconds is not None:
            params.append(("timeoutSeconds", str(timeout_seconds)))
        if send_initial_events is not None:
            params.append(("sendInitialEvents", "true" if send_initial_events else "false"))
            params.append(("resourceVersionMatch", "NotOlderThan"))
        return Watch(self, Request("GET", path(group, version, resource, namespace), params, dict(self._headers)))


def _write_params(field_manager: str | None, dry_run: bool) -> list[tuple[str, str]]:
    params = []
    if field_manager:
        params.append(("fieldManager", field_manager))
    if dry_run:
        params.append(("dryRun", "All"))
    return params


def _delete_options(propagation_policy: str | None, grace_period_seconds: int | None,
                    preconditions: dict | None, dry_run: bool) -> dict:
    opts: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if propagation_policy:
        opts["propagationPolicy"] = propagation_policy
    if grace_period_seconds is not None:
        opts["gracePeriodSeconds"] = grace_period_seconds
    if preconditions:
        opts["preconditions"] = preconditions
    if dry_run:
        opts["dryRun"] = ["All"]
    return opts
