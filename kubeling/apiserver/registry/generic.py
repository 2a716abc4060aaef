"""The one generic registry: create, get, update, patch and delete for every resource.

A new kind needs a `strategies.Strategy` (and defaults/validation in
`kubeling.api`), never new CRUD code. The registry owns the write path::

    body ─► decode check (fieldValidation) ─► convert to storage version ─► defaults
         ─► strategy (status/spec split, generation) ─► system metadata ─► managedFields
         ─► mutating admission ─► validation ─► validating admission ─► store (CAS)

Objects are stored without ``metadata.resourceVersion``; it is the store's
``mod_revision`` and is set on the way out. Updates are a compare-and-swap
loop ("GuaranteedUpdate"): a client-supplied resourceVersion is a
precondition (409 Conflict when stale); without one, the registry retries on
its own. An update that changes nothing writes nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubeling.api import defaults, errors, schema, structural, validation
from kubeling.api.patch import managedfields
from kubeling.api.patch.fieldpath import FieldSet, parse_path
from kubeling.apiserver import conversion, strategies
from kubeling.apiserver.resources import Served
from kubeling.storage.interface import KeyValue, Store

log = logging.getLogger(__name__)

MAX_CAS_RETRIES = 16
INTERNAL_WRITES = ("binding", "finalize")
_IGNORED_ON_MAIN = FieldSet.of(parse_path("status"))
_IGNORED_ON_STATUS = FieldSet.of(parse_path("spec"))
_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATE_NAME_RETRIES = 7
_NAME_RANDOM = random.Random()


_NOW: list = [0, ""]


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps (RFC 3339, seconds), formatted once a second."""
    t = int(time.time())
    if _NOW[0] != t:
        _NOW[0], _NOW[1] = t, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    return _NOW[1]


@dataclass
class Context:
    """What one request knows about itself, passed down the write path."""

    user: str = "system:admin"
    groups: tuple[str, ...] = ("system:masters",)
    namespace: str | None = None
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"   # Strict | Warn | Ignore
    subresource: str = ""
    user_agent: str = ""
    warnings: list[str] = field(default_factory=list)
    may_hold_nulls: bool = True  # False when the body is known to have no JSON null (skips a walk)


def decode(kv: KeyValue) -> dict:
    obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def encode(obj: dict) -> bytes:
    meta = obj.get("metadata", {})
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


def _strip_for_compare(obj: dict) -> dict:
    o = copy.copy(obj)
    m = dict(o.get("metadata", {}))
    for k in ("resourceVersion", "managedFields"):
        m.pop(k, None)
    o["metadata"] = m
    return o


def default_manager(ctx: Context) -> str:
    """Upstream names an unnamed manager after the user agent's program name."""
    if ctx.field_manager:
        return ctx.field_manager
    ua = ctx.user_agent.split("/", 1)[0] if ctx.user_agent else ""
    return ua or "unknown"


class Registry:
    """CRUD for every served resource over one `Store`. Admission and authz happen in the caller."""

    def __init__(self, store: Store, admission: Any = None) -> None:
        self.store = store
        self.admission = admission

    # -- reads ---------------------------------------------------------------------------------

    async def get_raw(self, served: Served, namespace: str | None, name: str) -> tuple[dict, KeyValue]:
        _, kv = await self.store.get(served.key(namespace, name))
        if kv is None:
            raise errors.not_found(served.res.resource, served.res.group, name)
        return decode(kv), kv

    async def get(self, served: Served, namespace: str | None, name: str) -> dict:
        obj, _ = await self.get_raw(served, namespace, name)
        return conversion.from_storage(served, obj)

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
        probe = _convert(served, copy.deepcopy(obj)) if served.res.storage_version else obj
        type_errs, unknown = structural.check(probe, served.schema, schemas)
        if type_errs and not served.res.crd:  # a CR's type errors are 422s from structural.validate
            res = served.res
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                     + "; ".join(str(e) for e in type_errs),
                                     [e.cause() for e in type_errs])
        if not served.res.crd and not served.res.storage_version and (unknown or ctx.may_hold_nulls):
            _normalize(obj, served.schema, schemas, drop_unknown=bool(unknown) and
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

    def _prepare(self, served: Served, obj: dict, old: dict | None, ctx: Context) -> dict:
        """Convert, default and run the strategy: the common middle of create and update."""
        obj = _convert(served, obj)
        if served.res.storage_version:  # legacy versions: drop what apps/v1 does not know
            _normalize(obj, served.schema, schema.get(), drop_unknown=True)
        try:
            if served.res.crd:
                structural.apply_defaults(obj, served.schema)
            else:
                defaults.apply_defaults(obj)
        except Exception as e:  # noqa: BLE001 - a defaulter bug must not turn bad input into a 500
            log.exception("defaulting %s", served.res.kind)
            raise errors.bad_request(f"the object could not be defaulted: {e}") from None
        strat = self.strategy(served)
        meta = obj["metadata"]
        if old is None:
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            meta["uid"] = strategies.new_uid()
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
            errs = list(validation.validate(obj, old))
            if served.res.crd and served.schema is not None:
                errs += structural.validate(obj, served.schema)
        except Exception as e:  # noqa: BLE001 - a validator bug must not turn bad input into a 500
            log.exception("validating %s", served.res.kind)
            raise errors.invalid(served.res.kind, served.res.group, obj["metadata"].get("name", ""),
                                 [errors.invalid_value("", None, f"the object could not be validated: {e}")])
        if errs:
            res = served.res
            raise errors.invalid(res.kind, res.group, obj["metadata"].get("name", ""), errs)

    def strategy(self, served: Served) -> strategies.Strategy:
        if served.res.crd:
            return strategies.for_resource(served.res.group, served.res.resource, served.has_status)
        group = served.storage_gv.rpartition("/")[0] if served.res.storage_version else served.res.group
        return strategies.for_resource(group, served.res.resource)

    def ignored_fields(self, served: Served, ctx: Context):
        """Fields an endpoint resets, which its writer therefore never owns (upstream's resetFields)."""
        if ctx.subresource == "status":
            return _IGNORED_ON_STATUS
        if self.strategy(served).status_subresource and not ctx.subresource:
            return _IGNORED_ON_MAIN
        return None

    def _manage(self, served: Served, obj: dict, old: dict | None, ctx: Context) -> None:
        schemas = None if served.res.crd else schema.get()
        managedfields.update(old, obj, default_manager(ctx), "Update", served.res.group_version,
                             ctx.subresource, node=served.schema, schemas=schemas,
                             ignored=self.ignored_fields(served, ctx))

    async def create(self, served: Served, obj: Any, ctx: Context, *, checked: bool = False,
                     managed: bool = False) -> dict:
        if not checked:
            obj = self.check_body(served, obj, ctx)
        meta = obj["metadata"]
        generated = False
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = _generate_name(meta["generateName"])
                generated = True
            else:
                raise errors.invalid(served.res.kind, served.res.group, "",
                                     [errors.required("metadata.name", "name or generateName is required")])
        obj = self._prepare(served, obj, None, ctx)
        if not managed:
            self._manage(served, obj, None, ctx)
        if self.admission:
            await self.admission.admit("CREATE", served, obj, None, ctx)
        self._validate(served, obj, None)
        if self.admission:
            await self.admission.validate("CREATE", served, obj, None, ctx)
        key = served.key(meta.get("namespace"), obj["metadata"]["name"])
        if ctx.dry_run:
            _, kv = await self.store.get(key)
            if kv is not None:
                raise errors.already_exists(served.res.resource, served.res.group, obj["metadata"]["name"])
            return conversion.from_storage(served, obj)
        ok, kv = await self.store.create(key, encode(obj))
        for _ in range(GENERATE_NAME_RETRIES if generated and not ok else 0):
            # A generated name that is taken is drawn again (upstream's RetryGenerateName).
            obj["metadata"]["name"] = _generate_name(obj["metadata"]["generateName"])
            key = served.key(meta.get("namespace"), obj["metadata"]["name"])
            ok, kv = await self.store.create(key, encode(obj))
            if ok:
                break
        if not ok:
            raise errors.already_exists(served.res.resource, served.res.group, obj["metadata"]["name"])
        obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
        return conversion.from_storage(served, obj)

    async def update(self, served: Served, namespace: str | None, name: str, obj: Any, ctx: Context) -> tuple[dict, bool]:
        """PUT. Returns (object, created)."""
        obj = self.check_body(served, obj, ctx, name=name)
        want_rv = obj["metadata"].get("resourceVersion")
        strat = self.strategy(served)

        async def mutate(current: dict | None) -> dict:
            new = copy.deepcopy(obj)
            if current is not None and want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
            return new

        return await self.guaranteed_update(served, namespace, name, mutate, ctx,
                                            create_ok=strat.allow_create_on_update and not ctx.subresource,
                                            precondition_rv=want_rv)

    async def guaranteed_update(self, served: Served, namespace: str | None, name: str, mutate, ctx: Context, *,
                                create_ok: bool = False, precondition_rv: str | None = None,
                                managed_by_caller: bool = False) -> tuple[dict, bool]:
        """Read, let ``mutate(current_in_request_version | None)`` build the new object, write with CAS.

        ``mutate`` returns the whole new object in the request's version (or raises a StatusError).
        On a CAS miss the loop re-reads and calls ``mutate`` again, so it must be pure.
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
            stored = decode(kv)
            current = conversion.from_storage(served, copy.deepcopy(stored))
            new = await mutate(current)
            new = self._prepare(served, new, stored, ctx)
            if not managed_by_caller:
                self._manage(served, new, stored, ctx)
            if self.admission:
                await self.admission.admit("UPDATE", served, new, stored, ctx)
            if ctx.subresource not in INTERNAL_WRITES:  # binding/finalize check what they change themselves
                self._validate(served, new, stored)
            if self.admission:
                await self.admission.validate("UPDATE", served, new, stored, ctx)
            new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            if _strip_for_compare(new) == _strip_for_compare(stored) and \
                    new["metadata"].get("managedFields") == stored["metadata"].get("managedFields"):
                return conversion.from_storage(served, stored), False
            if ctx.dry_run:
                return conversion.from_storage(served, new), False
            # Removing the last finalizer of an object being deleted completes the deletion.
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and \
                    not _ns_spec_finalizers(served, new):
                ok, cur = await self.store.delete(key, kv.mod_revision)
                if ok:
                    new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                    return conversion.from_storage(served, new), False
                if precondition_rv:
                    raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
                continue
            ok, cur = await self.store.update(key, encode(new), kv.mod_revision)
            if ok:
                new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                return conversion.from_storage(served, new), False
            if precondition_rv:
                raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
        raise errors.conflict(served.res.resource, served.res.group, name, "too many concurrent updates")

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
            obj = decode(kv)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"].get("uid"):
                raise errors.conflict(res.resource, res.group, name,
                                      f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                                      f"meta: {obj['metadata'].get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise errors.conflict(res.resource, res.group, name,
                                      f"Precondition failed: ResourceVersion in precondition: "
                                      f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{obj['metadata']['resourceVersion']}")
            if self.admission:
                await self.admission.validate("DELETE", served, None, obj, ctx)
            new, delete_now = self._plan_delete(served, obj, options)
            if ctx.dry_run:
                return conversion.from_storage(served, new), delete_now
            if delete_now:
                ok, cur = await self.store.delete(key, kv.mod_revision)
                if ok:
                    obj["metadata"]["resourceVersion"] = str(cur.mod_revision)
                    return conversion.from_storage(served, obj), True
                continue
            if new == obj:
                return conversion.from_storage(served, obj), False
            ok, cur = await self.store.update(key, encode(new), kv.mod_revision)
            if ok:
                new["metadata"]["resourceVersion"] = str(cur.mod_revision)
                return conversion.from_storage(served, new), False
        raise errors.conflict(res.resource, res.group, name, "too many concurrent updates")

    def _plan_delete(self, served: Served, obj: dict, options: dict) -> tuple[dict, bool]:
        """Decide between deleting now and marking for deletion (finalizers, grace, namespaces)."""
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        fins = list(meta.get("finalizers") or [])
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            policy = "Orphan" if served.res.storage_version else self.strategy(served).default_gc_policy
            if "orphan" in fins or "foregroundDeletion" in fins:
                policy = None  # keep what an earlier delete asked for
        if policy == "Orphan" and "orphan" not in fins:
            fins = [f for f in fins if f != "foregroundDeletion"] + ["orphan"]
        elif policy == "Foreground" and "foregroundDeletion" not in fins:
            fins = [f for f in fins if f != "orphan"] + ["foregroundDeletion"]
        elif policy == "Background":
            fins = [f for f in fins if f not in ("orphan", "foregroundDeletion")] if not meta.get(
                "deletionTimestamp") else fins
        grace_req = options.get("gracePeriodSeconds")
        grace = self.strategy(served).grace_period(obj, grace_req)
        ns_pending = _ns_spec_finalizers(served, new)
        if ns_pending:
            new.setdefault("status", {})["phase"] = "Terminating"
        if not fins and not ns_pending and grace == 0:
            return obj, True
        if fins:
            meta["finalizers"] = fins
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = _after(grace)
            meta["deletionGracePeriodSeconds"] = grace
        elif grace < (meta.get("deletionGracePeriodSeconds") or 0):
            meta["deletionTimestamp"] = _after(grace)
            meta["deletionGracePeriodSeconds"] = grace
        if grace == 0 and not fins and not ns_pending:
            return new, True
        return new, False

    async def list_raw(self, served: Served, namespace: str | None) -> tuple[int, list[dict]]:
        res = await self.store.list(served.list_prefix(namespace))
        return res.revision, [decode(kv) for kv in res.kvs]


def _generate_name(prefix: str) -> str:
    """Five random characters, as upstream (a PRNG is enough: collisions are retried)."""
    return prefix + "".join(_NAME_RANDOM.choices(_GEN_ALPHABET, k=5))


def _convert(served: Served, obj: dict) -> dict:
    try:
        return conversion.to_storage(served, obj)
    except Exception as e:  # noqa: BLE001 - malformed input must be a 400, never a 500
        log.warning("converting %s: %s", served.res.kind, e)
        raise errors.bad_request(f"{served.res.kind} in version \"{served.res.version}\" cannot be converted: "
                                 f"{e}") from None


def _after(seconds: int) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ns_spec_finalizers(served: Served, obj: dict) -> bool:
    return served.res.group == "" and served.res.resource == "namespaces" and bool(
        (obj.get("spec") or {}).get("finalizers"))


def _normalize(value: Any, node: dict | None, schemas, drop_unknown: bool) -> Any:
    """Make a decoded built-in object look as it would after decoding into upstream's Go types:
    ``null`` fields are absent, ``null`` list items and map values are zero values, and (when
    asked) fields the schema does not know are dropped. Returns the value to keep."""
    node = schemas.resolve(node) if node else None
    if not node:
        return value
    if value is None:
        return copy.copy(_ZERO.get(schema.type_of(node)))  # fresh {} / []
    if isinstance(value, list):
        item = node.get("items")
        if isinstance(item, dict):
            value[:] = [_normalize(v, item, schemas, drop_unknown) for v in value]
            value[:] = [v for v in value if v is not None]
        return value
    if not isinstance(value, dict):
        return value
    props, addl = node.get("properties"), node.get("additionalProperties")
    if props is None and not isinstance(addl, dict):
        return value  # free-form: RawExtension, FieldsV1, IntOrString, ...
    for k in list(value):
        if props and k in props:
            if value[k] is None:
                del value[k]
            else:
                value[k] = _normalize(value[k], props[k], schemas, drop_unknown)
        elif isinstance(addl, dict):
            v = _normalize(value[k], addl, schemas, drop_unknown)
            if v is None:
                del value[k]
            else:
                value[k] = v
        elif drop_unknown:
            del value[k]
    return value


_ZERO = {"object": {}, "string": "", "integer": 0, "number": 0, "boolean": False, "array": []}


