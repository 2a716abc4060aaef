"""An API server in the test's own process, over the in-memory store: the seam for registry,
admission, subresource and endpoint tests that run in milliseconds.

``api_server()`` builds an `APIServer` on a `MemoryStore` and runs what ``kubeling server`` runs
before serving (the watch cache, CRDs, allocator repair, bootstrap objects, APIService
registration), without listeners or controllers. ``http(api)`` serves it on loopback through aiohttp's test server
(plain HTTP, the development-only insecure mode, so every request is ``system:admin``).
"""

from __future__ import annotations

import contextlib

from aiohttp.test_utils import TestClient, TestServer

from kubeling.apiserver.aggregator import Aggregator
from kubeling.apiserver.app import APIServer
from kubeling.apiserver.cacher import Cacher
from kubeling.apiserver.crd import CRDController
from kubeling.apiserver.registry import Context
from kubeling.api.errors import StatusError
from kubeling.apiserver.server import SYSTEM_NAMESPACES, bootstrap
from kubeling.storage.memory import MemoryStore

ADMIN = Context(user="system:admin", groups=("system:masters", "system:authenticated"), field_manager="test")


async def api_server(**kwargs) -> APIServer:
    store = MemoryStore()
    cacher = Cacher(store)
    await cacher.start()
    api = APIServer(store, **kwargs)
    api.scope.cacher = cacher
    cacher.on_decode_error = api.report_undecodable
    await CRDController(api).start()
    await api.strategies[("", "services")].repair(api.registry, api.lookup("", "v1", "services"))
    await bootstrap(api)
    api.aggregator = Aggregator(api)
    await api.aggregator.start()
    await default_service_accounts(api)
    api.ready = True
    return api


async def default_service_accounts(api: APIServer, namespaces=None) -> None:
    """The ``default`` ServiceAccount the controller manager would make in each namespace: the
    ServiceAccount admission plugin refuses pods whose account does not exist."""
    served = api.lookup("", "v1", "serviceaccounts")
    for ns in namespaces or SYSTEM_NAMESPACES:
        try:
            await api.registry.create(served, {"apiVersion": "v1", "kind": "ServiceAccount",
                                               "metadata": {"name": "default", "namespace": ns}},
                                      ctx(ns))
        except StatusError as e:
            if e.code != 409:
                raise


def ctx(namespace: str | None = None, **kwargs) -> Context:
    fields = {**ADMIN.__dict__, "warnings": [], "audit_annotations": {}, "namespace": namespace, **kwargs}
    return Context(**fields)


@contextlib.asynccontextmanager
async def http(api: APIServer):
    client = TestClient(TestServer(api.build_app(insecure=True), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
