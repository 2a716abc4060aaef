"""The client machinery every component uses to talk to the API server (over HTTP only).

One concept per module, after client-go:

    kubeconfig      load a kubeconfig → `Config` (server, TLS material, credentials, namespace)
    transport       the HTTP boundary (`Transport` protocol, aiohttp implementation) — the test seam
    rest            `RESTClient`: get/list/create/update/update_status/patch/delete/watch on plain dicts
    exceptions      the exception tree (`StatusError` ← `ResourceExpired`, `TransportError`, `ConfigError`)
    store           object keys, the `Indexer` cache, `DeletedFinalStateUnknown` tombstones
    informer        `Informer`: list+watch → cache → ordered handler notifications
    factory         `SharedInformerFactory`: one informer per collection, shared by a process
    workqueue       `RateLimitingQueue`: dedupe, never-concurrent keys, backoff retries, shutdown
    events          `EventRecorder`: non-blocking, correlated core/v1 Events
    leaderelection  `LeaderElector` on coordination.k8s.io/v1 Leases
    clock           the injectable clock (`RealClock`, `FakeClock`) every timed piece takes
    flowcontrol     `TokenBucket` shared by the REST client and the workqueue
    fake            `FakeClient`: an in-memory API for tests (a test seam; not imported here)

A controller's life in these terms (`kubeling.controllers.base.Controller` packages it)::

    client = RESTClient.from_kubeconfig(component="kube-controller-manager")
    factory = SharedInformerFactory(client)
    pods = factory.informer_for("", "v1", "pods")
    queue = RateLimitingQueue()
    reg = pods.add_handler(on_add=lambda o: queue.add(meta_namespace_key(o)), ...)
    factory.start(stop); await reg.wait_for_sync()
    workers: get → sync(key) → forget/add_rate_limited → done

Errors: components import `StatusError`, `ResourceExpired` and the ``is_*`` predicates from
here, never from `kubeling.api`.

Concurrency: everything here belongs to one asyncio event loop; nothing is thread-safe.
"""

from kubeling.api.errors import StatusError
from kubeling.client.clock import Clock, FakeClock, RealClock
from kubeling.client.events import EventRecorder
from kubeling.client.exceptions import (
    ConfigError,
    ResourceExpired,
    TransportError,
    is_already_exists,
    is_conflict,
    is_forbidden,
    is_gone,
    is_invalid,
    is_not_found,
    is_too_many_requests,
)
from kubeling.client.factory import InformerKey, SharedInformerFactory
from kubeling.client.informer import Informer, wait_for_cache_sync
from kubeling.client.kubeconfig import Config
from kubeling.client.leaderelection import LeaderElector
from kubeling.client.rest import RESTClient, Watch
from kubeling.client.store import (
    DeletedFinalStateUnknown,
    Indexer,
    meta_namespace_key,
    object_of,
    split_meta_namespace_key,
)
from kubeling.client.workqueue import RateLimitingQueue

__all__ = [
    "Clock", "Config", "ConfigError", "DeletedFinalStateUnknown", "EventRecorder", "FakeClock", "Indexer",
    "Informer", "InformerKey", "LeaderElector", "RESTClient", "RateLimitingQueue", "RealClock", "ResourceExpired",
    "SharedInformerFactory", "StatusError", "TransportError", "Watch", "is_already_exists", "is_conflict",
    "is_forbidden", "is_gone", "is_invalid", "is_not_found", "is_too_many_requests", "meta_namespace_key",
    "object_of", "split_meta_namespace_key", "wait_for_cache_sync",
]
