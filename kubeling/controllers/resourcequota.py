"""ResourceQuota controller (upstream's ``pkg/controller/resourcequota``): recounts each quota's
``status.used`` from what exists, and sets ``status.hard`` from ``spec.hard``.

The ResourceQuota admission plugin charges usage as objects are created; this controller is
the other half: it gives usage back when objects go away (a pod deleted or finished, a service
deleted — upstream's "replenishment") and corrects any charge for a write that failed after
admission. The key is ``namespace/name`` of a quota.

- A quota is synced when it is added or its ``spec.hard`` changes, and every `RESYNC_SECONDS`
  (upstream's ``--resource-quota-sync-period``, 5 min).
- A pod that is deleted or becomes terminal, a service, PVC, ConfigMap, Secret or RC that is
  deleted (or a service/PVC whose usage changed) queues every quota in its namespace.
- ``sync`` lists, for each resource the quota tracks, the objects of that resource in the
  namespace (from informers for the resources above, from the API for other ``count/...``
  resources), sums the usage of those that match the quota's scopes, and writes
  ``status`` only if it changed.
"""

from __future__ import annotations

import logging

from kubeling.client import is_not_found, object_of
from kubeling.client.store import split_meta_namespace_key
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.quota import resources as rl
from kubeling.quota.evaluators import evaluator_for, group_resource_of, is_terminal

log = logging.getLogger(__name__)

RESYNC_SECONDS = 300.0
# resources watched for replenishment: (group, version, resource)
WATCHED = [("", "v1", "pods"), ("", "v1", "services"), ("", "v1", "persistentvolumeclaims"),
           ("", "v1", "configmaps"), ("", "v1", "secrets"), ("", "v1", "replicationcontrollers")]


class ResourceQuotaController(Controller):
    NAME = "resourcequota"
    WORKERS = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.quotas = ctx.informers.informer_for("", "v1", "resourcequotas")
        self.handle(self.quotas, self._quota_added, self._quota_updated, None, resync_period=RESYNC_SECONDS)
        self.watched = {}
        for group, version, resource in WATCHED:
            inf = ctx.informers.informer_for(group, version, resource)
            self.watched[(group, resource)] = inf
            self.handle(inf, None, self._replenish_update(resource), self._replenish_delete)

    # -- handlers: enqueue only --------------------------------------------------------------

    def _quota_added(self, obj: dict) -> None:
        self.queue.add(key_of(obj))

    def _quota_updated(self, old: dict, new: dict) -> None:
        # a resync (same object) or a changed spec; our own status writes need no sync
        if old.get("spec") != new.get("spec") or old["metadata"].get("resourceVersion") == \
                new["metadata"].get("resourceVersion"):
            self.queue.add(key_of(new))

    def _replenish_update(self, resource: str):
        ev = evaluator_for("", resource)

        def on_update(old: dict, new: dict) -> None:
            if resource == "pods":
                if is_terminal(new) and not is_terminal(old):
                    self._namespace_changed(new)
            elif ev.handles_update() and ev.usage(old) != ev.usage(new):
                self._namespace_changed(new)
        return on_update

    def _replenish_delete(self, obj) -> None:
        self._namespace_changed(object_of(obj))

    def _namespace_changed(self, obj: dict) -> None:
        ns = obj["metadata"].get("namespace")
        for q in self.quotas.indexer.by_namespace(ns):
            self.queue.add(key_of(q))

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        quota = self.quotas.get(key)
        if quota is None:
            return
        namespace, _ = split_meta_namespace_key(key)
        hard = rl.parse_list((quota.get("spec") or {}).get("hard"))
        used: rl.ResourceList = {name: 0 for name in hard}
        by_resource: dict[tuple[str, str], set[str]] = {}
        for name in hard:
            gr = group_resource_of(name)
            if gr is not None:
                by_resource.setdefault(gr, set()).add(name)
        for (group, resource), names in by_resource.items():
            ev = evaluator_for(group, resource)
            for obj in await self._objects(group, resource, namespace):
                if not ev.matches_scopes(quota, obj):
                    continue
                used = rl.add(used, rl.mask(ev.usage(obj), names))
        status = {"hard": (quota.get("spec") or {}).get("hard") or {}, "used": rl.format_list(used)}
        if (quota.get("status") or {}) == status:
            return
        new = {**quota, "status": status}
        try:
            await self.client.update_status("", "v1", "resourcequotas", new, namespace=namespace)
        except Exception as e:
            if is_not_found(e):
                return
            raise

    async def _objects(self, group: str, resource: str, namespace: str) -> list[dict]:
        inf = self.watched.get((group, resource))
        if inf is not None:
            return inf.indexer.by_namespace(namespace)
        version = await self._version(group, resource)
        if version is None:
            return []
        out = await self.client.list(group, version, resource, namespace=namespace)
        return out.get("items") or []

    async def _version(self, group: str, resource: str) -> str | None:
        """The preferred version of a group (for ``count/<resource>.<group>`` quotas)."""
        if not group:
            return "v1"
        try:
            doc = await self.client.request("GET", f"/apis/{group}")
        except Exception as e:  # noqa: BLE001 - an unknown group counts nothing
            log.info("resourcequota: group %s: %s", group, e)
            return None
        return ((doc or {}).get("preferredVersion") or {}).get("version")
