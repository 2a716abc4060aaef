"""Storage: an etcd v3 shaped key-value store with revisions (see ``interface``).

``interface`` holds the contract; ``sqlite`` the embedded backend. Nothing here knows about
Kubernetes objects: keys are strings, values are bytes, revisions are resourceVersions.
"""

from kubeling.storage.interface import (
    DELETE,
    PUT,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyValue,
    ListResult,
    StorageError,
    Store,
    Watch,
    WatchOverflowError,
    prefix_end,
)
from kubeling.storage.sqlite import SQLiteStore

__all__ = [
    "DELETE",
    "PUT",
    "CompactedError",
    "Event",
    "FutureRevisionError",
    "KeyValue",
    "ListResult",
    "SQLiteStore",
    "StorageError",
    "Store",
    "Watch",
    "WatchOverflowError",
    "prefix_end",
]
