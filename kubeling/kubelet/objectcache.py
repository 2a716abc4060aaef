"""`ObjectCache`: the agent's watch-based view of the ConfigMaps or Secrets its pods reference.

Upstream's kubelet ``util/manager`` watch-based manager, for one resource (``configmaps`` or
``secrets``). The agent never lists every Secret of the cluster: it watches exactly the objects
its pods name, one single-object LIST+WATCH (``fieldSelector=metadata.name=<name>`` in the
object's namespace) per referenced object::

    register_pod(pod) ──refs +1──▶ first reference: start a reflector task for (ns, name)
    unregister_pod(pod) ─refs -1─▶ last reference gone: cancel it, forget the object
    reflector: LIST ──▶ cache[(ns, name)] = object | None ──▶ WATCH from the list's RV ──▶ ...
                                   └──▶ on_change callbacks (namespace, name)

Contracts:

- References of a pod: volumes (``configMap``/``secret``, and the sources of ``projected``),
  ``env[].valueFrom.configMapKeyRef``/``secretKeyRef`` and ``envFrom`` of init, app and
  ephemeral containers, plus ``imagePullSecrets`` for secrets. ``register_pod`` is idempotent
  and replaces the pod's earlier references (a pod update may change them); pods are keyed by
  UID. ``unregister_pod`` takes the pod or its UID.
- ``await get(namespace, name)`` returns the cached object (a shared dict: never mutate it) or
  ``None`` when it does not exist. An object that no registered pod references raises
  `NotRegistered`; one whose first LIST has not answered within ``sync_timeout`` raises
  `NotSynced` (upstream waits one second, then fails the pod sync, which retries).
- The reflector never gives up: a watch that ends is re-opened from the last resourceVersion,
  410 Expired re-lists, any other failure re-lists after a jittered exponential backoff.
- ``on_change(callback)``: ``callback(namespace, name)`` (plain or async) runs after the cache
  took a change of content (a new resourceVersion, a deletion, an appearance), never for
  bookmarks or a re-list that found the same object. Exceptions in callbacks are logged.
- ``not_found_message(name)`` is upstream's wording for a missing object, with the singular
  resource as the kubelet's managers use it: ``configmap "x" not found``.
- ``close()`` cancels every reflector; the cache is unusable afterwards.

Concurrency: one event loop. The client is anything with `RESTClient`'s ``list`` and ``watch``
(`kubeling.client.fake.FakeClient` in unit tests).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

from kubeling.api.errors import StatusError
from kubeling.client.exceptions import ResourceExpired, TransportError
from kubeling.client.informer import Backoff

log = logging.getLogger(__name__)

SINGULAR = {"configmaps": "configmap", "secrets": "secret"}


class NotRegistered(LookupError):
    """No registered pod references the object (upstream: ``object "ns"/"name" not registered``)."""


class NotSynced(TimeoutError):
    """The object's first LIST did not answer in time."""


def _containers(spec: dict) -> Iterable[dict]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or ()


def references(pod: dict, resource: str) -> set[str]:
    """Names of the ``resource`` objects (configmaps|secrets) that ``pod`` refers to."""
    spec = pod.get("spec") or {}
    vol_key, proj_key = ("configMap", "configMap") if resource == "configmaps" else ("secret", "secret")
    env_key = "configMapKeyRef" if resource == "configmaps" else "secretKeyRef"
    from_key = "configMapRef" if resource == "configmaps" else "secretRef"
    names: set[str] = set()
    for vol in spec.get("volumes") or ():
        src = vol.get(vol_key)
        if src:
            # A secret volume names its object "secretName"; a configMap volume "name".
            names.add(src.get("secretName") if resource == "secrets" else src.get("name"))
        for source in (vol.get("projected") or {}).get("sources") or ():
            if source.get(proj_key):
                names.add(source[proj_key].get("name"))
    for c in _containers(spec):
        for env in c.get("env") or ():
            ref = (env.get("valueFrom") or {}).get(env_key)
            if ref:
                names.add(ref.get("name"))
        for env_from in c.get("envFrom") or ():
            if env_from.get(from_key):
                names.add(env_from[from_key].get("name"))
    if resource == "secrets":
        names.update(s.get("name") for s in spec.get("imagePullSecrets") or ())
    names.discard(None)
    names.discard("")
    return names


class _Item:
    """One watched object: its reflector task, reference count and cached value."""

    def __init__(self) -> None:
        self.refs = 0
        self.obj: dict | None = None
        self.synced = asyncio.Event()
        self.task: asyncio.Task | None = None


class ObjectCache:
    """The watch-based manager for one resource. See the module docstring for the contracts."""

    def __init__(self, client: Any, resource: str = "configmaps", *, sync_timeout: float = 1.0,
                 watch_timeout_seconds: int = 300) -> None:
        if resource not in SINGULAR:
            raise ValueError(f"ObjectCache serves configmaps or secrets, not {resource!r}")
        self.client = client
        self.resource = resource
        self.sync_timeout = sync_timeout
        self.watch_timeout_seconds = watch_timeout_seconds
        self._items: dict[tuple[str, str], _Item] = {}
        self._pods: dict[str, tuple[str, set[str]]] = {}   # uid -> (namespace, names)
        self._callbacks: list[Callable[[str, str], Any]] = []
        self._closed = False

    # -- references ------------------------------------------------------------------------------

    def register_pod(self, pod: dict) -> None:
        meta = pod.get("metadata") or {}
        uid, ns = meta.get("uid") or "", meta.get("namespace") or "default"
        new = references(pod, self.resource)
        _, old = self._pods.get(uid, (ns, set()))
        self._pods[uid] = (ns, new)
        # Add before removing: an object kept across the update never loses its watch.
        for name in new - old:
            self._ref(ns, name)
        for name in old - new:
            self._unref(ns, name)

    def unregister_pod(self, pod_or_uid: dict | str) -> None:
        uid = pod_or_uid if isinstance(pod_or_uid, str) else (pod_or_uid.get("metadata") or {}).get("uid") or ""
        ns, names = self._pods.pop(uid, ("", set()))
        for name in names:
            self._unref(ns, name)

    def registered(self) -> set[tuple[str, str]]:
        """The (namespace, name) pairs being watched, for tests and debugging."""
        return set(self._items)

    def _ref(self, ns: str, name: str) -> None:
        item = self._items.get((ns, name))
        if item is None:
            if self._closed:
                raise RuntimeError("ObjectCache is closed")
            item = self._items[(ns, name)] = _Item()
            item.task = asyncio.get_running_loop().create_task(self._reflect(ns, name, item),
                                                                name=f"objectcache {self.resource} {ns}/{name}")
        item.refs += 1

    def _unref(self, ns: str, name: str) -> None:
        item = self._items.get((ns, name))
        if item is None:
            return
        item.refs -= 1
        if item.refs <= 0:
            del self._items[(ns, name)]
            if item.task is not None:
                item.task.cancel()

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> dict | None:
        item = self._items.get((namespace, name))
        if item is None:
            raise NotRegistered(f'object "{namespace}"/"{name}" not registered')
        if not item.synced.is_set():
            try:
                await asyncio.wait_for(item.synced.wait(), self.sync_timeout)
            except TimeoutError:
                raise NotSynced(f"failed to sync {SINGULAR[self.resource]} cache: timed out waiting for the "
                                "condition") from None
        return item.obj

    def not_found_message(self, name: str) -> str:
        return f'{SINGULAR[self.resource]} "{name}" not found'

    def on_change(self, callback: Callable[[str, str], Any]) -> None:
        self._callbacks.append(callback)

    async def close(self) -> None:
        self._closed = True
        tasks = [i.task for i in self._items.values() if i.task is not None]
        self._items.clear()
        self._pods.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the reflector ---------------------------------------------------------------------------

    async def _reflect(self, ns: str, name: str, item: _Item) -> None:
        backoff = Backoff()
        selector = f"metadata.name={name}"
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listed = await self.client.list("", "v1", self.resource, namespace=ns, field_selector=selector)
                    rv = (listed.get("metadata") or {}).get("resourceVersion") or None
                    items = listed.get("items") or []
                    self._store(ns, name, item, items[0] if items else None)
                    item.synced.set()
                opened = asyncio.get_running_loop().time()
                async with self.client.watch("", "v1", self.resource, namespace=ns, field_selector=selector,
                                             resource_version=rv,
                                             timeout_seconds=self.watch_timeout_seconds) as watch:
                    async for typ, obj in watch:
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if typ in ("ADDED", "MODIFIED"):
                            self._store(ns, name, item, obj)
                        elif typ == "DELETED":
                            self._store(ns, name, item, None)
                backoff.reset()
                if asyncio.get_running_loop().time() - opened < 1.0:
                    # A watch that ends at once (a server refusing long requests) must not spin.
                    await asyncio.sleep(backoff.next())
            except asyncio.CancelledError:
                raise
            except ResourceExpired:
                rv = None  # too old: re-list
            except (StatusError, TransportError, OSError, ValueError) as e:
                log.info("objectcache %s %s/%s: %s; re-listing", self.resource, ns, name, e)
                rv = None
                await asyncio.sleep(backoff.next())
            except Exception:
                log.exception("objectcache %s %s/%s failed; re-listing", self.resource, ns, name)
                rv = None
                await asyncio.sleep(backoff.next())

    def _store(self, ns: str, name: str, item: _Item, obj: dict | None) -> None:
        if self._items.get((ns, name)) is not item:
            return  # unregistered while the answer was in flight
        old = item.obj
        item.obj = obj
        old_rv = (old or {}).get("metadata", {}).get("resourceVersion") if old is not None else None
        new_rv = (obj or {}).get("metadata", {}).get("resourceVersion") if obj is not None else None
        if (old is None) == (obj is None) and old_rv == new_rv:
            return
        if not item.synced.is_set():
            return  # the first list is the initial state, not a change
        for cb in list(self._callbacks):
            try:
                res = cb(ns, name)
                if inspect.isawaitable(res):
                    asyncio.ensure_future(self._await_callback(res))
            except Exception:
                log.exception("objectcache %s on_change callback failed", self.resource)

    @staticmethod
    async def _await_callback(aw: Any) -> None:
        try:
            await aw
        except Exception:
            log.exception("objectcache on_change callback failed")
