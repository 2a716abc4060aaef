"""Bootstrap tokens, as upstream's ``k8s.io/cluster-bootstrap/token`` defines them.

A bootstrap token is ``<id>.<secret>`` (id ``[a-z0-9]{6}``, secret ``[a-z0-9]{16}``). It lives
in a ``kube-system`` Secret named ``bootstrap-token-<id>`` of type
``bootstrap.kubernetes.io/token``, whose data keys are::

    token-id, token-secret          the two halves
    expiration                      RFC 3339; past it the token is refused and the Secret deleted
    usage-bootstrap-authentication  "true": a bearer token for the API server
    usage-bootstrap-signing         "true": may sign the cluster-info ConfigMap (not used here)
    auth-extra-groups               comma-separated groups, each ``system:bootstrappers:...``
    description                     free text

It authenticates as ``system:bootstrap:<id>`` in ``system:bootstrappers`` plus the extra
groups (`kubeling.apiserver.authenticator.bootstraptoken`); the token cleaner
(`kubeling.controllers.bootstrap.tokencleaner`) deletes expired ones. This module is pure
(no I/O): parsing, generating, the Secret for a token, and reading one back.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets as _secrets
import string

SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
NAMESPACE = "kube-system"
USER_PREFIX = "system:bootstrap:"
GROUP = "system:bootstrappers"
DEFAULT_GROUP = "system:bootstrappers:kubeling:default-node-token"   # kubeadm's: ...:kubeadm:default-node-token

ID_KEY, SECRET_KEY = "token-id", "token-secret"
EXPIRATION_KEY, DESCRIPTION_KEY, EXTRA_GROUPS_KEY = "expiration", "description", "auth-extra-groups"
USAGE_PREFIX = "usage-bootstrap-"
USAGES = ("authentication", "signing")

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
ID_RE = re.compile(r"^[a-z0-9]{6}$")
GROUP_RE = re.compile(r"^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$")
_ALPHABET = string.ascii_lowercase + string.digits


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None otherwise (it is then not a bootstrap token)."""
    m = TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def generate() -> str:
    """A fresh random token ``<6>.<16>`` (upstream's GenerateBootstrapToken)."""
    pick = lambda n: "".join(_secrets.choice(_ALPHABET) for _ in range(n))
    return f"{pick(6)}.{pick(16)}"


def secret_name(token_id: str) -> str:
    return SECRET_PREFIX + token_id


def validate_groups(groups: list[str]) -> str | None:
    """Why ``groups`` cannot be auth-extra-groups, or None (upstream's ValidateBootstrapGroupName)."""
    for g in groups:
        if not GROUP_RE.match(g):
            return f'bootstrap group "{g}" is invalid (must match {GROUP_RE.pattern})'
    return None


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def secret_for(token: str, *, ttl: float | None = None, description: str = "",
               usages: tuple[str, ...] = USAGES, groups: list[str] | None = None,
               now: dt.datetime | None = None) -> dict:
    """The Secret that makes ``token`` valid (``ttl`` seconds; None or 0: never expires)."""
    parsed = parse(token)
    if parsed is None:
        raise ValueError(f"{token!r} is not a bootstrap token ([a-z0-9]{{6}}.[a-z0-9]{{16}})")
    groups = list(groups if groups is not None else [DEFAULT_GROUP])
    why = validate_groups(groups)
    if why:
        raise ValueError(why)
    bad = [u for u in usages if u not in USAGES]
    if bad:
        raise ValueError(f"unknown usage {bad[0]!r} (known: {', '.join(USAGES)})")
    data = {ID_KEY: parsed[0], SECRET_KEY: parsed[1]}
    if ttl:
        data[EXPIRATION_KEY] = rfc3339((now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=ttl))
    if description:
        data[DESCRIPTION_KEY] = description
    for u in usages:
        data[USAGE_PREFIX + u] = "true"
    if groups:
        data[EXTRA_GROUPS_KEY] = ",".join(groups)
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": secret_name(parsed[0]), "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def secret_data(secret: dict) -> dict[str, str]:
    """A Secret's data decoded to text (undecodable values are left out)."""
    out = {}
    for k, v in ((secret.get("data") or {}).items()):
        try:
            out[k] = base64.b64decode(v or "", validate=True).decode()
        except (ValueError, TypeError, UnicodeDecodeError):
            continue
    return out


def expiration(secret: dict) -> dt.datetime | None:
    """When a token Secret expires; None if never. An unreadable time counts as already expired
    (fail closed), as upstream's isSecretExpired does."""
    value = secret_data(secret).get(EXPIRATION_KEY)
    if not value:
        return None
    return parse_rfc3339(value) or dt.datetime.fromtimestamp(0, dt.timezone.utc)


def is_expired(secret: dict, now: dt.datetime | None = None) -> bool:
    t = expiration(secret)
    return t is not None and t <= (now or dt.datetime.now(dt.timezone.utc))
