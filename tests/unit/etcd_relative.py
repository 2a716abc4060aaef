"""One test's view of a shared etcd: the contract tests run on a real etcd member that lives for
the whole module, so each test sees the store through `RelativeStore`: its keys under a prefix of
its own, and revisions counted from the revision etcd was at when the test opened the store (a
fresh etcd is at revision 1, a used one anywhere). Everything else is the real `EtcdStore`."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from kubeling.storage import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    WatchOverflowError,
)
from kubeling.storage.etcd import EtcdStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.etcd import EtcdCluster  # noqa: E402

__all__ = ["EtcdCluster", "RelativeStore"]

_namespaces = itertools.count(1)


class RelativeStore:
    def __init__(self, store: EtcdStore, ns: str, base: int) -> None:
        self.store, self.ns, self.base = store, ns, base

    @classmethod
    async def open(cls, endpoint: str, **kw) -> "RelativeStore":
        store = await EtcdStore.open(endpoint, **kw)
        return cls(store, f"/ct{next(_namespaces):06d}", await store.current_revision())

    # -- translation --
    def _key(self, key):
        return self.ns + key if isinstance(key, str) and key else key

    def _abs(self, rev):
        return rev + self.base if isinstance(rev, int) and rev > 0 else rev

    def _rel(self, rev: int) -> int:
        return max(rev - self.base, 0)

    def _kv(self, kv: KeyValue | None) -> KeyValue | None:
        if kv is None:
            return None
        return KeyValue(kv.key[len(self.ns):], kv.value, self._rel(kv.create_revision), self._rel(kv.mod_revision))

    def _event(self, ev: Event) -> Event:
        return Event(ev.type, self._kv(ev.kv), self._kv(ev.prev_kv))

    def _error(self, e: Exception) -> Exception:
        if isinstance(e, WatchOverflowError):
            return WatchOverflowError(self._rel(e.compact_revision), self._rel(e.current_revision),
                                      self._rel(e.last_revision))
        if isinstance(e, CompactedError):
            return CompactedError(self._rel(e.compact_revision), self._rel(e.current_revision))
        if isinstance(e, FutureRevisionError):
            return FutureRevisionError(e.revision - self.base, self._rel(e.current_revision))
        return e

    async def _run(self, coro):
        try:
            return await coro
        except (CompactedError, FutureRevisionError) as e:
            raise self._error(e) from None

    # -- the Store protocol --
    async def get(self, key):
        rev, kv = await self._run(self.store.get(self._key(key)))
        return self._rel(rev), self._kv(kv)

    async def list(self, prefix, *, revision=0, start_after="", limit=0):
        res = await self._run(self.store.list(self.ns + prefix, revision=self._abs(revision),
                                              start_after=self._key(start_after), limit=limit))
        return ListResult(self._rel(res.revision), [self._kv(kv) for kv in res.kvs], res.more, res.count)

    async def count(self, prefix):
        return await self.store.count(self.ns + prefix)

    async def create(self, key, value):
        ok, kv = await self._run(self.store.create(self._key(key), value))
        return ok, self._kv(kv)

    async def update(self, key, value, expected_mod_revision):
        ok, kv = await self._run(self.store.update(self._key(key), value, self._abs(expected_mod_revision)))
        return ok, self._kv(kv)

    async def delete(self, key, expected_mod_revision=0):
        ok, kv = await self._run(self.store.delete(self._key(key), self._abs(expected_mod_revision)))
        return ok, self._kv(kv)

    def watch(self, prefix, start_revision):
        return RelativeWatch(self, self.store.watch(self.ns + prefix, self._abs(start_revision)))

    async def current_revision(self):
        return self._rel(await self.store.current_revision())

    async def compact(self, revision):
        return self._rel(await self._run(self.store.compact(self._abs(revision))))

    @property
    def compact_revision(self):
        return self._rel(self.store.compact_revision)

    async def check(self):
        return await self.store.check()

    async def close(self):
        await self.store.close()

    def watcher_count(self):
        return self.store.watcher_count()


class RelativeWatch:
    def __init__(self, view: RelativeStore, watch) -> None:
        self.view, self.watch = view, watch

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return self.view._event(await self.watch.__anext__())
        except (CompactedError, FutureRevisionError) as e:
            raise self.view._error(e) from None

    def close(self):
        self.watch.close()

    def pending(self):
        return self.watch.pending()

    def progress(self):
        return self.view._rel(self.watch.progress())

    @property
    def next_revision(self):
        return self.view._rel(self.watch.next_revision)

    @property
    def _live(self):
        return self.watch._live
