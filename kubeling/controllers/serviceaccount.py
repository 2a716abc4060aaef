"""ServiceAccount controller: every active namespace has a ``default`` ServiceAccount.

Upstream's ``pkg/controller/serviceaccount``. The key is a namespace name. Handlers:

- a namespace added or updated enqueues itself;
- a ``default`` ServiceAccount deleted enqueues its namespace, so it is recreated.

``sync(namespace)`` skips namespaces that are gone or terminating, and creates ``default`` when
the ServiceAccount cache does not have it. ``AlreadyExists`` means another writer won, and a
namespace that went away meanwhile (404, or 403 ``NamespaceTerminating``) needs nothing: both
are success. The ServiceAccount informer is a ``metadata.name=default`` one, so the cache holds
one object per namespace, not every ServiceAccount.
"""

from __future__ import annotations

from kubeling.client import is_already_exists, is_forbidden, is_not_found, object_of
from kubeling.controllers.base import Controller, ControllerContext

DEFAULT = "default"
MANAGER = "kube-controller-manager"


class ServiceAccountsController(Controller):
    NAME = "serviceaccount"
    WORKERS = 5  # upstream's --concurrent-serviceaccount-token-syncs default

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer_for("", "v1", "namespaces")
        self.accounts = ctx.informers.informer_for("", "v1", "serviceaccounts",
                                                   field_selector=f"metadata.name={DEFAULT}")
        self.handle(self.namespaces, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        self.handle(self.accounts, on_delete=lambda o: self.queue.add(object_of(o)["metadata"]["namespace"]))

    def _enqueue(self, ns: dict) -> None:
        self.queue.add(ns["metadata"]["name"])

    async def sync(self, namespace: str) -> None:
        ns = self.namespaces.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.accounts.get(f"{namespace}/{DEFAULT}") is not None:
            return
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT, "namespace": namespace}}
        try:
            await self.client.create("", "v1", "serviceaccounts", sa, namespace=namespace, field_manager=MANAGER)
        except Exception as e:
            if is_already_exists(e) or is_not_found(e) or is_forbidden(e):
                return  # someone else made it, or the namespace is going away
            raise
