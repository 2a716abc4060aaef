"""ServiceAccount controller: every active namespace has a ``default`` ServiceAccount, and the
``kube-root-ca.crt`` ConfigMap carrying the cluster CA (upstream's root-CA publisher)."""

from __future__ import annotations

import asyncio

from kubeling.api.errors import StatusError
from kubeling.client.informer import Informer
from kubeling.client.workqueue import RateLimitingQueue
from kubeling.controllers.base import run_controller

NAME = "serviceaccount"
ROOT_CA = "kube-root-ca.crt"


async def run(ctx, stop: asyncio.Event) -> None:
    client = ctx.client
    namespaces = Informer(client, "", "v1", "namespaces")
    queue = RateLimitingQueue(name=NAME)
    namespaces.add_handler(on_add=lambda o: queue.add(o["metadata"]["name"]),
                           on_update=lambda old, new: queue.add(new["metadata"]["name"]))
    ca_pem = ctx.ca_pem

    async def sync(ns: str) -> None:
        obj = namespaces.get(ns)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        await _ensure(client, "serviceaccounts", ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": "default", "namespace": ns}})
        if ca_pem:
            await _ensure(client, "configmaps", ns, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA, "namespace": ns,
                             "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used "
                                             "to verify the kube-apiserver when using internal endpoints such as "
                                             "the internal service IP or kubernetes.default.svc. No other usage "
                                             "is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": ca_pem}})

    await run_controller(NAME, [namespaces], queue, sync, stop)


async def _ensure(client, resource: str, ns: str, obj: dict) -> None:
    try:
        await client.create("", "v1", resource, obj, namespace=ns, field_manager="kube-controller-manager")
    except StatusError as e:
        if e.code == 409:  # AlreadyExists
            return
        if e.code in (403, 404):  # namespace going away
            return
        raise

