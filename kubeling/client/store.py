"""The informer's cache: object keys, the `Indexer`, and deletion tombstones.

Modelled on client-go's ``tools/cache`` store/index/thread-safe-store.

Keys: ``"<namespace>/<name>"`` for namespaced objects, ``"<name>"`` for
cluster-scoped ones (`meta_namespace_key`). Controllers enqueue these keys and
`split_meta_namespace_key` turns them back.

`Indexer` contract:

- It maps key → object and maintains named secondary indices; an *index
  function* maps an object to the list of index values it is filed under (the
  default ``namespace`` index files an object under its namespace).
- Objects handed out are the cached dicts themselves, shared with every other
  reader: **never mutate them** — ``copy.deepcopy`` first. Writers replace whole
  objects, so a dict you hold never changes under you.
- It is not thread-safe; it belongs to one asyncio event loop and every method
  is synchronous, so each call sees a consistent snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

IndexFunc = Callable[[dict], list[str]]

NAMESPACE_INDEX = "namespace"


def meta_namespace_key(obj: dict) -> str:
    """``namespace/name``, or ``name`` for cluster-scoped objects; tombstones give their key."""
    if isinstance(obj, DeletedFinalStateUnknown):
        return obj.key
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    ns = meta.get("namespace")
    return f"{ns}/{name}" if ns else name


def split_meta_namespace_key(key: str) -> tuple[str, str]:
    """``"ns/name"`` → ``("ns", "name")``; ``"name"`` → ``("", "name")``."""
    parts = key.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2 and parts[1]:
        return parts[0], parts[1]
    raise ValueError(f"unexpected key format: {key!r}")


def meta_namespace_index(obj: dict) -> list[str]:
    return [(obj.get("metadata") or {}).get("namespace") or ""]


@dataclass(frozen=True)
class DeletedFinalStateUnknown:
    """Handed to ``on_delete`` when a deletion was inferred from a re-list.

    The watch missed the DELETED event (it was disconnected, or its history
    expired), so ``obj`` is the last state the cache held — possibly stale.
    """

    key: str
    obj: dict


def object_of(obj: dict | DeletedFinalStateUnknown) -> dict:
    """The object itself, unwrapping a tombstone (handy at the top of ``on_delete``)."""
    return obj.obj if isinstance(obj, DeletedFinalStateUnknown) else obj


class Indexer:
    """A keyed cache with secondary indices. See the module docstring."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None,
                 key_func: Callable[[dict], str] = meta_namespace_key) -> None:
        self.key_func = key_func
        self._items: dict[str, dict] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: meta_namespace_index}
        self._indices: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}
        if indexers:
            self.add_indexers(indexers)

    # -- reads --------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        return self._items.get(key)

    def get_object(self, obj: dict) -> dict | None:
        """The cached version of ``obj`` (looked up by its key)."""
        return self._items.get(self.key_func(obj))

    def list(self) -> list[dict]:
        return list(self._items.values())

    def list_keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def by_index(self, index_name: str, value: str) -> list[dict]:
        """Every object filed under ``value`` in index ``index_name``."""
        return [self._items[k] for k in self.index_keys(index_name, value)]

    def index_keys(self, index_name: str, value: str) -> list[str]:
        if index_name not in self._indexers:
            raise KeyError(f"index {index_name!r} does not exist")
        return sorted(self._indices[index_name].get(value, ()))

    def index_values(self, index_name: str) -> list[str]:
        if index_name not in self._indexers:
            raise KeyError(f"index {index_name!r} does not exist")
        return sorted(self._indices[index_name])

    def has_indexer(self, index_name: str) -> bool:
        return index_name in self._indexers

    def indexer_func(self, index_name: str) -> IndexFunc | None:
        return self._indexers.get(index_name)

    def by_namespace(self, namespace: str) -> list[dict]:
        return self.by_index(NAMESPACE_INDEX, namespace)

    # -- writes -------------------------------------------------------------

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        """Add index functions; existing objects are indexed at once."""
        for name, fn in indexers.items():
            if name in self._indexers:
                raise ValueError(f"indexer {name!r} already exists")
            self._indexers[name] = fn
            self._indices[name] = {}
            for key, obj in self._items.items():
                self._index_one(name, key, obj)

    def add(self, obj: dict) -> dict | None:
        """Insert or replace ``obj``; return the previous object under its key, if any."""
        key = self.key_func(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)
        return old

    update = add

    def delete(self, obj_or_key: dict | str) -> dict | None:
        """Remove by object or key; return what was cached, if anything."""
        key = obj_or_key if isinstance(obj_or_key, str) else self.key_func(obj_or_key)
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[dict]) -> None:
        """Make the cache hold exactly ``objs``."""
        self._items = {}
        self._indices = {name: {} for name in self._indexers}
        for obj in objs:
            self.add(obj)

    def _index_one(self, name: str, key: str, obj: dict) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj) or ():
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: dict) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj) or ():
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
