"""ReplicaSet controller: keeps ``spec.replicas`` pods of a template running (upstream's
``pkg/controller/replicaset``).

::

    replicasets ──add/update/delete──▶ queue ◀── pods (owner's key; orphans: every matching owner)
                                         │
                                      sync(key): claim pods → create/delete the difference → status

``sync(key)`` for one ReplicaSet:

1. Its pods are the namespace's *active* pods (not finished, not being deleted) that it controls
   after `claim_objects`: matching orphans are adopted, owned pods that stopped matching are
   released. Adoption re-reads the ReplicaSet from the server first, so a deleted owner adopts
   nothing.
2. Only when its `ControllerExpectations` are satisfied (every create and delete it issued has
   been seen in the pod informer) does it act on the difference; otherwise the cache is known
   to be stale and it only writes status. Creates go in slow-start batches (1, 2, 4, …, at most
   `BURST_REPLICAS` per sync), stopping at the first failing batch, so a quota refusal costs
   one request; deletes pick the pods `active_pods_key` ranks first, preferring pods doubled up
   on a node with pods of the same owner.
3. Status: ``replicas``, ``fullyLabeledReplicas`` (pods carrying every template label),
   ``readyReplicas``, ``availableReplicas`` (Ready for ``minReadySeconds``),
   ``observedGeneration``, and the ``ReplicaFailure`` condition (reason ``FailedCreate`` or
   ``FailedDelete``, the error's message) while creating or deleting fails. It is written only
   when it changed. When every pod is Ready but some are not yet available, the key comes back
   after ``minReadySeconds`` to count them again.

A create or delete that fails raises from ``sync`` (the key is retried with backoff); the
``FailedCreate`` Event is on the ReplicaSet (`PodControl` records it). One broken ReplicaSet
never holds up another: each key is its own sync.

The class is parameterized by the resource it manages (`ReplicaSetController.GROUP` and
friends, and `selector_of`), so that `kubeling.controllers.replication.ReplicationManager`
is the same logic over ``replicationcontrollers``, as upstream wraps this controller.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from typing import ClassVar

from kubeling.api.labels import SelectorError, from_label_selector, from_set
from kubeling.client import (
    is_conflict,
    is_not_found,
    object_of,
    split_meta_namespace_key,
)
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import (
    SLOW_START_INITIAL_BATCH_SIZE,
    ControllerExpectations,
    PodControl,
    active_pods_key,
    claim_objects,
    controller_ref,
    get_controller_of,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    namespace_terminating,
    slow_start_batch,
)

log = logging.getLogger(__name__)

BURST_REPLICAS = 500  # upstream's burstReplicas: at most this many creates or deletes per sync
REPLICA_FAILURE = "ReplicaFailure"


class ReplicaSetController(Controller):
    NAME = "replicaset"
    WORKERS = 5  # upstream's --concurrent-replicaset-syncs
    GROUP: ClassVar[str] = "apps"
    VERSION: ClassVar[str] = "v1"
    RESOURCE: ClassVar[str] = "replicasets"
    KIND: ClassVar[str] = "ReplicaSet"
    COMPONENT: ClassVar[str] = "replicaset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.owners = ctx.informers.informer_for(self.GROUP, self.VERSION, self.RESOURCE)
        self.pods = ctx.informers.informer_for("", "v1", "pods")
        self.expectations = ControllerExpectations(ctx.clock)
        self.recorder = ctx.recorder(self.COMPONENT)
        self.pod_control = PodControl(self.client, self.recorder)
        self.handle(self.owners, on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                    on_delete=self.delete_owner)
        self.handle(self.pods, on_add=self.add_pod, on_update=self.update_pod, on_delete=self.delete_pod)

    # -- what differs between ReplicaSets and ReplicationControllers ---------------------------

    @staticmethod
    def selector_of(owner: dict) -> dict | None:
        """The owner's ``metav1.LabelSelector``."""
        return (owner.get("spec") or {}).get("selector")

    # -- event handlers: they only enqueue -----------------------------------------------------

    def enqueue(self, owner: dict) -> None:
        self.queue.add(key_of(owner))

    def delete_owner(self, obj) -> None:
        key = key_of(obj)
        self.expectations.delete(key)
        self.queue.add(key)

    def _resolve(self, namespace: str, ref: dict) -> dict | None:
        """The owner a controller reference names, if it is one of ours (kind and uid match)."""
        if ref.get("kind") != self.KIND:
            return None
        owner = self.owners.get(f"{namespace}/{ref.get('name')}")
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return owner

    def _matching_owners(self, pod: dict) -> list[dict]:
        labels = pod["metadata"].get("labels") or {}
        if not labels:
            return []
        out = []
        for owner in self.owners.indexer.by_namespace(pod["metadata"].get("namespace", "")):
            selector = self.selector_of(owner)
            if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
                continue  # an empty selector selects everything: never adopt by it
            try:
                if from_label_selector(selector).matches(labels):
                    out.append(owner)
            except SelectorError:
                continue
        return out

    def add_pod(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self.delete_pod(pod)  # restarted controller: a pod already being deleted is a deletion
            return
        ref = get_controller_of(pod)
        if ref is not None:
            owner = self._resolve(pod["metadata"].get("namespace", ""), ref)
            if owner is not None:
                key = key_of(owner)
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for owner in self._matching_owners(pod):  # an orphan: whoever matches may adopt it
            self.enqueue(owner)

    def update_pod(self, old: dict, cur: dict) -> None:
        if old["metadata"].get("resourceVersion") == cur["metadata"].get("resourceVersion"):
            return  # a resync: nothing changed
        labels_changed = old["metadata"].get("labels") != cur["metadata"].get("labels")
        if cur["metadata"].get("deletionTimestamp"):
            # graceful deletion: count it now, so the replacement starts without waiting
            self.delete_pod(cur)
            if labels_changed:
                self.delete_pod(old)
            return
        ns = cur["metadata"].get("namespace", "")
        cur_ref, old_ref = get_controller_of(cur), get_controller_of(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            owner = self._resolve(ns, old_ref)
            if owner is not None:
                self.enqueue(owner)
        if cur_ref is not None:
            owner = self._resolve(ns, cur_ref)
            if owner is not None:
                self.enqueue(owner)
                min_ready = int(owner["spec"].get("minReadySeconds") or 0)
                if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(cur):
                    # it becomes available minReadySeconds from now: look again then
                    self.queue.add_after(key_of(owner), min_ready + 1)
            return
        if labels_changed or ref_changed:
            for owner in self._matching_owners(cur):
                self.enqueue(owner)

    def delete_pod(self, obj) -> None:
        pod = object_of(obj)
        ref = get_controller_of(pod)
        if ref is None:
            return
        owner = self._resolve(pod["metadata"].get("namespace", ""), ref)
        if owner is None:
            return
        key = key_of(owner)
        self.expectations.deletion_observed(key, pod["metadata"].get("uid"))
        self.queue.add(key)

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        namespace, _ = split_meta_namespace_key(key)
        owner = self.owners.get(key)
        if owner is None:
            self.expectations.delete(key)
            return
        needs_sync = self.expectations.satisfied(key)
        try:
            from_label_selector(self.selector_of(owner))
        except SelectorError as e:
            log.warning("%s %s: invalid selector: %s", self.KIND, key, e)
            return  # nothing to do until the object changes (validation makes this rare)
        pods = [p for p in self.pods.indexer.by_namespace(namespace) if is_pod_active(p)]
        pods = await self.claim_pods(owner, pods)
        error: Exception | None = None
        diff = len(pods) - _replicas(owner)
        if needs_sync and not owner["metadata"].get("deletionTimestamp"):
            try:
                await self.manage_replicas(key, owner, pods)
            except Exception as e:  # noqa: BLE001 - reported in status, then re-raised for a retry
                error = e
        status = calculate_status(owner, pods, error, diff, self.clock.wall())
        updated = await self.update_status(owner, status)
        min_ready = int(owner["spec"].get("minReadySeconds") or 0)
        if error is None and min_ready > 0:
            st = updated.get("status") or {}
            if st.get("readyReplicas", 0) == _replicas(owner) and st.get("availableReplicas", 0) != _replicas(owner):
                self.queue.add_after(key, min_ready)
        if error is not None:
            raise error

    async def claim_pods(self, owner: dict, pods: list[dict]) -> list[dict]:
        async def can_adopt() -> bool:
            try:
                fresh = await self.client.get(self.GROUP, self.VERSION, self.RESOURCE, owner["metadata"]["name"],
                                              namespace=owner["metadata"].get("namespace"))
            except Exception as e:  # noqa: BLE001 - gone or unreachable: do not adopt now
                if not is_not_found(e):
                    log.info("%s %s: re-reading before adoption failed: %s", self.KIND, key_of(owner), e)
                return False
            return (fresh["metadata"].get("uid") == owner["metadata"]["uid"]
                    and not fresh["metadata"].get("deletionTimestamp"))

        return await claim_objects(self.client, owner, pods, self.selector_of(owner), group="", version="v1",
                                   resource="pods", api_version=_api_version(self), kind=self.KIND,
                                   can_adopt=can_adopt)

    async def manage_replicas(self, key: str, owner: dict, pods: list[dict]) -> None:
        """Create or delete the difference between ``pods`` and ``spec.replicas``."""
        namespace = owner["metadata"].get("namespace", "")
        diff = len(pods) - _replicas(owner)
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            ref = controller_ref(owner, _api_version(self), self.KIND)
            template = owner["spec"].get("template") or {}

            async def create() -> None:
                try:
                    await self.pod_control.create_pods(namespace, template, owner, ref)
                except Exception as e:
                    if namespace_terminating(e):
                        return  # the namespace is going away: nothing to create, not an error
                    raise

            created, error = await slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, create)
            if created < count:
                # creations that failed or were never tried will not be observed
                self.expectations.lower(key, add=count - created)
            if error is not None:
                raise error
        elif diff > 0:
            victims = pods_to_delete(pods, self._related_pods(owner), min(diff, BURST_REPLICAS))
            self.expectations.expect_deletions(key, [p["metadata"]["uid"] for p in victims])
            results = await asyncio.gather(*(self._delete(key, owner, p) for p in victims), return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise errors[0]

    async def _delete(self, key: str, owner: dict, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            await self.pod_control.delete_pod(meta.get("namespace", ""), meta["name"], owner, uid=meta.get("uid"))
        except Exception:
            self.expectations.deletion_observed(key, meta.get("uid"))  # it will never be seen
            raise

    def _related_pods(self, owner: dict) -> list[dict]:
        """Active pods of every owner controlled by the same controller (a Deployment's
        ReplicaSets); a scale-down prefers pods doubled up on a node with them."""
        parent = get_controller_of(owner)
        siblings = {owner["metadata"]["uid"]}
        if parent is not None:
            siblings |= {o["metadata"]["uid"] for o in self.owners.indexer.by_namespace(owner["metadata"].get(
                "namespace", "")) if (get_controller_of(o) or {}).get("uid") == parent.get("uid")}
        return [p for p in self.pods.indexer.by_namespace(owner["metadata"].get("namespace", ""))
                if is_pod_active(p) and (get_controller_of(p) or {}).get("uid") in siblings]

    async def update_status(self, owner: dict, status: dict) -> dict:
        """Write ``status`` if it differs; one retry on a conflict with a fresh read (upstream's)."""
        status = {**status, "observedGeneration": owner["metadata"].get("generation", 0)}
        current = owner
        for attempt in range(2):
            if _same_status(current.get("status") or {}, status):
                return current
            obj = copy.deepcopy(current)
            obj["status"] = status
            try:
                return await self.client.update_status(self.GROUP, self.VERSION, self.RESOURCE, obj)
            except Exception as e:
                if attempt == 1 or not is_conflict(e):
                    raise
                current = await self.client.get(self.GROUP, self.VERSION, self.RESOURCE,
                                                 owner["metadata"]["name"], namespace=owner["metadata"].get("namespace"))
        return current


def _api_version(c: ReplicaSetController) -> str:
    return f"{c.GROUP}/{c.VERSION}" if c.GROUP else c.VERSION


def _replicas(owner: dict) -> int:
    r = (owner.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def pods_to_delete(pods: list[dict], related: list[dict], count: int) -> list[dict]:
    """The ``count`` pods a scale-down removes first: upstream's ``ActivePodsWithRanks`` order,
    with a pod's rank the number of related pods on its node (a doubled-up pod goes first).
    The rank compares right after the deletion cost, as upstream's order does."""
    on_node = Counter((p.get("spec") or {}).get("nodeName") for p in related if (p.get("spec") or {}).get("nodeName"))

    def order(pod: dict) -> tuple:
        base = active_pods_key(pod)
        node = (pod.get("spec") or {}).get("nodeName")
        rank = on_node.get(node, 0) if node else 0
        return (*base[:4], -rank, *base[4:])

    return sorted(pods, key=order)[:count]


def calculate_status(owner: dict, pods: list[dict], error: Exception | None, diff: int, now) -> dict:
    """The status ``pods`` give ``owner`` (see the module docstring); ``observedGeneration`` is
    added by the writer."""
    template_labels = ((owner["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    fully = from_set(template_labels)
    min_ready = int(owner["spec"].get("minReadySeconds") or 0)
    status: dict = {"replicas": len(pods)}
    counts = {
        "fullyLabeledReplicas": sum(1 for p in pods if fully.matches(p["metadata"].get("labels") or {})),
        "readyReplicas": sum(1 for p in pods if is_pod_ready(p)),
        "availableReplicas": sum(1 for p in pods if is_pod_available(p, min_ready, now)),
    }
    status.update({k: v for k, v in counts.items() if v})
    conditions = [c for c in (owner.get("status") or {}).get("conditions") or ()]
    failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE), None)
    if error is not None and failure is None:
        reason = "FailedCreate" if diff < 0 else "FailedDelete"
        conditions.append({"type": REPLICA_FAILURE, "status": "True", "reason": reason,
                           "message": getattr(error, "message", None) or str(error),
                           "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    elif error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    if conditions:
        status["conditions"] = conditions
    return status


def _same_status(have: dict, want: dict) -> bool:
    fields = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration")
    return (all(int(have.get(f) or 0) == int(want.get(f) or 0) for f in fields)
            and (have.get("conditions") or []) == (want.get("conditions") or []))
