"""Namespace controller: empties a Terminating namespace, then finalizes it.

Upstream's ``pkg/controller/namespace``. The key is a namespace name; a namespace is enqueued
when the informer shows it with a ``deletionTimestamp``. ``sync``:

1. skips a namespace that is gone, not terminating, or already without the ``kubernetes``
   finalizer in ``spec.finalizers``;
2. deletes every namespaced object in it, over every resource discovery lists (so custom
   resources too), with background propagation; ``events.k8s.io`` events are the core events
   under another name and are skipped;
3. while objects remain (held by their finalizers or still terminating) it records upstream's
   conditions — ``NamespaceContentRemaining`` and ``NamespaceFinalizersRemaining`` — and looks
   again after `RECHECK_SECONDS`; a failed delete records ``NamespaceDeletionContentFailure``
   and raises (the queue retries with backoff);
4. once nothing is left, removes ``kubernetes`` through the ``finalize`` subresource; with no
   finalizer left the API server deletes the namespace.

Every step is idempotent, so a retry or a second worker's late sync does no harm.
"""

from __future__ import annotations

import copy

from kubeling.client import StatusError, is_conflict, is_not_found
from kubeling.client.discovery import discover
from kubeling.controllers.base import Controller, ControllerContext

FINALIZER = "kubernetes"
RECHECK_SECONDS = 2.0


class NamespaceController(Controller):
    NAME = "namespace"
    WORKERS = 10  # upstream's --concurrent-namespace-syncs default

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer_for("", "v1", "namespaces")
        self.handle(self.namespaces, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))

    def _enqueue(self, ns: dict) -> None:
        if ns["metadata"].get("deletionTimestamp"):
            self.queue.add(ns["metadata"]["name"])

    async def sync(self, name: str) -> None:
        ns = self.namespaces.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        try:
            remaining, finalizers = await self._delete_content(name)
        except StatusError as e:
            await self._set_conditions(ns, [("NamespaceDeletionContentFailure", "ContentDeletionFailed", e.message)])
            raise
        if remaining:
            conds = [("NamespaceContentRemaining", "SomeResourcesRemain", "Some resources are remaining: " + ", ".join(
                f"{r} has {n} resource instances" for r, n in sorted(remaining.items())))]
            if finalizers:
                conds.append(("NamespaceFinalizersRemaining", "SomeFinalizersRemain",
                              "Some content in the namespace has finalizers remaining: " + ", ".join(
                                  f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))))
            await self._set_conditions(ns, conds)
            self.queue.add_after(name, RECHECK_SECONDS)
            return
        try:
            fresh = await self.client.get("", "v1", "namespaces", name)
        except StatusError as e:
            if is_not_found(e):
                return
            raise
        spec = fresh.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
        await self.client.update("", "v1", "namespaces", fresh, subresource="finalize")

    async def _delete_content(self, namespace: str) -> tuple[dict[str, int], dict[str, int]]:
        """Delete everything in the namespace; return what is left: ({resource: count}, {finalizer: count})."""
        remaining: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        for r in await discover(self.client):
            if not r.namespaced or "list" not in r.verbs or "delete" not in r.verbs:
                continue
            if r.group == "events.k8s.io":
                continue
            items = (await self.client.list(r.group, r.version, r.resource, namespace=namespace)).get("items") or []
            if not items:
                continue
            for item in items:
                if item["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.client.delete(r.group, r.version, r.resource, item["metadata"]["name"],
                                             namespace=namespace, propagation_policy="Background")
                except StatusError as e:
                    if not (is_not_found(e) or is_conflict(e)):
                        raise
            left = (await self.client.list(r.group, r.version, r.resource, namespace=namespace)).get("items") or []
            if left:
                remaining[f"{r.resource}.{r.group}" if r.group else r.resource] = len(left)
                for item in left:
                    for f in item["metadata"].get("finalizers") or []:
                        finalizers[f] = finalizers.get(f, 0) + 1
        return remaining, finalizers

    async def _set_conditions(self, ns: dict, wanted: list[tuple[str, str, str]]) -> None:
        """Set each ``(type, reason, message)`` condition to True in one status write (none if unchanged)."""
        new = copy.deepcopy(ns)  # the cached object is shared: change a copy
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        now = self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        changed = False
        for ctype, reason, message in wanted:
            cur = next((c for c in conds if c.get("type") == ctype), None)
            if cur is None:
                conds.append({"type": ctype, "status": "True", "reason": reason, "message": message,
                              "lastTransitionTime": now})
            elif (cur.get("status"), cur.get("reason"), cur.get("message")) != ("True", reason, message):
                if cur.get("status") != "True":
                    cur["lastTransitionTime"] = now  # a transition is a change of status, not of message
                cur.update(status="True", reason=reason, message=message)
            else:
                continue
            changed = True
        if not changed:
            return
        try:
            await self.client.update_status("", "v1", "namespaces", new)
        except StatusError as e:
            if not (is_not_found(e) or is_conflict(e)):  # a conflict: the next round writes them
                raise
