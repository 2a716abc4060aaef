"""The StatefulSet controller (upstream's ``pkg/controller/statefulset``).

::

    statefulsets ─┐
    pods ─────────┼─handlers─▶ queue of set keys ─▶ sync(key) ─▶ StatefulSetControl.update_stateful_set
    (revisions, claims: read as listers)

The package, as upstream splits it:

- `stateful_set_utils`: identity, storage, revisions, the retention policy's claim owners;
- `stateful_pod_control`: the writes (pods, claims) and their Events;
- `stateful_set_control`: one reconcile — ordering, scale-down, rolling update, status.

Handlers: a pod event enqueues the set that controls it (its controller reference, checked
against the cached set's UID), or, for an orphan, every set whose selector matches it (which
may adopt it). ``sync`` claims the pods whose labels match the selector *and* whose name is
``<set>-<ordinal>`` (upstream's ``isMemberOf``), and the set's ControllerRevisions, adopting
orphans and releasing what no longer matches — never while the set is being deleted.

A set with a selector that cannot be parsed records a Warning Event and is not retried (its
spec must change first); every other failure is raised, so the queue retries that key with
backoff and the other sets go on.
"""

from __future__ import annotations

import logging

from kubeling.api.labels import SelectorError, from_label_selector
from kubeling.client import is_not_found
from kubeling.client.events import WARNING
from kubeling.client.store import object_of, split_meta_namespace_key
from kubeling.controllers.base import Controller, ControllerContext, key_of
from kubeling.controllers.controller_utils import claim_objects, get_controller_of
from kubeling.controllers.statefulset import stateful_set_utils as u
from kubeling.controllers.statefulset.stateful_pod_control import StatefulPodControl
from kubeling.controllers.statefulset.stateful_set_control import StatefulSetControl

log = logging.getLogger(__name__)

COMPONENT = "statefulset-controller"


class StatefulSetController(Controller):
    NAME = "statefulset"
    WORKERS = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        inf = ctx.informers
        self.sets = inf.informer_for("apps", "v1", "statefulsets")
        self.pods = inf.informer_for("", "v1", "pods")
        self.revisions = inf.informer_for("apps", "v1", "controllerrevisions")
        self.claims = inf.informer_for("", "v1", "persistentvolumeclaims")
        self.recorder = ctx.recorder(COMPONENT)
        self.pod_control = StatefulPodControl(self.client, self.recorder, self.claims.indexer)
        self.control = StatefulSetControl(self.client, self.pod_control, self.recorder, self.clock)
        self.handle(self.sets, self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        self.handle(self.pods, self._pod_added, self._pod_updated, self._pod_deleted)
        self.handle(self.revisions)
        self.handle(self.claims)

    # -- handlers ------------------------------------------------------------------------------

    def _enqueue(self, obj) -> None:
        self.queue.add(key_of(object_of(obj)))

    def _set_of(self, pod: dict, ref: dict) -> dict | None:
        if ref.get("kind") != "StatefulSet":
            return None
        sts = self.sets.indexer.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if sts is None or sts["metadata"].get("uid") != ref.get("uid"):
            return None
        return sts

    def _sets_selecting(self, pod: dict) -> list[dict]:
        out = []
        labels = pod["metadata"].get("labels") or {}
        for sts in self.sets.indexer.by_namespace(pod["metadata"].get("namespace") or ""):
            try:
                sel = from_label_selector((sts.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if not sel.empty and sel.matches(labels):
                out.append(sts)
        return out

    def _pod_added(self, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        ref = get_controller_of(pod)
        if ref is not None:
            sts = self._set_of(pod, ref)
            if sts is not None:
                self._enqueue(sts)
            return
        for sts in self._sets_selecting(pod):
            self._enqueue(sts)

    def _pod_updated(self, old: dict, new: dict) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        old_ref, new_ref = get_controller_of(old), get_controller_of(new)
        if old_ref is not None and (new_ref is None or old_ref.get("uid") != new_ref.get("uid")):
            sts = self._set_of(old, old_ref)
            if sts is not None:
                self._enqueue(sts)
        if new_ref is not None:
            sts = self._set_of(new, new_ref)
            if sts is not None:
                self._enqueue(sts)
            return
        if (old["metadata"].get("labels") != new["metadata"].get("labels")) or new_ref is None:
            for sts in self._sets_selecting(new):
                self._enqueue(sts)

    def _pod_deleted(self, obj) -> None:
        pod = object_of(obj)
        ref = get_controller_of(pod)
        if ref is not None:
            sts = self._set_of(pod, ref)
            if sts is not None:
                self._enqueue(sts)

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, key) -> None:
        sts = self.sets.indexer.get(key)
        if sts is None:
            return
        namespace, name = split_meta_namespace_key(key)
        raw_selector = (sts.get("spec") or {}).get("selector")
        try:
            selector = from_label_selector(raw_selector)
        except SelectorError as e:
            self.recorder.event(sts, WARNING, "InvalidSelector", f"Invalid selector: {e}")
            return
        if selector.empty:
            self.recorder.event(sts, WARNING, "SelectingAll",
                                "This StatefulSet is selecting all pods. A non-empty selector is required.")
            return

        async def can_adopt() -> bool:
            try:
                fresh = await self.client.get("apps", "v1", "statefulsets", name, namespace=namespace)
            except Exception as e:
                if is_not_found(e):
                    return False
                raise
            return fresh["metadata"].get("uid") == sts["metadata"].get("uid") and \
                not fresh["metadata"].get("deletionTimestamp")

        pods = await claim_objects(self.client, sts, self.pods.indexer.by_namespace(namespace), raw_selector,
                                   group="", version="v1", resource="pods", api_version="apps/v1",
                                   kind="StatefulSet", can_adopt=can_adopt,
                                   extra_filter=lambda p: u.is_member_of(sts, p))
        revisions = await claim_objects(self.client, sts, self.revisions.indexer.by_namespace(namespace),
                                        raw_selector, group="apps", version="v1", resource="controllerrevisions",
                                        api_version="apps/v1", kind="StatefulSet", can_adopt=can_adopt)
        outcome = await self.control.update_stateful_set(sts, pods, revisions)
        if outcome.wait_for_available:
            # a Ready pod becomes available minReadySeconds later, with no event to wake us
            self.queue.add_after(key, float(u.min_ready_seconds(sts)))
