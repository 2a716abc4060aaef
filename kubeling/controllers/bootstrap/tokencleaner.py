"""Token cleaner: upstream's ``pkg/controller/bootstrap/tokencleaner.go`` (``--controllers``
name ``tokencleaner``; upstream leaves it off by default, kubeadm and k3s turn it on, and so
does kubeling).

It watches the ``kube-system`` Secrets of type ``bootstrap.kubernetes.io/token`` and deletes each
once its ``expiration`` has passed (an unreadable expiration counts as passed, as upstream),
with the Secret's uid as a precondition so that a new token of the same id is never hit. A token
not yet expired is requeued for exactly when it will be. The authenticator refuses an expired
token on its own; this only tidies up (and makes ``kubeling token list`` forget it).
"""

from __future__ import annotations

import datetime as dt
import logging

from kubeling.client import is_not_found
from kubeling.clusterbootstrap import token as bt
from kubeling.controllers.base import Controller, ControllerContext, key_of

log = logging.getLogger(__name__)


class TokenCleaner(Controller):
    NAME = "tokencleaner"
    WORKERS = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.secrets = ctx.informers.informer_for("", "v1", "secrets", namespace=bt.NAMESPACE,
                                                  field_selector=f"type={bt.SECRET_TYPE}")
        self.handle(self.secrets, self._enqueue, lambda old, new: self._enqueue(new))

    def _enqueue(self, secret: dict) -> None:
        if secret.get("type") == bt.SECRET_TYPE:
            self.queue.add(key_of(secret))

    async def sync(self, key) -> None:
        secret = self.secrets.get(key)
        if secret is None or secret["metadata"].get("deletionTimestamp"):
            return
        expires = bt.expiration(secret)
        if expires is None:
            return
        now = self.clock.wall()
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        left = (expires - now).total_seconds()
        if left > 0:
            self.queue.add_after(key, left)
            return
        meta = secret["metadata"]
        log.info("deleting expired bootstrap token secret %s", key)
        try:
            await self.client.delete("", "v1", "secrets", meta["name"], namespace=meta["namespace"],
                                     preconditions={"uid": meta["uid"]})
        except Exception as e:
            if not is_not_found(e):
                raise
