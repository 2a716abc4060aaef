"""Root CA certificate publisher: every active namespace has the ``kube-root-ca.crt`` ConfigMap.

Upstream's ``pkg/controller/certificates/rootcacertpublisher``. The ConfigMap carries the
cluster CA (``ca.crt``) so that pods can verify the API server; the key is a namespace name.
Handlers:

- a namespace added or updated enqueues itself;
- the ConfigMap added, changed or deleted enqueues its namespace, so it is checked, repaired or
  recreated.

``sync(namespace)`` creates the ConfigMap when missing, and puts back the CA and the description
annotation when someone changed them; other fields (labels, other annotations) are left alone.
A namespace that is gone or terminating needs nothing. The ConfigMap informer is a
``metadata.name=kube-root-ca.crt`` one: one object per namespace in the cache.
With no CA in the context there is nothing to publish and the controller stays idle.
"""

from __future__ import annotations

import copy
import logging

from kubeling.client import is_already_exists, is_forbidden, is_not_found, object_of
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

ROOT_CA = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")
MANAGER = "kube-controller-manager"


class RootCACertPublisher(Controller):
    NAME = "root-ca-cert-publisher"
    WORKERS = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ca_pem = ctx.ca_pem
        if not self.ca_pem:
            log.warning("%s: no cluster CA in the kubeconfig; %s is not published", self.NAME, ROOT_CA)
        self.namespaces = ctx.informers.informer_for("", "v1", "namespaces")
        self.configmaps = ctx.informers.informer_for("", "v1", "configmaps", field_selector=f"metadata.name={ROOT_CA}")
        self.handle(self.namespaces, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))
        self.handle(self.configmaps, on_add=self._enqueue_cm, on_update=lambda old, new: self._enqueue_cm(new),
                    on_delete=lambda o: self._enqueue_cm(object_of(o)))

    def _enqueue(self, ns: dict) -> None:
        self.queue.add(ns["metadata"]["name"])

    def _enqueue_cm(self, cm: dict) -> None:
        self.queue.add(cm["metadata"]["namespace"])

    def _wanted(self) -> dict:
        return {"ca.crt": self.ca_pem}

    async def sync(self, namespace: str) -> None:
        if not self.ca_pem:
            return
        ns = self.namespaces.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        cm = self.configmaps.get(f"{namespace}/{ROOT_CA}")
        try:
            if cm is None:
                await self.client.create("", "v1", "configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA, "namespace": namespace,
                                 "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                    "data": self._wanted()}, namespace=namespace, field_manager=MANAGER)
                return
            annotations = cm["metadata"].get("annotations") or {}
            if cm.get("data") == self._wanted() and annotations.get(DESCRIPTION_ANNOTATION):
                return
            fixed = copy.deepcopy(cm)  # the cached object is shared: change a copy
            fixed["data"] = self._wanted()
            fixed["metadata"].setdefault("annotations", {})[DESCRIPTION_ANNOTATION] = DESCRIPTION
            await self.client.update("", "v1", "configmaps", fixed, namespace=namespace, field_manager=MANAGER)
        except Exception as e:
            # AlreadyExists: the cache is behind; its add event enqueues the namespace again. 404/403: the
            # namespace went away. Anything else (a 409 Conflict included) is retried.
            if is_already_exists(e) or is_not_found(e) or is_forbidden(e):
                return
            raise
