"""`Scope`: what the resource handlers use, passed explicitly (upstream's ``RequestScope``).

The handlers never see the server object: they get the request, its `RequestInfo`, the `Served`
version it addresses, and this scope — the generic store, the REST objects of subresources and
store-less resources (built once per server with the `rest.Deps` they need), and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeling.apiserver.registry.generic import GenericStore
from kubeling.apiserver.registry.rest import Deps


@dataclass
class Scope:
    store: GenericStore
    deps: Deps
    metrics: Any = None
    cacher: Any = None
    _rest: dict = field(default_factory=dict)

    def rest(self, cls: type) -> Any:
        """The one instance of a subresource / store-less REST class for this server."""
        inst = self._rest.get(cls)
        if inst is None:
            inst = self._rest[cls] = cls(self.deps)
        return inst
