"""Tokens controller: ``kubernetes.io/service-account-token`` Secrets hold a token of their
service account, and go away with it.

Upstream's ``pkg/controller/serviceaccount/tokens_controller.go``. The key is a Secret's
``namespace/name``; only Secrets of that type are watched (a ``type=`` field selector). Handlers:

- a token Secret added or updated enqueues itself;
- a ServiceAccount added, updated or deleted enqueues the token Secrets that name it (from the
  Secret cache), so they are filled in, or deleted with it.

``sync(key)``, level-triggered:

1. the Secret is gone (or being deleted): nothing to do;
2. its ServiceAccount — the name annotation ``kubernetes.io/service-account.name``, and the uid
   annotation when present — does not exist: the Secret is deleted, with a uid precondition so
   that a Secret recreated meanwhile under the same name is never touched. A cache miss is
   confirmed with a GET first, since the account may be newer than the cache;
3. otherwise missing ``token``, ``namespace`` or a different ``ca.crt`` are filled in, with both
   annotations, in one update (a 409 Conflict retries with the newer Secret). The token is a
   legacy (no expiry) JWT signed with ``--service-account-private-key-file``.

The controller signs with the same key file as the API server verifies with. Without a key (none
given), it logs once and stays idle.
"""

from __future__ import annotations

import base64
import copy
import logging

from kubeling.apiserver import serviceaccount as tokens
from kubeling.client import is_conflict, is_not_found, object_of
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

TOKEN_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"
MANAGER = "kube-controller-manager"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TokensController(Controller):
    NAME = "serviceaccount-token"
    WORKERS = 5  # upstream's --concurrent-serviceaccount-token-syncs

    def __init__(self, ctx: ControllerContext, *, key_path: str | None = None) -> None:
        super().__init__(ctx)
        key_path = key_path or ctx.service_account_private_key_file or None
        self.keys = tokens.Keys(key_path) if key_path else None
        if self.keys is None:
            log.warning("%s: no --service-account-private-key-file; token Secrets are not filled in", self.NAME)
        self.ca_pem = ctx.ca_pem
        self.secrets = ctx.informers.informer_for("", "v1", "secrets", field_selector=f"type={TOKEN_TYPE}")
        self.accounts = ctx.informers.informer_for("", "v1", "serviceaccounts")
        self.handle(self.secrets, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        self.handle(self.accounts, on_add=self._enqueue_for, on_update=lambda old, new: self._enqueue_for(new),
                    on_delete=lambda o: self._enqueue_for(object_of(o)))

    def _enqueue(self, secret: dict) -> None:
        self.queue.add(f"{secret['metadata']['namespace']}/{secret['metadata']['name']}")

    def _enqueue_for(self, sa: dict) -> None:
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        for secret in self.secrets.list():
            meta = secret["metadata"]
            if meta.get("namespace") == ns and (meta.get("annotations") or {}).get(NAME_ANNOTATION) == name:
                self._enqueue(secret)

    async def sync(self, key: str) -> None:
        if self.keys is None:
            return
        secret = self.secrets.get(key)
        if secret is None or secret["metadata"].get("deletionTimestamp") or secret.get("type") != TOKEN_TYPE:
            return
        ns = secret["metadata"]["namespace"]
        annotations = secret["metadata"].get("annotations") or {}
        sa = await self._service_account(ns, annotations.get(NAME_ANNOTATION, ""), annotations.get(UID_ANNOTATION, ""))
        if sa is None:
            await self._delete(secret)
            return
        await self._fill(secret, sa)

    async def _service_account(self, ns: str, name: str, uid: str) -> dict | None:
        """The account the Secret names (and, if it says, with that uid); None if there is none."""
        if not name:
            return None
        sa = self.accounts.get(f"{ns}/{name}")
        if sa is None:  # the cache may be behind a new account: ask before deleting anything
            try:
                sa = await self.client.get("", "v1", "serviceaccounts", name, namespace=ns)
            except Exception as e:
                if is_not_found(e):
                    return None
                raise
        if uid and sa["metadata"].get("uid") != uid:
            return None
        return sa

    async def _delete(self, secret: dict) -> None:
        meta = secret["metadata"]
        try:
            await self.client.delete("", "v1", "secrets", meta["name"], namespace=meta["namespace"],
                                     preconditions={"uid": meta.get("uid")})
        except Exception as e:
            if is_not_found(e) or is_conflict(e):  # gone already, or another Secret now has the name
                return
            raise

    def _wanted(self, secret: dict, sa: dict) -> dict | None:
        """The Secret as it should be, or None when it already is."""
        data = secret.get("data") or {}
        annotations = secret["metadata"].get("annotations") or {}
        ca = _b64(self.ca_pem) if self.ca_pem else None
        needs_ca = ca is not None and data.get("ca.crt") != ca
        needs_ns = not data.get("namespace")
        needs_token = not data.get("token")
        needs_annotations = annotations.get(NAME_ANNOTATION) != sa["metadata"]["name"] or \
            annotations.get(UID_ANNOTATION) != sa["metadata"].get("uid")
        if not (needs_ca or needs_ns or needs_token or needs_annotations):
            return None
        fixed = copy.deepcopy(secret)  # the cached object is shared: change a copy
        out = fixed.setdefault("data", {})
        if needs_ca:
            out["ca.crt"] = ca
        if needs_ns:
            out["namespace"] = _b64(sa["metadata"]["namespace"])
        if needs_token:
            out["token"] = _b64(tokens.sign(self.keys, tokens.legacy_claims(sa, secret["metadata"]["name"])))
        fixed["metadata"].setdefault("annotations", {}).update(
            {NAME_ANNOTATION: sa["metadata"]["name"], UID_ANNOTATION: sa["metadata"].get("uid", "")})
        return fixed

    async def _fill(self, secret: dict, sa: dict) -> None:
        fixed = self._wanted(secret, sa)
        if fixed is None:
            return
        try:
            await self.client.update("", "v1", "secrets", fixed, namespace=fixed["metadata"]["namespace"],
                                     field_manager=MANAGER)
        except Exception as e:
            if is_not_found(e):
                return
            raise  # a Conflict is retried with the newer Secret, which the cache brings
