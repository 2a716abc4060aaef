"""Garbage collector: deletes objects whose owners are gone, and carries out ``Orphan`` and
``Foreground`` deletion.

Upstream's ``pkg/controller/garbagecollector``. Monitors are shared informers (from the
process's factory) on every resource the server lists as deletable; discovery runs again every
`RESYNC_DISCOVERY` seconds, so custom resources join (monitors of resources that went away stay,
failing quietly with backoff, as nothing else watches them). Two indexes are kept from their
events: ``uid -> object identity`` and ``owner uid -> dependents``. Work items are
level-triggered:

- ``("dependent", id)``: if every owner of the object is absent (a GET by name returns 404 or
  another uid), delete it in the background; if only some are absent, drop those references; if
  an owner is being deleted in the foreground and the reference has ``blockOwnerDeletion``,
  delete the dependent in the foreground too (background when it has no dependents itself).
- ``("owner", id)``: for an object being deleted with the ``orphan`` finalizer, remove its
  ownerReference from every dependent, then remove the finalizer; with ``foregroundDeletion``,
  delete the dependents and remove the finalizer once none is left (looked at again every
  `FOREGROUND_RECHECK` seconds until then).

Owners are read fresh from the server, never from a cache, so a stale cache can never make the
collector delete an object whose owner exists. Deletes carry a uid precondition, so an object
re-created under the same name is never collected by mistake. Workers start only once every
monitor found at start-up has synced, so the dependents index is complete before any owner's
``orphan`` finalizer is removed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kubeling.client import StatusError, is_conflict, is_not_found, object_of
from kubeling.client.discovery import APIResource, RESTMapper, discover
from kubeling.controllers.base import Controller, ControllerContext, run_workers, sleep_or_stop

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
RESYNC_DISCOVERY = 15.0
FOREGROUND_RECHECK = 1.0
DISCOVERY_RETRY = 2.0
MANAGER = "generic-garbage-collector"


@dataclass(frozen=True)
class ObjectId:
    res: APIResource
    namespace: str | None
    name: str
    uid: str


def _collectable(res: APIResource) -> bool:
    if not {"list", "watch", "delete"} <= set(res.verbs):
        return False
    if res.group == "events.k8s.io" or (res.group == "" and res.resource == "events"):
        return False  # events are never owners, and there are many of them
    return res.group != "extensions"  # legacy Deployments: the same objects as apps/v1


class GarbageCollector(Controller):
    NAME = "garbagecollector"
    WORKERS = 4  # upstream runs 20 (--concurrent-gc-syncs); fewer here, the API server has one core

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.monitored: set[APIResource] = set()
        self.by_uid: dict[str, ObjectId] = {}
        self.dependents: dict[str, set[ObjectId]] = {}
        self.owners_of: dict[str, list[dict]] = {}
        self.mapper = RESTMapper([])

    # -- graph maintenance ---------------------------------------------------------------------

    def _id(self, res: APIResource, obj: dict) -> ObjectId:
        m = obj["metadata"]
        return ObjectId(res, m.get("namespace"), m["name"], m.get("uid", ""))

    def _observe(self, res: APIResource, obj: dict) -> None:
        oid = self._id(res, obj)
        self.by_uid[oid.uid] = oid
        old_refs = self.owners_of.get(oid.uid, [])
        refs = obj["metadata"].get("ownerReferences") or []
        for r in old_refs:
            self.dependents.get(r.get("uid"), set()).discard(oid)
        for r in refs:
            self.dependents.setdefault(r.get("uid"), set()).add(oid)
        self.owners_of[oid.uid] = refs
        if refs:
            self.queue.add(("dependent", oid))
        fins = obj["metadata"].get("finalizers") or []
        if obj["metadata"].get("deletionTimestamp") and (ORPHAN in fins or FOREGROUND in fins):
            self.queue.add(("owner", oid))

    def _forget(self, res: APIResource, obj: dict) -> None:
        oid = self._id(res, obj)
        self.by_uid.pop(oid.uid, None)
        for r in self.owners_of.pop(oid.uid, []):
            deps = self.dependents.get(r.get("uid"))
            if deps is not None:
                deps.discard(oid)
            owner = self.by_uid.get(r.get("uid"))
            if owner is not None:
                self.queue.add(("owner", owner))  # a foreground owner may now be done
        for dep in list(self.dependents.get(oid.uid, ())):
            self.queue.add(("dependent", dep))

    async def sync_monitors(self, stop: asyncio.Event) -> None:
        """Discover resources; add a monitor (a shared informer + handlers) for each new one and start it."""
        resources = await discover(self.client)
        self.mapper = RESTMapper(resources)
        for res in resources:
            if res in self.monitored or not _collectable(res):
                continue
            inf = self.ctx.informers.informer_for(res.group, res.version, res.resource)
            self.handle(inf, on_add=lambda o, r=res: self._observe(r, o),
                        on_update=lambda old, new, r=res: self._observe(r, new),
                        on_delete=lambda o, r=res: self._forget(r, object_of(o)))
            self.monitored.add(res)
        self.ctx.informers.start(stop)

    async def run(self, workers: int, stop: asyncio.Event) -> None:
        try:
            while True:
                try:
                    await self.sync_monitors(stop)
                    break
                except Exception as e:  # noqa: BLE001 - the server may not be ready yet
                    log.warning("%s: discovery failed: %s; retrying", self.NAME, e)
                    if await sleep_or_stop(self.clock, DISCOVERY_RETRY, stop):
                        return
            if not await self.wait_for_caches(stop):
                return
            log.info("%s: %d monitors synced; starting %d workers", self.NAME, len(self.monitored), workers)
            work = asyncio.create_task(run_workers(self.NAME, self.queue, self.sync, stop, workers))
            try:
                while True:
                    tick = asyncio.ensure_future(sleep_or_stop(self.clock, RESYNC_DISCOVERY, stop))
                    await asyncio.wait([tick, work], return_when=asyncio.FIRST_COMPLETED)
                    if work.done() or tick.result():
                        tick.cancel()
                        break
                    try:
                        await self.sync_monitors(stop)
                    except Exception as e:  # noqa: BLE001 - keep collecting with what we know
                        log.warning("%s: discovery failed: %s", self.NAME, e)
            finally:
                await asyncio.shield(asyncio.gather(work, return_exceptions=True))
            if not work.cancelled() and work.exception() is not None:
                raise work.exception()  # a crashed worker escalates
        finally:
            self.shutdown()

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, item) -> None:
        kind, oid = item
        if kind == "owner":
            await self._sync_owner(oid)
        else:
            await self._sync_dependent(oid)

    async def _get(self, oid: ObjectId) -> dict | None:
        try:
            obj = await self.client.get(oid.res.group, oid.res.version, oid.res.resource, oid.name,
                                        namespace=oid.namespace)
        except StatusError as e:
            if is_not_found(e):
                return None
            raise
        return obj if obj["metadata"].get("uid") == oid.uid else None

    async def _owner_state(self, dep: ObjectId, ref: dict) -> dict | None:
        """The live owner named by ``ref`` (None when absent), looked up fresh from the server."""
        res = self.mapper.for_api_version_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if res is None:
            return {}  # unknown kind: never collect on a guess
        ns = dep.namespace if res.namespaced else None
        return await self._get(ObjectId(res, ns, ref.get("name", ""), ref.get("uid", "")))

    async def _sync_dependent(self, oid: ObjectId) -> None:
        obj = await self._get(oid)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            return
        absent, foreground_block = [], False
        for ref in refs:
            owner = await self._owner_state(oid, ref)
            if owner is None:
                absent.append(ref.get("uid"))
            elif owner and owner["metadata"].get("deletionTimestamp") and \
                    FOREGROUND in (owner["metadata"].get("finalizers") or []) and ref.get("blockOwnerDeletion"):
                foreground_block = True
        if len(absent) == len(refs):
            await self._delete(oid, "Background")
        elif foreground_block:
            # Foreground only if the dependent has dependents of its own to wait for (as upstream).
            await self._delete(oid, "Foreground" if self.dependents.get(oid.uid) else "Background")
        elif absent:
            await self._update(oid, lambda o: _drop_refs(o, set(absent)))

    async def _sync_owner(self, oid: ObjectId) -> None:
        obj = await self._get(oid)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        fins = obj["metadata"].get("finalizers") or []
        deps = list(self.dependents.get(oid.uid, ()))
        if ORPHAN in fins:
            for dep in deps:
                await self._update(dep, lambda o: _drop_refs(o, {oid.uid}))
            await self._update(oid, lambda o: _drop_finalizer(o, ORPHAN))
        elif FOREGROUND in fins:
            live = [d for d in deps if d.uid in self.by_uid]
            for dep in live:
                cur = await self._get(dep)
                if cur is None:
                    continue
                if not cur["metadata"].get("deletionTimestamp"):
                    await self._delete(dep, "Foreground" if self.dependents.get(dep.uid) else "Background")
            still = [d for d in live if await self._get(d) is not None]
            if still:
                self.queue.add_after(("owner", oid), FOREGROUND_RECHECK)
                return
            await self._update(oid, lambda o: _drop_finalizer(o, FOREGROUND))

    async def _delete(self, oid: ObjectId, policy: str) -> None:
        try:
            await self.client.delete(oid.res.group, oid.res.version, oid.res.resource, oid.name,
                                     namespace=oid.namespace, propagation_policy=policy,
                                     preconditions={"uid": oid.uid})
        except StatusError as e:
            if not (is_not_found(e) or is_conflict(e)):  # gone, or re-created (uid precondition)
                raise

    async def _update(self, oid: ObjectId, change) -> None:
        """GET, change, PUT with the resourceVersion; retried on conflict by the workqueue."""
        obj = await self._get(oid)
        if obj is None:
            return
        if not change(obj):
            return
        try:
            await self.client.update(oid.res.group, oid.res.version, oid.res.resource, obj, namespace=oid.namespace,
                                     field_manager=MANAGER)
        except StatusError as e:
            if not is_not_found(e):
                raise


def _drop_refs(obj: dict, uids: set[str]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    kept = [r for r in refs if r.get("uid") not in uids]
    if len(kept) == len(refs):
        return False
    if kept:
        obj["metadata"]["ownerReferences"] = kept
    else:
        obj["metadata"].pop("ownerReferences", None)
    return True


def _drop_finalizer(obj: dict, fin: str) -> bool:
    fins = obj["metadata"].get("finalizers") or []
    if fin not in fins:
        return False
    obj["metadata"]["finalizers"] = [f for f in fins if f != fin]
    return True

