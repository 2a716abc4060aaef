"""Strategic merge patch (``application/strategic-merge-patch+json``), driven by the schema.

Like a JSON merge patch, except where the schema says otherwise:

- a list whose ``x-kubernetes-patch-strategy`` includes ``merge`` is merged:
  items of a list of objects are matched by ``x-kubernetes-patch-merge-key``
  and merged recursively, new ones are added; a list of primitives becomes the
  union of both;
- a field with strategy ``replace`` is replaced wholesale; lists without a
  merge strategy (and every list when there is no schema) are replaced too.

Directives inside the patch:

- ``{"$patch": "replace"}`` in an object replaces the object; as an item of a
  merging list it replaces the whole list with the other items;
- ``{"$patch": "delete"}`` empties an object; as a list item (with the merge
  key) it deletes the matching items;
- ``"$retainKeys": [...]`` drops every key of the object not listed (how
  kubectl clears ``rollingUpdate`` when a Deployment switches to ``Recreate``);
  every key the patch sets must be listed;
- ``"$deleteFromPrimitiveList/<field>": [...]`` removes values from a merging
  list of primitives (e.g. finalizers);
- ``"$setElementOrder/<field>": [...]`` fixes the order of a merging list:
  listed items in that order, the server-only items interleaved by their
  live order.

Order of a merged list (no ``$setElementOrder``): the patch's items in patch
order, with the live-only items interleaved where their live position falls
before a patched item; new items come before live-only items that follow no
patched one -- upstream's order, which kubectl relies on.

Errors: malformed directives are 400 BadRequest with upstream's wording; lists
of lists and retainKeys mismatches are 422 Invalid; the cases upstream lets
through as 500 (missing merge key, a bad ``$patch`` value, ...) are 400 here,
since they are the client's fault.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from kubeling.api import errors
from kubeling.api.patch.fieldpath import items_of, patch_strategies, prop
from kubeling.api.patch.jsonpatch import unprocessable

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
SET_ELEMENT_ORDER = "$setElementOrder"

_MISSING: Any = object()


class _BadPatch(Exception):
    """The patch is malformed (400)."""


class _Unmergeable(Exception):
    """The patch is well-formed but cannot apply (422)."""


def apply(doc: dict, patch: Any, node: dict | None, schemas) -> dict:
    """Apply a strategic merge patch to a copy of ``doc``; ``node`` is the object's schema (or None)."""
    if not isinstance(patch, dict):
        raise errors.bad_request(f"json: cannot unmarshal {_json_kind(patch)} into Go value of type "
                                 f"map[string]interface {{}}")
    if node is not None and schemas is not None:
        node = schemas.resolve(node)
    try:
        return _merge_map(copy.deepcopy(doc), copy.deepcopy(patch), node, schemas)
    except _BadPatch as e:
        raise errors.bad_request(str(e)) from None
    except _Unmergeable:
        raise unprocessable() from None


# ---------------------------------------------------------------- objects

def _merge_map(original: dict, patch: dict, node: dict | None, schemas) -> dict:
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        if directive == "replace":
            return _merge_map({}, {k: v for k, v in patch.items() if k != DIRECTIVE}, node, schemas)
        if directive == "delete":
            return {}
        raise _BadPatch(f"unknown patch type: {_go(directive)} in map: {_go(patch)}")
    _retain_keys(original, patch)
    _set_element_order(original, patch, node, schemas)
    _delete_from_primitive_lists(original, patch, node, schemas)
    for key, value in patch.items():
        child = prop(schemas, node, key)
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key, _MISSING)
        if current is _MISSING or _kind(current) != _kind(value):
            original[key] = _fresh(value, child, schemas)
        elif isinstance(value, dict):
            if "replace" in patch_strategies(child):
                original[key] = _fresh(value, child, schemas)
            else:
                original[key] = _merge_map(current, value, child, schemas)
        elif isinstance(value, list):
            original[key] = _merge_list_field(current, value, child, schemas)
        else:
            original[key] = value
    return original


def _fresh(value: Any, node: dict | None, schemas) -> Any:
    """A patch value with nothing to merge into: its directives still apply (to nothing)."""
    if isinstance(value, dict):
        return _merge_map({}, value, node, schemas)
    if isinstance(value, list) and "merge" in patch_strategies(node):
        return _merge_list_field([], value, node, schemas)
    return value


def _retain_keys(original: dict, patch: dict) -> None:
    if RETAIN_KEYS not in patch:
        return
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list):
        raise _BadPatch("invalid patch format of retainKeys")
    for key, value in patch.items():
        if value is None or key.startswith(DELETE_FROM_PRIMITIVE_LIST) or key.startswith(SET_ELEMENT_ORDER):
            continue
        if key not in keep:
            raise _BadPatch("invalid patch format of retainKeys")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _directive_field(key: str, prefix: str, message: str) -> str:
    head, _, field = key.partition("/")
    if head != prefix or not field:
        raise _BadPatch(message)
    return field


def _delete_from_primitive_lists(original: dict, patch: dict, node: dict | None, schemas) -> None:
    for key in [k for k in patch if k.startswith(DELETE_FROM_PRIMITIVE_LIST)]:
        field = _directive_field(key, DELETE_FROM_PRIMITIVE_LIST, "invalid patch format of primitive list")
        doomed = patch.pop(key)
        if not isinstance(doomed, list):
            raise _BadPatch("invalid patch format of primitive list")
        current = original.get(field)
        # Only a merging list has items to delete one by one; anything else is left alone.
        if isinstance(current, list) and "merge" in patch_strategies(prop(schemas, node, field)):
            gone = {_ckey(v) for v in doomed}
            original[field] = [v for v in current if _ckey(v) not in gone]


def _set_element_order(original: dict, patch: dict, node: dict | None, schemas) -> None:
    for key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        order = patch.pop(key)
        field = _directive_field(key, SET_ELEMENT_ORDER, "invalid patch format of setElementOrder list")
        if not isinstance(order, list):
            raise _BadPatch("invalid patch format of setElementOrder list")
        live, patched = original.get(field, _MISSING), patch.get(field, _MISSING)
        for v in (live, patched):
            if v is not _MISSING and not isinstance(v, list):
                raise _BadPatch(f"expected a []interface {{}}, but received a {_go_type(v)}")
        child = prop(schemas, node, field)
        merge_key = (child or {}).get("x-kubernetes-patch-merge-key") or ""
        _check_order(patched if patched is not _MISSING else [], order, merge_key)
        if live is _MISSING and patched is _MISSING:
            continue
        if patched is _MISSING:
            merged = live
        elif live is _MISSING:
            merged = _fresh(patched, child, schemas)
        else:
            merged = _merge_list_field(live, patched, child, schemas)
        in_patch, server_only = _partition(merged, order, merge_key)
        original[field] = _normalize(in_patch, server_only, order, live if live is not _MISSING else [], merge_key)
        patch.pop(field, None)


def _check_order(patch_list: list, order: list, merge_key: str) -> None:
    """The patch list must be a subsequence of ``$setElementOrder`` (deletions aside)."""
    if not order or not patch_list:
        return
    items = [v for v in patch_list if not (merge_key and isinstance(v, dict) and v.get(DIRECTIVE) == "delete")]
    pi = oi = 0
    while pi < len(items) and oi < len(order):
        if isinstance(items[pi], dict) and DIRECTIVE in items[pi]:
            pi += 1
            continue
        if _same_item(items[pi], order[oi], merge_key):
            pi += 1
        oi += 1
    if pi < len(items) and oi >= len(order):
        raise _BadPatch(f"The order in patch list:\n{_go(patch_list)}\n doesn't match {SET_ELEMENT_ORDER} list:\n"
                        f"{_go(order)}\n")


# ---------------------------------------------------------------- lists

def _merge_list_field(current: list, patch: list, node: dict | None, schemas) -> list:
    if "merge" not in patch_strategies(node):
        return patch
    merge_key = node.get("x-kubernetes-patch-merge-key") or ""
    return _merge_slice(current, patch, merge_key, items_of(schemas, node), schemas)


def _merge_slice(original: list, patch: list, merge_key: str, item_node: dict | None, schemas) -> list:
    if not original and not patch:
        return original
    if _element_kind(original, patch) == "scalar":
        merged = _dedupe(original + patch)
        merge_key = ""
    else:
        if not merge_key:
            raise _BadPatch("cannot merge lists without merge key for type map")
        original, patch = _special_elements(original, patch, merge_key, item_node, schemas)
        merged = _merge_items(original, patch, merge_key, item_node, schemas)
    in_patch, server_only = _partition(merged, patch, merge_key)
    return _normalize(in_patch, server_only, patch, original, merge_key)


def _element_kind(*lists: list) -> str:
    kinds = {_kind(v) for lst in lists for v in lst}
    if "list" in kinds:
        raise _Unmergeable("lists of lists are not supported")
    if len(kinds) > 1:
        raise _BadPatch(f"list element types are not identical: {_go(list(lists))}")
    return "map" if kinds == {"map"} else "scalar"


def _special_elements(original: list, patch: list, merge_key: str, item_node: dict | None,
                      schemas) -> tuple[list, list]:
    """Apply ``$patch`` items of a merging list; return (original, patch without them)."""
    plain, replace, doomed = [], False, set()
    for item in patch:
        directive = item.get(DIRECTIVE, _MISSING)
        if directive is _MISSING:
            plain.append(item)
        elif directive == "delete":
            if merge_key not in item:
                raise _BadPatch(_no_merge_key(item, merge_key))
            doomed.add(_match_key(item[merge_key]))
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise _BadPatch("merging lists cannot yet be specified in the patch")
        else:
            raise _BadPatch(f"unknown patch type: {_go(directive)} in map: {_go(item)}")
    if doomed:
        original = [o for o in original if _key_of(o, merge_key) not in doomed]
    if replace:
        return [_fresh(v, item_node, schemas) for v in plain], []
    return original, plain


def _merge_items(original: list, patch: list, merge_key: str, item_node: dict | None, schemas) -> list:
    """Merge patch items into the live items they match by merge key (the first match), append
    the others. Matches are found through an index, so this is linear in both lists."""
    merged = list(original)
    index: dict[tuple, int] = {}
    for i, o in enumerate(merged):
        key = _key_of(o, merge_key)
        if key is not None:
            index.setdefault(key, i)
    for item in patch:
        if merge_key not in item:
            raise _BadPatch(_no_merge_key(item, merge_key))
        key = _match_key(item[merge_key])
        i = index.get(key)
        if i is None:
            index[key] = len(merged)
            merged.append(_fresh(item, item_node, schemas))
            continue
        merged[i] = _merge_map(merged[i], item, item_node, schemas)
        if _key_of(merged[i], merge_key) != key:  # $retainKeys may drop the merge key itself
            del index[key]
    return merged


def _key_of(item: Any, merge_key: str) -> tuple | None:
    """The match key of a live item's merge key value (None when it has none)."""
    if not isinstance(item, dict):
        raise _BadPatch(f"value for key {_go(item)} is not a map.")
    return _match_key(item[merge_key]) if merge_key in item else None


def _match_key(value: Any) -> tuple:
    """A hashable key equal for JSON-equal merge key values (`json_equal`: 80 matches 80.0, but
    true does not match 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    return ("j", _ckey(value))


def _identity(item: Any, merge_key: str) -> str:
    """What makes two items of a merging list the same one."""
    if merge_key:
        if not isinstance(item, dict) or merge_key not in item:
            raise _BadPatch(_no_merge_key(item, merge_key))
        return _ckey(item[merge_key])
    return _ckey(item)


def _same_item(a: Any, b: Any, merge_key: str) -> bool:
    return _identity(a, merge_key) == _identity(b, merge_key)


def _partition(merged: list, by: list, merge_key: str) -> tuple[list, list]:
    """Split ``merged`` into the items present in ``by`` and the others, keeping order."""
    wanted = {_identity(v, merge_key) for v in by if not (merge_key and isinstance(v, dict) and DIRECTIVE in v)}
    inside = [v for v in merged if _identity(v, merge_key) in wanted]
    outside = [v for v in merged if _identity(v, merge_key) not in wanted]
    return inside, outside


def _positions(items: list, merge_key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, v in enumerate(items):
        if merge_key and isinstance(v, dict) and DIRECTIVE in v:
            continue
        out.setdefault(_identity(v, merge_key), i)
    return out


def _normalize(in_patch: list, server_only: list, patch_order: list, server_order: list, merge_key: str) -> list:
    """Order patched items as the patch says and server-only items as the live list, then interleave."""
    by_patch = _positions(patch_order, merge_key)
    by_server = _positions(server_order, merge_key)
    end = len(patch_order) + len(server_order)
    right = sorted(in_patch, key=lambda v: by_patch.get(_identity(v, merge_key), end))
    left = sorted(server_only, key=lambda v: by_server.get(_identity(v, merge_key), end))
    out, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li = by_server.get(_identity(left[i], merge_key), -1)
            ri = by_server.get(_identity(right[j], merge_key), -1)
            # A live-only item goes first only when both are live and it came first.
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _dedupe(values: list) -> list:
    seen: set[str] = set()
    out = []
    for v in values:
        k = _ckey(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


# ---------------------------------------------------------------- helpers

def _kind(v: Any) -> str:
    return "map" if isinstance(v, dict) else "list" if isinstance(v, list) else "scalar"


def _ckey(v: Any) -> str:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def _json_kind(v: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "bool"}.get(type(v), "value")


def _go_type(v: Any) -> str:
    return {dict: "map[string]interface {}", list: "[]interface {}", str: "string", bool: "bool",
            int: "int64", float: "float64"}.get(type(v), "<nil>")


def _go(v: Any) -> str:
    """A value as Go's ``%v`` prints decoded JSON, for error messages that quote the patch."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _no_merge_key(item: Any, merge_key: str) -> str:
    return f"map: {_go(item)} does not contain declared merge key: {merge_key}"
