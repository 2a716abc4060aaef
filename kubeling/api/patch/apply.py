"""Server-side apply (``application/apply-patch+yaml``), as structured-merge-diff does it.

An apply sends a manager's *whole intent*: the fields it wants to own, with
their values. `apply` then

1. merges the applied configuration into the live object: objects key by key,
   associative lists item by item (by list-map-keys, or by value for sets),
   atomic lists/maps and scalars replaced; list order follows the applied
   configuration where it says something, the live object elsewhere;
2. makes the applied fields the manager's ``Apply`` entry, and *prunes*: a
   field the manager applied last time but not now is removed from the object,
   unless some manager (this one through another entry, or anyone else) still
   owns it or something below it;
3. compares live and result: a field that changes value and is owned by
   another manager is a conflict -- the whole apply fails with 409 Conflict
   (one ``FieldManagerConflict`` cause per field) unless ``force`` is set, in
   which case the applier takes those fields over. Changed and removed fields
   leave every other manager's set, and empty entries disappear.

Applying a value equal to the live one is never a conflict; both managers then
share the field. ``null`` in the configuration removes the field and keeps it
owned. Create-on-apply is ``live=None``. Objects that predate managedFields
first give all their fields to an Update manager named ``before-first-apply``.

Client-side to server-side migration, as upstream, for the field manager
``kubectl`` only: conflicts on fields whose live value still equals the
``kubectl.kubernetes.io/last-applied-configuration`` annotation are not
conflicts (the applier takes them over), and after a successful apply that
annotation, when present, is rewritten to the new configuration so that a later
client-side ``kubectl apply`` sees the truth.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections import deque
from typing import Any

import orjson

from kubeling.api import errors
from kubeling.api.patch.fieldpath import (FieldSet, Path, fields_of, is_atomic_map, item_key, items_of, list_type,
                                          path_string, prop)
from kubeling.api.patch.managedfields import (BEFORE_FIRST_APPLY, STRIP, Entry, Managers, cap_update_managers,
                                              changes, compare, decode, format_time, index_items, manager_key,
                                              record, store, without_managed_fields)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KUBECTL = "kubectl"
MAX_ANNOTATIONS_SIZE = 256 * 1024

_MISSING: Any = object()


class Conflicts(Exception):
    """Fields the apply would change that other managers own: ``[(entry, path)]``."""

    def __init__(self, conflicts: list[tuple[Entry, Path]]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts


def apply(live: dict | None, applied: dict, manager: str, force: bool, node: dict | None, schemas,
          api_version: str | None = None, subresource: str = "", now: dt.datetime | str | None = None,
          ignored: FieldSet | None = None) -> dict:
    """Apply ``applied`` for ``manager`` over ``live`` (None to create) and return the new object.

    ``api_version`` is the version of the endpoint (the configuration must use
    it; default: whatever the configuration says). ``ignored`` are fields the
    endpoint resets and nobody may own (e.g. ``status`` on the main resource).
    The result carries the updated ``metadata.managedFields``; inputs are not
    modified. Raises `errors.StatusError`: 400 for a malformed configuration,
    409 Conflict with causes for conflicts, 422 when list items cannot be keyed.
    """
    if api_version is None and isinstance(applied, dict):
        api_version = applied.get("apiVersion") or ""
    _validate(applied, api_version or "")
    if node is not None and schemas is not None:
        node = schemas.resolve(node)
    when = format_time(now)
    live_obj = copy.deepcopy(without_managed_fields(live)) if live is not None else {}
    try:
        managers = decode(((live or {}).get("metadata") or {}).get("managedFields"))
    except ValueError:
        managers = {}
    try:
        if live is not None and not managers:
            changed, removed = changes({}, live_obj, node, schemas, ignored)
            record(managers, changed, removed, BEFORE_FIRST_APPLY, "Update", api_version, subresource, when)
        args = (live_obj, applied, manager, node, schemas, api_version, subresource, when, ignored)
        try:
            result = _apply(_copy_managers(managers), force, *args)
        except Conflicts as c:
            remaining = c.conflicts
            if manager == KUBECTL:
                allowed = _allowed_by_last_applied(live_obj, node, schemas)
                remaining = [(e, p) for e, p in c.conflicts if not allowed.has(p)]
            if remaining:
                raise conflict_error(remaining) from None
            result = _apply(managers, True, *args)
    except ValueError as e:
        raise errors.StatusError(422, "Invalid", f"failed to create typed patch object: {e}") from None
    if manager == KUBECTL:
        _sync_last_applied(result, applied)
    return result


def _copy_managers(managers: Managers) -> Managers:
    """Entries with their own field sets (copied without a recursive deepcopy of the tries)."""
    return {k: dataclasses.replace(e, fields=e.fields.copy()) for k, e in managers.items()}


def _validate(applied: Any, api_version: str) -> None:
    if not isinstance(applied, dict):
        raise errors.bad_request("error decoding YAML: the apply configuration must be an object")
    if applied.get("apiVersion") != api_version:
        raise errors.bad_request(f"Incorrect version specified in apply patch. Specified patch version: "
                                 f"{applied.get('apiVersion') or ''}, expected: {api_version}")
    if (applied.get("metadata") or {}).get("managedFields") is not None:
        raise errors.bad_request("metadata.managedFields must be nil")


def _apply(managers: Managers, force: bool, live: dict, config: dict, manager: str, node: dict | None, schemas,
           api_version: str, subresource: str, when: str, ignored: FieldSet | None) -> dict:
    merged = merge(live, config, node, schemas)
    applied_set = fields_of(config, node, schemas).difference(STRIP)
    if ignored:
        applied_set = applied_set.recursive_difference(ignored)
    key = manager_key(manager, "Apply", api_version, subresource)
    previous = managers.get(key)
    managers[key] = mine = Entry(manager, "Apply", api_version, subresource, previous.time if previous else None,
                                 applied_set)
    prune(merged, managers, previous.fields if previous else FieldSet(), node, schemas)

    changed, removed = changes(live, merged, node, schemas, ignored)
    found = [(e, p) for k, e in sorted(managers.items()) if k != key for p in (e.fields & changed).paths()]
    if found and not force:
        raise Conflicts(found)
    for k, e in managers.items():
        if k != key:
            e.fields = e.fields.difference(changed).difference(removed).difference(STRIP)
    for k in [k for k, e in managers.items() if not e.fields]:
        del managers[k]
    if previous is None or merged != live:
        mine.time = when
    cap_update_managers(managers)
    store(merged, managers)
    return merged


# ---------------------------------------------------------------- merge

def merge(lhs: Any, rhs: Any, node: dict | None, schemas) -> Any:
    """structured-merge-diff's Merge: ``rhs`` wins on leaves; containers merge by schema."""
    if isinstance(lhs, dict) and isinstance(rhs, dict) and not is_atomic_map(node):
        out = {}
        for k, lv in lhs.items():
            if k not in rhs:
                out[k] = copy.deepcopy(lv)  # the result is pruned in place; live must stay intact
            elif rhs[k] is not None:
                out[k] = merge(lv, rhs[k], prop(schemas, node, k), schemas)
        for k, rv in rhs.items():
            if k not in lhs and rv is not None:
                out[k] = _without_nulls(copy.deepcopy(rv))
        return out
    if isinstance(lhs, list) and isinstance(rhs, list) and list_type(node)[0] != "atomic":
        return _merge_list(lhs, rhs, node, schemas)
    return _without_nulls(copy.deepcopy(rhs))


def _without_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _without_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_without_nulls(x) for x in v]
    return v


def _merge_list(lhs: list, rhs: list, node: dict | None, schemas) -> list:
    """Merge associative lists; order like ``rhs`` for shared items, live-only items kept in place."""
    ltype, keys = list_type(node)
    inode = items_of(schemas, node)
    lmap = index_items(lhs, ltype, keys, inode)
    rmap = index_items(rhs, ltype, keys, inode)
    dups: dict[str, list] = {}
    for i, item in enumerate(lhs):
        dups.setdefault(item_key(item, ltype, keys, inode, i), []).append(item)
    lorder, rorder = list(lmap), list(rmap)
    shared = deque(pe for pe in rorder if pe in lmap)
    next_shared = shared.popleft() if shared else None
    out: list = []
    li = ri = 0
    while li < len(lorder) or ri < len(rorder):
        if li < len(lorder) and ri < len(rorder):
            pe = lorder[li]
            if pe == rorder[ri]:
                out.append(merge(lmap[pe], rmap[pe], inode, schemas))
                li, ri = li + 1, ri + 1
                next_shared = shared.popleft() if shared else None
                continue
            if pe in rmap and next_shared is not None and next_shared != pe:
                li += 1  # a shared item the configuration places later: emitted when we get there
                continue
        if li < len(lorder) and lorder[li] not in rmap:
            out.extend(copy.deepcopy(dups[lorder[li]]))  # live-only item (duplicates included) stays
            li += 1
            continue
        if ri < len(rorder):
            pe = rorder[ri]
            out.append(merge(lmap.get(pe, _MISSING), rmap[pe], inode, schemas) if pe in lmap
                       else _without_nulls(copy.deepcopy(rmap[pe])))
            ri += 1
            if next_shared == pe:
                next_shared = shared.popleft() if shared else None
        else:
            li += 1  # a shared item already emitted from the configuration side
    return out


# ---------------------------------------------------------------- prune

def prune(obj: dict, managers: Managers, last_applied: FieldSet, node: dict | None, schemas) -> None:
    """Remove, in place, what the applier owned last time and nobody owns now."""
    if not last_applied:
        return
    owned = FieldSet()
    for e in managers.values():
        owned = owned | e.fields
    remover = _Remover(node, schemas)
    for path in last_applied.nodes():
        # Members go when unowned; so do struct fields they leave behind empty.
        # Never the object's identity (apiVersion, kind, metadata.name, ...).
        if not (last_applied.has(path) or path[-1].startswith("f:")):
            continue
        if owned.covers(path) or STRIP.covers(path):
            continue
        remover.remove(obj, path)
    remover.finish()


class _Remover:
    """Removes paths from one object. Each list's items are keyed once, and removed list items
    are dropped together at `finish`, so pruning n items of a list costs O(n), not O(n²)."""

    def __init__(self, node: dict | None, schemas) -> None:
        self.node, self.schemas = node, schemas
        self.keyed: dict[int, dict[str, list[int]]] = {}
        self.doomed: dict[int, tuple[list, set[int]]] = {}

    def remove(self, obj: Any, path: Path) -> None:
        cur, node = obj, self.node
        for depth, pe in enumerate(path):
            last = depth == len(path) - 1
            if pe.startswith("f:"):
                name = pe[2:]
                if not isinstance(cur, dict) or name not in cur:
                    return
                if last:
                    del cur[name]
                    return
                node, cur = prop(self.schemas, node, name), cur[name]
                continue
            if not isinstance(cur, list):
                return
            hits = self._items(cur, node).get(pe)
            if not hits:
                return
            if last:
                self.doomed.setdefault(id(cur), (cur, set()))[1].update(hits)
                return
            node, cur = items_of(self.schemas, node), cur[hits[0]]

    def _items(self, items: list, node: dict | None) -> dict[str, list[int]]:
        keyed = self.keyed.get(id(items))
        if keyed is None:
            ltype, keys = list_type(node)
            inode = items_of(self.schemas, node)
            keyed = {}
            for i, item in enumerate(items):
                keyed.setdefault(_pe_or_none(item, ltype, keys, inode, i), []).append(i)
            self.keyed[id(items)] = keyed
        return keyed

    def finish(self) -> None:
        for items, gone in self.doomed.values():
            items[:] = [item for i, item in enumerate(items) if i not in gone]


def _pe_or_none(item: Any, ltype: str, keys: list[str], inode: dict | None, index: int) -> str | None:
    try:
        return item_key(item, ltype, keys, inode, index)
    except ValueError:
        return None


# ---------------------------------------------------------------- conflicts

def printed_manager(e: Entry) -> str:
    """How upstream names a manager in conflict messages."""
    if e.operation == "Update":
        return f'"{e.manager}" using {e.api_version}'
    return f'"{e.manager}"'


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> errors.StatusError:
    """The 409 an apply with conflicts fails with (upstream's wording and causes)."""
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {printed_manager(e)}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {printed_manager(e)}: {path_string(p)}"
    else:
        by_manager: dict[tuple, list[Path]] = {}
        names: dict[tuple, str] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.key, []).append(p)
            names[e.key] = printed_manager(e)
        lines = []
        for k in sorted(by_manager):
            lines.append(f"conflicts with {names[k]}:")
            lines.extend(f"- {path_string(p)}" for p in by_manager[k])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return errors.StatusError(409, "Conflict", message, details={"causes": causes})


# ---------------------------------------------------------------- client-side apply migration

def _last_applied(obj: dict) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED) or None


def _allowed_by_last_applied(live: dict, node: dict | None, schemas) -> FieldSet:
    """Fields of the last client-side apply whose live value it still describes."""
    raw = _last_applied(live)
    if not raw:
        return FieldSet()
    try:
        last = orjson.loads(raw)
        if not isinstance(last, dict):
            return FieldSet()
        return fields_of(last, node, schemas).difference(compare(last, live, node, schemas).modified)
    except (orjson.JSONDecodeError, ValueError):
        return FieldSet()


def _sync_last_applied(result: dict, applied: dict) -> None:
    annotations = (result.get("metadata") or {}).get("annotations")
    if not annotations or not annotations.get(LAST_APPLIED):
        return
    config = copy.deepcopy(applied)
    config_annotations = (config.get("metadata") or {}).get("annotations")
    if isinstance(config_annotations, dict):
        config_annotations.pop(LAST_APPLIED, None)
        if not config_annotations:
            del config["metadata"]["annotations"]
    annotations[LAST_APPLIED] = orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode() + "\n"
    if sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str)) > MAX_ANNOTATIONS_SIZE:
        del annotations[LAST_APPLIED]
