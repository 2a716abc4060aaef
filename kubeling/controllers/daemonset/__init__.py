"""The DaemonSet controller (upstream's ``pkg/controller/daemon``): one pod on every eligible node.

::

    daemonsets ─┐
    pods ───────┼─handlers─▶ queue of set keys ─▶ sync(key)
    nodes ──────┘  (a node change enqueues every set)     │
    (revisions: a lister)                                 ▼
        history ─▶ manage (create / delete per node) ─▶ rolling update ─▶ clean history ─▶ status

- **Eligibility** is `util.node_should_run_daemon_pod` (nodeSelector, node affinity, taints and
  tolerations with upstream's default daemon tolerations). Pods are created unbound with a
  required node affinity to their node, and the scheduler binds them.
- **Manage**, per node: create the missing pod; delete Failed pods (``FailedDaemonPod`` Event,
  with a per-node exponential backoff of 1 s to 15 min so a crashing pod is not replaced in a
  hot loop); keep the oldest of duplicates (with maxSurge: the oldest new pod and, while it is
  not available, the oldest ready old pod); delete every pod on a node that must not run one.
- **Expectations**: creates and deletes issued and not yet seen in the informer hold back the
  next manage/update for that set, so a burst of events never makes it create twice.
- **Status** (what ``kubectl rollout status ds`` reads): desiredNumberScheduled,
  currentNumberScheduled, numberMisscheduled, numberReady, updatedNumberScheduled,
  numberAvailable, numberUnavailable, observedGeneration (and collisionCount); written only when
  it changed.

A failing sync (a refused create, a conflict) raises after recording its Event, so the queue
retries that set with backoff and the other sets go on. A set selecting everything records
``SelectingAll`` and is not retried until it changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubeling.api.labels import SelectorError, from_label_selector
from kubeling.client import is_not_found
from kubeling.client.events import WARNING
from kubeling.client.store import object_of, split_meta_namespace_key
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import (
    SLOW_START_INITIAL_BATCH_SIZE,
    ControllerExpectations,
    PodControl,
    claim_objects,
    get_controller_of,
    is_pod_available,
    is_pod_ready,
    pod_from_template,
    slow_start_batch,
    update_status,
)
from kubeling.controllers.daemonset import update, util

log = logging.getLogger(__name__)

COMPONENT = "daemonset-controller"
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 900.0


@dataclass
class _Backoff:
    delay: float
    last: float


class FailedPodsBackoff:
    """Upstream's ``flowcontrol.Backoff`` for failed daemon pods, keyed by set and node."""

    def __init__(self, clock, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX) -> None:
        self.clock, self.initial, self.maximum = clock, initial, maximum
        self._entries: dict[str, _Backoff] = {}

    def in_backoff(self, key: str) -> float:
        """Seconds left in the backoff window since the last failure (0: none)."""
        e = self._entries.get(key)
        if e is None:
            return 0.0
        return max(0.0, e.last + e.delay - self.clock.now())

    def next(self, key: str) -> None:
        now = self.clock.now()
        e = self._entries.get(key)
        if e is None or now - e.last > 2 * self.maximum:
            self._entries[key] = _Backoff(self.initial, now)
        else:
            e.delay, e.last = min(e.delay * 2, self.maximum), now


class DaemonSetsController(Controller):
    NAME = "daemonset"
    WORKERS = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        inf = ctx.informers
        self.sets = inf.informer_for("apps", "v1", "daemonsets")
        self.pods = inf.informer_for("", "v1", "pods")
        self.nodes = inf.informer_for("", "v1", "nodes")
        self.revisions = inf.informer_for("apps", "v1", "controllerrevisions")
        self.recorder = ctx.recorder(COMPONENT)
        self.pod_control = PodControl(self.client, self.recorder)
        self.expectations = ControllerExpectations(ctx.clock)
        self.backoff = FailedPodsBackoff(ctx.clock)
        self.handle(self.sets, self._enqueue, lambda old, new: self._enqueue(new), self._set_deleted)
        self.handle(self.pods, self._pod_added, self._pod_updated, self._pod_deleted)
        self.handle(self.nodes, self._node_added, self._node_updated, self._node_added)
        self.handle(self.revisions)

    # -- handlers ------------------------------------------------------------------------------

    def _enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def _set_deleted(self, obj) -> None:
        ds = object_of(obj)
        self.expectations.delete(key_of(ds))
        self._enqueue(ds)

    def _enqueue_all(self) -> None:
        for ds in self.sets.indexer.list():
            self._enqueue(ds)

    def _node_added(self, node) -> None:
        """A node came or went: every set may have a pod to make or to drop."""
        self._enqueue_all()

    def _node_updated(self, old: dict, new: dict) -> None:
        # heartbeats change status every few seconds; only what eligibility reads matters
        if old["metadata"].get("labels") != new["metadata"].get("labels") or old.get("spec") != new.get("spec"):
            self._enqueue_all()

    def _owner(self, pod: dict) -> dict | None:
        ref = get_controller_of(pod)
        if ref is None or ref.get("kind") != "DaemonSet":
            return None
        ds = self.sets.indexer.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        return ds if ds is not None and ds["metadata"].get("uid") == ref.get("uid") else None

    def _selecting(self, pod: dict) -> list[dict]:
        out = []
        for ds in self.sets.indexer.by_namespace(pod["metadata"].get("namespace") or ""):
            try:
                sel = from_label_selector((ds.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if not sel.empty and sel.matches(pod["metadata"].get("labels") or {}):
                out.append(ds)
        return out

    def _pod_added(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        ds = self._owner(pod)
        if ds is not None:
            self.expectations.creation_observed(key_of(ds))
            self._enqueue(ds)
        elif get_controller_of(pod) is None:
            for ds in self._selecting(pod):
                self._enqueue(ds)

    def _pod_updated(self, old: dict, new: dict) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        was, now = self._owner(old), self._owner(new)
        if was is not None and (now is None or was["metadata"]["uid"] != now["metadata"]["uid"]):
            self._enqueue(was)
        if now is not None:
            self._enqueue(now)
        elif get_controller_of(new) is None:
            for ds in self._selecting(new):
                self._enqueue(ds)

    def _pod_deleted(self, obj) -> None:
        pod = object_of(obj)
        ds = self._owner(pod)
        if ds is not None:
            self.expectations.deletion_observed(key_of(ds), pod["metadata"].get("uid"))
            self._enqueue(ds)

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key) -> None:
        ds = self.sets.indexer.get(key)
        if ds is None:
            self.expectations.delete(key)
            return
        namespace, name = split_meta_namespace_key(key)
        raw_selector = (ds.get("spec") or {}).get("selector")
        try:
            selector = from_label_selector(raw_selector)
        except SelectorError as e:
            self.recorder.event(ds, WARNING, "InvalidSelector", f"Invalid selector: {e}")
            return
        if selector.empty:
            self.recorder.event(ds, WARNING, "SelectingAll",
                                "This daemon set is selecting all pods. A non-empty selector is required.")
            return
        if ds["metadata"].get("deletionTimestamp"):
            # its revisions may already be gone or orphaned (the garbage collector gives no order),
            # so no history can be built reliably: leave the rest to the garbage collector
            return
        can_adopt = self._can_adopt(ds, namespace, name)
        pods = await claim_objects(self.client, ds, self.pods.indexer.by_namespace(namespace), raw_selector,
                                   group="", version="v1", resource="pods", api_version="apps/v1",
                                   kind="DaemonSet", can_adopt=can_adopt)
        nodes = sorted(self.nodes.indexer.list(), key=lambda n: n["metadata"]["name"])
        node_to_pods = self._node_to_pods(pods)
        revisions = await claim_objects(self.client, ds, self.revisions.indexer.by_namespace(namespace), raw_selector,
                                        group="apps", version="v1", resource="controllerrevisions",
                                        api_version="apps/v1", kind="DaemonSet", can_adopt=can_adopt)
        current, old, collision = await update.construct_history(self.client, ds, revisions, pods)
        hash_ = update.pod_hash_of_revision(current)
        try:
            if self.expectations.satisfied(key):
                await self._update(ds, nodes, node_to_pods, hash_, key)
                await update.cleanup_history(self.client, ds, old, pods)
        finally:
            # the status is written even when a create or delete failed (then the failure is raised)
            await self._update_status(ds, nodes, node_to_pods, hash_, collision)

    async def _update(self, ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]], hash_: str,
                      key: str) -> None:
        if await self._manage(ds, nodes, node_to_pods, hash_) or not self.expectations.satisfied(key):
            return  # the manage step acted on this cache: plan the update on the next, fresher one
        if ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return
        # a node that should run a pod and has none counts as unavailable (upstream's
        # updatedDesiredNodeCounts), so an update never takes a second node down meanwhile
        eligible = {n["metadata"]["name"]: [] for n in nodes if util.node_should_run_daemon_pod(n, ds)[0]}
        plan_pods = {**eligible, **node_to_pods}
        delete, surge = update.rolling_update_plan(ds, plan_pods, hash_, len(eligible), self.clock.wall())
        await self._sync_nodes(ds, delete, surge, hash_)

    def _can_adopt(self, ds: dict, namespace: str, name: str):
        """Upstream re-reads the set uncached before adopting: a deleted set adopts nothing."""
        async def can_adopt() -> bool:
            try:
                fresh = await self.client.get("apps", "v1", "daemonsets", name, namespace=namespace)
            except Exception as e:
                if is_not_found(e):
                    return False
                raise
            return fresh["metadata"].get("uid") == ds["metadata"].get("uid") and \
                not fresh["metadata"].get("deletionTimestamp")
        return can_adopt

    @staticmethod
    def _node_to_pods(pods: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if pod["metadata"].get("deletionTimestamp") and phase in ("Succeeded", "Failed"):
                continue  # finished and on its way out: no longer this node's daemon pod
            node = util.target_node_name(pod)
            if node is None:
                log.info("daemon pod %s has no target node", pod["metadata"]["name"])
                continue
            out.setdefault(node, []).append(pod)
        return out

    # -- manage --------------------------------------------------------------------------------

    async def _manage(self, ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]], hash_: str) -> bool:
        """Create and delete per node; True if it wrote anything."""
        create, delete = [], []
        for node in nodes:
            c, d = self._pods_should_be_on_node(ds, node, node_to_pods.get(node["metadata"]["name"], []), hash_)
            create += c
            delete += d
        # an unbound pod for a node that is gone would stay Pending for ever (the pod GC only
        # collects pods bound to missing nodes): delete it, as upstream does
        names = {n["metadata"]["name"] for n in nodes}
        delete += [p for node, pods in node_to_pods.items() if node not in names for p in pods
                   if not (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp")]
        await self._sync_nodes(ds, delete, create, hash_)
        return bool(create or delete)

    def _pods_should_be_on_node(self, ds: dict, node: dict, pods: list[dict],
                                hash_: str) -> tuple[list[str], list[dict]]:
        name = node["metadata"]["name"]
        should_run, should_continue = util.node_should_run_daemon_pod(node, ds)
        if should_run and not pods:
            return [name], []
        if not should_continue:
            return [], [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        delete, running = [], []
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") == "Failed":
                backoff_key = f"{ds['metadata'].get('uid')}/{name}"
                wait = self.backoff.in_backoff(backoff_key)
                if wait > 0:
                    self.queue.add_after(key_of(ds), wait)
                    continue
                self.backoff.next(backoff_key)
                self.recorder.event(ds, WARNING, "FailedDaemonPod",
                                    f"Found failed daemon pod {pod['metadata'].get('namespace')}/"
                                    f"{pod['metadata']['name']} on node {name}, will try to kill it")
                delete.append(pod)
            else:
                running.append(pod)
        if len(running) <= 1:
            return [], delete
        running = update.oldest_first(running)
        if not util.allows_surge(ds):
            return [], delete + running[1:]
        oldest_new = oldest_old = None
        for pod in running:
            if update.is_updated(ds, pod, hash_):
                if oldest_new is None:
                    oldest_new = pod
                    continue
            elif oldest_old is None:
                oldest_old = pod
                continue
            delete.append(pod)
        if oldest_new is not None and oldest_old is not None:
            min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
            if not is_pod_ready(oldest_old) or is_pod_available(oldest_new, min_ready, self.clock.wall()):
                delete.append(oldest_old)
        return [], delete

    async def _sync_nodes(self, ds: dict, delete: list[dict], create_on: list[str], hash_: str) -> None:
        if not delete and not create_on:
            return
        key = key_of(ds)
        ns = ds["metadata"].get("namespace")
        self.expectations.set(key, add=len(create_on), delete=len(delete), uids=[p["metadata"]["uid"] for p in delete])
        template = util.create_pod_template(ds, hash_)
        ref = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds["metadata"]["name"],
               "uid": ds["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
        todo = iter(create_on)

        async def create_one() -> None:
            node = next(todo)
            pod = pod_from_template(template, ds, ref)
            pod["spec"]["affinity"] = util.replace_node_name_affinity(pod["spec"].get("affinity"), node)
            try:
                await self.pod_control.create_pod(ns, pod, ds)
            except Exception:
                self.expectations.lower(key, add=1)
                raise

        first_error: Exception | None = None
        if create_on:
            done, err = await slow_start_batch(len(create_on), SLOW_START_INITIAL_BATCH_SIZE, create_one)
            skipped = len(create_on) - done - (1 if err else 0)
            if skipped > 0:
                self.expectations.lower(key, add=skipped)  # never tried: never observed
            first_error = err
        for pod in delete:
            try:
                if not await self.pod_control.delete_pod(ns, pod["metadata"]["name"], ds, pod["metadata"]["uid"]):
                    self.expectations.deletion_observed(key, pod["metadata"]["uid"])
            except Exception as e:  # noqa: BLE001 - try every delete, raise the first failure after
                self.expectations.deletion_observed(key, pod["metadata"]["uid"])
                first_error = first_error or e
        if first_error is not None:
            raise first_error

    # -- status --------------------------------------------------------------------------------

    async def _update_status(self, ds: dict, nodes: list[dict], node_to_pods: dict[str, list[dict]], hash_: str,
                             collision: int) -> None:
        desired = current = misscheduled = ready = updated = available = 0
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        now = self.clock.wall()
        for node in nodes:
            should_run, _ = util.node_should_run_daemon_pod(node, ds)
            pods = node_to_pods.get(node["metadata"]["name"], [])
            if not should_run:
                misscheduled += bool(pods)
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = update.oldest_first(pods)[0]
            ready += is_pod_ready(pod)
            available += is_pod_ready(pod) and is_pod_available(pod, min_ready, now)
            updated += update.is_updated(ds, pod, hash_)
        status = {"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
                  "desiredNumberScheduled": desired, "numberReady": ready, "updatedNumberScheduled": updated,
                  "numberAvailable": available, "numberUnavailable": desired - available,
                  "observedGeneration": ds["metadata"].get("generation", 0)}
        if collision:
            status["collisionCount"] = collision
        written = await update_status(self.client, "apps", "daemonsets", ds, status, _merge_status)
        if not written:
            if min_ready and ready > available:
                self.queue.add_after(key_of(ds), float(min_ready))
            return
        if min_ready and ready > available:
            # a Ready pod becomes available minReadySeconds later, with no event to wake us
            self.queue.add_after(key_of(ds), float(min_ready))


_OMIT_EMPTY = ("numberAvailable", "numberUnavailable", "updatedNumberScheduled", "collisionCount")


def _merge_status(have: dict, computed: dict) -> dict:
    """``have`` with the computed fields; zero omitempty fields dropped, as the server returns them
    (so an unchanged status compares equal and is not written again)."""
    merged = {**have, **computed}
    for k in _OMIT_EMPTY:
        if not merged.get(k):
            merged.pop(k, None)
    return merged
