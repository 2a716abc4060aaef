"""Taint eviction controller: deletes pods from nodes with ``NoExecute`` taints they do not tolerate.

Upstream's ``pkg/controller/tainteviction`` (the "taint manager"). It watches Nodes and Pods and
keeps one timed eviction per pod:

- A pod bound to a node whose ``NoExecute`` taints it does **not** all tolerate is evicted at
  once (any pending timer is cancelled first, with its event).
- A pod that tolerates every such taint is evicted after the smallest ``tolerationSeconds`` among
  the tolerations used (the first toleration that matches each taint, as upstream); ``<= 0``
  means now. If none of those tolerations has ``tolerationSeconds`` it tolerates them forever,
  and a pending eviction is cancelled.
- A pending eviction keeps its start time: a re-evaluation (a pod or node update) only moves the
  deadline earlier, never later, as upstream's ``scheduledEviction.CreatedAt``.
- The taints going away (or the pod leaving, or being deleted) cancels a pending eviction; that
  records ``TaintManagerEviction`` "Cancelling deletion of Pod ns/name" on the pod.
- An eviction that fires records ``TaintManagerEviction`` "Marking for deletion Pod ns/name",
  adds the pod condition ``DisruptionTarget=True`` (reason ``DeletionByTaintManager``) with a
  status patch, and deletes the pod with its UID as a precondition (a same-named newcomer is
  never deleted). A failed eviction is retried with the queue's backoff; once it has been carried
  out its entry stays (so it is not scheduled again) until the pod is seen gone.

Keys (the queue never runs one key twice at once):

- ``("node", name)``: re-evaluate every pod on the node (from a pod-by-node index);
- ``("pod", "ns/name")``: re-evaluate one pod;
- ``("evict", "ns/name")``: carry out a due eviction. Timers (``clock.call_later``) only add this
  key, so all API work happens in workers, with the queue's retry and shutdown promises.

Handlers only enqueue, and only when something the decision reads changed: a node's NoExecute
taints, a pod's node or tolerations. A pod that fails to evaluate (a malformed toleration) is
logged and retried alone; it never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubeling.client import is_not_found, object_of
from kubeling.client.events import NORMAL
from kubeling.client.store import meta_namespace_key, split_meta_namespace_key
from kubeling.controllers.base import Controller, ControllerContext
from kubeling.scheduler.plugins.helper import toleration_tolerates_taint

log = logging.getLogger(__name__)

COMPONENT = "taint-eviction-controller"
NO_EXECUTE = "NoExecute"
EVENT_REASON = "TaintManagerEviction"
DISRUPTION_TARGET = "DisruptionTarget"
DELETION_REASON = "DeletionByTaintManager"
DELETION_MESSAGE = "Taint manager: deleting due to NoExecute taint"
# Index name of pods by spec.nodeName; prefixed so it cannot clash with another controller's
# index of the same field on the shared pod informer (the factory refuses a second function).
POD_NODE_NAME_INDEX = "nodelifecycle:spec.nodeName"


def pod_node_name(pod: dict) -> list[str]:
    """Index function: the node a pod is bound to (none while unscheduled)."""
    name = (pod.get("spec") or {}).get("nodeName")
    return [name] if name else []


def no_execute_taints(node: dict | None) -> list[dict]:
    if node is None:
        return []
    return [t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == NO_EXECUTE]


def matching_tolerations(taints: list[dict], tolerations: list[dict]) -> tuple[bool, list[dict]]:
    """Upstream's ``GetMatchingTolerations``: (all tolerated, the first toleration used per taint)."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if toleration_tolerates_taint(t, taint)), None)
        if match is None:
            return False, []
        used.append(match)
    return True, used


def min_toleration_seconds(tolerations: list[dict]) -> float:
    """The shortest ``tolerationSeconds`` of ``tolerations``: 0 for none or any ``<= 0``, -1 for forever."""
    if not tolerations:
        return 0.0
    seconds = [t["tolerationSeconds"] for t in tolerations if t.get("tolerationSeconds") is not None]
    if not seconds:
        return -1.0
    return float(max(min(int(s) for s in seconds), 0))


def _pod_ref(namespace: str, name: str, uid: str | None = None) -> dict:
    ref = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name}
    if uid:
        ref["uid"] = uid
    return ref


@dataclass
class ScheduledEviction:
    created_at: float
    fire_at: float
    uid: str
    timer: Any = None
    fired: bool = False  # carried out: kept so the pod is not scheduled again until seen gone


class TaintEvictionController(Controller):
    NAME = "taint-eviction-controller"
    WORKERS = 4  # upstream runs 8; evictions are independent and mostly wait on the API server

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.evictions: dict[str, ScheduledEviction] = {}
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.pods = ctx.informers.informer_for("", "v1", "pods", indexers={POD_NODE_NAME_INDEX: pod_node_name})
        self.handle(self.nodes, on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)
        self.handle(self.pods, on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # -- handlers: enqueue only ------------------------------------------------------------------

    def _node_added(self, node: dict) -> None:
        if no_execute_taints(node):
            self.queue.add(("node", node["metadata"]["name"]))

    def _node_updated(self, old: dict, new: dict) -> None:
        if no_execute_taints(old) != no_execute_taints(new):
            self.queue.add(("node", new["metadata"]["name"]))

    def _node_deleted(self, node: dict) -> None:
        self.queue.add(("node", object_of(node)["metadata"]["name"]))

    def _pod_added(self, pod: dict) -> None:
        if pod_node_name(pod):
            self.queue.add(("pod", meta_namespace_key(pod)))

    def _pod_updated(self, old: dict, new: dict) -> None:
        o, n = old.get("spec") or {}, new.get("spec") or {}
        if o.get("nodeName") == n.get("nodeName") and o.get("tolerations") == n.get("tolerations"):
            return
        self.queue.add(("pod", meta_namespace_key(new)))

    def _pod_deleted(self, pod: dict) -> None:
        self.queue.add(("pod", meta_namespace_key(object_of(pod))))

    # -- running ---------------------------------------------------------------------------------

    async def run(self, workers: int, stop) -> None:
        try:
            await super().run(workers, stop)
        finally:
            await self.recorder.close()

    def shutdown(self) -> None:
        for ev in self.evictions.values():
            if ev.timer is not None:
                ev.timer.cancel()
        super().shutdown()

    async def sync(self, item) -> None:
        kind, name = item
        if kind == "node":
            self._sync_node(name)
        elif kind == "pod":
            self._sync_pod(name)
        else:
            await self._evict(name)

    # -- decisions (no I/O: they schedule, cancel, or enqueue "evict") ---------------------------

    def _sync_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return  # upstream forgets the node; its pods are pod GC's (orphaned pods)
        taints = no_execute_taints(node)
        now = self.clock.now()
        for pod in self.pods.by_index(POD_NODE_NAME_INDEX, name):
            key = meta_namespace_key(pod)
            try:
                self._process_pod_on_node(key, pod, taints, now)
            except Exception as e:  # noqa: BLE001 - one malformed pod never stops the node's others
                log.warning("%s: pod %s on node %s: %s; retrying it alone", self.NAME, key, name, e)
                self.queue.add_rate_limited(("pod", key))

    def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            self._cancel(key, event=True)
            return
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return
        self._process_pod_on_node(key, pod, no_execute_taints(self.nodes.get(node_name)), self.clock.now())

    def _process_pod_on_node(self, key: str, pod: dict, taints: list[dict], now: float) -> None:
        if not taints:
            self._cancel(key, event=True)
            return
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        all_tolerated, used = matching_tolerations(taints, tolerations)
        uid = pod["metadata"].get("uid", "")
        current = self.evictions.get(key)
        if current is not None and current.uid == uid and (current.fired or current.fire_at <= now):
            return  # due or carried out already: the eviction is queued, or waiting to see the pod go
        if not all_tolerated:
            log.info("%s: pod %s does not tolerate every NoExecute taint of node %s", self.NAME, key,
                     pod["spec"].get("nodeName"))
            self._cancel(key, event=True)
            self._schedule(key, uid, now, now)
            return
        seconds = min_toleration_seconds(used)
        if seconds < 0:
            self._cancel(key, event=True)  # tolerated forever
            return
        start = now
        if current is not None:
            if current.uid == uid:
                start = current.created_at
                # Keep a deadline that is no later. (Upstream replaces on equal deadlines; ``<=`` keeps
                # one pod re-evaluated twice at the same instant from logging a cancel and re-add.)
                if start + seconds <= current.fire_at:
                    return
            self._cancel(key, event=True)
        self._schedule(key, uid, start, start + seconds)

    def _schedule(self, key: str, uid: str, created_at: float, fire_at: float) -> None:
        if key in self.evictions:
            return
        ev = ScheduledEviction(created_at, fire_at, uid)
        self.evictions[key] = ev
        delay = fire_at - self.clock.now()
        if delay <= 0:
            self.queue.add(("evict", key))
        else:
            ev.timer = self.clock.call_later(delay, self.queue.add, ("evict", key))

    def _cancel(self, key: str, *, event: bool) -> None:
        """Upstream's ``cancelWorkWithEvent``: drop the entry; an eviction still pending records the event."""
        ev = self.evictions.pop(key, None)
        if ev is None:
            return
        if ev.timer is not None:
            ev.timer.cancel()
        if not ev.fired and event:
            ns, name = split_meta_namespace_key(key)
            self.recorder.event(_pod_ref(ns, name, ev.uid), NORMAL, EVENT_REASON,
                                f"Cancelling deletion of Pod {key}")

    # -- the eviction ----------------------------------------------------------------------------

    async def _evict(self, key: str) -> None:
        ev = self.evictions.get(key)
        if ev is None or ev.fired:
            return  # cancelled (or done) after the timer fired
        ns, name = split_meta_namespace_key(key)
        self.recorder.event(_pod_ref(ns, name, ev.uid), NORMAL, EVENT_REASON, f"Marking for deletion Pod {key}")
        try:
            await self._add_condition_and_delete(ns, name, ev.uid)
        except Exception as e:
            if not is_not_found(e):
                raise  # retried with backoff; the entry stays pending
        ev.fired = True
        ev.timer = None

    async def _add_condition_and_delete(self, ns: str, name: str, uid: str) -> None:
        pod = await self.client.get("", "v1", "pods", name, namespace=ns)
        if uid and pod["metadata"].get("uid") != uid:
            return  # a newcomer under the same name: not the pod we meant
        cond = next((c for c in (pod.get("status") or {}).get("conditions") or ()
                     if c.get("type") == DISRUPTION_TARGET), None)
        if cond is None or cond.get("status") != "True" or cond.get("reason") != DELETION_REASON:
            patch = {"metadata": {"uid": pod["metadata"]["uid"]},
                     "status": {"conditions": [{"type": DISRUPTION_TARGET, "status": "True",
                                                "reason": DELETION_REASON, "message": DELETION_MESSAGE,
                                                "lastTransitionTime": _rfc3339(self.clock)}]}}
            await self.client.patch("", "v1", "pods", name, patch, namespace=ns, subresource="status",
                                    patch_type="strategic")
        await self.client.delete("", "v1", "pods", name, namespace=ns,
                                 preconditions={"uid": pod["metadata"]["uid"]})
        log.info("%s: deleted pod %s/%s", self.NAME, ns, name)


def _rfc3339(clock) -> str:
    return clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
