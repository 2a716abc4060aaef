"""The ``status`` subresource: GET returns the object; PUT and PATCH change only ``.status``
(the strategy's ``prepare_for_status_update`` keeps the rest), as upstream's StatusREST."""

from __future__ import annotations

import dataclasses

from kubeling.apiserver.registry.patch import patch_object
from kubeling.apiserver.registry.rest import Deps


class StatusREST:
    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def get(self, served, namespace, name, ctx) -> dict:
        return await self.store.get(served, namespace, name)

    async def put(self, served, namespace, name, body, ctx) -> tuple[dict, bool]:
        return await self.store.update(served, namespace, name, body, dataclasses.replace(ctx, subresource="status"))

    async def patch(self, served, namespace, name, ptype, doc, ctx, force) -> tuple[dict, bool]:
        return await patch_object(self.store, served, namespace, name, ptype, doc,
                                  dataclasses.replace(ctx, subresource="status"), force)
