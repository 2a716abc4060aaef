"""`Strategy`: everything the one generic store needs to know about one resource.

Upstream spreads this over ``RESTCreateStrategy``, ``RESTUpdateStrategy``,
``RESTDeleteStrategy``, ``TableConvertor``, ``GetAttrs`` and the scheme's defaulters and
conversions; here it is one class per resource, in a module named after the resource
(``registry/apps/deployment.py``). A strategy says:

- identity and scope: ``group``, ``resource``, ``kind``, ``namespaced``;
- the write path: `defaults`, `validate` / `validate_update` (the kind's own rules;
  metadata is checked here for every kind), `prepare_for_create` / `prepare_for_update` /
  `prepare_for_status_update` (status/spec split, generation, initial status),
  `grace_period`, ``allow_create_on_update``, ``default_gc_policy``;
- the read path: `printer` (the Table), `get_attrs` and ``selectable_fields`` (field selectors);
- versions: `to_storage` / `from_storage` between a served version and the storage version;
- ``returns_deleted_object`` (DELETE answers with the object, not a Status);
- ``subresources``: name → subresource class (``registry/status.py``, ``registry/scale.py``
  through `subresources.status_subresources`, or the resource's own, e.g. pods/binding), built
  once per server by the endpoints' `Scope`.

Every hook that changes an object does it in place and must be idempotent: the generic store
may call it again when it retries a compare-and-swap. Hooks never do I/O; what needs other
objects (allocation, admission) happens in the store or the admission chain.
"""

from __future__ import annotations

import copy
import functools

from kubeling.api import errors, fields, printers, schema, validation
from kubeling.api.errors import FieldError
from kubeling.api.printers.common import Printer
from kubeling.api.validation.meta import NameFn, name_is_dns_subdomain


def spec_changed(new: dict, old: dict) -> bool:
    """Everything but metadata and status: what upstream compares to bump generation."""
    skip = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in new.items() if k not in skip} != {k: v for k, v in old.items() if k not in skip}


class Strategy:
    """The base strategy: no status subresource, no generation, no defaults, metadata checks only."""

    group = ""
    resource = ""
    kind = ""
    namespaced = True
    name_rule: NameFn = staticmethod(name_is_dns_subdomain)  # type: ignore[assignment]

    generation = False          # maintain metadata.generation (1 on create, +1 per spec change)
    status_subresource = False  # writes to the main resource keep the old status
    reset_status_on_create = True
    allow_create_on_update = False
    default_gc_policy = "Background"
    returns_deleted_object = False

    printer: Printer = printers.DEFAULT
    # The kind's selectable fields (`kubeling.api.fields`); None is upstream's default conversion:
    # only metadata.name and metadata.namespace.
    field_set: fields.KindFields | None = None
    subresources: dict[str, type] = {}
    # A resource not kept in the store (access reviews, the older ``bindings``): the REST class
    # that serves it instead of the generic store (built with the registry's `rest.Deps`).
    rest: type | None = None

    def __init__(self, config=None) -> None:
        self.config = config  # the server's `registry.Config` (CIDRs, ranges): per server, not global

    # -- the write path ------------------------------------------------------------------------

    def defaults(self, obj: dict) -> None:
        """Upstream's SetObjectDefaults for the kind (pure, in place)."""

    def validate(self, obj: dict) -> list[FieldError]:
        """The kind's own rules on a new or updated object (metadata is checked by `check`)."""
        return []

    def validate_update(self, obj: dict, old: dict) -> list[FieldError]:
        """Extra rules of an update (immutable fields), run after `validate`."""
        return []

    def check(self, obj: dict, old: dict | None, served=None) -> list[FieldError]:
        """Metadata, then the kind's rules: what the generic store turns into a 422. ``served`` is
        the version the client wrote through (a kind may validate each version differently)."""
        errs = validation.validate_meta(obj, self.namespaced, old, self.name_rule)
        errs += self.validate(obj)
        if old is not None:
            errs += self.validate_update(obj, old)
        return errs

    def prepare_for_create(self, obj: dict) -> None:
        if self.status_subresource and self.reset_status_on_create:
            obj.pop("status", None)
            status = self.initial_status(obj)
            if status is not None:
                obj["status"] = status
        if self.generation:
            obj["metadata"]["generation"] = 1

    def initial_status(self, obj: dict) -> dict | None:
        return None

    def prepare_for_update(self, new: dict, old: dict) -> None:
        if self.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if self.generation:
            gen = old["metadata"].get("generation", 1)
            new["metadata"]["generation"] = gen + 1 if spec_changed(new, old) else gen

    def prepare_for_status_update(self, new: dict, old: dict) -> None:
        """A write to /status changes only status (and, as upstream, of metadata only labels and
        annotations)."""
        status = new.get("status")
        keep_meta = new["metadata"]
        merged = copy.deepcopy(old)
        if status is None:
            merged.pop("status", None)
        else:
            merged["status"] = status
        for k in ("labels", "annotations", "resourceVersion", "managedFields"):
            if k in keep_meta:
                merged["metadata"][k] = keep_meta[k]
            else:
                merged["metadata"].pop(k, None)
        new.clear()
        new.update(merged)

    def grace_period(self, obj: dict, requested: int | None) -> int:
        """Seconds of graceful deletion; 0 deletes at once (unless finalizers hold it)."""
        return 0

    # -- hooks around the store write (upstream's BeginCreate / BeginUpdate / AfterDelete) ------
    # The only hooks that may do I/O, through the generic store they are given. A begin hook
    # returns None or ``finish(ok)``, awaited after the write with whether it succeeded, so that
    # what the hook took (an IP, a port) is given back when the write fails.

    async def begin_create(self, store, served, obj: dict, ctx):
        return None

    async def begin_update(self, store, served, new: dict, old: dict, ctx):
        return None

    async def after_delete(self, store, served, obj: dict) -> None:
        """Called once an object is gone from the store (release what it held)."""

    # -- versions ------------------------------------------------------------------------------

    def to_storage(self, obj: dict, served) -> dict:
        """A request's object in ``served``'s version → the storage version."""
        return obj

    def from_storage(self, obj: dict, served) -> dict:
        """A stored object → ``served``'s version. May return ``obj`` itself: never mutate it."""
        return obj

    # -- the read path -------------------------------------------------------------------------

    def printer_for(self, served) -> Printer:
        return self.printer

    def get_attrs(self, obj: dict) -> dict[str, str]:
        """The field set selectors match (upstream's GetAttrs): metadata.name/namespace plus
        the kind's own fields."""
        meta = obj.get("metadata") or {}
        out = {"metadata.name": fields.as_string(meta.get("name"))}
        if self.namespaced:
            out["metadata.namespace"] = fields.as_string(meta.get("namespace"))
        if self.field_set is not None:
            out.update(self.field_set.attrs(obj))
        return out

    def field_selector(self, selector: fields.FieldSelector) -> fields.FieldSelector:
        """Check and convert the labels of a field selector (upstream's field label conversion);
        raises a 400 for a label the kind does not support."""
        fs = self.field_set

        def convert(label: str, value: str) -> tuple[str, str]:
            if fs is None:
                if label in ("metadata.name", "metadata.namespace"):
                    return label, value
                raise errors.bad_request(f'"{label}" is not a known field selector: only "metadata.name", '
                                         f'"metadata.namespace"')
            if label in fs.renames:
                return fs.renames[label], value
            if label in fs.labels:
                return label, value
            raise errors.bad_request(f"field label not supported: {label}")
        return selector.transform(convert)


class WorkloadStrategy(Strategy):
    """Spec/status split, generation, and a status that starts at the schema's zero values."""

    generation = True
    status_subresource = True

    def initial_status(self, obj: dict) -> dict | None:
        return zero_status(obj)


_ZERO = {"integer": 0, "number": 0, "string": "", "boolean": False}


@functools.lru_cache(maxsize=None)
def _zero_status(api_version: str, kind: str) -> tuple:
    group, _, version = api_version.rpartition("/")
    schemas = schema.get()
    node = schemas.for_gvk(group, version, kind)
    status = schemas.resolve(((node or {}).get("properties") or {}).get("status"))
    out = []
    for prop in status.get("required") or ():
        t = schema.type_of(schemas.resolve(status["properties"][prop]))
        if t in _ZERO:
            out.append((prop, _ZERO[t]))
    return tuple(out)


def zero_status(obj: dict) -> dict:
    """A new object's status as upstream serializes its zero value: the required (non-omitempty)
    scalar fields, e.g. ``{"replicas": 0}`` for a ReplicaSet."""
    return dict(_zero_status(obj.get("apiVersion", ""), obj.get("kind", "")))
