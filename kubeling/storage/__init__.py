"""Storage: an etcd v3 shaped key-value store with revisions (see ``interface``).

``interface`` holds the contract; ``sqlite`` the embedded backend; ``etcd`` the etcd v3 backend
(``kubeling server --datastore-endpoint``, imported on use); ``memory`` an in-memory fake for
in-process tests; ``backup`` online backups, offline restores and integrity checks of a
SQLite state file. Nothing here knows about Kubernetes objects: keys are strings, values are
bytes, revisions are resourceVersions.
"""

from kubeling.storage.interface import (
    DELETE,
    PUT,
    CompactedError,
    CorruptStoreError,
    Event,
    FutureRevisionError,
    InsufficientStorageError,
    KeyValue,
    ListResult,
    StorageError,
    StorageTimeoutError,
    Store,
    UnavailableError,
    Watch,
    WatchOverflowError,
    prefix_end,
)
from kubeling.storage import backup
from kubeling.storage.memory import MemoryStore
from kubeling.storage.sqlite import SQLiteStore

__all__ = [
    "backup",
    "DELETE",
    "PUT",
    "CompactedError",
    "CorruptStoreError",
    "Event",
    "FutureRevisionError",
    "InsufficientStorageError",
    "KeyValue",
    "ListResult",
    "MemoryStore",
    "SQLiteStore",
    "StorageError",
    "StorageTimeoutError",
    "Store",
    "UnavailableError",
    "Watch",
    "WatchOverflowError",
    "prefix_end",
]
