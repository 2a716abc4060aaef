"""The storage contract: an etcd v3 shaped key-value store with revisions.

Every Kubernetes object is stored as JSON bytes under a key such as
``/registry/apps/deployments/default/web``. The store knows nothing about Kubernetes; it keeps
keys, values and revisions, exactly like etcd, so that the etcd backend (``etcd.py``) maps each
method 1:1 onto an etcd v3 RPC:

====================  ======================================================================
``get``               Range(key)
``list``              Range(prefix, prefix_end, revision, limit) + a count-only Range
``count``             Range(prefix, prefix_end, count_only=True)
``create``            Txn(If create_revision(key) == 0, Then Put, Else Range)
``update``            Txn(If mod_revision(key) == expected, Then Put, Else Range)
``delete``            Txn(If mod_revision(key) == expected, Then DeleteRange(prev_kv), Else Range)
``watch``             Watch(prefix, start_revision, prev_kv=True)
``compact``           Compact(revision)
====================  ======================================================================

Revisions
---------
The store has one global revision counter. Every successful mutation (create, update or delete)
increments it by exactly one and stamps the new revision on the key as its ``mod_revision``. A
failed compare-and-swap changes nothing. The revision *is* the Kubernetes ``resourceVersion``.
``create_revision`` is the revision at which the current incarnation of the key was created; a
key deleted and created again gets a new ``create_revision``.

Expected outcomes are values, faults are exceptions
---------------------------------------------------
A lost compare-and-swap (key exists on create, revision mismatch on update/delete) is a normal
outcome and comes back as ``(False, current_kv)``. Exceptions are for the rest::

    StorageError                  any fault of the backend (I/O, closed store, ...)
    ├── CompactedError            the requested revision is no longer retained   -> HTTP 410
    │   └── WatchOverflowError    a watcher fell too far behind and was dropped   -> HTTP 410
    ├── FutureRevisionError       the requested revision has not happened yet    -> HTTP 504
    ├── InsufficientStorageError  a write could not be persisted: disk full/I/O  -> HTTP 507
    ├── UnavailableError          no member of the backend answers (etcd down,   -> HTTP 503
    │   │                         no leader); nothing was changed
    │   └── StorageTimeoutError   the backend did not answer in time; a write's  -> HTTP 504
    │                             outcome is unknown (re-read the key)
    └── CorruptStoreError         the stored data is damaged; restore a backup   -> HTTP 500

Health
------
``check()`` raises the :class:`StorageError` that describes the store's current fault (a write
failed for lack of space or an I/O error, or the data was found corrupt) and returns ``None``
while it is healthy. A store that lost a write to a full disk heals by itself: ``check()`` then
tries a small write that does not change the revision, and reports healthy once one succeeds.

Cancellation
------------
Cancelling a pending ``create``/``update``/``delete`` does not undo it: as with etcd, the write
may or may not have been applied. Re-read the key to find out.

Watch contract
--------------
A watch yields every event on keys under ``prefix`` whose revision is ``>= start_revision``, in
strictly increasing revision order, with no gaps and no duplicates. ``start_revision == 0`` means
"only events that happen after the watch was created". If the start revision has been compacted
the first iteration raises :class:`CompactedError`. If the consumer does not keep up, the watch
ends with :class:`WatchOverflowError` (a :class:`CompactedError`) after the already buffered
events have been delivered; the client must relist, exactly as after a 410 from etcd's compactor.
``close()`` is idempotent and ends the iteration (``StopAsyncIteration``) at the next step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol, runtime_checkable

PUT = "PUT"
DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key. ``mod_revision`` is the resourceVersion of this version."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one key.

    ``type`` is ``"PUT"`` or ``"DELETE"``; a create is a PUT whose
    ``kv.create_revision == kv.mod_revision`` (and ``prev_kv is None``). For a DELETE, ``kv``
    carries the last value of the key with ``mod_revision`` = the revision of the delete, and
    ``prev_kv`` is that same last value with its original ``mod_revision``.
    """

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class ListResult:
    """A page of keys read at one consistent revision.

    ``kvs`` are sorted by key. ``more`` says keys remain after the last one returned (the limit
    was hit). ``count`` is the total number of live keys under the prefix with key greater than
    ``start_after`` at ``revision`` (so ``count - len(kvs)`` is ``remainingItemCount``).
    """

    revision: int
    kvs: list[KeyValue]
    more: bool
    count: int


class StorageError(Exception):
    """Base of every storage fault. Lost compare-and-swaps are *not* errors."""


class CompactedError(StorageError):
    """The requested revision has been compacted away (etcd ``ErrCompacted``)."""

    def __init__(self, compact_revision: int, current_revision: int, message: str = "") -> None:
        self.compact_revision = compact_revision
        self.current_revision = current_revision
        super().__init__(
            message
            or f"required revision has been compacted (compact revision {compact_revision}, "
            f"current revision {current_revision})"
        )


class WatchOverflowError(CompactedError):
    """A watcher's buffer overflowed because its consumer was too slow; the watch was dropped.

    It is a :class:`CompactedError` on purpose: the events the watcher still needed are no longer
    kept for it, which is what etcd reports to a watcher that falls behind its compactor. The
    apiserver turns it into ``410 Gone`` so the client relists. ``last_revision`` is the revision
    of the last event the consumer received (or ``start_revision - 1``).
    """

    def __init__(self, compact_revision: int, current_revision: int, last_revision: int) -> None:
        self.last_revision = last_revision
        super().__init__(
            compact_revision,
            current_revision,
            f"watch fell too far behind and was dropped after revision {last_revision}; relist",
        )


class FutureRevisionError(StorageError):
    """A revision newer than the current one was requested (etcd ``ErrFutureRev``)."""

    def __init__(self, revision: int, current_revision: int) -> None:
        self.revision = revision
        self.current_revision = current_revision
        super().__init__(
            f"required revision {revision} is a future revision (current revision "
            f"{current_revision})"
        )


class InsufficientStorageError(StorageError):
    """A write was not persisted because the disk is full or failing; nothing of it happened.

    The analogue of etcd's ``mvcc: database space exceeded``: the apiserver answers 507 (or 500
    with reason ``StorageError``). Reads keep working, and writes work again once space is freed.
    """


class UnavailableError(StorageError):
    """The backend cannot serve now: no etcd member answers, or the cluster has no leader.

    The apiserver answers 503 (``ServiceUnavailable``) and ``/readyz`` fails its ``etcd`` check;
    it heals by itself once a member is back.
    """


class StorageTimeoutError(UnavailableError):
    """The backend did not answer in time (etcd ``DEADLINE_EXCEEDED``, ``request timed out``),
    or a write failed in a way that does not say whether it was applied: re-read to find out.
    The apiserver answers 504 (``Timeout``)."""


class CorruptStoreError(StorageError):
    """The store's data is damaged (or is not a store at all): the backend refuses to serve it.

    The message names the file, says what is wrong and how to restore a backup. Unlike a full
    disk this does not heal by itself.
    """


@runtime_checkable
class Watch(Protocol):
    """An async iterator of :class:`Event`; see the module docstring for the contract."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    def close(self) -> None:
        """Stop the watch. Idempotent; the iteration ends at its next step."""

    def pending(self) -> int:
        """How many events are buffered and can be yielded without waiting (0 if unknown)."""

    def progress(self) -> int:
        """etcd's progress notification: a revision P such that every event under the prefix
        with revision <= P has been yielded or is buffered. Commits that touch nothing under the
        prefix advance P without an event; the watch cache uses it to know it is current."""


@runtime_checkable
class Store(Protocol):
    """An etcd v3 shaped store. All methods are safe to call concurrently from one event loop."""

    async def get(self, key: str) -> tuple[int, KeyValue | None]:
        """Return ``(current revision, kv or None)``."""

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        """Read live keys under ``prefix`` at ``revision`` (0 = now), keys ``> start_after``.

        ``limit`` 0 means no limit. Raises :class:`CompactedError` if ``revision`` is older than
        the compact revision and :class:`FutureRevisionError` if it is newer than the current one.
        """

    async def count(self, prefix: str) -> int:
        """Number of live keys under ``prefix`` now."""

    async def create(self, key: str, value: bytes) -> tuple[bool, KeyValue | None]:
        """Create ``key``. ``(True, new kv)``, or ``(False, existing kv)`` if it exists."""

    async def update(
        self, key: str, value: bytes, expected_mod_revision: int
    ) -> tuple[bool, KeyValue | None]:
        """Compare-and-swap. ``(True, new kv)``, or ``(False, current kv or None)``."""

    async def delete(
        self, key: str, expected_mod_revision: int = 0
    ) -> tuple[bool, KeyValue | None]:
        """Delete ``key`` (``expected_mod_revision`` 0 = unconditionally).

        ``(True, kv)`` where kv holds the deleted value and ``mod_revision`` = the delete's
        revision, or ``(False, current kv or None)``.
        """

    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Watch ``prefix`` from ``start_revision`` (inclusive; 0 = from now)."""

    async def current_revision(self) -> int:
        """The revision of the last committed mutation."""

    async def compact(self, revision: int) -> int:
        """Drop history up to ``revision``; return the compact revision now in force.

        Afterwards ``list`` accepts revisions ``>= revision`` and ``watch`` start revisions
        ``> revision``. Compacting at or below the revision in force is a no-op (not an error);
        a revision newer than the current one raises :class:`FutureRevisionError`.
        """

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction (0 if none)."""

    async def check(self) -> None:
        """Raise the :class:`StorageError` describing the store's fault, if it has one.

        Cheap while healthy (no write); see "Health" in the module docstring. ``/readyz`` calls it.
        """

    async def close(self) -> None:
        """Finish queued writes, end every watch and release resources. Idempotent."""


def check_key(key: str) -> str:
    """A key as every backend accepts it: a non-empty string (ValueError otherwise)."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    return key


def as_bytes(value) -> bytes:
    """A value as every backend stores it: bytes (bytearray and memoryview are copied)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value must be bytes, not {type(value).__name__}")


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (etcd's range_end).

    ``None`` means "no upper bound" (empty prefix, or a prefix of only U+10FFFF characters).
    String order here is code point order, which equals the byte order of UTF-8 that SQLite and
    etcd use, so the bound is the same for every backend.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip over them
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None
