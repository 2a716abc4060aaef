"""`EventRecorder`: write ``core/v1`` Events about objects, like client-go's ``tools/record``.

``recorder.event(obj, "Normal", "ScalingReplicaSet", "Scaled up ... to 3")``

Contracts:

- **Never blocks, never raises.** ``event()`` is a plain function: it stamps the
  time, queues the event and returns. A background task (started on first use,
  on the running loop) writes it. Bad arguments, a full queue (``queue_size``)
  and API failures are logged and the event dropped — recording an event must
  never break the controller that records it.
- **Correlated like client-go's EventCorrelator**, in this order:
  1. *aggregate*: once more than ``max_similar`` (10) events about one object
     share source/type/reason but differ in message within 10 minutes, further
     ones are folded into a single event whose message starts with
     ``(combined from similar events): ``;
  2. *spam filter*: per source+object, a token bucket (burst 25, refill one per
     5 minutes) drops floods;
  3. *deduplicate*: an event identical to one already written (same object,
     type, reason, message, source) bumps that Event's ``count`` and
     ``lastTimestamp`` with a merge patch instead of creating a new one.
- Events about one object are written in the order they were recorded; events
  about different objects are written by ``workers`` concurrent tasks (sharded by
  object, so a burst — a scheduler binding hundreds of pods — does not queue
  every write behind one round trip). ``await flush()`` waits until everything
  queued so far has been handled, ``await close()`` flushes and stops the
  background tasks.

Event shape: ``involvedObject`` (kind, namespace, name, uid, apiVersion,
resourceVersion), ``source.component``/``source.host``, ``reportingComponent``/
``reportingInstance``, ``firstTimestamp``/``lastTimestamp``/``count``; the Event
lives in the object's namespace (``default`` for cluster-scoped objects) and is
named ``<object name>.<hex timestamp>``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any

from kubeling.api.errors import StatusError
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.exceptions import TransportError
from kubeling.client.flowcontrol import TokenBucket

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
COMBINED_PREFIX = "(combined from similar events): "
_REF_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def object_reference(obj: dict) -> dict:
    """The ``ObjectReference`` for an object (or a reference dict passed as is)."""
    if "metadata" not in obj and "name" in obj:
        return {k: obj[k] for k in _REF_FIELDS if obj.get(k)}
    meta = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta.get("name"),
           "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
           "resourceVersion": meta.get("resourceVersion")}
    return {k: v for k, v in ref.items() if v}


def _time(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first_timestamp: str


class _LRU(collections.OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def touch(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class EventRecorder:
    """Records Events for ``component`` (on ``host``). See the module docstring."""

    def __init__(self, client: Any, component: str, host: str | None = None, *, clock: Clock | None = None,
                 queue_size: int = 1000, cache_size: int = 4096, max_similar: int = 10,
                 aggregate_window: float = 600.0, spam_burst: int = 25, spam_qps: float = 1 / 300,
                 max_retries: int = 3, retry_interval: float = 2.0, workers: int = 4) -> None:
        self.client = client
        self.component = component
        self.host = host or ""
        self._clock = clock or REAL_CLOCK
        self._workers = max(1, workers)
        self._queues: list[asyncio.Queue] = []
        self._queue_size = queue_size
        self._tasks: list[asyncio.Task | None] = [None] * self._workers
        self._seen: _LRU = _LRU(cache_size)        # dedup key -> _Seen
        self._similar: _LRU = _LRU(cache_size)     # aggregate key -> (messages, first seen)
        self._spam: _LRU = _LRU(cache_size)        # object key -> TokenBucket
        self.max_similar, self.aggregate_window = max_similar, aggregate_window
        self.spam_burst, self.spam_qps = spam_burst, spam_qps
        self.max_retries, self.retry_interval = max_retries, retry_interval
        self._last_suffix = 0
        self._closed = False

    # -- the caller's side --------------------------------------------------

    def event(self, obj: dict, type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``; never blocks, never raises."""
        try:
            self._enqueue(obj, type, reason, message)
        except Exception:
            log.exception("event recorder %s: dropping event %s/%s", self.component, type, reason)

    def eventf(self, obj: dict, type: str, reason: str, fmt: str, *args: Any) -> None:
        try:
            message = fmt % args if args else fmt
        except (TypeError, ValueError):
            message = f"{fmt} {args!r}"
        self.event(obj, type, reason, message)

    def _enqueue(self, obj: dict, type: str, reason: str, message: str) -> None:
        if self._closed:
            log.warning("event recorder %s is closed; dropping %s", self.component, reason)
            return
        if type not in (NORMAL, WARNING):
            log.error("event recorder %s: unsupported event type %r; dropping %s", self.component, type, reason)
            return
        ref = object_reference(obj)
        if not ref.get("name") or not ref.get("kind"):
            log.error("event recorder %s: object has no kind or name; dropping %s", self.component, reason)
            return
        if not self._queues:
            per = max(1, self._queue_size // self._workers)
            self._queues = [asyncio.Queue(per) for _ in range(self._workers)]
        loop = asyncio.get_running_loop()
        shard = hash((ref.get("kind"), ref.get("namespace"), ref.get("name"))) % self._workers
        task = self._tasks[shard]
        if task is None or task.done():
            self._tasks[shard] = loop.create_task(self._worker(self._queues[shard]),
                                                  name=f"events-{self.component}-{shard}")
        try:
            self._queues[shard].put_nowait((ref, type, reason, message, self._clock.wall(), self._clock.now()))
        except asyncio.QueueFull:
            log.warning("event recorder %s: queue full; dropping %s %s", self.component, reason, message)

    async def flush(self) -> None:
        """Wait until every event queued so far has been written or dropped."""
        for q, t in zip(self._queues, self._tasks):
            if t is not None and not t.done():
                await q.join()

    async def close(self) -> None:
        """Flush, then stop the background task. Later events are dropped."""
        self._closed = True
        try:
            await asyncio.shield(self.flush())
        finally:
            tasks = [t for t in self._tasks if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the background side ------------------------------------------------

    async def _worker(self, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            try:
                await self._record(*item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event recorder %s: writing event failed", self.component)
            finally:
                queue.task_done()

    async def _record(self, ref: dict, type: str, reason: str, message: str, wall, mono: float) -> None:
        obj_key = (ref.get("kind"), ref.get("namespace"), ref.get("name"), ref.get("uid"), ref.get("apiVersion"))
        source = (self.component, self.host)
        # 1. aggregate similar events that only differ in message
        agg_key = (source, obj_key, type, reason)
        messages, since = self._similar.get(agg_key, (set(), mono))
        if mono - since > self.aggregate_window:
            messages, since = set(), mono
        messages.add(message)
        self._similar.touch(agg_key, (messages, since))
        if len(messages) > self.max_similar:
            message = COMBINED_PREFIX + message
            dedup_key = (agg_key, COMBINED_PREFIX)
        else:
            dedup_key = (agg_key, message)
        # 2. spam filter per source+object
        bucket = self._spam.get((source, obj_key))
        if bucket is None:
            bucket = TokenBucket(self.spam_qps, self.spam_burst, self._clock)
        self._spam.touch((source, obj_key), bucket)
        if not bucket.try_accept():
            log.debug("event recorder %s: spam filter dropped %s for %s", self.component, reason, obj_key)
            return
        # 3. deduplicate: bump the count of an identical event already written
        now = _time(wall)
        seen = self._seen.get(dedup_key)
        if seen is not None:
            seen.count += 1
            self._seen.touch(dedup_key, seen)
            patch = {"count": seen.count, "lastTimestamp": now, "message": message}
            try:
                await self._with_retries(self.client.patch, "", "v1", "events", seen.name, patch,
                                         namespace=seen.namespace, patch_type="merge")
                return
            except StatusError as e:
                if e.code != 404:
                    raise
                # The Event was garbage-collected (TTL); write it again under the same name.
            body = self._build(ref, type, reason, message, seen.name, seen.namespace, seen.first_timestamp, now,
                               seen.count)
        else:
            namespace = ref.get("namespace") or "default"
            name = f"{ref['name']}.{self._suffix(wall)}"
            body = self._build(ref, type, reason, message, name, namespace, now, now, 1)
            seen = _Seen(name, namespace, 1, now)
        await self._with_retries(self.client.create, "", "v1", "events", body, namespace=seen.namespace)
        self._seen.touch(dedup_key, seen)

    def _build(self, ref: dict, type: str, reason: str, message: str, name: str, namespace: str, first: str,
               last: str, count: int) -> dict:
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason, "message": message, "type": type,
            "source": source,
            "firstTimestamp": first, "lastTimestamp": last, "count": count,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }

    def _suffix(self, wall) -> str:
        # client-go uses the UnixNano timestamp in hex; keep it strictly
        # increasing so two events in the same tick get distinct names.
        n = int(wall.timestamp() * 1e9)
        self._last_suffix = max(n, self._last_suffix + 1)
        return format(self._last_suffix, "x")

    async def _with_retries(self, fn: Any, *args: Any, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await fn(*args, **kw)
            except (TransportError, StatusError) as e:
                temporary = isinstance(e, TransportError) or e.code == 429 or e.code >= 500
                if not temporary or attempt >= self.max_retries:
                    raise
                attempt += 1
                await self._clock.sleep(self.retry_interval)
