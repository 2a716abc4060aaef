"""Bootstrap token authenticator (upstream's ``plugin/pkg/auth/authenticator/token/bootstrap``).

A bearer token of the form ``<id>.<secret>`` (`kubeling.clusterbootstrap.token`) is looked up as
the Secret ``kube-system/bootstrap-token-<id>``. It authenticates as ``system:bootstrap:<id>`` in
``system:bootstrappers`` and the Secret's ``auth-extra-groups`` only when all of these hold:

- the Secret exists, is not being deleted, and has type ``bootstrap.kubernetes.io/token``;
- its ``token-id`` is ``<id>`` and its ``token-secret`` equals ``<secret>`` (constant time);
- it has not expired (an unreadable ``expiration`` counts as expired);
- ``usage-bootstrap-authentication`` is ``"true"``;
- every extra group is a valid ``system:bootstrappers:...`` name.

`authenticate` answers None for a token that is not of that form (another authenticator may
know it) and raises `TokenInvalid` for one that is but fails a check: the API server answers
401 either way, and the reason goes only to the debug log, never to the client (as upstream).
The Secret is read through ``getter.get("secrets", namespace, name)`` — the store, so a
deleted token stops working at once.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from typing import Callable, Protocol

from kubeling.apiserver.auth import UserInfo
from kubeling.clusterbootstrap import token as bt

log = logging.getLogger(__name__)


class TokenInvalid(Exception):
    """A bootstrap-shaped token that is refused; the message says why (for the log only)."""


class SecretGetter(Protocol):
    async def get(self, resource: str, namespace: str | None, name: str) -> dict | None: ...


class BootstrapTokenAuthenticator:
    """See the module docstring."""

    def __init__(self, getter: SecretGetter,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.getter = getter
        self.clock = clock

    @staticmethod
    def handles(token: str) -> bool:
        return bt.parse(token) is not None

    async def authenticate(self, token: str) -> UserInfo | None:
        parsed = bt.parse(token)
        if parsed is None:
            return None
        token_id, token_secret = parsed
        name = bt.secret_name(token_id)
        secret = await self.getter.get("secrets", bt.NAMESPACE, name)
        if secret is None:
            raise TokenInvalid(f"no secret {bt.NAMESPACE}/{name}")
        if (secret.get("metadata") or {}).get("deletionTimestamp"):
            raise TokenInvalid(f"secret {name} is being deleted")
        if secret.get("type") != bt.SECRET_TYPE:
            raise TokenInvalid(f"secret {name} has type {secret.get('type')!r}, not {bt.SECRET_TYPE}")
        data = bt.secret_data(secret)
        if not hmac.compare_digest(data.get(bt.SECRET_KEY, "").encode(), token_secret.encode()):
            raise TokenInvalid(f"secret {name}: the token's secret does not match")
        if data.get(bt.ID_KEY) != token_id:
            raise TokenInvalid(f"secret {name}: token-id does not match")
        if bt.is_expired(secret, self.clock()):
            raise TokenInvalid(f"secret {name} has expired")
        if data.get(bt.USAGE_PREFIX + "authentication") != "true":
            raise TokenInvalid(f"secret {name} is not marked usage-bootstrap-authentication")
        extra = [g.strip() for g in data.get(bt.EXTRA_GROUPS_KEY, "").split(",") if g.strip()]
        why = bt.validate_groups(extra)
        if why:
            raise TokenInvalid(f"secret {name}: {why}")
        return UserInfo(bt.USER_PREFIX + token_id, groups=tuple(dict.fromkeys([bt.GROUP, *extra])))
