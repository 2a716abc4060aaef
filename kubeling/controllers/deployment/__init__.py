"""Deployment controller: rolls a pod template out through ReplicaSets (upstream's
``pkg/controller/deployment``).

::

    deployments ─┐
    replicasets ─┼─▶ queue of Deployment keys ─▶ sync(key)
    pods (deleted, for Recreate) ─┘

The package, file for file as upstream:

- ``__init__``  `DeploymentController`: handlers (a ReplicaSet or pod event enqueues its
  Deployment; an orphan ReplicaSet enqueues every Deployment whose selector matches it), the
  ReplicaSets a Deployment controls (`claim_objects`: adopt matching orphans, release the
  ones that stop matching), the write helpers, and `sync` (below).
- ``sync``      the new ReplicaSet (``<name>-<pod-template-hash>``, the hash label added to its
  selector and template), revisions, scaling (proportional mid-rollout), cleanup, status.
- ``rolling`` / ``recreate``  the two strategies; ``progress`` the Progressing condition;
  ``rollback`` the legacy ``rollbackTo`` request; ``util`` the pure helpers.

``sync(key)`` works on a deep copy of the cached Deployment and of its ReplicaSets, and in this
order (upstream's ``syncDeployment``): an empty selector selects every pod, so it is refused with
a ``SelectingAll`` Warning; a Deployment being deleted only updates its status; the paused
condition is kept; a paused Deployment is only scaled; a pending legacy rollback is done; a
change of ``spec.replicas`` alone is a scaling event (no rollout step); otherwise one step of
its strategy. Writes go straight to the API server, each with the object's resourceVersion, so
a stale cache costs a 409 and a retry, never a wrong write. Each write refreshes the dict it was
made from in place, so the rest of the sync sees what was stored.

Events are upstream's: ``ScalingReplicaSet`` (``Scaled up replica set web-7d9c to 3``, then
``Scaled down replica set web-5f4b to 1 from 2``), ``ReplicaSetCreateError``,
``SelectingAll``, ``DeploymentRollback*``. One Deployment that fails (a ReplicaSet the API
refuses) records its Event and condition and is retried with backoff; the others go on.
"""

from __future__ import annotations

import copy
import logging

from kubeling.api.labels import SelectorError, from_label_selector
from kubeling.client import is_not_found, object_of
from kubeling.client.events import WARNING
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import claim_objects, get_controller_of
from kubeling.controllers.deployment import util
from kubeling.controllers.deployment.recreate import rollout_recreate
from kubeling.controllers.deployment.rollback import rollback
from kubeling.controllers.deployment.rolling import rollout_rolling
from kubeling.controllers.deployment.sync import (
    check_paused_conditions,
    get_rollback_to,
    is_scaling_event,
    sync,
    sync_status_only,
)

log = logging.getLogger(__name__)

__all__ = ["DeploymentController"]


class DeploymentController(Controller):
    NAME = "deployment"
    WORKERS = 5  # upstream's --concurrent-deployment-syncs
    COMPONENT = "deployment-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.deployments = ctx.informers.informer_for("apps", "v1", "deployments")
        self.replicasets = ctx.informers.informer_for("apps", "v1", "replicasets")
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.recorder = ctx.recorder(self.COMPONENT)
        self.handle(self.deployments, on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                    on_delete=self.enqueue)
        self.handle(self.replicasets, on_add=self.add_replicaset, on_update=self.update_replicaset_event,
                    on_delete=self.delete_replicaset)
        self.handle(self.pods, on_delete=self.delete_pod)

    # -- time, keys ----------------------------------------------------------------------------

    def wall(self):
        return self.clock.wall()

    def now(self) -> str:
        return self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def key(d: dict) -> str:
        return key_of(d)

    # -- handlers: they only enqueue -----------------------------------------------------------

    def enqueue(self, d) -> None:
        self.queue.add(key_of(d))

    def _resolve(self, namespace: str, ref: dict | None) -> dict | None:
        if ref is None or ref.get("kind") != "Deployment":
            return None
        d = self.deployments.get(f"{namespace}/{ref.get('name')}")
        if d is None or d["metadata"].get("uid") != ref.get("uid"):
            return None
        return d

    def _deployments_matching(self, rs: dict) -> list[dict]:
        """Deployments whose selector matches an orphan ReplicaSet's labels (may adopt it)."""
        labels = rs["metadata"].get("labels") or {}
        out = []
        for d in self.deployments.indexer.by_namespace(rs["metadata"].get("namespace", "")):
            selector = d["spec"].get("selector") or {}
            if not (selector.get("matchLabels") or selector.get("matchExpressions")):
                continue
            try:
                if from_label_selector(selector).matches(labels):
                    out.append(d)
            except SelectorError:
                continue
        return out

    def add_replicaset(self, rs: dict) -> None:
        if rs["metadata"].get("deletionTimestamp"):
            self.delete_replicaset(rs)
            return
        d = self._resolve(rs["metadata"].get("namespace", ""), get_controller_of(rs))
        if d is not None:
            self.enqueue(d)
            return
        if get_controller_of(rs) is None:
            for d in self._deployments_matching(rs):
                self.enqueue(d)

    def update_replicaset_event(self, old: dict, cur: dict) -> None:
        if old["metadata"].get("resourceVersion") == cur["metadata"].get("resourceVersion"):
            return
        ns = cur["metadata"].get("namespace", "")
        cur_ref, old_ref = get_controller_of(cur), get_controller_of(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed:
            d = self._resolve(ns, old_ref)
            if d is not None:
                self.enqueue(d)
        if cur_ref is not None:
            d = self._resolve(ns, cur_ref)
            if d is not None:
                self.enqueue(d)
            return
        if ref_changed or old["metadata"].get("labels") != cur["metadata"].get("labels"):
            for d in self._deployments_matching(cur):
                self.enqueue(d)

    def delete_replicaset(self, obj) -> None:
        rs = object_of(obj)
        d = self._resolve(rs["metadata"].get("namespace", ""), get_controller_of(rs))
        if d is not None:
            self.enqueue(d)

    def delete_pod(self, obj) -> None:
        """Recreate waits for every old pod to be gone: a pod's deletion may be its signal."""
        pod = object_of(obj)
        ns = pod["metadata"].get("namespace", "")
        ref = get_controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.get(f"{ns}/{ref.get('name')}")
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return
        d = self._resolve(ns, get_controller_of(rs))
        if d is not None and util.strategy_type(d) == "Recreate":
            self.enqueue(d)

    # -- writes that refresh the caller's dict in place ----------------------------------------

    async def update_replicaset(self, rs: dict, changed: dict) -> None:
        stored = await self.client.update("apps", "v1", "replicasets", changed)
        rs.clear()
        rs.update(stored)

    async def update_deployment_status(self, d: dict) -> None:
        stored = await self.client.update_status("apps", "v1", "deployments", d)
        d.clear()
        d.update(stored)

    async def update_deployment(self, d: dict) -> None:
        stored = await self.client.update("apps", "v1", "deployments", d)
        d.clear()
        d.update(stored)

    # -- reading what a Deployment controls ----------------------------------------------------

    async def get_replicasets_for_deployment(self, d: dict) -> list[dict]:
        async def can_adopt() -> bool:
            try:
                fresh = await self.client.get("apps", "v1", "deployments", d["metadata"]["name"],
                                              namespace=d["metadata"].get("namespace"))
            except Exception as e:  # noqa: BLE001 - gone or unreachable: adopt nothing now
                if not is_not_found(e):
                    log.info("deployment %s: re-reading before adoption failed: %s", key_of(d), e)
                return False
            return fresh["metadata"].get("uid") == d["metadata"]["uid"] and not fresh["metadata"].get(
                "deletionTimestamp")

        candidates = self.replicasets.indexer.by_namespace(d["metadata"].get("namespace", ""))
        mine = await claim_objects(self.client, d, candidates, d["spec"].get("selector"), group="apps",
                                   version="v1", resource="replicasets", api_version="apps/v1", kind="Deployment",
                                   can_adopt=can_adopt)
        return [copy.deepcopy(rs) for rs in mine]

    def get_pod_map(self, d: dict, rss: list[dict]) -> dict[str, list[dict]]:
        """The Deployment's pods by the uid of the ReplicaSet that controls them."""
        uids = {rs["metadata"]["uid"] for rs in rss}
        out: dict[str, list[dict]] = {uid: [] for uid in uids}
        try:
            selector = from_label_selector(d["spec"].get("selector"))
        except SelectorError:
            return out
        for pod in self.pods.indexer.by_namespace(d["metadata"].get("namespace", "")):
            ref = get_controller_of(pod)
            if ref is not None and ref.get("uid") in uids and selector.matches(pod["metadata"].get("labels") or {}):
                out[ref["uid"]].append(pod)
        return out

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return  # deleted: the garbage collector removes its ReplicaSets
        d = copy.deepcopy(cached)
        selector = d["spec"].get("selector") or {}
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            self.recorder.event(d, WARNING, "SelectingAll",
                                "This deployment is selecting all pods. A non-empty selector is required.")
            status = d.setdefault("status", {})
            if int(status.get("observedGeneration") or 0) < int(d["metadata"].get("generation") or 0):
                status["observedGeneration"] = d["metadata"]["generation"]
                await self.update_deployment_status(d)
            return
        rss = await self.get_replicasets_for_deployment(d)
        pod_map = self.get_pod_map(d, rss)
        if d["metadata"].get("deletionTimestamp"):
            await sync_status_only(self, d, rss)
            return
        await check_paused_conditions(self, d)
        if d["spec"].get("paused"):
            await sync(self, d, rss)
            return
        if get_rollback_to(d) is not None:
            await rollback(self, d, rss)
            return
        if await is_scaling_event(self, d, rss):
            await sync(self, d, rss)
            return
        if util.strategy_type(d) == "Recreate":
            await rollout_recreate(self, d, rss, pod_map)
        else:
            await rollout_rolling(self, d, rss)
