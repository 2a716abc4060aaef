"""Subresource storage: what a ``<resource>/<subresource>`` endpoint can do.

Upstream gives each subresource a REST storage object implementing some of ``rest.Getter``,
``rest.Updater``, ``rest.Creater`` and ``rest.Connecter``; the generic HTTP handlers call
whichever the object has and answer 405 for the rest. The same here: a subresource class
(listed in its resource's ``Strategy.subresources``) is built once per server with the `Deps`
it uses, and implements any of::

    async def get(served, namespace, name, ctx) -> dict                       # GET
    async def put(served, namespace, name, body, ctx) -> (dict, created)       # PUT
    async def patch(served, namespace, name, ptype, doc, ctx, force) -> (dict, created)  # PATCH
    async def create(served, namespace, name, body, ctx) -> (dict, status)     # POST
    async def connect(served, namespace, name, request) -> web.StreamResponse  # streams, proxy

``served`` is the version the client addressed; returned objects are in that version (or are
the subresource's own kind: a Scale, a Status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kubeling.apiserver.resources import Served

READ_VERBS = {"get": "get"}
WRITE_VERBS = {"update": "put", "patch": "patch", "create": "create"}


@dataclass
class Deps:
    """What subresources may use: the generic store, a lookup of served resources (for a
    subresource that touches another resource, as eviction touches PodDisruptionBudgets), and the
    authorizer (for access reviews)."""

    store: Any
    lookup: Callable[[str, str, str], Served | None]
    authorizer: Any = None
    kubelet: Any = None        # proxy.KubeletClient: how pods/log, exec, nodes/proxy reach agents


def method_for(verb: str) -> str:
    """The REST method name a request verb maps to (``update`` → ``put``)."""
    return WRITE_VERBS.get(verb, READ_VERBS.get(verb, "connect"))
