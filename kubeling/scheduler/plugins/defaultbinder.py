"""DefaultBinder (Bind): binds the pod by POSTing a ``Binding`` to ``pods/<name>/binding``.

The API server sets ``spec.nodeName`` and the ``PodScheduled`` condition in one write; a pod that
was deleted or already bound meanwhile answers 404/409, which is returned as an Error status so
the framework unreserves (forgets the assumed pod) and requeues.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import CycleState, Plugin, Status


def binding_for(pod: dict, node_name: str) -> dict:
    meta = pod.get("metadata") or {}
    binding_meta = {"namespace": meta.get("namespace"), "name": meta.get("name")}
    if meta.get("uid"):
        # The UID precondition: a pod deleted and re-created under the same name is not bound.
        binding_meta["uid"] = meta["uid"]
    return {"apiVersion": "v1", "kind": "Binding", "metadata": binding_meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}


class DefaultBinder(Plugin):
    NAME = "DefaultBinder"

    async def bind(self, state: CycleState, pod: dict, node_name: str) -> Status | None:
        meta = pod.get("metadata") or {}
        try:
            await self.handle.client.create("", "v1", "pods", binding_for(pod, node_name),
                                            namespace=meta.get("namespace"), name=meta.get("name"),
                                            subresource="binding")
        except Exception as e:  # noqa: BLE001 - any API failure becomes the bind's Error status
            return Status.as_error(e)
        return None
