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
only read the health and version endpoints (upstream's ``system:public-info-viewer``).
Every authenticated user is also in ``system:authenticated``.

Authorization is an `Authorizer` (``authorize(attrs) -> Decision``). The default chain allows
the public-info endpoints to everyone, discovery and self access reviews to every authenticated
user (as upstream's bootstrap roles do), everything to ``system:masters``, the node rules to
``system:nodes``, then what RBAC's Roles and bindings grant (`kubeling.apiserver.rbac`).
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


class MastersAuthorizer:
    """``system:masters`` may do anything (upstream's privileged group)."""

    def authorize(self, attrs: Attributes) -> Decision:
        if "system:masters" in attrs.user.groups:
            return Decision(True, "")
        return Decision(False, "")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        if "system:masters" in user.groups:
            return [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                    {"verbs": ["*"], "nonResourceURLs": ["*"]}], []
        return [], []


class PublicInfoAuthorizer:
    """Health and version endpoints are readable by everyone."""

    def authorize(self, attrs: Attributes) -> Decision:
        if not attrs.resource_request and attrs.verb == "get" and (
                attrs.path in PUBLIC_PATHS or attrs.path.startswith(("/healthz/", "/livez/", "/readyz/"))):
            return Decision(True, "public info")
        return Decision(False, "")


SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}
DISCOVERY_PATHS = ("/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz")


class BasicUserAuthorizer:
    """What upstream's bootstrap roles grant every authenticated user (``system:basic-user`` and
    ``system:discovery``): asking about one's own access, and reading discovery and OpenAPI."""

    def authorize(self, attrs: Attributes) -> Decision:
        if "system:authenticated" not in attrs.user.groups:
            return Decision(False, "")
        if attrs.resource_request:
            ok = attrs.verb == "create" and (attrs.group, attrs.resource) in SELF_REVIEWS
        else:
            ok = attrs.verb == "get" and any(attrs.path == p or attrs.path.startswith(p + "/")
                                             for p in DISCOVERY_PATHS)
        return Decision(ok, "")


class ChainAuthorizer:
    def __init__(self, authorizers: list[Authorizer]) -> None:
        self.authorizers = authorizers

    def authorize(self, attrs: Attributes) -> Decision:
        for a in self.authorizers:
            d = a.authorize(attrs)
            if d.allowed or d.denied:
                return d
        return Decision(False, "")

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[str]]:
        """Every rule the authorizers that can list theirs grant ``user`` in ``namespace``
        (upstream's union ``RulesFor``): (rules, resolution errors)."""
        rules: list[dict] = []
        errs: list[str] = []
        for a in self.authorizers:
            fn = getattr(a, "rules_for", None)
            if fn is not None:
                r, e = fn(user, namespace)
                rules += r
                errs += e
        return rules, errs


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


def default_authorizer(rbac: Authorizer | None = None) -> ChainAuthorizer:
    """The chain; ``rbac`` (`kubeling.apiserver.rbac.RBACAuthorizer`) comes last, as upstream's
    ``--authorization-mode=Node,RBAC`` puts RBAC after the built-in rules."""
    from kubeling.apiserver.nodeauthz import NodeRulesAuthorizer
    chain: list[Authorizer] = [PublicInfoAuthorizer(), BasicUserAuthorizer(), MastersAuthorizer(),
                               NodeRulesAuthorizer()]
    if rbac is not None:
        chain.append(rbac)
    return ChainAuthorizer(chain)
