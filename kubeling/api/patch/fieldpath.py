"""Field sets: the ``fieldsV1`` of managedFields, and the schema facts that shape them.

A *path element* (PE) names one step into an object. We keep each PE in its
canonical serialized form, so that PEs are plain hashable strings that
round-trip to FieldsV1 unchanged::

    f:<name>          a struct field or a map key          f:spec
    k:<json object>   a map-list item, by its list-map-keys k:{"containerPort":80,"protocol":"TCP"}
    v:<json value>    a set-list item, by its value         v:"kubernetes"
    i:<index>         an item of a list with no keys        i:0

A `FieldSet` is a trie of PEs. ``members`` are the paths that are *in* the set
(written ``{}`` in FieldsV1, or ``".": {}`` when the node also has children);
``children`` are the subtrees below a PE.

Which fields an object *sets* (`fields_of`) follows structured-merge-diff:
scalars, atomic lists/maps, nulls and empty containers are leaves; items of
associative lists and entries of maps (not struct fields) are members
themselves; struct fields with content are only parents.

List semantics come from the schema: ``x-kubernetes-list-type`` (atomic, set,
map with ``x-kubernetes-list-map-keys``), else a ``merge`` patch strategy
(keyed by ``x-kubernetes-patch-merge-key``, or a set for primitives), else
atomic. Without a schema (``node is None``) maps are granular and lists atomic,
as structured-merge-diff's "deduced" type.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import orjson

from kubeling.api import schema as kschema

Path = tuple[str, ...]

_EXTENSIONS = ("x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy", "x-kubernetes-list-type",
               "x-kubernetes-list-map-keys", "x-kubernetes-map-type")

# Defaults of list-map key fields that upstream's OpenAPI declares but the
# kubernetes-validate definitions drop; without them a port applied without a
# protocol could not be keyed (upstream keys it as "TCP").
_KEY_DEFAULTS = {"protocol": "TCP"}


# ---------------------------------------------------------------- schema facts

_prop_cache: dict[int, tuple[dict, dict]] = {}


def prop(schemas: kschema.Schemas | None, node: dict | None, key: str) -> dict | None:
    """The schema of ``node[key]``, resolved, keeping the referencing node's extensions.

    Upstream puts ``x-kubernetes-patch-strategy: retainKeys`` (and map-type
    overrides) beside the ``$ref`` of a property, so `schema.child` alone would lose it.
    """
    if node is None:
        return None
    node = schemas.resolve(node) if schemas else node
    raw = (node.get("properties") or {}).get(key)
    if raw is None:
        return kschema.child(schemas, node, key)
    if "$ref" not in raw or schemas is None:
        return raw
    hit = _prop_cache.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    resolved = schemas.resolve(raw)
    ext = {k: raw[k] for k in _EXTENSIONS if k in raw}
    out = {**resolved, **ext} if ext else resolved
    _prop_cache[id(raw)] = (raw, out)
    return out


def items_of(schemas: kschema.Schemas | None, node: dict | None) -> dict | None:
    return kschema.items(schemas, node)


def list_type(node: dict | None) -> tuple[str, list[str]]:
    """``("atomic"|"set"|"map", keys)`` for a list schema node."""
    if node is None:
        return "atomic", []
    lt = node.get("x-kubernetes-list-type")
    merge_key = node.get("x-kubernetes-patch-merge-key")
    if lt == "map":
        keys = node.get("x-kubernetes-list-map-keys") or ([merge_key] if merge_key else [])
        return ("map", list(keys)) if keys else ("atomic", [])
    if lt in ("set", "atomic"):
        return lt, []
    if "merge" in patch_strategies(node):
        return ("map", [merge_key]) if merge_key else ("set", [])
    return "atomic", []


def patch_strategies(node: dict | None) -> list[str]:
    if not node:
        return []
    return [s for s in (node.get("x-kubernetes-patch-strategy") or "").split(",") if s]


def is_atomic_map(node: dict | None) -> bool:
    return bool(node) and node.get("x-kubernetes-map-type") == "atomic"


def is_struct(node: dict | None) -> bool:
    return bool(node) and bool(node.get("properties"))


def item_key(item: Any, ltype: str, keys: list[str], item_node: dict | None, index: int) -> str:
    """The PE of one list item. Raises ValueError when a map-list item lacks a key field."""
    if ltype == "set":
        return "v:" + _dumps(item)
    if ltype == "map":
        if not isinstance(item, dict):
            raise ValueError(f"element {index}: associative list with keys may only contain maps")
        kv = {}
        for k in keys:
            if k in item and item[k] is not None:
                kv[k] = item[k]
                continue
            default = (prop(None, item_node, k) or {}).get("default", _KEY_DEFAULTS.get(k))
            if default is None:
                raise ValueError(f"element {index}: associative list with keys has an element that omits key "
                                 f'field "{k}" (and doesn\'t have default value)')
            kv[k] = default
        return "k:" + _dumps(kv)
    return f"i:{index}"


def _dumps(v: Any) -> str:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


# ---------------------------------------------------------------- path elements

_TYPE_ORDER = {"f": 0, "k": 1, "v": 2, "i": 3}


def _value_order(v: Any) -> tuple:
    # structured-merge-diff's total order: numbers < strings < bools < lists < maps < null.
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, (int, float)):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list):
        return (3, tuple(_value_order(x) for x in v))
    if isinstance(v, dict):
        return (4, tuple((k, _value_order(v[k])) for k in sorted(v)))
    return (5,)


def pe_sort_key(pe: str) -> tuple:
    kind, rest = pe[0], pe[2:]
    if kind == "f":
        return (0, rest)
    if kind == "k":
        obj = orjson.loads(rest)
        return (1, tuple((k, _value_order(obj[k])) for k in sorted(obj)))
    if kind == "v":
        return (2, _value_order(orjson.loads(rest)))
    return (_TYPE_ORDER.get(kind, 4), int(rest) if rest.isdigit() else rest)


def pe_string(pe: str) -> str:
    """A PE as structured-merge-diff prints it: ``.name``, ``[name="nginx"]``, ``[=v]``, ``[0]``."""
    kind, rest = pe[0], pe[2:]
    if kind == "f":
        return "." + rest
    if kind == "k":
        obj = orjson.loads(rest)
        return "[" + ",".join(f"{k}={_dumps(obj[k])}" for k in sorted(obj)) + "]"
    if kind == "v":
        return f"[={rest}]"
    return f"[{rest}]"


def path_string(path: Iterable[str]) -> str:
    return "".join(pe_string(pe) for pe in path)


def parse_path(dotted: str) -> Path:
    """``"spec.replicas"`` -> ``("f:spec", "f:replicas")`` (field names only; for constants)."""
    return tuple("f:" + part for part in dotted.split(".") if part)


# ---------------------------------------------------------------- the set

class FieldSet:
    """A set of field paths, stored as a trie of path elements."""

    __slots__ = ("members", "children")

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.children: dict[str, FieldSet] = {}

    @classmethod
    def of(cls, *paths: Path) -> "FieldSet":
        s = cls()
        for p in paths:
            s.insert(p)
        return s

    def insert(self, path: Path) -> None:
        if not path:
            return
        node = self
        for pe in path[:-1]:
            node = node.children.setdefault(pe, FieldSet())
        node.members.add(path[-1])

    def has(self, path: Path) -> bool:
        """Whether ``path`` itself is a member."""
        node = self._node(path[:-1])
        return node is not None and path[-1] in node.members

    def covers(self, path: Path) -> bool:
        """Whether ``path`` or anything below it is in the set."""
        node = self._node(path[:-1])
        return node is not None and (path[-1] in node.members or path[-1] in node.children)

    def _node(self, path: Path) -> "FieldSet | None":
        node: FieldSet | None = self
        for pe in path:
            node = node.children.get(pe)
            if node is None:
                return None
        return node

    def empty(self) -> bool:
        return not self.members and not self.children

    def __bool__(self) -> bool:
        return not self.empty()

    def copy(self) -> "FieldSet":
        """A copy sharing nothing with this set (iterative: tries of any depth)."""
        out = FieldSet()
        stack = [(self, out)]
        while stack:
            src, dst = stack.pop()
            dst.members = set(src.members)
            for pe, c in src.children.items():
                dst.children[pe] = child = FieldSet()
                stack.append((c, child))
        return out

    def union(self, other: "FieldSet") -> "FieldSet":
        out = FieldSet()
        out.members = self.members | other.members
        for pe in self.children.keys() | other.children.keys():
            a, b = self.children.get(pe), other.children.get(pe)
            out.children[pe] = a.union(b) if a and b else (a or b).copy()
        return out

    def intersection(self, other: "FieldSet") -> "FieldSet":
        out = FieldSet()
        out.members = self.members & other.members
        for pe in self.children.keys() & other.children.keys():
            c = self.children[pe].intersection(other.children[pe])
            if c:
                out.children[pe] = c
        return out

    def difference(self, other: "FieldSet") -> "FieldSet":
        """Exact-path difference: members of ``other`` go, subtrees are compared recursively."""
        out = FieldSet()
        out.members = self.members - other.members
        for pe, c in self.children.items():
            oc = other.children.get(pe)
            d = c.difference(oc) if oc else c.copy()
            if d:
                out.children[pe] = d
        return out

    def recursive_difference(self, other: "FieldSet") -> "FieldSet":
        """Difference that also drops everything *below* a member of ``other``."""
        out = FieldSet()
        out.members = self.members - other.members
        for pe, c in self.children.items():
            if pe in other.members:
                continue
            oc = other.children.get(pe)
            d = c.recursive_difference(oc) if oc else c.copy()
            if d:
                out.children[pe] = d
        return out

    __or__ = union
    __and__ = intersection
    __sub__ = difference

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSet) and self.members == other.members and self.children == other.children

    def paths(self, prefix: Path = ()) -> Iterator[Path]:
        """Member paths, in serialization order (a parent before its children)."""
        for pe in sorted(self.members | self.children.keys(), key=pe_sort_key):
            if pe in self.members:
                yield prefix + (pe,)
            if pe in self.children:
                yield from self.children[pe].paths(prefix + (pe,))

    def nodes(self, prefix: Path = ()) -> Iterator[Path]:
        """Every path in the trie, members and parents, parents first."""
        for pe in sorted(self.members | self.children.keys(), key=pe_sort_key):
            yield prefix + (pe,)
            if pe in self.children:
                yield from self.children[pe].nodes(prefix + (pe,))

    def __repr__(self) -> str:
        return "FieldSet(" + ", ".join(path_string(p) for p in self.paths()) + ")"

    # FieldsV1 -------------------------------------------------------------
    def to_fieldsv1(self) -> dict:
        """The FieldsV1 JSON object (``.`` first, then PEs in structured-merge-diff order)."""
        out: dict[str, Any] = {}
        for pe in sorted(self.members | self.children.keys(), key=pe_sort_key):
            child = self.children.get(pe)
            if child is None:
                out[pe] = {}
            elif pe in self.members:
                out[pe] = {".": {}, **child.to_fieldsv1()}
            else:
                out[pe] = child.to_fieldsv1()
        return out

    @classmethod
    def from_fieldsv1(cls, data: dict | None) -> "FieldSet":
        """Parse FieldsV1. Raises ValueError for malformed input."""
        out = cls()
        if not data:
            return out
        if not isinstance(data, dict):
            raise ValueError("FieldsV1 must be a JSON object")
        for pe, sub in data.items():
            if pe == ".":
                continue
            if len(pe) < 2 or pe[1] != ":" or pe[0] not in _TYPE_ORDER:
                raise ValueError(f"invalid path element {pe!r}")
            if pe[0] in "kv":
                pe = pe[:2] + _dumps(orjson.loads(pe[2:]))  # canonical form
            if not isinstance(sub, dict):
                raise ValueError(f"invalid FieldsV1 value under {pe!r}")
            if not sub or "." in sub:
                out.members.add(pe)
            child = cls.from_fieldsv1(sub)
            if child:
                out.children[pe] = child
        return out


# ---------------------------------------------------------------- fields_of

def is_leaf(value: Any, node: dict | None) -> bool:
    """Whether a value is owned as a whole: scalars, nulls, atomics and empty containers."""
    if isinstance(value, dict):
        return not value or is_atomic_map(node)
    if isinstance(value, list):
        return not value or list_type(node)[0] == "atomic"
    return True


def fields_of(obj: dict, node: dict | None, schemas: kschema.Schemas | None) -> FieldSet:
    """The set of fields an object sets (structured-merge-diff's ``ToFieldSet``).

    Raises ValueError when a map-list item cannot be keyed.
    """
    if node is not None and schemas is not None:
        node = schemas.resolve(node)
    return _children_of(obj, node, schemas)


def _children_of(value: Any, node: dict | None, schemas: kschema.Schemas | None) -> FieldSet:
    out = FieldSet()
    if isinstance(value, dict):
        struct = is_struct(node)
        for k, v in value.items():
            cn = prop(schemas, node, k)
            pe = "f:" + k
            declared = struct and k in node.get("properties", {})
            if declared and isinstance(v, dict) and not v and not is_atomic_map(cn) and not is_struct(cn):
                # An empty map in a known field (``labels: {}``) sets nothing: only its entries
                # would be owned, and there are none (Go drops it, being omitempty). An empty
                # struct (``resources: {}``) stays owned as a whole, as upstream records it.
                continue
            if is_leaf(v, cn):
                out.members.add(pe)
                continue
            sub = _children_of(v, cn, schemas)
            if sub:
                out.children[pe] = sub
            # Map entries (and fields the schema does not know) are owned as
            # entries; known struct fields only through what is inside them.
            if not (struct and k in node.get("properties", {})):
                out.members.add(pe)
    elif isinstance(value, list):
        ltype, keys = list_type(node)
        inode = items_of(schemas, node)
        for i, item in enumerate(value):
            pe = item_key(item, ltype, keys, inode, i)
            out.members.add(pe)
            if ltype == "map" and not is_leaf(item, inode):
                sub = _children_of(item, inode, schemas)
                if sub:
                    out.children[pe] = sub if pe not in out.children else out.children[pe] | sub
    return out
