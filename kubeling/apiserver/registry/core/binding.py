"""The older ``bindings`` collection (``POST /api/v1/namespaces/<ns>/bindings``): binds the pod
named in the Binding's metadata, exactly as ``pods/<name>/binding`` does."""

from kubeling.api import errors
from kubeling.apiserver.registry.core.pod import BindingREST
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy


class BindingsREST:
    def __init__(self, deps: Deps) -> None:
        self.lookup = deps.lookup
        self.binding = BindingREST(deps)

    async def create(self, served, namespace, name, body, ctx):
        meta = body.get("metadata") if isinstance(body, dict) else None
        pod_name = meta.get("name") if isinstance(meta, dict) else None
        if not pod_name:
            raise errors.invalid("Binding", "", "", [errors.required("metadata.name")])
        return await self.binding.create(self.lookup("", "v1", "pods"), namespace, pod_name, body, ctx)


class BindingStrategy(Strategy):
    group, resource, kind = "", "bindings", "Binding"
    rest = BindingsREST
