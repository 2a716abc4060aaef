"""Namespace controller: empties a Terminating namespace, then finalizes it.

When a namespace has a ``deletionTimestamp``, ``sync`` deletes every namespaced resource in it
(discovered from the server, so custom resources are included), sets upstream's status
conditions (``NamespaceDeletionDiscoveryFailure``, ``NamespaceDeletionContentFailure``,
``NamespaceContentRemaining``, ``NamespaceFinalizersRemaining``), and once nothing is left removes
the ``kubernetes`` finalizer through the ``finalize`` subresource; the API server then deletes
the namespace. Objects held by finalizers keep the namespace Terminating; the key is requeued.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

from kubeling.api.errors import StatusError
from kubeling.client.discovery import discover
from kubeling.client.informer import Informer
from kubeling.client.workqueue import RateLimitingQueue
from kubeling.controllers.base import run_controller

NAME = "namespace"
FINALIZER = "kubernetes"
RECHECK_SECONDS = 2.0


async def run(ctx, stop: asyncio.Event) -> None:
    client = ctx.client
    namespaces = Informer(client, "", "v1", "namespaces")
    queue = RateLimitingQueue(name=NAME)

    def enqueue(obj: dict) -> None:
        if obj["metadata"].get("deletionTimestamp"):
            queue.add(obj["metadata"]["name"])

    namespaces.add_handler(on_add=enqueue, on_update=lambda old, new: enqueue(new))

    async def sync(name: str) -> None:
        ns = namespaces.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        try:
            remaining = await _delete_content(client, name)
        except StatusError as e:
            await _set_condition(client, ns, "NamespaceDeletionContentFailure", "True", "ContentDeletionFailed",
                                 e.message)
            raise
        if remaining:
            await _set_condition(client, ns, "NamespaceContentRemaining", "True", "SomeResourcesRemain",
                                 "Some resources are remaining: " + ", ".join(
                                     f"{r} has {n} resource instances" for r, n in sorted(remaining.items())))
            queue.add_after(name, RECHECK_SECONDS)
            return
        fresh = await client.get("", "v1", "namespaces", name)
        spec = fresh.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
        await client.update("", "v1", "namespaces", fresh, subresource="finalize")

    await run_controller(NAME, [namespaces], queue, sync, stop)


async def _delete_content(client, namespace: str) -> dict[str, int]:
    """Delete everything in the namespace; returns {resource: count} of what is still there."""
    remaining: dict[str, int] = {}
    for r in await discover(client):
        if not r.namespaced or "list" not in r.verbs or "delete" not in r.verbs:
            continue
        if r.group == "events.k8s.io":
            continue  # the same objects as core events
        lst = await client.list(r.group, r.version, r.resource, namespace=namespace)
        items = lst.get("items") or []
        if not items:
            continue
        for item in items:
            if item["metadata"].get("deletionTimestamp"):
                continue
            try:
                await client.delete(r.group, r.version, r.resource, item["metadata"]["name"], namespace=namespace,
                                    propagation_policy="Background")
            except StatusError as e:
                if e.code not in (404, 409):
                    raise
        left = await client.list(r.group, r.version, r.resource, namespace=namespace)
        if left.get("items"):
            remaining[f"{r.resource}.{r.group}" if r.group else r.resource] = len(left["items"])
    return remaining


async def _set_condition(client, ns: dict, ctype: str, status: str, reason: str, message: str) -> None:
    new = copy.deepcopy(ns)
    conds = new.setdefault("status", {}).setdefault("conditions", [])
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for c in conds:
        if c.get("type") == ctype:
            if (c.get("status"), c.get("reason"), c.get("message")) == (status, reason, message):
                return
            c.update(status=status, reason=reason, message=message, lastTransitionTime=now)
            break
    else:
        conds.append({"type": ctype, "status": status, "reason": reason, "message": message,
                      "lastTransitionTime": now})
    try:
        await client.update_status("", "v1", "namespaces", new)
    except StatusError as e:
        if e.code not in (404, 409):
            raise
