"""The CSR cleaner (upstream ``pkg/controller/certificates/cleaner``, ``--controllers`` name
``csrcleaner``): once an hour, delete the requests nobody needs any more:

- pending (no condition) for more than 24 hours;
- Approved, Denied or Failed for more than an hour (by the condition's ``lastUpdateTime``),
  issued ones included;
- issued with a certificate that has expired.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging

from cryptography import x509

from kubeling.api import certificates as certs
from kubeling.api import duration
from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE = certs.GROUP, "v1", "certificatesigningrequests"
POLLING_INTERVAL = 3600.0
APPROVED_EXPIRATION = 3600.0
DENIED_EXPIRATION = 3600.0
PENDING_EXPIRATION = 24 * 3600.0
TICK = ("csrcleaner",)


def _older_than(ts: str | None, seconds: float, now: dt.datetime) -> bool:
    t = duration.parse_time(ts)
    return t is not None and (now - t).total_seconds() > seconds


def issued_expired(csr: dict, now: dt.datetime) -> bool:
    """An approved request whose (first) certificate is past its notAfter."""
    cert = (csr.get("status") or {}).get("certificate")
    if not cert or not certs.has_true_condition(csr, "Approved"):
        return False
    try:
        pem = base64.b64decode(cert)
        return any(x509.load_pem_x509_certificate(p).not_valid_after_utc < now for p in _split(pem))
    except ValueError:
        return False


def _split(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [part + marker for part in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]


def should_delete(csr: dict, now: dt.datetime) -> bool:
    conds = (csr.get("status") or {}).get("conditions") or []
    if issued_expired(csr, now):
        return True
    if not conds:
        return _older_than((csr.get("metadata") or {}).get("creationTimestamp"), PENDING_EXPIRATION, now)
    for c in conds:
        limit = {"Approved": APPROVED_EXPIRATION, "Denied": DENIED_EXPIRATION, "Failed": DENIED_EXPIRATION}.get(
            c.get("type"))
        if limit is not None and _older_than(c.get("lastUpdateTime"), limit, now):
            return True
    return False


class CSRCleanerController(Controller):
    NAME = "csrcleaner"
    WORKERS = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.csrs = ctx.informers.informer_for(GROUP, VERSION, RESOURCE)
        self.handle(self.csrs)

    async def run(self, workers, stop) -> None:
        self.queue.add(TICK)  # picked up once the cache has synced
        await super().run(workers, stop)

    async def sync(self, key) -> None:
        try:
            now = self.clock.wall()
            if now.tzinfo is None:
                now = now.replace(tzinfo=dt.timezone.utc)
            for csr in self.csrs.list():
                if should_delete(csr, now):
                    name = csr["metadata"]["name"]
                    try:
                        await self.client.delete(GROUP, VERSION, RESOURCE, name)
                        log.info("%s: deleted %s", self.NAME, name)
                    except Exception as e:  # noqa: BLE001 - one failure never stops the sweep
                        if not is_not_found(e):
                            log.warning("%s: unable to delete CSR %s: %s", self.NAME, name, e)
        finally:
            self.queue.add_after(TICK, POLLING_INTERVAL)
