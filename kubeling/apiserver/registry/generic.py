"""The one generic store: get, list, watch, create, update and delete for every resource
(upstream's ``registry/generic/registry.Store``).

A resource brings a `Strategy` (its module under ``registry/<group>/``); it never brings CRUD
code. The store owns the write path::

    body ─► shape checks (kind, apiVersion, namespace, name, fieldValidation)
         ─► strategy.to_storage ─► defaults ─► strategy.prepare_* (status/spec split, generation)
         ─► system metadata ─► managedFields ─► mutating admission ─► strategy.check (422)
         ─► validating admission ─► strategy.begin_create/begin_update (e.g. IP allocation)
         ─► size limit ─► store (compare-and-swap) ─► finish hook

Authentication and authorization happen before (the request pipeline); admission runs here,
through the chain the store was built with, so that every writer (handlers, subresources, the
CRD controller, bootstrap) gets it.

Objects are stored without ``metadata.resourceVersion``; it is the store's ``mod_revision``
and is set on the way out. Updates are a compare-and-swap loop ("GuaranteedUpdate"): a
client-supplied resourceVersion is a precondition (409 Conflict when stale); without one the
store retries on its own. An update that changes nothing writes nothing.

Reads: GET reads the store; a client's LIST and WATCH are served by the watch cache
(`cacher`, a decorator of the store, as upstream's); `list` and `watch` here read the store for
the API server's own use. Apart from the cacher, this module is the only one in the API server
that touches `kubeling.storage`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from typing import Any, Awaitable, Callable

import orjson

from kubeling.api import errors, limits, schema, structural
from kubeling.api.patch import managedfields
from kubeling.api.patch.fieldpath import FieldSet, parse_path
from kubeling.apiserver.registry.codec import decode, encode
from kubeling.apiserver.registry.delete import ns_spec_finalizers, plan_delete
from kubeling.apiserver.registry.normalize import normalize
from kubeling.apiserver.registry.context import Context, default_manager, new_uid, now_rfc3339
from kubeling.apiserver.resources import Served
from kubeling.storage.interface import (InsufficientStorageError, KeyValue, Store, StorageError, StorageTimeoutError,
                                        UnavailableError)

log = logging.getLogger(__name__)

MAX_CAS_RETRIES = 16
INTERNAL_WRITES = ("binding", "finalize")
_IGNORED_ON_MAIN = FieldSet.of(parse_path("status"))
_IGNORED_ON_STATUS = FieldSet.of(parse_path("spec"))
_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATE_NAME_RETRIES = 7
_NAME_RANDOM = random.Random()

def _strip_for_compare(obj: dict) -> dict:
    o = copy.copy(obj)
    m = dict(o.get("metadata", {}))
    for k in ("resourceVersion", "managedFields"):
        m.pop(k, None)
    o["metadata"] = m
    return o


Mutate = Callable[[dict | None], Awaitable[dict]]
Filter = Callable[[dict], bool]


class GenericStore:
    """CRUD for every served resource over one `Store`, with the admission chain built in.

    ``admission`` is an `admission.Chain` (or None in tests that want none). Its `list` and
    `watch` read the store: the HTTP LIST and WATCH of clients are served by the watch cache
    (`cacher`), these by the API server's own loops and writes (eviction, CRD cleanup).
    """

    def __init__(self, store: Store, admission: Any = None) -> None:
        self.store = store
        self.admission = admission

    # -- reads ---------------------------------------------------------------------------------

    async def get_raw(self, served: Served, namespace: str | None, name: str) -> dict:
        """The stored object (storage version), or a 404."""
        _, kv = await self.store.get(served.key(namespace, name))
        if kv is None:
            raise errors.not_found(served.res.resource, served.res.group, name)
        return self._decode(served, kv)

    async def get(self, served: Served, namespace: str | None, name: str) -> dict:
        return served.strategy.from_storage(await self.get_raw(served, namespace, name), served)

    async def list(self, served: Served, namespace: str | None, match: Filter | None = None,
                   **options: Any) -> tuple[list[dict], int, str, int | None]:
        """Items in ``served``'s version, the list revision, a continue token and remainingItemCount
        (options: limit, continue_token, resource_version, rv_match; see `listwatch.list_objects`)."""
        from kubeling.apiserver import listwatch  # noqa: PLC0415 - listwatch imports this package
        return await listwatch.list_objects(self.store, served, namespace, match or listwatch.MATCH_ALL, **options)

    async def list_raw(self, served: Served, namespace: str | None) -> tuple[int, list[dict]]:
        """Every stored object under the resource (storage version) and the list revision."""
        res = await self.store.list(served.list_prefix(namespace))
        out = []
        for kv in res.kvs:
            try:
                out.append(decode(kv))
            except (orjson.JSONDecodeError, TypeError, AttributeError) as e:
                log.error("skipping %s: its stored value cannot be decoded: %s", kv.key, e)
        return res.revision, out

    def watch(self, served: Served, namespace: str | None, match: Filter | None = None, **options: Any):
        """Events in ``served``'s version (see `listwatch.watch_objects`)."""
        from kubeling.apiserver import listwatch  # noqa: PLC0415 - listwatch imports this package
        return listwatch.watch_objects(self.store, served, namespace, match or listwatch.MATCH_ALL, **options)

    async def reflect(self, served: Served, replace: Callable[[int, list[dict]], Any],
                      apply: Callable[[str, dict], Any], *, what: str = "") -> None:
        """Keep a consumer in step with a resource, as an informer's reflector does: list
        (``replace(revision, objects)``), then watch from the list's revision (``apply(event
        type, object)`` for ADDED / MODIFIED / DELETED); relist after a 410, retry other faults
        after a second. Either callback may be async; objects are shared, never mutate them.
        Runs until cancelled (the API server's own caches: admission, CRDs, APIServices)."""
        while True:
            try:
                rv, items = await self.list_raw(served, None)
                await _maybe_await(replace(rv, items))
                events = self.watch(served, None, resource_version=str(rv))
                try:
                    async for etype, obj in events:
                        if etype != "INITIAL_END":
                            await _maybe_await(apply(etype, obj))
                finally:
                    await events.aclose()
            except asyncio.CancelledError:
                raise
            except errors.StatusError as e:
                if e.code != 410:
                    log.warning("%s: %s", what or served.res.resource, e.message)
                    await asyncio.sleep(1)
            except Exception:  # noqa: BLE001 - the consumer's cache must come back, never die
                log.exception("%s", what or served.res.resource)
                await asyncio.sleep(1)

    async def current_revision(self) -> int:
        return await self.store.current_revision()

    async def health(self) -> None:
        """Raise when the store cannot serve (the ``etcd`` check of ``/readyz``)."""
        check = getattr(self.store, "check", None)
        if check is not None:
            await check()
        else:
            await self.store.current_revision()

    def _decode(self, served: Served, kv: KeyValue) -> dict:
        try:
            return decode(kv)
        except (orjson.JSONDecodeError, TypeError, AttributeError) as e:
            log.error("stored value of %s cannot be decoded: %s", kv.key, e)
            raise errors.internal(f"the stored object {kv.key} cannot be decoded: {e}") from None

    # -- the write path ------------------------------------------------------------------------

    def check_body(self, served: Served, obj: Any, ctx: Context, *, name: str | None = None) -> dict:
        """Shape checks common to create and update: kind, apiVersion, namespace, name, fields."""
        res = served.res
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != res.kind:
            raise errors.bad_request(f"the kind of the provided object ({kind}) does not match the expected "
                                     f"kind ({res.kind})")
        if api_version and api_version != res.group_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected "
                                     f"API version ({res.group_version})")
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        elif not isinstance(meta, dict):
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                     f'json: cannot unmarshal {type(meta).__name__} into Go struct field '
                                     f'{res.kind}.metadata of type v1.ObjectMeta')
        if res.namespaced:
            ns = meta.get("namespace")
            if ns and ctx.namespace and ns != ctx.namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                         "sent on the request")
            meta["namespace"] = ctx.namespace or ns
        else:
            meta.pop("namespace", None)
        if name is not None and meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the "
                                     f"URL ({name})")
        if name is not None and not meta.get("name"):
            meta["name"] = name
        self._check_fields(served, obj, ctx)
        return obj

    def _check_fields(self, served: Served, obj: dict, ctx: Context) -> None:
        if served.schema is None:
            return
        schemas = None if served.res.crd else schema.get()
        # A legacy version has no schema upstream any more: check what it converts to.
        probe = self._to_storage(served, copy.deepcopy(obj)) if served.res.storage_version else obj
        type_errs, unknown = structural.check(probe, served.schema, schemas)
        if type_errs and not served.res.crd:  # a CR's type errors are 422s from structural.validate
            res = served.res
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                     + "; ".join(str(e) for e in type_errs),
                                     [e.cause() for e in type_errs])
        if not served.res.crd and not served.res.storage_version and (unknown or ctx.may_hold_nulls):
            normalize(obj, served.schema, schemas, drop_unknown=bool(unknown) and
                       ctx.field_validation != "Strict")
        if not unknown:
            return
        if ctx.field_validation == "Strict":
            msgs = [f'unknown field "{u}"' for u in unknown]
            raise errors.bad_request("strict decoding error: " + ", ".join(msgs),
                                     [{"reason": "FieldValueInvalid", "message": m, "field": u}
                                      for m, u in zip(msgs, unknown)])
        if ctx.field_validation == "Warn":
            ctx.warnings.extend(f'unknown field "{u}"' for u in unknown)
        if served.res.crd:
            structural.prune(obj, served.schema)

    def _to_storage(self, served: Served, obj: dict) -> dict:
        try:
            return served.strategy.to_storage(obj, served)
        except errors.StatusError:
            raise
        except Exception as e:  # noqa: BLE001 - malformed input must be a 400, never a 500
            log.warning("converting %s: %s", served.res.kind, e)
            raise errors.bad_request(f"{served.res.kind} in version \"{served.res.version}\" cannot be converted: "
                                     f"{e}") from None

    def _prepare(self, served: Served, obj: dict, old: dict | None, ctx: Context) -> dict:
        """Convert, default and run the strategy: the common middle of create and update."""
        strat = served.strategy
        obj = self._to_storage(served, obj)
        if served.res.storage_version:  # legacy versions: drop what apps/v1 does not know
            normalize(obj, served.schema, schema.get(), drop_unknown=True)
        try:
            strat.defaults(obj)
        except Exception as e:  # noqa: BLE001 - a defaulter bug must not turn bad input into a 500
            log.exception("defaulting %s", served.res.kind)
            raise errors.bad_request(f"the object could not be defaulted: {e}") from None
        meta = obj["metadata"]
        if old is None:
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            meta["uid"] = new_uid()
            meta["creationTimestamp"] = now_rfc3339()
            meta.pop("generation", None)
            if ctx.subresource:
                raise errors.not_found(served.res.resource, served.res.group, meta.get("name", ""))
            strat.prepare_for_create(obj)
        else:
            om = old["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in om:
                    meta[k] = om[k]
                else:
                    meta.pop(k, None)
            if ctx.subresource == "status":
                strat.prepare_for_status_update(obj, old)
            elif ctx.subresource in INTERNAL_WRITES:
                pass  # binding and finalize write exactly the fields they own, spec and status alike
            else:
                strat.prepare_for_update(obj, old)
            if not strat.generation:  # clients cannot set it where the server does not track it
                if "generation" in om:
                    meta["generation"] = om["generation"]
                else:
                    meta.pop("generation", None)
        return obj

    def _validate(self, served: Served, obj: dict, old: dict | None) -> None:
        try:
            errs = served.strategy.check(obj, old, served)
        except Exception as e:  # noqa: BLE001 - a validator bug must not turn bad input into a 500
            log.exception("validating %s", served.res.kind)
            raise errors.invalid(served.res.kind, served.res.group, obj["metadata"].get("name", ""),
                                 [errors.invalid_value("", None, f"the object could not be validated: {e}")])
        if errs:
            res = served.res
            raise errors.invalid(res.kind, res.group, obj["metadata"].get("name", ""), errs)

    def ignored_fields(self, served: Served, ctx: Context):
        """Fields an endpoint resets, which its writer therefore never owns (upstream's resetFields)."""
        if ctx.subresource == "status":
            return _IGNORED_ON_STATUS
        if served.strategy.status_subresource and not ctx.subresource:
            return _IGNORED_ON_MAIN
        return None

    def _manage(self, served: Served, obj: dict, old: dict | None, ctx: Context) -> None:
        schemas = None if served.res.crd else schema.get()
        managedfields.update(old, obj, default_manager(ctx), "Update", served.res.group_version,
                             ctx.subresource, node=served.schema, schemas=schemas,
                             ignored=self.ignored_fields(served, ctx))

    async def _admit(self, op: str, served: Served, obj: dict | None, old: dict | None, ctx: Context,
                     validating: bool) -> None:
        if self.admission is None:
            return
        if validating:
            await self.admission.validate(op, served, obj, old, ctx)
        else:
            await self.admission.admit(op, served, obj, old, ctx)

    def _fits_with_managed_fields(self, served: Served, obj: dict) -> None:
        """Refuse a new object that cannot fit once its managedFields are added, before computing
        them (for a wide object that is most of the work). The bound is a floor: every label,
        annotation and data key is recorded as at least ``"f:<key>":{},``."""
        meta = obj.get("metadata") or {}
        floor = len(encode(obj))
        for m in (meta.get("labels"), meta.get("annotations"), obj.get("data"), obj.get("binaryData")):
            if isinstance(m, dict):
                floor += sum(len(k) + 7 for k in m)
        if floor > limits.MAX_OBJECT_BYTES:
            raise object_too_large(served, floor)

    def _encode_checked(self, served: Served, obj: dict) -> bytes:
        data = encode(obj)
        if len(data) > limits.MAX_OBJECT_BYTES:
            raise object_too_large(served, len(data))
        return data

    async def create(self, served: Served, obj: Any, ctx: Context, *, checked: bool = False,
                     managed: bool = False) -> dict:
        if not checked:
            obj = await off_loop(ctx, self.check_body, served, obj, ctx)
        meta = obj["metadata"]
        generated = False
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = _generate_name(meta["generateName"])
                generated = True
            else:
                raise errors.invalid(served.res.kind, served.res.group, "",
                                     [errors.required("metadata.name", "name or generateName is required")])
        obj = await off_loop(ctx, self._prepare, served, obj, None, ctx)
        if ctx.heavy:
            await off_loop(ctx, self._fits_with_managed_fields, served, obj)
        if not managed:
            await off_loop(ctx, self._manage, served, obj, None, ctx)
        await self._admit("CREATE", served, obj, None, ctx, validating=False)
        finish = await served.strategy.begin_create(self, served, obj, ctx)
        ok = False
        try:
            await off_loop(ctx, self._validate, served, obj, None)
            await self._admit("CREATE", served, obj, None, ctx, validating=True)
            key = served.key(meta.get("namespace"), obj["metadata"]["name"])
            data = await off_loop(ctx, self._encode_checked, served, obj)
            if ctx.dry_run:
                _, kv = await self.store.get(key)
                if kv is not None:
                    raise errors.already_exists(served.res.resource, served.res.group, obj["metadata"]["name"])
                return served.strategy.from_storage(obj, served)
            ok, kv = await self._store_write(self.store.create(key, data))
            for _ in range(GENERATE_NAME_RETRIES if generated and not ok else 0):
                # A generated name that is taken is drawn again (upstream's RetryGenerateName).
                obj["metadata"]["name"] = _generate_name(obj["metadata"]["generateName"])
                key = served.key(meta.get("namespace"), obj["metadata"]["name"])
                ok, kv = await self._store_write(self.store.create(key, encode(obj)))
                if ok:
                    break
        finally:
            if finish is not None:
                await finish(ok)
        if not ok:
            raise errors.already_exists(served.res.resource, served.res.group, obj["metadata"]["name"])
        obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
        return served.strategy.from_storage(obj, served)

    async def update(self, served: Served, namespace: str | None, name: str, obj: Any, ctx: Context) \
            -> tuple[dict, bool]:
        """PUT. Returns (object, created)."""
        obj = await off_loop(ctx, self.check_body, served, obj, ctx, name=name)
        want_rv = obj["metadata"].get("resourceVersion")

        async def mutate(current: dict | None) -> dict:
            new = copy.deepcopy(obj)
            if current is not None and want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
            return new

        return await self.guaranteed_update(served, namespace, name, mutate, ctx,
                                            create_ok=served.strategy.allow_create_on_update and not ctx.subresource,
                                            precondition_rv=want_rv)

    async def guaranteed_update(self, served: Served, namespace: str | None, name: str, mutate: Mutate,
                                ctx: Context, *, create_ok: bool = False, precondition_rv: str | None = None,
                                managed_by_caller: bool = False) -> tuple[dict, bool]:
        """Read, let ``mutate(current_in_request_version | None)`` build the new object, write with CAS.

        ``mutate`` returns the whole new object in the request's version (or raises a StatusError).
        On a CAS miss the loop re-reads and calls ``mutate`` again, so it must be pure.
        Returns (object, created).
        """
        key = served.key(namespace, name)
        for _ in range(MAX_CAS_RETRIES):
            _, kv = await self.store.get(key)
            if kv is None:
                if not create_ok:
                    raise errors.not_found(served.res.resource, served.res.group, name)
                new = await mutate(None)
                new.setdefault("metadata", {})["name"] = name
                if served.res.namespaced:
                    new["metadata"]["namespace"] = namespace
                new["metadata"].pop("resourceVersion", None)
                try:
                    return await self.create(served, new, ctx, checked=True, managed=managed_by_caller), True
                except errors.StatusError as e:
                    if e.reason == "AlreadyExists":
                        continue
                    raise
            stored = self._decode(served, kv)
            current = served.strategy.from_storage(copy.deepcopy(stored), served)
            new = await mutate(current)
            new = await off_loop(ctx, self._prepare, served, new, stored, ctx)
            if not managed_by_caller:
                await off_loop(ctx, self._manage, served, new, stored, ctx)
            await self._admit("UPDATE", served, new, stored, ctx, validating=False)
            finish = await served.strategy.begin_update(self, served, new, stored, ctx)
            ok, done = False, None
            try:
                done = await self._write_update(served, key, kv, new, stored, ctx, name, precondition_rv)
                ok = done is not None and done[1]
            finally:
                if finish is not None:
                    await finish(ok)
            if done is not None:
                return done[0], False
        raise errors.conflict(served.res.resource, served.res.group, name, "too many concurrent updates")

    async def _write_update(self, served: Served, key: str, kv: KeyValue, new: dict, stored: dict, ctx: Context,
                            name: str, precondition_rv: str | None) -> tuple[dict, bool] | None:
        """Validate and write one attempt of an update. Returns (object, written) or None when the
        compare-and-swap lost and the caller should retry."""
        if ctx.subresource not in INTERNAL_WRITES:  # binding/finalize check what they change themselves
            await off_loop(ctx, self._validate, served, new, stored)
        await self._admit("UPDATE", served, new, stored, ctx, validating=True)
        new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        if _strip_for_compare(new) == _strip_for_compare(stored) and \
                new["metadata"].get("managedFields") == stored["metadata"].get("managedFields"):
            return served.strategy.from_storage(stored, served), False
        data = await off_loop(ctx, self._encode_checked, served, new)
        if ctx.dry_run:
            return served.strategy.from_storage(new, served), False
        # Removing the last finalizer of an object being deleted completes the deletion.
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and \
                not ns_spec_finalizers(served, new):
            ok, cur = await self._store_write(self.store.delete(key, kv.mod_revision))
            if ok:
                new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                await served.strategy.after_delete(self, served, new)
                return served.strategy.from_storage(new, served), False
        else:
            ok, cur = await self._store_write(self.store.update(key, data, kv.mod_revision))
            if ok:
                new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                return served.strategy.from_storage(new, served), True
        if precondition_rv:
            raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
        return None

    # -- deletion ------------------------------------------------------------------------------

    async def delete(self, served: Served, namespace: str | None, name: str, options: dict, ctx: Context) \
            -> tuple[dict, bool]:
        """DELETE. Returns (object as last seen, deleted_now)."""
        key = served.key(namespace, name)
        res = served.res
        for _ in range(MAX_CAS_RETRIES):
            _, kv = await self.store.get(key)
            if kv is None:
                raise errors.not_found(res.resource, res.group, name)
            obj = self._decode(served, kv)
            check_preconditions(res.resource, res.group, name, obj, options.get("preconditions"))
            await self._admit("DELETE", served, None, obj, ctx, validating=True)
            new, delete_now = plan_delete(served, obj, options)
            if ctx.dry_run:
                return served.strategy.from_storage(new, served), delete_now
            if delete_now:
                ok, cur = await self._store_write(self.store.delete(key, kv.mod_revision))
                if ok:
                    obj["metadata"]["resourceVersion"] = str(cur.mod_revision)
                    await served.strategy.after_delete(self, served, obj)
                    return served.strategy.from_storage(obj, served), True
                continue
            if new == obj:
                return served.strategy.from_storage(obj, served), False
            ok, cur = await self._store_write(self.store.update(key, encode(new), kv.mod_revision))
            if ok:
                new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                return served.strategy.from_storage(new, served), False
        raise errors.conflict(res.resource, res.group, name, "too many concurrent updates")

    async def delete_collection(self, served: Served, namespace: str | None, match: Filter | None,
                                options: dict, ctx: Context) -> tuple[list[dict], int]:
        """Delete every matching object (each through `delete`); returns what was deleted and the
        revision of the list it worked from."""
        items, rv, _, _ = await self.list(served, namespace, match)
        deleted = []
        for it in items:
            m = it["metadata"]
            try:
                obj, _ = await self.delete(served, m.get("namespace"), m["name"], options, ctx)
                deleted.append(obj)
            except errors.StatusError as e:
                if e.code != 404:
                    raise
        return deleted, rv

    # -- raw keys for the registry's own bookkeeping (allocators) -------------------------------

    async def read_key(self, key: str) -> tuple[bytes | None, int]:
        """The value and mod revision of a bookkeeping key outside any resource (0 when absent)."""
        _, kv = await self.store.get(key)
        return (kv.value, kv.mod_revision) if kv else (None, 0)

    async def swap_key(self, key: str, value: bytes, expected_revision: int) -> bool:
        """Compare-and-swap of a bookkeeping key (create when ``expected_revision`` is 0)."""
        if expected_revision == 0:
            ok, _ = await self._store_write(self.store.create(key, value))
        else:
            ok, _ = await self._store_write(self.store.update(key, value, expected_revision))
        return ok

    async def _store_write(self, op: Awaitable):
        """Run one store write; a storage fault becomes the Status upstream gives for etcd's."""
        try:
            return await op
        except StorageError as e:
            raise storage_status(e) from None


async def _maybe_await(value) -> None:
    if asyncio.iscoroutine(value):
        await value


def check_preconditions(resource: str, group: str, name: str, obj: dict, pre: dict | None) -> None:
    """DeleteOptions.preconditions against the stored object: 409 with upstream's message."""
    pre, meta = pre or {}, obj["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.conflict(resource, group, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                              f"UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise errors.conflict(resource, group, name, f"Precondition failed: ResourceVersion in precondition: "
                              f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                              f"{meta.get('resourceVersion')}")


def object_too_large(served: Served, size: int) -> errors.StatusError:
    """The 413 for an object over the store's limit (upstream: etcd's request size limit)."""
    return errors.request_entity_too_large(f"the {served.res.kind} is {size} bytes once stored, over the limit "
                                           f"of {limits.MAX_OBJECT_BYTES} bytes")


async def off_loop(ctx: Context, fn, *args, **kwargs):
    """Run a CPU-bound step of the write path: on a worker thread for a large request
    (``ctx.heavy``), inline otherwise (a thread hand-off costs more than a small object's work).
    The step only touches the request's own objects and pure functions, so it is thread-safe."""
    if ctx.heavy:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except errors.StatusError as e:
            # The worker's frames hold the request's large objects; an expected error needs none
            # of them, and a traceback kept alive by the future would pin tens of MB.
            raise e.with_traceback(None) from None
    return fn(*args, **kwargs)


def storage_status(e: Exception) -> errors.StatusError:
    """A storage fault as a Status: 507 for a full disk (upstream: etcd's "database space
    exceeded"), 504 when the datastore did not answer in time (a write's outcome is then unknown),
    503 when no datastore member answers (etcd down, no leader), 500 StorageError otherwise."""
    if isinstance(e, InsufficientStorageError):
        return errors.StatusError(507, "InsufficientStorage", f"storage is full: {e}", details={})
    if isinstance(e, StorageTimeoutError):
        return errors.StatusError(504, "Timeout", f"the datastore did not answer in time: {e}",
                                  details={"retryAfterSeconds": 1})
    if isinstance(e, UnavailableError):
        return errors.StatusError(503, "ServiceUnavailable", f"the datastore is unavailable: {e}",
                                  details={"retryAfterSeconds": 1})
    return errors.StatusError(500, "InternalError", f"Internal error occurred: storage error: {e}",
                              details={"causes": [{"reason": "StorageError", "message": str(e)}]})


def _generate_name(prefix: str) -> str:
    """Five random characters, as upstream (a PRNG is enough: collisions are retried)."""
    return prefix + "".join(_NAME_RANDOM.choices(_GEN_ALPHABET, k=5))
