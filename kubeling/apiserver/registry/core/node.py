"""Nodes (upstream ``pkg/registry/core/node``): cluster-scoped; the agent reports status at
registration, so a new Node keeps the status it was created with. ``nodes/<name>/proxy``
reaches the node agent, which arrives with issue 4: until then it answers 503."""

from kubeling.api import errors, fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy
from kubeling.apiserver.registry.subresources import status_subresources


class NodeProxyREST:
    """``nodes/<name>[:port]/proxy/<path>``: the node agent's HTTP server, through the API server."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def connect(self, served, namespace, name, request, info):
        node_name = info.proxy_name or info.name
        await self.store.get(served, None, node_name)  # 404 for a node that does not exist
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"the node agent of node {node_name} does not serve proxy requests yet",
                                 details={"name": node_name, "kind": "nodes"})


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
