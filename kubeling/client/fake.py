"""`FakeClient`: an in-memory API server for tests (client-go's ``kubernetes/fake`` + ``testing``).

A **test seam only**: controllers, informers and the leader elector take anything with
`RESTClient`'s verbs, so a test hands them a ``FakeClient`` and runs in milliseconds, with no
server, no sockets and no sleeps. It is not a second API server: there is no validation, no
defaulting, no admission beyond what is listed below, and no server-side apply.

What it keeps of the API server's behaviour (the parts controllers depend on):

- Objects live in an `ObjectTracker` keyed by ``(group, resource)`` and ``namespace/name``.
  One global counter is the ``resourceVersion``; every write bumps it. Create fills ``uid``,
  ``resourceVersion``, ``creationTimestamp`` (from the injectable clock), ``generation`` and
  ``generateName``; ``apiVersion``/``kind`` come from the resource table (``kinds.BUILTIN``, or
  the ``resources`` given, so CRDs can be added).
- Errors are `StatusError`s with upstream's code, reason and message: 404 ``NotFound``, 409
  ``AlreadyExists``, 409 ``Conflict`` (stale ``resourceVersion`` on update/patch, failed delete
  preconditions), 403 for a create in a terminating namespace, 404 for a create in a missing
  namespace (upstream's NamespaceLifecycle admission).
- ``update`` keeps the server's fields (uid, creationTimestamp, deletionTimestamp); for a resource
  with a ``status`` subresource the main resource keeps the old status and ``status`` keeps the
  old everything-else but labels and annotations (as the server); ``namespaces/finalize`` changes only ``spec.finalizers``. ``generation``
  moves when ``spec`` changes.
- ``patch`` with ``merge``, ``json`` and ``strategic`` (schema-driven, as the server does), then
  the update rules; a ``resourceVersion`` in the patch is a precondition.
- ``delete``: ``preconditions`` (uid, resourceVersion) are checked; ``Orphan`` / ``Foreground``
  propagation add the ``orphan`` / ``foregroundDeletion`` finalizer, as the generic registry
  does. An object with finalizers (for namespaces: ``spec.finalizers`` too) only gets a
  ``deletionTimestamp``; a later write that leaves a terminating object without finalizers
  deletes it. Grace periods are recorded, not waited for.
- ``list`` filters by namespace, label and field selector, and pages with ``limit``/``continue``;
  items come without ``apiVersion``/``kind``, as from the real server.
- ``watch`` from a ``resourceVersion`` replays the history after it (410 ``Expired`` once
  `compact` dropped it); without one it starts with ``ADDED`` for every object. Selectors turn a
  change into ``ADDED``/``DELETED`` when an object enters or leaves them, as the watch cache does.
  `end_watches` ends every open stream (a server timeout); ``close`` does too.
- ``request("GET", ...)`` answers discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<gv>``),
  so `kubeling.client.discovery.discover` works.

For assertions: every call is recorded as an `Action` in ``actions`` (``filter_actions`` and
``clear_actions`` help). For faults: ``prepend_reactor(verb, resource, fn)`` runs ``fn(action)``
before the tracker; it raises to fail the call, returns a value to answer it, or returns
``None`` to fall through (client-go's reactor chain). ``seed(*objs)`` stores objects as they
are (no admission, no events), like ``NewSimpleClientset(objs...)``.

Concurrency: one asyncio event loop; each verb yields once to the loop before it acts, so
concurrent callers interleave as they would against a server. Objects handed out are copies.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from kubeling.api import fields as fieldsel
from kubeling.api import kinds
from kubeling.api import labels as labelsel
from kubeling.api.errors import (STALE_DETAIL, StatusError, already_exists, bad_request, conflict, invalid,
                                 not_found, required)
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.exceptions import ResourceExpired

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
_END = object()


@dataclass
class Action:
    """One call made to the fake, for assertions."""

    verb: str  # get, list, watch, create, update, patch, delete
    group: str
    version: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    obj: Any = None  # the body sent: object, patch
    options: dict = field(default_factory=dict)  # selectors, propagation, preconditions, patch type, ...


def _meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def _rfc3339(clock: Clock) -> str:
    return clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectTracker:
    """The objects, their history for watches, and the write rules. See the module docstring."""

    def __init__(self, resources: Iterable[kinds.Resource], clock: Clock) -> None:
        self.resources = {(r.group, r.version, r.resource): r for r in resources}
        self.clock = clock
        self.rv = 0
        self.compacted = 0
        self.objects: dict[tuple[str, str], dict[str, dict]] = {}
        self.history: list[tuple[int, tuple[str, str], str, dict, dict | None]] = []
        self.watchers: set[FakeWatch] = set()
        self._names = itertools.count(1)

    def resource(self, group: str, version: str, resource: str) -> kinds.Resource:
        res = self.resources.get((group, version, resource))
        if res is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource",
                              details={"group": group, "kind": resource})
        return res

    # -- reads ---------------------------------------------------------------------------------

    def get(self, res: kinds.Resource, namespace: str | None, name: str) -> dict:
        obj = self.objects.get((res.group, res.resource), {}).get(_key(res, namespace, name))
        if obj is None:
            raise not_found(res.resource, res.group, name)
        return obj

    def list(self, res: kinds.Resource, namespace: str | None, label_selector: str | None,
             field_selector: str | None) -> list[dict]:
        match = _matcher(res, namespace, label_selector, field_selector)
        objs = self.objects.get((res.group, res.resource), {})
        return [o for _, o in sorted(objs.items()) if match(o)]

    # -- writes --------------------------------------------------------------------------------

    def seed(self, res: kinds.Resource, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        self.rv += 1
        meta.setdefault("uid", str(uuid.UUID(int=self.rv)))
        meta["resourceVersion"] = str(self.rv)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        self.objects.setdefault((res.group, res.resource), {})[_key(res, meta.get("namespace"), meta["name"])] = obj
        return obj

    def create(self, res: kinds.Resource, obj: dict, namespace: str | None) -> dict:
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        if res.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
            meta["namespace"] = namespace or meta.get("namespace") or ""
            self._admit_namespace(res, meta)
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{next(self._names):05x}"
        if not meta.get("name"):
            raise invalid(res.kind, res.group, "", [required("metadata.name", "name or generateName is required")])
        bucket = self.objects.setdefault((res.group, res.resource), {})
        key = _key(res, meta.get("namespace"), meta["name"])
        if key in bucket:
            raise already_exists(res.resource, res.group, meta["name"])
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        self.rv += 1
        meta.update(uid=str(uuid.UUID(int=self.rv)), resourceVersion=str(self.rv),
                    creationTimestamp=_rfc3339(self.clock), generation=1)
        for f in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(f, None)
        bucket[key] = obj
        self._event(res, "ADDED", obj, None)
        return obj

    def update(self, res: kinds.Resource, obj: dict, namespace: str | None, subresource: str | None) -> dict:
        meta = obj.get("metadata") or {}
        ns = (namespace or meta.get("namespace")) if res.namespaced else None
        old = self.get(res, ns, meta.get("name", ""))
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res.resource, res.group, meta["name"], STALE_DETAIL)
        new = _merge_write(res, old, copy.deepcopy(obj), subresource)
        return self._store(res, old, new)

    def delete(self, res: kinds.Resource, namespace: str | None, name: str, propagation: str | None,
               preconditions: dict | None) -> dict | None:
        """Delete or start deleting; the object while finalizers hold it, else None."""
        old = self.get(res, namespace, name)
        pre = preconditions or {}
        have = old["metadata"]
        if pre.get("uid") and pre["uid"] != have.get("uid"):
            raise conflict(res.resource, res.group, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                           f"UID in object meta: {have.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != have.get("resourceVersion"):
            raise conflict(res.resource, res.group, name, "Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: {have.get('resourceVersion')}")
        new = copy.deepcopy(old)
        meta = new["metadata"]
        fins = list(meta.get("finalizers") or [])
        wanted = {"Orphan": ORPHAN, "Foreground": FOREGROUND}.get(propagation or "")
        if wanted and wanted not in fins and not meta.get("deletionTimestamp"):
            fins = [f for f in fins if f not in (ORPHAN, FOREGROUND)] + [wanted]
            meta["finalizers"] = fins
        if not _has_finalizers(res, new):
            self._remove(res, old)
            return None
        if meta.get("deletionTimestamp") and new == old:
            return old
        meta.setdefault("deletionTimestamp", _rfc3339(self.clock))
        meta.setdefault("deletionGracePeriodSeconds", 0)
        if res.group == "" and res.resource == "namespaces":
            new.setdefault("status", {})["phase"] = "Terminating"
        return self._store(res, old, new)

    def _store(self, res: kinds.Resource, old: dict, new: dict) -> dict:
        if new["metadata"].get("deletionTimestamp") and not _has_finalizers(res, new):
            self._remove(res, old)  # the last finalizer went: the object goes (upstream's delete-on-update)
            return new
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        key = _key(res, new["metadata"].get("namespace"), new["metadata"]["name"])
        self.objects[(res.group, res.resource)][key] = new
        self._event(res, "MODIFIED", new, old)
        return new

    def _remove(self, res: kinds.Resource, old: dict) -> None:
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        del self.objects[(res.group, res.resource)][_key(res, old["metadata"].get("namespace"),
                                                         old["metadata"]["name"])]
        self._event(res, "DELETED", gone, old)

    def _admit_namespace(self, res: kinds.Resource, meta: dict) -> None:
        ns = meta["namespace"]
        nsobj = self.objects.get(("", "namespaces"), {}).get(ns)
        if nsobj is None:
            raise not_found("namespaces", "", ns)
        if nsobj["metadata"].get("deletionTimestamp") and res.resource != "events":
            raise StatusError(403, "Forbidden", f'{res.group_resource} "{meta.get("name")}" is forbidden: unable '
                              f"to create new content in namespace {ns} because it is being terminated",
                              details={"name": meta.get("name"), "group": res.group, "kind": res.resource,
                                       "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                                   "message": f"namespace {ns} is being terminated"}]})

    def _event(self, res: kinds.Resource, typ: str, obj: dict, old: dict | None) -> None:
        gr = (res.group, res.resource)
        self.history.append((self.rv, gr, typ, obj, old))
        for w in list(self.watchers):
            if w.gr == gr:
                w.offer(self.rv, typ, obj, old)

    def compact(self) -> None:
        """Forget the history: a watch from an older resourceVersion now gets 410 Expired."""
        self.compacted = self.rv
        self.history.clear()


def _key(res: kinds.Resource, namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if res.namespaced else name


def _has_finalizers(res: kinds.Resource, obj: dict) -> bool:
    if obj["metadata"].get("finalizers"):
        return True
    return res.group == "" and res.resource == "namespaces" and bool((obj.get("spec") or {}).get("finalizers"))


def _merge_write(res: kinds.Resource, old: dict, new: dict, subresource: str | None) -> dict:
    """The object an update stores: the server's fields kept, the subresource's split applied."""
    if subresource == "finalize":
        out = copy.deepcopy(old)
        out.setdefault("spec", {})["finalizers"] = list((new.get("spec") or {}).get("finalizers") or [])
        return out
    if subresource == "status":
        out = copy.deepcopy(old)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        # as the API server's status strategy: labels and annotations go with a status write
        # (the Deployment controller records its revision annotation this way)
        for k in ("labels", "annotations"):
            if k in (new.get("metadata") or {}):
                out["metadata"][k] = new["metadata"][k]
            else:
                out["metadata"].pop(k, None)
        return out
    if subresource:
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    meta, was = _meta(new), old["metadata"]
    for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        if f in was:
            meta[f] = was[f]
        else:
            meta.pop(f, None)
    meta["namespace"] = was.get("namespace")
    if meta["namespace"] is None:
        meta.pop("namespace")
    new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
    if "status" in res.subresources:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if new.get("spec") != old.get("spec"):
        meta["generation"] = (was.get("generation") or 0) + 1
    return new


def _matcher(res: kinds.Resource, namespace: str | None, label_selector: str | None,
             field_selector: str | None) -> Callable[[dict], bool]:
    try:
        lsel = labelsel.parse(label_selector)
    except labelsel.SelectorError as e:
        raise bad_request(str(e)) from None
    fsel = fieldsel.validate(res, field_selector) if field_selector else None
    ns = namespace if res.namespaced else None

    def match(obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if ns and meta.get("namespace") != ns:
            return False
        if not lsel.matches(meta.get("labels")):
            return False
        return fsel is None or fsel.matches(fieldsel.object_fields(res, obj))
    return match


class FakeWatch:
    """One watch stream; `RESTClient.watch`'s `Watch` contract (``async with``, ``async for``)."""

    def __init__(self, tracker: ObjectTracker, res: kinds.Resource, match: Callable[[dict], bool],
                 resource_version: str | None) -> None:
        self.tracker, self.res, self.match = tracker, res, match
        self.gr = (res.group, res.resource)
        self.since = resource_version
        self.queue: asyncio.Queue = asyncio.Queue()
        self._opened = False
        self._closed = False

    def _open(self) -> None:
        self._opened = True
        t = self.tracker
        if self.since in (None, "", "0"):
            for obj in t.list(self.res, None, None, None):
                if self.match(obj):
                    self.queue.put_nowait(("ADDED", copy.deepcopy(obj)))
        else:
            since = int(self.since)
            if since < t.compacted:
                raise ResourceExpired(410, "Expired", f"too old resource version: {since} ({t.compacted})")
            for rv, gr, typ, obj, old in t.history:
                if gr == self.gr and rv > since:
                    self.offer(rv, typ, obj, old)
        t.watchers.add(self)

    def offer(self, rv: int, typ: str, obj: dict, old: dict | None) -> None:
        """Queue one change as this watcher sees it through its selectors."""
        if typ == "DELETED":
            if self.match(obj):
                self.queue.put_nowait(("DELETED", copy.deepcopy(obj)))
            return
        now, before = self.match(obj), old is not None and self.match(old)
        if now:
            self.queue.put_nowait(("MODIFIED" if before else "ADDED", copy.deepcopy(obj)))
        elif before:
            # Left the selection: the watcher last saw ``old``; it goes, stamped with this revision.
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(rv)
            self.queue.put_nowait(("DELETED", gone))

    def end(self) -> None:
        self.queue.put_nowait(_END)

    async def __aenter__(self) -> "FakeWatch":
        if not self._opened:
            self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "FakeWatch":
        return self

    async def __anext__(self) -> tuple[str, dict]:
        if self._closed:
            raise StopAsyncIteration
        if not self._opened:
            self._open()
        ev = await self.queue.get()
        if ev is _END:
            await self.aclose()
            raise StopAsyncIteration
        if isinstance(ev, BaseException):
            await self.aclose()
            raise ev
        return ev

    async def aclose(self) -> None:
        self._closed = True
        self.tracker.watchers.discard(self)


def default_resources() -> list[kinds.Resource]:
    """The built-in resources, without the legacy versions served by conversion."""
    return [r for r in kinds.BUILTIN if not r.storage_version]


class FakeClient:
    """`RESTClient`'s verbs over an `ObjectTracker`. See the module docstring."""

    def __init__(self, *objects: dict, resources: Iterable[kinds.Resource] | None = None,
                 clock: Clock | None = None, namespace: str = "default") -> None:
        self.tracker = ObjectTracker(default_resources() if resources is None else resources, clock or REAL_CLOCK)
        self.namespace = namespace
        self.actions: list[Action] = []
        self._reactors: list[tuple[str, str, Callable[[Action], Any]]] = []
        self.seed(*objects)

    # -- test helpers --------------------------------------------------------------------------

    def seed(self, *objects: dict) -> list[dict]:
        """Store objects as they are (no admission, no watch events); returns the stored copies."""
        return [self.tracker.seed(self._resource_of(o), o) for o in objects]

    def _resource_of(self, obj: dict) -> kinds.Resource:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for r in self.tracker.resources.values():
            if (r.group, r.version, r.kind) == (group, version, kind):
                return r
        raise ValueError(f"no resource for {api_version} {kind}")

    def prepend_reactor(self, verb: str, resource: str, fn: Callable[[Action], Any]) -> None:
        """Run ``fn(action)`` first for matching calls (``"*"`` matches any verb or resource)."""
        self._reactors.insert(0, (verb, resource, fn))

    def filter_actions(self, verb: str | None = None, resource: str | None = None) -> list[Action]:
        return [a for a in self.actions if verb in (None, a.verb) and resource in (None, a.resource)]

    def clear_actions(self) -> None:
        self.actions.clear()

    def end_watches(self) -> None:
        """End every open watch stream, as a server timeout does."""
        for w in list(self.tracker.watchers):
            w.end()
        self.tracker.watchers.clear()

    def compact(self) -> None:
        self.tracker.compact()

    def object(self, group: str, version: str, resource: str, name: str, namespace: str | None = None) -> dict | None:
        """The stored object (not a copy, no action recorded), or None: for assertions."""
        res = self.tracker.resource(group, version, resource)
        try:
            return self.tracker.get(res, namespace if res.namespaced else None, name)
        except StatusError:
            return None

    async def close(self) -> None:
        self.end_watches()

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, action: Action) -> tuple[kinds.Resource, Any]:
        await asyncio.sleep(0)
        self.actions.append(action)
        for verb, resource, fn in self._reactors:
            if verb in ("*", action.verb) and resource in ("*", action.resource):
                result = fn(action)
                if asyncio.iscoroutine(result):
                    result = await result
                if result is not None:
                    return self.tracker.resource(action.group, action.version, action.resource), result
        return self.tracker.resource(action.group, action.version, action.resource), None

    # -- verbs ---------------------------------------------------------------------------------

    async def get(self, group: str, version: str, resource: str, name: str, *, namespace: str | None = None,
                  subresource: str | None = None, params: Iterable[tuple[str, str]] = ()) -> dict:
        res, answer = await self._call(Action("get", group, version, resource, namespace, name, subresource))
        if answer is not None:
            return answer
        return copy.deepcopy(self.tracker.get(res, namespace if res.namespaced else None, name))

    async def list(self, group: str, version: str, resource: str, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None, resource_version: str | None = None,
                   resource_version_match: str | None = None, timeout_seconds: int | None = None) -> dict:
        opts = {"label_selector": label_selector, "field_selector": field_selector, "limit": limit,
                "continue": continue_, "resource_version": resource_version}
        res, answer = await self._call(Action("list", group, version, resource, namespace, options=opts))
        if answer is not None:
            return answer
        items = self.tracker.list(res, namespace, label_selector, field_selector)
        start = int(continue_) if continue_ else 0
        page = items[start:start + limit] if limit else items[start:]
        meta = {"resourceVersion": str(self.tracker.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        out = []
        for o in page:
            o = copy.deepcopy(o)
            o.pop("apiVersion", None)
            o.pop("kind", None)
            out.append(o)
        return {"apiVersion": res.api_version, "kind": res.list_kind, "metadata": meta, "items": out}

    def watch(self, group: str, version: str, resource: str, *, namespace: str | None = None,
              name: str | None = None, label_selector: str | None = None, field_selector: str | None = None,
              resource_version: str | None = None, allow_watch_bookmarks: bool = True,
              timeout_seconds: int | None = None, send_initial_events: bool | None = None) -> FakeWatch:
        if name:
            by_name = f"metadata.name={name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        self.actions.append(Action("watch", group, version, resource, namespace, options={
            "label_selector": label_selector, "field_selector": field_selector,
            "resource_version": resource_version}))
        res = self.tracker.resource(group, version, resource)
        return FakeWatch(self.tracker, res, _matcher(res, namespace, label_selector, field_selector),
                         resource_version)

    async def create(self, group: str, version: str, resource: str, obj: dict, *, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None, field_manager: str | None = None,
                     dry_run: bool = False) -> dict:
        ns = namespace if namespace is not None else (obj.get("metadata") or {}).get("namespace")
        res, answer = await self._call(Action("create", group, version, resource, ns, name or _name(obj),
                                              subresource, copy.deepcopy(obj), {"field_manager": field_manager}))
        if answer is not None:
            return answer
        if subresource:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        return copy.deepcopy(self.tracker.create(res, obj, ns))

    async def update(self, group: str, version: str, resource: str, obj: dict, *, namespace: str | None = None,
                     subresource: str | None = None, field_manager: str | None = None,
                     dry_run: bool = False) -> dict:
        ns = namespace if namespace is not None else (obj.get("metadata") or {}).get("namespace")
        res, answer = await self._call(Action("update", group, version, resource, ns, _name(obj), subresource,
                                              copy.deepcopy(obj), {"field_manager": field_manager}))
        if answer is not None:
            return answer
        return copy.deepcopy(self.tracker.update(res, obj, ns, subresource))

    async def update_status(self, group: str, version: str, resource: str, obj: dict, *,
                            namespace: str | None = None, field_manager: str | None = None) -> dict:
        return await self.update(group, version, resource, obj, namespace=namespace, subresource="status",
                                 field_manager=field_manager)

    async def patch(self, group: str, version: str, resource: str, name: str, patch: Any, *,
                    namespace: str | None = None, subresource: str | None = None, patch_type: str = "merge",
                    field_manager: str | None = None, force: bool | None = None, dry_run: bool = False) -> dict:
        res, answer = await self._call(Action("patch", group, version, resource, namespace, name, subresource,
                                              copy.deepcopy(patch), {"patch_type": patch_type}))
        if answer is not None:
            return answer
        current = self.tracker.get(res, namespace if res.namespaced else None, name)
        patched = _apply_patch(res, current, patch, patch_type)
        return copy.deepcopy(self.tracker.update(res, patched, namespace, subresource))

    async def delete(self, group: str, version: str, resource: str, name: str, *, namespace: str | None = None,
                     propagation_policy: str | None = None, grace_period_seconds: int | None = None,
                     preconditions: dict | None = None, dry_run: bool = False) -> dict:
        opts = {"propagation_policy": propagation_policy, "grace_period_seconds": grace_period_seconds,
                "preconditions": preconditions}
        res, answer = await self._call(Action("delete", group, version, resource, namespace, name, options=opts))
        if answer is not None:
            return answer
        left = self.tracker.delete(res, namespace if res.namespaced else None, name, propagation_policy,
                                   preconditions)
        if left is not None:
            return copy.deepcopy(left)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": group, "kind": resource}}

    async def request(self, method: str, url_path: str, *, params: Iterable[tuple[str, str]] = (),
                      body: Any = None, content_type: str = "application/json") -> Any:
        """Discovery documents only (``GET /api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``)."""
        await asyncio.sleep(0)
        self.actions.append(Action("request", "", "", url_path, options={"method": method}))
        doc = _discovery(self.tracker.resources.values(), url_path) if method == "GET" else None
        if doc is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        return doc


def _name(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("name")


def _apply_patch(res: kinds.Resource, current: dict, patch: Any, patch_type: str) -> dict:
    from kubeling.api.patch import jsonpatch, merge, strategic  # noqa: PLC0415 - only patching tests pay
    if patch_type == "merge":
        return merge.apply(current, patch)
    if patch_type == "json":
        return jsonpatch.apply(copy.deepcopy(current), patch)
    if patch_type == "strategic":
        from kubeling.api import schema  # noqa: PLC0415 - loading the schemas takes a while
        schemas = schema.get()
        return strategic.apply(current, patch, schemas.for_gvk(res.group, res.version, res.kind), schemas)
    raise ValueError(f"FakeClient does not implement {patch_type!r} patches")


def _discovery(resources: Iterable[kinds.Resource], url_path: str) -> dict | None:
    by_gv: dict[str, list[kinds.Resource]] = {}
    for r in resources:
        by_gv.setdefault(r.group_version, []).append(r)
    path = url_path.rstrip("/")
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"] if "v1" in by_gv else []}
    if path == "/apis":
        groups: dict[str, list[str]] = {}
        for gv in by_gv:
            if "/" in gv:
                g, _, v = gv.partition("/")
                groups.setdefault(g, []).append(v)
        out = []
        for g, versions in groups.items():
            preferred = kinds.PREFERRED_VERSION.get(g, versions[0])
            preferred = preferred if preferred in versions else versions[0]
            out.append({"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
                        "preferredVersion": {"groupVersion": f"{g}/{preferred}", "version": preferred}})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}
    gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):] if path.startswith("/apis/") else ""
    if gv not in by_gv:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": [{"name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": list(r.verbs)} for r in by_gv[gv]]}
