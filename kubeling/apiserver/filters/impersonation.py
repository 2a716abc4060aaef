"""Impersonation (upstream: ``k8s.io/apiserver/pkg/endpoints/filters/impersonation.go``,
``WithImpersonation``).

A client acts as another user with the headers::

    Impersonate-User: bob                     (or system:serviceaccount:<ns>:<name>)
    Impersonate-Group: dev                    (repeatable)
    Impersonate-Uid: 1234
    Impersonate-Extra-<key>: value            (repeatable; <key> is percent-decoded, lower-cased)

Each asked-for part is authorized separately for the *authenticated* user with the verb
``impersonate``, with upstream's exact attributes:

    user                      users            group ""                    name = user
    system:serviceaccount:..  serviceaccounts  group "", namespace = ns    name = SA name
    group                     groups           group ""                    name = group
    uid                       uids             group authentication.k8s.io name = uid
    extra <key>=<value>       userextras/<key> group authentication.k8s.io name = value

A refusal is upstream's 403 (``users "bob" is forbidden: User "x" cannot impersonate resource
"users" in API group "" at the cluster scope``); groups, uid or extra without a user is a 400
(upstream writes an internal error for it; the request is malformed, so we answer 4xx).

The impersonated user replaces ``request["user"]`` (so authorization, the registry `Context`,
managedFields, whoami and access reviews see it), gains ``system:authenticated`` (unless it is
``system:anonymous``, which gains ``system:unauthenticated``, or it already names one of them),
and a service account without asked-for groups gets its service account groups. The user who
authenticated stays in ``request["authenticated_user"]`` and the new one is in
``request["impersonated_user"]`` for the audit log. Errors never grant: any failure of the
authorizer is a refusal.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from aiohttp import web

from kubeling.api import errors
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.endpoints.response import status_response

log = logging.getLogger(__name__)

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_PREFIX = "impersonate-extra-"
AUTHN_GROUP = "authentication.k8s.io"
SA_PREFIX = "system:serviceaccount:"


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of ``system:serviceaccount:<ns>:<name>``, as upstream's SplitUsername."""
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX):].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def unescape_extra_key(key: str) -> str:
    """Upstream's unescapeExtraKey: percent-decoded; left as sent if it does not decode."""
    try:
        return unquote(key, errors="strict")
    except UnicodeDecodeError:
        return key


def requests_from_headers(headers) -> list[dict]:
    """What the headers ask for, as upstream's buildImpersonationRequests: one entry per user,
    group, extra value and uid. Raises a 400 for groups/extra/uid without a user."""
    out: list[dict] = []
    user = headers.get(USER_HEADER, "")
    if user:
        sa = split_service_account(user)
        out.append({"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]} if sa
                   else {"kind": "User", "name": user})
    for g in headers.getall(GROUP_HEADER, []):
        out.append({"kind": "Group", "name": g})
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(EXTRA_PREFIX):
            out.append({"kind": "UserExtra", "key": unescape_extra_key(low[len(EXTRA_PREFIX):]), "name": value})
    uid = headers.get(UID_HEADER, "")
    if uid:
        out.append({"kind": "UID", "name": uid})
    if out and not user:
        asked = ", ".join(f"{r['kind']} {r['name']!r}" for r in out)
        raise errors.bad_request(f"requested [{asked}] without impersonating a user")
    return out


def attributes_for(requestor: UserInfo, req: dict) -> Attributes:
    """The ``impersonate`` check for one asked-for part."""
    kind = req["kind"]
    if kind == "ServiceAccount":
        return Attributes(requestor, "impersonate", True, group="", resource="serviceaccounts",
                          namespace=req["namespace"], name=req["name"])
    if kind == "User":
        return Attributes(requestor, "impersonate", True, group="", resource="users", name=req["name"])
    if kind == "Group":
        return Attributes(requestor, "impersonate", True, group="", resource="groups", name=req["name"])
    if kind == "UserExtra":
        return Attributes(requestor, "impersonate", True, group=AUTHN_GROUP, version="v1", resource="userextras",
                          subresource=req["key"], name=req["name"])
    if kind == "UID":
        return Attributes(requestor, "impersonate", True, group=AUTHN_GROUP, version="v1", resource="uids",
                          name=req["name"])
    raise errors.forbidden_status("", "", "", f"unknown impersonation request type: {kind}")


def forbidden(attrs: Attributes, reason: str) -> errors.StatusError:
    """Upstream's responsewriters.Forbidden for a resource check."""
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    msg = f'User "{attrs.user.name}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}"{scope}'
    if reason:
        msg += f": {reason}"
    return errors.forbidden_status(attrs.resource, attrs.group, attrs.name, msg)


def impersonate(authorizer, requestor: UserInfo, asked: list[dict]) -> UserInfo:
    """Authorize every part and build the impersonated user (raises a 403 StatusError)."""
    username, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    groups_specified = any(r["kind"] == "Group" for r in asked)
    for req in asked:
        attrs = attributes_for(requestor, req)
        try:
            d = authorizer.authorize(attrs)
        except Exception:  # noqa: BLE001 - fail closed: an authorizer fault never grants
            log.exception("authorizing impersonation of %s", req)
            d = None
        if d is None or not d.allowed:
            raise forbidden(attrs, d.reason if d is not None else "")
        kind = req["kind"]
        if kind == "ServiceAccount":
            username = f"{SA_PREFIX}{req['namespace']}:{req['name']}"
            if not groups_specified:
                groups = ["system:serviceaccounts", f"system:serviceaccounts:{req['namespace']}"] + groups
        elif kind == "User":
            username = req["name"]
        elif kind == "Group":
            groups.append(req["name"])
        elif kind == "UserExtra":
            extra.setdefault(req["key"], []).append(req["name"])
        elif kind == "UID":
            uid = req["name"]
    if username != "system:anonymous":
        if not {"system:authenticated", "system:unauthenticated"} & set(groups):
            groups.append("system:authenticated")
    elif "system:unauthenticated" not in groups:
        groups.append("system:unauthenticated")
    return UserInfo(username, uid, tuple(groups), extra)


def middleware(authorizer_of):
    """The filter; ``authorizer_of()`` returns the current authorizer chain (read per request,
    so a swapped chain is honoured). It runs after authentication (and the audit filter)."""

    @web.middleware
    async def impersonation(request: web.Request, handler):
        headers = request.headers
        if USER_HEADER not in headers and GROUP_HEADER not in headers and UID_HEADER not in headers and \
                not any(k.lower().startswith(EXTRA_PREFIX) for k in headers):
            return await handler(request)
        requestor = request["user"]
        try:
            asked = requests_from_headers(headers)
            if asked:
                user = impersonate(authorizer_of(), requestor, asked)
                request["authenticated_user"] = requestor
                request["impersonated_user"] = user
                request["user"] = user
        except errors.StatusError as e:
            return status_response(e)
        except Exception as e:  # noqa: BLE001 - fail closed, as a Status
            log.exception("impersonation")
            return status_response(errors.internal(str(e) or type(e).__name__))
        return await handler(request)

    return impersonation
