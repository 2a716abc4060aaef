"""Nodes (upstream ``pkg/registry/core/node``): cluster-scoped; the agent reports status at
registration, so a new Node keeps the status it was created with. ``nodes/<name>/proxy``
reaches the node agent's HTTPS server (`NodeProxyREST`)."""

from kubeling.api import errors, fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver import proxy
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class NodeProxyREST:
    """``nodes/<name>[:port]/proxy/<path>``: any path of the node agent's HTTPS server (a port in
    the name overrides the node's kubelet port), through `kubeling.apiserver.proxy`. The agent
    client is ``deps.kubelet``; without one the answer is 503."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.deps = deps

    async def connect(self, served, namespace, name, request, info):
        node_name = info.proxy_name or info.name
        node = await self.store.get(served, None, node_name)  # 404 for a node that does not exist
        client = getattr(self.deps, "kubelet", None)
        if client is None:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f"the API server has no client for node agents (node {node_name})",
                                     details={"name": node_name, "kind": "nodes"})
        host, port = proxy.node_location(node)
        if info.proxy_port:
            port = int(info.proxy_port)
        return await proxy.relay(request, client, host, port, info.proxy_path or "/", request.query_string)


class NodeStrategy(Strategy):
    group, resource, kind = "", "nodes", "Node"
    namespaced = False
    printer = printers.NODE
    field_set = fields.NODE
    status_subresource = True
    reset_status_on_create = False
    subresources = {**status_subresources(), "proxy": NodeProxyREST}

    def defaults(self, obj):
        defaults.set_object_defaults_node(obj)

    def validate(self, obj):
        return validation.validate_node(obj)
