"""``metadata.managedFields``: who owns which fields, and how writes move ownership.

Each entry is one *manager*: a field manager name plus the operation that wrote
(``Apply`` or ``Update``), the subresource, and for ``Update`` the apiVersion
(``Apply`` keeps one entry per manager whatever the version). Entries are kept
sorted as upstream does: by operation, time, manager, apiVersion, subresource.

`update` records an ``Update`` (create, update, or a json/merge/strategic
patch): it compares the old and new object, gives every added or changed field
to the writer, and takes changed and removed fields away from everyone else
(an Update never conflicts). Entries left empty disappear. Objects that exist
but carry no managedFields are not tracked by updates (upstream does the same,
so that clients unaware of managedFields cannot confuse it); a create always is.

The registry calls `update` after decoding and defaulting the new object (so
defaulted fields belong to the writer, as upstream), never for deletions.
Fields that the writer cannot own at all are never recorded: ``apiVersion``,
``kind`` and the server-set parts of ``metadata`` (see `STRIP`), plus
``ignored`` (the fields a subresource resets, e.g. everything but ``status``
for ``/status``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeling.api.patch.fieldpath import (FieldSet, Path, is_atomic_map, is_struct, item_key, items_of, list_type,
                                          parse_path, prop)
from kubeling.api.patch.jsonpatch import json_equal

MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"
BEFORE_FIRST_APPLY = "before-first-apply"

# upstream's stripMeta: fields no writer owns.
STRIP = FieldSet.of(*(parse_path(p) for p in (
    "apiVersion", "kind", "metadata", "metadata.name", "metadata.namespace", "metadata.creationTimestamp",
    "metadata.selfLink", "metadata.uid", "metadata.clusterName", "metadata.generation",
    "metadata.managedFields", "metadata.resourceVersion")))

_MISSING: Any = object()


@dataclass
class Entry:
    """One managedFields entry, with its fields parsed."""

    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str | None
    fields: FieldSet

    @property
    def key(self) -> tuple[str, str, str, str]:
        return manager_key(self.manager, self.operation, self.api_version, self.subresource)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        if self.manager:
            d["manager"] = self.manager
        if self.operation:
            d["operation"] = self.operation
        if self.api_version:
            d["apiVersion"] = self.api_version
        if self.time:
            d["time"] = self.time
        d["fieldsType"] = "FieldsV1"
        d["fieldsV1"] = self.fields.to_fieldsv1()
        if self.subresource:
            d["subresource"] = self.subresource
        return d


Managers = dict[tuple[str, str, str, str], Entry]


def manager_key(manager: str, operation: str, api_version: str, subresource: str) -> tuple[str, str, str, str]:
    """Identity of an entry: Update entries are per apiVersion, Apply entries are not."""
    return manager, operation, api_version if operation == "Update" else "", subresource


def format_time(now: dt.datetime | str | None) -> str:
    """RFC 3339 with seconds precision in UTC, as metav1.Time."""
    if isinstance(now, str):
        return now
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(t: str | None) -> float:
    if not t:
        return 0.0
    try:
        return dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def decode(entries: list | None) -> Managers:
    """Parse ``metadata.managedFields``. Raises ValueError when malformed."""
    out: Managers = {}
    if entries is None:
        return out
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    for raw in entries:
        if not isinstance(raw, dict):
            raise ValueError("managedFields entries must be objects")
        ftype = raw.get("fieldsType")
        if ftype not in (None, "", "FieldsV1"):
            raise ValueError(f"invalid fieldsType {ftype!r}")
        e = Entry(raw.get("manager") or "", raw.get("operation") or "", raw.get("apiVersion") or "",
                  raw.get("subresource") or "", raw.get("time"), FieldSet.from_fieldsv1(raw.get("fieldsV1")))
        prev = out.get(e.key)
        if prev is not None:
            e.fields = e.fields | prev.fields
        out[e.key] = e
    return out


def encode(managers: Managers) -> list[dict]:
    """Entries in upstream's order, empty ones dropped."""
    live = [e for e in managers.values() if e.fields]
    live.sort(key=lambda e: (e.operation, int(_seconds(e.time)), e.manager, e.api_version, e.subresource))
    return [e.to_dict() for e in live]


def store(obj: dict, managers: Managers) -> None:
    """Write managers into ``obj.metadata.managedFields`` (removing the key when none are left)."""
    meta = obj.setdefault("metadata", {})
    entries = encode(managers)
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def without_managed_fields(obj: dict | None) -> dict:
    """A shallow-enough copy of ``obj`` without ``metadata.managedFields`` (inputs stay untouched)."""
    if not obj:
        return {}
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


# ---------------------------------------------------------------- compare

@dataclass
class Comparison:
    """Paths added, modified and removed between two objects (structured-merge-diff's Compare)."""

    added: FieldSet
    modified: FieldSet
    removed: FieldSet

    def changed(self) -> FieldSet:
        return self.added | self.modified


def compare(lhs: Any, rhs: Any, node: dict | None, schemas) -> Comparison:
    """Compare two objects field by field. Raises ValueError when list items cannot be keyed.

    Leaves (scalars, atomics, empty containers) are added, modified or removed.
    A container that appears or disappears as a whole is itself added or
    removed too, so that its writer owns its existence -- except a new struct
    field or required field: upstream compares typed Go objects, whose
    non-pointer structs and non-omitempty (required) fields always exist, so it
    does not record those, and we follow.
    """
    c = Comparison(FieldSet(), FieldSet(), FieldSet())
    if node is not None and schemas is not None:
        node = schemas.resolve(node)
    _compare(lhs, rhs, node, schemas, (), c, False)
    return c


def _is_container(v: Any) -> bool:
    return isinstance(v, (dict, list))


def _leaf(l: Any, r: Any, node: dict | None) -> bool:
    present = [v for v in (l, r) if v is not _MISSING]
    if any(not _is_container(v) for v in present):
        return True
    if len(present) == 2 and type(l) is not type(r):
        return True
    v = present[-1]
    if isinstance(v, dict) and is_atomic_map(node) or isinstance(v, list) and list_type(node)[0] == "atomic":
        return True
    # Empty (or absent) on both sides: the container itself is the leaf, so
    # that writing an empty map or list is still recorded.
    return all(not v for v in present)


def _added(v: Any, node: dict | None, schemas, path: Path, c: Comparison, owns_itself: bool) -> None:
    """`_compare` when the left side is missing (a create, or a new subtree): every field is
    added. The same rules as `_compare`, without comparing anything: creates are the hot path."""
    if not isinstance(v, (dict, list)) or not v or (
            is_atomic_map(node) if isinstance(v, dict) else list_type(node)[0] == "atomic"):
        c.added.insert(path)
        return
    if path and owns_itself:
        c.added.insert(path)
    if isinstance(v, dict):
        required = (node or {}).get("required") or ()
        for k, x in v.items():
            child = prop(schemas, node, k)
            _added(x, child, schemas, path + ("f:" + k,), c, not is_struct(child) and k not in required)
        return
    ltype, keys = list_type(node)
    inode = items_of(schemas, node)
    for pe, item in index_items(v, ltype, keys, inode).items():
        _added(item, inode, schemas, path + (pe,), c, True)


def _compare(l: Any, r: Any, node: dict | None, schemas, path: Path, c: Comparison, owns_itself: bool) -> None:
    if l is _MISSING and r is not _MISSING:
        _added(r, node, schemas, path, c, owns_itself)
        return
    if _leaf(l, r, node):
        if l is _MISSING:
            c.added.insert(path)
        elif r is _MISSING:
            c.removed.insert(path)
        elif not json_equal(l, r):
            c.modified.insert(path)
        return
    if path:
        if r is _MISSING:
            c.removed.insert(path)
        elif l is _MISSING and owns_itself:
            c.added.insert(path)
    v = r if r is not _MISSING else l
    if isinstance(v, dict):
        ld = l if isinstance(l, dict) else {}
        rd = r if isinstance(r, dict) else {}
        required = (node or {}).get("required") or ()
        for k in {**ld, **rd}:
            child = prop(schemas, node, k)
            _compare(ld.get(k, _MISSING), rd.get(k, _MISSING), child, schemas, path + ("f:" + k,), c,
                     not is_struct(child) and k not in required)
        return
    ltype, keys = list_type(node)
    inode = items_of(schemas, node)
    li = index_items(l if isinstance(l, list) else [], ltype, keys, inode)
    ri = index_items(r if isinstance(r, list) else [], ltype, keys, inode)
    for pe in {**li, **ri}:
        _compare(li.get(pe, _MISSING), ri.get(pe, _MISSING), inode, schemas, path + (pe,), c, True)


def index_items(items: list, ltype: str, keys: list[str], inode: dict | None) -> dict[str, Any]:
    """List items by path element, in list order; the first of duplicates wins."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        out.setdefault(item_key(item, ltype, keys, inode, i), item)
    return out


# ---------------------------------------------------------------- recording

def record(managers: Managers, changed: FieldSet, removed: FieldSet, manager: str, operation: str,
           api_version: str, subresource: str, now: str) -> None:
    """Give ``changed`` to one writer and take ``changed`` and ``removed`` from everyone else."""
    for e in managers.values():
        e.fields = e.fields.difference(changed).difference(removed).difference(STRIP)
    if changed:
        key = manager_key(manager, operation, api_version, subresource)
        prev = managers.get(key)
        managers[key] = Entry(manager, operation, api_version, subresource, now,
                              changed | prev.fields if prev else changed)
    for key in [k for k, e in managers.items() if not e.fields]:
        del managers[key]
    cap_update_managers(managers)


def cap_update_managers(managers: Managers, limit: int = MAX_UPDATE_MANAGERS) -> None:
    """Fold the oldest Update entries into per-version ``ancient-changes`` entries beyond ``limit``."""
    updates = sorted((e for e in managers.values() if e.operation == "Update"), key=lambda e: _seconds(e.time))
    excess = len(updates) - limit
    for e in updates:
        if excess <= 0:
            break
        if e.manager == ANCIENT_CHANGES:
            continue
        bucket_key = manager_key(ANCIENT_CHANGES, "Update", e.api_version, "")
        bucket = managers.get(bucket_key)
        del managers[e.key]
        if bucket is None:
            managers[bucket_key] = Entry(ANCIENT_CHANGES, "Update", e.api_version, "", e.time, e.fields)
        else:
            bucket.fields = bucket.fields | e.fields
            bucket.time = e.time
            excess -= 1


def changes(old: dict | None, new: dict, node: dict | None, schemas,
            ignored: FieldSet | None) -> tuple[FieldSet, FieldSet]:
    """``(changed, removed)`` between two objects, minus fields nobody may own."""
    cmp = compare(without_managed_fields(old), without_managed_fields(new), node, schemas)
    changed, removed = cmp.changed().difference(STRIP), cmp.removed
    if ignored:
        changed, removed = changed.recursive_difference(ignored), removed.recursive_difference(ignored)
    return changed, removed


def update(old: dict | None, new: dict, manager: str, operation: str, api_version: str, subresource: str = "",
           node: dict | None = None, schemas=None, now: dt.datetime | str | None = None,
           ignored: FieldSet | None = None) -> None:
    """Record a write of ``new`` over ``old`` (None on create) in ``new.metadata.managedFields``, in place.

    Managed fields sent by the client are honoured when non-empty (that is how
    clients edit or reset them, e.g. with ``[{}]``); otherwise, and always for
    subresources, the live object's are kept. Never raises: an object whose
    fields cannot be compared keeps its previous managedFields.
    """
    meta = new.setdefault("metadata", {})
    old_entries = ((old or {}).get("metadata") or {}).get("managedFields")
    entries = meta.get("managedFields")
    try:
        managers = decode(entries) if entries and not subresource else decode(old_entries)
    except ValueError:
        try:
            managers = decode(old_entries)
        except ValueError:
            managers = {}
    if old is not None and not managers:
        meta.pop("managedFields", None)
        return
    try:
        changed, removed = changes(old, new, node, schemas, ignored)
    except ValueError:
        store(new, managers)
        return
    record(managers, changed, removed, manager, operation, api_version, subresource, format_time(now))
    store(new, managers)
