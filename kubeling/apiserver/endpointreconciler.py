"""The ``kubernetes`` Service's endpoints with any number of API servers: upstream's ``lease``
endpoint reconciler (``--endpoint-reconciler-type=lease``, ``pkg/controlplane/reconcilers``).

Each server keeps a lease: the key ``/registry/masterleases/<its advertise address>`` holds an
Endpoints object naming that address (upstream's value). etcd would drop the key when its TTL
lease ran out; the `Store` has no TTLs, so the object carries its own expiry, the annotation
``kubeling.io/lease-expires`` (RFC 3339, the writer's clock: the servers' clocks must agree to
within a few seconds, as upstream's TTL needs nothing of the sort), and every server deletes an
expired key it finds (compare-and-swap on its revision, so that a renewal in between wins).

Every `INTERVAL` (10 s, upstream's ``EndpointInterval``) a server

1. renews its own lease, for `TTL` (15 s, upstream's ``--endpoint-reconciler`` master lease TTL);
2. lists the leases, drops the expired ones, and
3. writes ``default/kubernetes``'s Endpoints and EndpointSlice with every live server's address,
   sorted, and its own secure port (`kubeling.apiserver.reconcilers`), when they differ.

A graceful shutdown (`remove`) deletes the server's lease and writes the endpoints without it, at
once; a server that dies leaves its lease to expire (at most TTL + INTERVAL later it is gone). As
upstream, a list that comes back empty is never written (the last server to stop leaves its own
address behind rather than none), and the servers are expected to share one secure port: the
endpoints name the port of the server that wrote them last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging

from kubeling.api import errors
from kubeling.apiserver.reconcilers import reconcile_kubernetes_endpoints

log = logging.getLogger(__name__)

PREFIX = "/registry/masterleases/"
TTL = 15.0
INTERVAL = 10.0
EXPIRES = "kubeling.io/lease-expires"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _lease(ip: str, generation: int, ttl: float) -> bytes:
    expires = (_now() + dt.timedelta(seconds=ttl)).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps({"apiVersion": "v1", "kind": "Endpoints",
                       "metadata": {"name": ip, "generation": generation, "annotations": {EXPIRES: expires}},
                       "subsets": [{"addresses": [{"ip": ip}]}]}).encode()


def _parse(value: bytes) -> tuple[str, dt.datetime | None, int]:
    """(address, expiry or None when unreadable, generation) of a stored lease."""
    try:
        obj = json.loads(value)
        ip = obj["subsets"][0]["addresses"][0]["ip"]
        meta = obj.get("metadata") or {}
        stamp = (meta.get("annotations") or {}).get(EXPIRES, "")
        expires = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
        return ip, expires, int(meta.get("generation") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", None, 0


class Leases:
    """The servers' leases in the store (upstream's ``storageLeases``)."""

    def __init__(self, store, ttl: float = TTL) -> None:
        self.store = store
        self.ttl = ttl

    async def update(self, ip: str) -> None:
        """Create or renew ``ip``'s lease for `ttl` seconds from now."""
        key = PREFIX + ip
        for _ in range(5):
            _, kv = await self.store.get(key)
            if kv is None:
                ok, _ = await self.store.create(key, _lease(ip, 1, self.ttl))
            else:
                ok, _ = await self.store.update(key, _lease(ip, _parse(kv.value)[2] + 1, self.ttl), kv.mod_revision)
            if ok:
                return
        raise RuntimeError(f"the lease {key} kept changing under this server")

    async def list(self) -> list[str]:
        """The addresses of the live leases; expired ones (and unreadable ones) are deleted."""
        now = _now()
        live = []
        for kv in (await self.store.list(PREFIX)).kvs:
            ip, expires, _ = _parse(kv.value)
            if ip and expires is not None and expires > now:
                live.append(ip)
                continue
            log.info("API server lease %s expired: removing it", kv.key)
            await self.store.delete(kv.key, kv.mod_revision)   # lost: renewed meanwhile, it stays
        return live

    async def remove(self, ip: str) -> None:
        await self.store.delete(PREFIX + ip)


class LeaseEndpointReconciler:
    """Keeps this server's lease and ``default/kubernetes``'s endpoints (module docstring)."""

    def __init__(self, api, store, ip: str, port: int, *, ttl: float = TTL, interval: float = INTERVAL) -> None:
        self.api = api
        self.leases = Leases(store, ttl)
        self.ip = ip
        self.port = port
        self.interval = interval
        self._lock = asyncio.Lock()
        self._stopped = False

    async def reconcile(self) -> None:
        """Renew this server's lease, then write the endpoints of every live server."""
        async with self._lock:
            if self._stopped:
                return
            await self.leases.update(self.ip)
            await self._write()

    async def _write(self, leaving: bool = False) -> None:
        for attempt in range(5):
            ips = await self.leases.list()
            if not ips:
                break
            try:
                return await reconcile_kubernetes_endpoints(self.api, ips, self.port)
            except errors.StatusError as e:
                # another server wrote them between our read and our write: read them again
                if e.code != 409 or attempt == 4:
                    raise
        if not ips:
            # as upstream: never erase every address of the kubernetes Service (after a renewal of
            # our own lease, an empty list means trouble; at the last server's shutdown, it stays)
            if not leaving:
                log.warning("no API server leases listed: leaving the kubernetes Service's endpoints as they are")

    async def run(self, stop: asyncio.Event) -> None:
        """`reconcile` every `interval` until ``stop``; a failed round is logged and retried."""
        while not stop.is_set():
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the store may be away for a while; try again next round
                log.warning("reconciling the kubernetes Service's endpoints: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass

    async def remove(self) -> None:
        """At a graceful shutdown: delete this server's lease and write the endpoints without it
        (left alone when no other server is live)."""
        async with self._lock:
            self._stopped = True
            await self.leases.remove(self.ip)
            await self._write(leaving=True)
