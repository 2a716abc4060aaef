"""NamespaceLifecycle (upstream ``plugin/pkg/admission/namespace/lifecycle``).

- Nothing new is created in a namespace that does not exist or is terminating (Events excepted,
  so that the deletion itself can be reported).
- The ``default``, ``kube-system`` and ``kube-public`` namespaces cannot be deleted.

Namespaces are read from a cache kept by a list and watch through the generic store (as upstream
reads an informer), so a create costs no read; a namespace the cache has not seen yet is read
from the store.
"""

from __future__ import annotations

import asyncio

from kubeling.api import errors

IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")


def terminating(ns: dict) -> bool:
    return bool(ns.get("metadata", {}).get("deletionTimestamp")) or \
        ns.get("status", {}).get("phase") == "Terminating"


class NamespaceLifecycle:
    NAME = "NamespaceLifecycle"

    def __init__(self, store, lookup) -> None:
        self.store = store
        self.lookup = lookup
        self.namespaces: dict[str, bool] = {}  # name -> terminating

    def handles(self, attrs) -> bool:
        if attrs.operation == "DELETE":
            return attrs.is_("", "namespaces")
        return attrs.operation == "CREATE" and attrs.served.res.namespaced

    async def validate(self, attrs) -> None:
        if attrs.operation == "DELETE":
            if attrs.name in IMMORTAL_NAMESPACES:
                raise errors.forbidden_status("namespaces", "", attrs.name, "this namespace may not be deleted")
            return
        ns = attrs.namespace
        is_terminating = self.namespaces.get(ns)
        if is_terminating is None:  # not seen by the cache yet: ask the store
            try:
                nsobj = await self.store.get_raw(self._served(), None, ns)
            except errors.StatusError as e:
                if e.code == 404:
                    raise errors.not_found("namespaces", "", ns) from None
                raise
            is_terminating = terminating(nsobj)
        if not is_terminating:
            return
        res = attrs.served.res
        if res.group in ("", "events.k8s.io") and res.resource == "events":
            return
        name = attrs.name
        raise errors.StatusError(403, "Forbidden", f"{res.group_resource} \"{name}\" is forbidden: unable to create new "
                                 f"content in namespace {ns} because it is being terminated",
                                 details={"name": name, "group": res.group, "kind": res.resource,
                                          "causes": [{"reason": "NamespaceTerminating",
                                                      "message": f"namespace {ns} is being terminated",
                                                      "field": "metadata.namespace"}]})

    def _served(self):
        return self.lookup("", "v1", "namespaces")

    async def run(self, stop: asyncio.Event) -> None:
        """Keep `namespaces` current (list, then watch; relist on 410)."""
        def replace(rv: int, items: list[dict]) -> None:
            self.namespaces = {o["metadata"]["name"]: terminating(o) for o in items}

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                self.namespaces.pop(obj["metadata"]["name"], None)
            else:
                self.namespaces[obj["metadata"]["name"]] = terminating(obj)
        await self.store.reflect(self._served(), replace, apply, what="namespace cache")
