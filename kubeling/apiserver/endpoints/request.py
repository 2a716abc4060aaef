"""What a request asks for: upstream's ``RequestInfo`` (``k8s.io/apiserver/pkg/endpoints/request``).

``/api/v1/namespaces/ns/pods/name/status`` parses into group ``""``, version ``v1``, resource
``pods``, namespace ``ns``, name ``name``, subresource ``status`` and, from the method and query,
the verb: get, list, watch, create, update, patch, delete or deletecollection. Non-resource paths
(``/healthz``, ``/apis``, ``/openapi/v2`` ...) parse to None.

Proxy requests (``services/[scheme:]name[:port]/proxy/<path>``, ``nodes/name[:port]/proxy/...``,
``pods/name[:port]/proxy/...``) keep the raw id as ``name`` (what authorization sees, as
upstream) and split it into ``proxy_scheme``, ``proxy_name`` and ``proxy_port``; the rest of the
path is ``proxy_path``.

Boolean query parameters follow apimachinery's conversion: absent is false; ``0`` or any case of
``false`` is false; anything else, even an empty value, is true (kubernetes_asyncio sends
``watch=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeling.api import errors

NAMESPACE_SUBRESOURCES = ("status", "finalize")
PROXY_SCHEMES = ("http", "https")


def query_bool(query, name: str, default: bool | None = False) -> bool | None:
    """A boolean query parameter as upstream converts it (see the module docstring)."""
    if name not in query:
        return default
    value = query.getall(name)[0] if hasattr(query, "getall") else query[name]
    return not (value == "0" or value.lower() == "false")


@dataclass
class RequestInfo:
    verb: str
    group: str
    version: str
    resource: str = ""
    namespace: str | None = None
    name: str = ""
    subresource: str = ""
    path: str = ""
    proxy_scheme: str = ""
    proxy_name: str = ""
    proxy_port: str = ""
    proxy_path: str = ""


def split_scheme_name_port(ident: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` (upstream's ``SplitSchemeNamePort``); raises a 400 when malformed."""
    parts = ident.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
        if scheme not in PROXY_SCHEMES:
            raise errors.bad_request(f"invalid service request {ident!r}")
    else:
        raise errors.bad_request(f"invalid service request {ident!r}")
    if not name:
        raise errors.bad_request(f"invalid service request {ident!r}")
    return scheme, name, port


def parse_path(method: str, path: str, query) -> RequestInfo | None:
    """Parse a resource URL (see the module docstring); None for non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) < 2:
            return None
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return None
    watch = bool(query_bool(query, "watch"))
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    info = RequestInfo("", group, version, path=path)
    # /namespaces/<ns>/<resource>/... is a namespaced request; /namespaces/<name>[/status|finalize]
    # is the namespace itself.
    if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        info.namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    info.resource = rest[0]
    if len(rest) > 1:
        info.name = rest[1]
    if len(rest) > 2:
        info.subresource = rest[2]
    if info.subresource == "proxy":
        info.proxy_scheme, info.proxy_name, info.proxy_port = split_scheme_name_port(info.name)
        tail = "/" + "/".join(rest[3:])
        if rest[3:] and path.endswith("/"):
            tail += "/"
        info.proxy_path = tail
    info.verb = _verb(method.upper(), bool(info.name), watch)
    return info


def _verb(method: str, named: bool, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
