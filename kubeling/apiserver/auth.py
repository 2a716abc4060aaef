"""Authentication and authorization.

Authenticators (tried in order; the first that recognises the request wins):
- x509 client certificates signed by the cluster CA: user = CN, groups = O entries;
- bearer tokens from a static token file (``token,user,uid,"group1,group2"``), as upstream's
  ``--token-auth-file``;
- bearer service account JWTs (``serviceaccount.Authenticator``: TokenRequest and legacy Secret
  tokens): ``system:serviceaccount:<ns>:<name>`` in ``system:serviceaccounts`` and
  ``system:serviceaccounts:<ns>``, with the pod, node and credential id in ``extra``.
A bearer token that none of them knows is a 401, as is one that is ours but fails validation.
A request with no credentials is ``system:anonymous`` in ``system:unauthenticated``, which may
only read the health and version endpoints (upstream's ``system:public-info-viewer``); with
``--anonymous-auth=false`` it is a 401 instead (``APIServer.anonymous_auth``). Impersonation
(``Impersonate-*`` headers) is a filter after authentication: `filters/impersonation.py`.
Every authenticated user is also in ``system:authenticated``.

Authorization is an `Authorizer` (``authorize(attrs) -> Decision``); the authorizers and their
chain (``--authorization-mode``, default ``Node,RBAC``) live in `kubeling.apiserver.authorizer`,
one module each; `default_authorizer` builds the chain, and the old names are re-exported here.
``rules_for(user, namespace)`` on the chain lists what a user may do (SelfSubjectRulesReview).
"""

from __future__ import annotations

import csv
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

RELOAD_CHECK_SECONDS = 1.0  # how often the token file's mtime is looked at
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/version/")


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, hash=False)


ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))


@dataclass(frozen=True)
class Attributes:
    """What is being asked: upstream's authorizer.Attributes."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    denied: bool = False   # an explicit deny stops the chain


class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> Decision: ...


class TokenFile:
    """Static bearer tokens, reloaded when the file changes (checked at most once a second)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._mtime = -1.0
        self._checked = -RELOAD_CHECK_SECONDS
        self._tokens: dict[str, UserInfo] = {}

    def _load(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime if self.path else -1.0
        except FileNotFoundError:
            mtime = -1.0
        if mtime < 0:
            self._tokens = {}
            return
        if mtime == self._mtime:
            return
        tokens = {}
        with self.path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) < 3 or row[0].startswith("#"):
                    continue
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                tokens[row[0]] = UserInfo(row[1], row[2], groups)
        self._tokens, self._mtime = tokens, mtime

    def lookup(self, token: str) -> UserInfo | None:
        self._load()
        for known, user in self._tokens.items():
            if hmac.compare_digest(known, token):
                return user
        return None


def user_from_cert(peercert: dict | None) -> UserInfo | None:
    """The user of a verified client certificate (ssl's getpeercert() dict)."""
    if not peercert:
        return None
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    if not cn:
        return None
    return UserInfo(cn, groups=tuple(orgs))


def with_authenticated(user: UserInfo) -> UserInfo:
    if user.name == "system:anonymous" or "system:authenticated" in user.groups:
        return user
    return UserInfo(user.name, user.uid, user.groups + ("system:authenticated",), user.extra)


def default_authorizer(rbac: Authorizer | None = None, *, modes=None, graph=None):
    """The authorizer chain (`kubeling.apiserver.authorizer.build`) for ``modes`` (default
    ``Node,RBAC``); ``rbac`` (`kubeling.apiserver.rbac.RBACAuthorizer`) is mode RBAC's, ``graph``
    the Node authorizer's (`kubeling.apiserver.authorizer.node.Graph`)."""
    from kubeling.apiserver import authorizer
    return authorizer.build(modes or authorizer.DEFAULT_MODES, rbac=rbac, graph=graph)


# The authorizers moved to `kubeling.apiserver.authorizer` (one module each); their old names here.
from kubeling.apiserver.authorizer.builtin import (  # noqa: E402
    DISCOVERY_PATHS, SELF_REVIEWS, BasicUserAuthorizer, PublicInfoAuthorizer)
from kubeling.apiserver.authorizer.privileged import MastersAuthorizer  # noqa: E402
from kubeling.apiserver.authorizer.union import ChainAuthorizer  # noqa: E402

__all__ = ["ANONYMOUS", "Attributes", "Authorizer", "BasicUserAuthorizer", "ChainAuthorizer", "DISCOVERY_PATHS",
           "Decision", "MastersAuthorizer", "PUBLIC_PATHS", "PublicInfoAuthorizer", "SELF_REVIEWS", "TokenFile",
           "UserInfo", "default_authorizer", "user_from_cert", "with_authenticated"]
