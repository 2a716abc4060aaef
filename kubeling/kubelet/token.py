"""The service account token manager (upstream ``pkg/kubelet/token``): pod-bound tokens for
``serviceAccountToken`` projected volumes, asked for with TokenRequest and kept until they are
due for a refresh.

Contract:

- `TokenManager.get(pod, sa_name, audience, expiration_seconds)` returns ``(token, expiry)``
  (``expiry`` is the epoch second of ``status.expirationTimestamp``). It POSTs
  ``serviceaccounts/<sa>/token`` bound to the pod (name and uid) only when the cache has no token
  for (namespace, sa, audience, expiration, pod uid) or that token `requires_refresh`.
  Concurrent calls for one key share one request.
- A token requires a refresh once 80 % of its TTL has passed, or 24 h after it was issued,
  less a random jitter of up to 10 s (so that many pods do not refresh in the same second).
  The volume code calls `get` on every sync and rewrites the file when the token changes.
- If a refresh fails while the cached token has not expired yet, the cached token is returned
  (and the failure logged); otherwise the error propagates (the API's `StatusError`).
- `forget(pod_uid)` drops a pod's tokens (when the pod is gone); `cleanup()` drops expired ones.

Concurrency: one asyncio loop; the cache is a dict touched only on it.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_TTL = 24 * 3600.0
MAX_JITTER = 10.0
REFRESH_FRACTION = 0.2  # refresh when this fraction of the TTL remains


@dataclass(frozen=True)
class Token:
    token: str
    expiry: float           # epoch seconds: status.expirationTimestamp
    expiration_seconds: int  # what was asked for: the TTL

    @property
    def issued(self) -> float:
        return self.expiry - self.expiration_seconds


def _epoch(rfc3339: str) -> float:
    return float(calendar.timegm(time.strptime(rfc3339[:19], "%Y-%m-%dT%H:%M:%S")))


class TokenManager:
    def __init__(self, client, *, clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.client = client
        self.clock = clock
        self.rng = rng or random.Random()
        self._cache: dict[tuple, Token] = {}
        self._inflight: dict[tuple, asyncio.Future] = {}

    @staticmethod
    def key(pod: dict, sa_name: str, audience: str, expiration_seconds: int) -> tuple:
        meta = pod["metadata"]
        return meta["namespace"], sa_name, audience or "", int(expiration_seconds), meta.get("uid", "")

    def requires_refresh(self, tok: Token) -> bool:
        now = self.clock()
        jitter = self.rng.random() * MAX_JITTER
        if now > tok.issued + MAX_TTL - jitter:
            return True
        return now > tok.expiry - tok.expiration_seconds * REFRESH_FRACTION - jitter

    async def get(self, pod: dict, sa_name: str, audience: str, expiration_seconds: int) -> tuple[str, float]:
        key = self.key(pod, sa_name, audience, expiration_seconds)
        cached = self._cache.get(key)
        if cached is not None and not self.requires_refresh(cached):
            return cached.token, cached.expiry
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._request(pod, sa_name, audience,
                                                                                expiration_seconds))
            pending.add_done_callback(lambda f, k=key: self._inflight.pop(k, None))
        try:
            tok = await asyncio.shield(pending)  # one caller cancelled does not cancel the others' request
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if cached is not None and self.clock() < cached.expiry:
                log.warning("refreshing the token of %s/%s for pod %s failed (the current one is used): %s",
                            key[0], sa_name, pod["metadata"].get("name"), e)
                return cached.token, cached.expiry
            raise
        self._cache[key] = tok  # (a pod forgotten meanwhile leaves this entry to `cleanup`, as upstream)
        return tok.token, tok.expiry

    async def _request(self, pod: dict, sa_name: str, audience: str, expiration_seconds: int) -> Token:
        meta = pod["metadata"]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": int(expiration_seconds),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                            "uid": meta.get("uid", "")}}}
        out = await self.client.create("", "v1", "serviceaccounts", body, namespace=meta["namespace"],
                                       subresource="token", name=sa_name)
        status = out.get("status") or {}
        if not status.get("token") or not status.get("expirationTimestamp"):
            raise ValueError(f"the TokenRequest for {meta['namespace']}/{sa_name} came back without a token")
        asked = (out.get("spec") or {}).get("expirationSeconds") or expiration_seconds
        return Token(status["token"], _epoch(status["expirationTimestamp"]), int(asked))

    def forget(self, pod_uid: str) -> None:
        """Drop every token bound to the pod."""
        for key in [k for k in self._cache if k[4] == pod_uid]:
            del self._cache[key]

    def cleanup(self) -> None:
        """Drop tokens that have expired (upstream runs this every minute)."""
        now = self.clock()
        for key in [k for k, t in self._cache.items() if now > t.expiry]:
            del self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)
