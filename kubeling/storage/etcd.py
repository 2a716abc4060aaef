"""The etcd v3 backend of :class:`kubeling.storage.interface.Store`.

Each Store method is one etcd v3 RPC (the table in ``interface``), spoken through the generated
gRPC stubs that ship with aetcd (``aetcd.rpc``) on channels of our own: aetcd's client talks to
one endpoint only, and we need several with failover, ``prev_kv`` on deletes and watches, and
raw ``Txn``s. Keys are stored as they are (``/registry/<group>/<resource>/<ns>/<name>``), values
are the bytes the API server hands us (JSON), so ``etcdctl get --prefix /registry/`` shows
upstream's layout. The etcd revision is the resourceVersion; nothing assumes it starts at 1 (a
fresh etcd is at revision 1 and its first write gets 2).

Endpoints and failover
----------------------
One gRPC channel per endpoint (``http://`` insecure, ``https://`` TLS with an optional client
certificate). Calls go to the current endpoint; an ``UNAVAILABLE`` answer (member down, no
leader, leader changed) moves to the next one. Reads are retried there until ``request_timeout``
runs out. A write that failed with ``UNAVAILABLE`` may or may not have been applied, so it is
never blindly re-sent: the key is read back (from another member). If the read proves the write
did not happen (create: the key is absent; update/delete: the key still has the expected mod
revision), it is sent again. Otherwise the key's history tells: at most one write can apply
after the revision it was conditioned on, so the first event of the key after that revision is
either ours (same value; for a delete, a DELETE) -- acknowledged with its revision -- or the one
ours lost to -- answered as a lost compare-and-swap. Only when that history is compacted first
is the outcome unknown: :class:`StorageTimeoutError` (504), as etcd's own clients report
``context deadline exceeded``. Every member unreachable: :class:`UnavailableError` (503).

Watches: one stream for the whole keyspace
------------------------------------------
The store keeps a single etcd watch over the *whole* keyspace (``prev_kv``) from the revision it
opened at, and fans its events out in process with the same
:class:`~kubeling.storage.broadcaster.Broadcaster` the SQLite store uses: ``watch(prefix, R)``
subscribes first, then backfills the revisions ``R..`` (the last published one) from a temporary
etcd watch, and dedupes. Watching everything, rather than one etcd watch per prefix, makes
``progress()`` exact: every etcd revision carries at least one event, so once the stream has
delivered revision P every event of every prefix up to P is in hand. etcd's own progress
notifications are not used for that on purpose: on etcd before 3.4.25/3.5.8 a progress response
can overtake events still queued for the stream (etcd issue 15220; upstream's apiserver only uses
them from 3.4.31/3.5.13), and Debian ships 3.4.23. The stream is re-opened on another member
from the next revision after a failure (gap-free); if that revision was compacted meanwhile,
every watch ends with :class:`CompactedError` (410: the clients relist). A write is acknowledged
after its event was fanned out (bounded by ``ack_timeout`` so an acknowledged write never fails
because the stream is catching up).

Compaction
----------
``compact(R)`` is etcd's Compact RPC. The periodic compactor does what upstream's apiserver
compactor does so that, with several API servers on one etcd, one of them compacts per interval:
a compare-and-swap on the ``version`` of the key ``compact_rev_key`` (the winner writes the target
revision into it), then Compact. Every store learns other servers' compactions from that key's
events on its stream. The compactor keeps ``compact_keep`` revisions (its own writes to
``compact_rev_key`` do not count as activity).

Errors
------
``UNAVAILABLE`` (member down, ``etcdserver: no leader``, ``leader changed``) -> UnavailableError
(503); ``DEADLINE_EXCEEDED`` and ``etcdserver: request timed out`` -> StorageTimeoutError (504);
``RESOURCE_EXHAUSTED`` ``mvcc: database space exceeded`` -> InsufficientStorageError (507);
``mvcc: required revision has been compacted`` -> CompactedError; ``... is a future revision``
-> FutureRevisionError. ``check()`` (the ``etcd`` check of ``/readyz``) asks the cluster's
status with a short timeout, caches the answer for about a second, and reports an active
``NOSPACE`` alarm as InsufficientStorageError.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import os
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

# The API server forks only to exec its children: gRPC's fork handlers are not needed, and they
# log "skipping fork() handlers" at every child start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
from aetcd import rpc  # noqa: E402

from kubeling.storage.broadcaster import Broadcaster, BufferedWatch
from kubeling.storage.interface import (
    as_bytes as _as_bytes,
    check_key as _check_key,
    DELETE,
    PUT,
    CompactedError,
    Event,
    FutureRevisionError,
    InsufficientStorageError,
    KeyValue,
    ListResult,
    StorageError,
    StorageTimeoutError,
    UnavailableError,
    prefix_end,
)

log = logging.getLogger(__name__)

COMPACT_REV_KEY = b"compact_rev_key"  # upstream's apiserver compactor key, outside /registry/
INT64_MAX = 2**63 - 1
LIST_TIMEOUT = 60.0  # seconds a list may take (a point read fails over after a third of request_timeout)
ALL_KEYS = b"\0"  # key and range_end of a range over the whole keyspace

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", 64 << 20),
    # Reconnect quickly after a member comes back (gRPC's defaults back off up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Notice a dead member on an idle watch stream (etcd allows pings every 5 s).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
]
# etcd's clientv3.WithRequireLeader: a member cut off from the leader cancels the watch instead of
# going silent.
_REQUIRE_LEADER = (("hasleader", "true"),)


class EtcdConfigError(StorageError, ValueError):
    """A bad ``--datastore-*`` setting (endpoint URL, certificate file): one line, no traceback."""


class _Endpoint:
    def __init__(self, url: str, credentials: grpc.ChannelCredentials | None) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EtcdConfigError(f"--datastore-endpoint: bad etcd endpoint {url!r}: want http(s)://host:port")
        self.url = url
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self.target = f"{host}:{parts.port or 2379}"
        if parts.scheme == "https":
            if credentials is None:
                credentials = grpc.ssl_channel_credentials()
            self.channel = grpc.aio.secure_channel(self.target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)


def parse_endpoints(endpoints: str | Iterable[str]) -> list[str]:
    """``"http://a:2379,http://b:2379"`` or a list of URLs -> a list of URLs."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    out = [e.strip() for e in endpoints if e and e.strip()]
    if not out:
        raise EtcdConfigError("--datastore-endpoint: no etcd endpoint given")
    return out


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _s(b: bytes) -> str:
    try:
        return b.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # another tenant's binary key: kept apart, matches no prefix of ours
        return b.decode("utf-8", "surrogateescape")


def _kv(pb: Any) -> KeyValue:
    return KeyValue(_s(pb.key), bytes(pb.value), pb.create_revision, pb.mod_revision)


def _event(pb: Any) -> Event:
    kv = _kv(pb.kv)
    prev = _kv(pb.prev_kv) if pb.HasField("prev_kv") else None
    if pb.type == rpc.Event.DELETE:
        # etcd's DELETE event carries only the key; the contract wants the last value in kv.
        last = prev or KeyValue(kv.key, b"", 0, 0)
        return Event(DELETE, KeyValue(kv.key, last.value, last.create_revision, kv.mod_revision), prev)
    if kv.create_revision == kv.mod_revision:
        prev = None  # a (re)create: the key had no live value before
    return Event(PUT, kv, prev)


def _retryable(e: grpc.aio.AioRpcError) -> bool:
    """The member cannot serve now, another may: down, no leader, leader changed, stopping."""
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or (
        e.code() == grpc.StatusCode.UNKNOWN and "leader" in (e.details() or ""))


def _map_error(e: grpc.aio.AioRpcError, what: str, *, current: int = 0, compact: int = 0,
               revision: int = 0) -> StorageError:
    code, details = e.code(), e.details() or ""
    msg = f"{what}: etcd: {details or code.name}"
    if "database space exceeded" in details or "NOSPACE" in details:
        return InsufficientStorageError(msg)
    if "too many requests" in details:  # etcd sheds load: try again (503)
        return UnavailableError(msg)
    if "required revision has been compacted" in details:
        return CompactedError(compact, current)
    if "future revision" in details:
        return FutureRevisionError(revision, current)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "timed out" in details:
        return StorageTimeoutError(msg)
    if _retryable(e):
        return UnavailableError(msg)
    return StorageError(msg)


class _Ambiguous(Exception):
    """A write failed in a way that does not say whether etcd applied it."""

    def __init__(self, cause: grpc.aio.AioRpcError) -> None:
        self.cause = cause


class EtcdStore:
    """A :class:`~kubeling.storage.interface.Store` on an etcd v3 cluster (module docstring).

    ``await EtcdStore.open(endpoints, ca_file=..., cert_file=..., key_file=...)``; ``endpoints``
    is a list of ``http(s)://host:port`` URLs (or one comma-separated string). Options:
    ``compact_interval`` seconds between compactions (0 disables the compactor), keeping the
    last ``compact_keep`` revisions; ``watch_buffer`` events a watcher may lag before it is
    dropped; ``request_timeout`` seconds a call may take, failovers included;
    ``check_timeout`` seconds the health check waits for a member; ``open_timeout`` seconds
    ``open`` waits for a member to answer (etcd starting beside us) before giving up.
    """

    def __init__(self, endpoints: str | Iterable[str], *, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 compact_interval: float = 300, compact_keep: int = 1000, watch_buffer: int = 10000,
                 request_timeout: float = 10.0, check_timeout: float = 1.0,
                 ack_timeout: float = 2.0, open_timeout: float = 60.0) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.compact_interval = compact_interval
        self.compact_keep = compact_keep
        self.request_timeout = request_timeout
        self.check_timeout = check_timeout
        self.ack_timeout = ack_timeout
        self.open_timeout = open_timeout
        creds = None
        if any(u.startswith("https://") for u in self.endpoints) or ca_file or cert_file:
            def read(path: str | None, flag: str) -> bytes | None:
                if not path:
                    return None
                try:
                    with open(path, "rb") as f:
                        return f.read()
                except OSError as e:
                    raise EtcdConfigError(f"{flag} {path}: {e.strerror}") from None
            if bool(cert_file) != bool(key_file):
                raise EtcdConfigError("--datastore-certfile and --datastore-keyfile go together")
            creds = grpc.ssl_channel_credentials(read(ca_file, "--datastore-cafile"),
                                                 read(key_file, "--datastore-keyfile"),
                                                 read(cert_file, "--datastore-certfile"))
        self._creds = creds
        self._eps: list[_Endpoint] = []
        self._cur = 0
        self._hub = Broadcaster(self._read_backfill, revision=0, compact_revision=0, buffer=watch_buffer)
        self._hub_task: asyncio.Task[None] | None = None
        self._acks: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._compactor: asyncio.Task[None] | None = None
        self._compactor_revs: list[int] = []  # revisions of compactors' writes, ascending
        self._health: tuple[float, StorageError | None] = (0.0, None)
        self._health_lock: asyncio.Lock | None = None
        self._opened = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, endpoints: str | Iterable[str], **kwargs: Any) -> EtcdStore:
        store = cls(endpoints, **kwargs)
        try:
            await store._start()
        except BaseException:
            await store.close()
            raise
        return store

    async def __aenter__(self) -> EtcdStore:
        if not self._opened:
            await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _start(self) -> None:
        self._eps = [_Endpoint(u, self._creds) for u in self.endpoints]
        self._health_lock = asyncio.Lock()
        self._opened = True
        deadline = time.monotonic() + self.open_timeout
        while True:  # etcd may be starting with us (a cluster coming up): wait for it a while
            try:
                resp = await self._range(COMPACT_REV_KEY)
                break
            except UnavailableError as e:
                if time.monotonic() + 1 >= deadline:
                    raise UnavailableError(f"cannot reach etcd at {', '.join(self.endpoints)}: {e}") from None
                log.warning("waiting for etcd at %s: %s", ", ".join(self.endpoints), e)
                await asyncio.sleep(1)
        current = resp.header.revision
        if resp.kvs:
            self._mark_compactor_write(resp.kvs[0].mod_revision)
            try:
                self._hub.compact_revision = int(resp.kvs[0].value)
            except ValueError:
                pass
        self._hub.revision = current
        self._hub.compact_revision = max(self._hub.compact_revision, await self._probe_compacted())
        self._hub_task = asyncio.create_task(self._hub_loop(current + 1), name="etcd-watch")
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_loop(), name="etcd-compactor")

    async def _probe_compacted(self) -> int:
        """etcd's compact revision (0 if it never compacted): etcd tells it to a watch that
        starts below it. The watch is on a key nobody writes, so an uncompacted history costs
        nothing to skip. Compactions by others (``etcdctl compact``, auto-compaction) are learnt
        here, so that the watch cache does not list a revision that is gone."""
        try:
            await self._range(COMPACT_REV_KEY, revision=1, count_only=True, what="compaction probe")
            return 0  # revision 1 is readable: never compacted
        except CompactedError:
            pass
        except StorageError as e:
            log.warning("etcd: could not learn the compact revision: %s", e)
            return 0
        ep = self._eps[self._cur]
        call = ep.watch.Watch(metadata=_REQUIRE_LEADER)
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=b"\0kubeling/compact-probe", start_revision=1)))
            async with asyncio.timeout(self.request_timeout):
                while True:  # "created" first, then the cancellation that names the compact revision
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        return 0
                    if resp.compact_revision:
                        return resp.compact_revision
        except (grpc.aio.AioRpcError, TimeoutError) as e:
            log.warning("etcd: could not learn the compact revision: %s", e)
            return 0
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in (self._compactor, self._hub_task):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (self._compactor, self._hub_task) if t is not None),
                             return_exceptions=True)
        self._hub.close()
        for _, _, fut in self._acks:
            if not fut.done():
                fut.set_result(None)
        self._acks.clear()
        for ep in self._eps:
            await ep.channel.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError("store is closed")
        if not self._opened:
            raise StorageError("store is not open")

    # -- calling etcd with failover --------------------------------------------------------------

    def _next_endpoint(self, failed: int) -> None:
        if self._cur == failed and len(self._eps) > 1:
            self._cur = (failed + 1) % len(self._eps)
            log.info("etcd: %s unavailable; using %s", self._eps[failed].url, self._eps[self._cur].url)

    async def _call(self, method: str, request: Any, *, idempotent: bool, what: str,
                    timeout: float | None = None, stub: str = "kv", attempt: float = 0) -> Any:
        """One unary RPC, failing over between endpoints until ``timeout`` (``request_timeout``)
        is spent. Each attempt may take what is left, at most ``attempt`` seconds if positive,
        or ``-attempt`` seconds if negative (a call that may run long). Non-idempotent calls
        raise :class:`_Ambiguous` on a failure that may have left the write applied."""
        self._ensure_open()
        deadline = time.monotonic() + (timeout or self.request_timeout)
        delay = 0.05
        tried = 0
        while True:
            idx = self._cur
            ep = self._eps[idx]
            left = deadline - time.monotonic()
            if attempt > 0:  # a hung member must not take all the time: another may answer
                left = min(left, attempt)
            elif attempt < 0:  # a call that may run long (a list): its own time, past the retries'
                left = -attempt
            try:
                return await getattr(getattr(ep, stub), method)(request, timeout=max(left, 0.05))
            except grpc.aio.AioRpcError as e:
                if not (_retryable(e) or e.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise _map_error(e, what, current=self._hub.revision,
                                     compact=self._hub.compact_revision) from None
                self._next_endpoint(idx)
                if not idempotent and not _unsent(e):
                    raise _Ambiguous(e) from None
                tried += 1
                if self._closed:
                    raise StorageError("store is closed") from None
                if time.monotonic() + delay >= deadline:
                    raise _map_error(e, what) from None
                if tried % len(self._eps) == 0:  # every member failed once: back off a little
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)

    async def _range(self, key: bytes, range_end: bytes = b"", *, revision: int = 0, limit: int = 0,
                     count_only: bool = False, keys_only: bool = False, timeout: float | None = None,
                     what: str = "etcd range") -> Any:
        req = rpc.RangeRequest(key=key, range_end=range_end, revision=revision, limit=limit,
                               count_only=count_only, keys_only=keys_only)
        if range_end and not count_only:  # a list may be large: the API server's own timeout is 60 s
            return await self._call("Range", req, idempotent=True, what=what, timeout=timeout,
                                    attempt=-LIST_TIMEOUT)
        return await self._call("Range", req, idempotent=True, what=what, timeout=timeout,
                                attempt=max(2.0, self.request_timeout / 3))

    # -- reads -----------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[int, KeyValue | None]:
        resp = await self._range(_b(key), what=f"get {key}")
        return resp.header.revision, (_kv(resp.kvs[0]) if resp.kvs else None)

    async def list(
        self, prefix: str, *, revision: int = 0, start_after: str = "", limit: int = 0
    ) -> ListResult:
        if revision < 0 or limit < 0:
            raise ValueError("revision and limit must not be negative")
        self._ensure_open()
        if revision > INT64_MAX:
            raise FutureRevisionError(revision, await self.current_revision())
        start = _b(prefix) if prefix else ALL_KEYS
        if start_after and start_after >= prefix:
            start = max(start, _b(start_after) + b"\0")
        end = prefix_end(prefix)
        range_end = _b(end) if end is not None else ALL_KEYS
        try:
            resp = await self._range(start, range_end, revision=revision,
                                     limit=limit if limit <= INT64_MAX else 0, what=f"list {prefix}")
        except FutureRevisionError:
            raise FutureRevisionError(revision, await self.current_revision()) from None
        except CompactedError:
            raise CompactedError(max(self._hub.compact_revision, revision + 1),
                                 await self.current_revision()) from None
        kvs = [_kv(kv) for kv in resp.kvs]
        return ListResult(revision=revision or resp.header.revision, kvs=kvs, more=resp.more,
                          count=resp.count)

    async def count(self, prefix: str) -> int:
        end = prefix_end(prefix)
        resp = await self._range(_b(prefix) if prefix else ALL_KEYS,
                                 _b(end) if end is not None else ALL_KEYS, count_only=True,
                                 what=f"count {prefix}")
        return resp.count

    async def current_revision(self) -> int:
        """A linearizable read's header revision: the revision of the last committed write."""
        resp = await self._range(COMPACT_REV_KEY, count_only=True, what="current revision")
        return resp.header.revision

    @property
    def compact_revision(self) -> int:
        return self._hub.compact_revision

    async def check(self) -> None:
        """Raise UnavailableError while no member answers (cached ~1 s), InsufficientStorageError
        while etcd's NOSPACE alarm is raised."""
        self._ensure_open()
        at, err = self._health
        if time.monotonic() - at < 1.0:
            if err is not None:
                raise err
            return
        assert self._health_lock is not None
        async with self._health_lock:
            at, err = self._health
            if time.monotonic() - at >= 1.0:
                err = await self._probe()
                self._health = (time.monotonic(), err)
        if err is not None:
            raise err

    async def _probe(self) -> StorageError | None:
        try:
            resp = await self._call("Alarm", rpc.AlarmRequest(action=rpc.AlarmRequest.GET),
                                    idempotent=True, what="etcd health check", stub="maintenance",
                                    timeout=self.check_timeout)
            # A linearizable read proves a leader and a quorum (Alarm is answered locally).
            await self._range(COMPACT_REV_KEY, count_only=True, timeout=self.check_timeout,
                              what="etcd health check")
        except StorageError as e:
            return e if isinstance(e, UnavailableError) else UnavailableError(str(e))
        for alarm in resp.alarms:
            if alarm.alarm == rpc.NOSPACE:
                return InsufficientStorageError("etcd: mvcc: database space exceeded (NOSPACE alarm "
                                                "raised; compact, defragment and disarm it)")
        return None

    # -- writes ----------------------------------------------------------------------------------

    async def _txn(self, req: Any, what: str) -> Any:
        return await self._call("Txn", req, idempotent=False, what=what)

    async def create(self, key: str, value: bytes) -> tuple[bool, KeyValue | None]:
        key, value = _check_key(key), _as_bytes(value)
        self._ensure_open()
        k = _b(key)
        req = rpc.TxnRequest(
            compare=[rpc.Compare(key=k, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                                 create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))])
        deadline = time.monotonic() + self.request_timeout
        while True:
            since = self._hub.revision  # the write, if applied, has a later revision
            try:
                resp = await self._txn(req, f"create {key}")
            except _Ambiguous as amb:
                cur = await self._resolve_read(key, amb, deadline)
                if cur is None:
                    continue  # it did not happen: the create is still conditional, send it again
                if cur.create_revision <= since:
                    return False, cur  # the key existed all along: ours could not apply
                # created since: by us? the first create after `since` says (at most one applies)
                ev = await self._first_event(key, since, lambda e: e.prev_kv is None and e.type == PUT,
                                             amb, deadline)
                if ev.kv.value == value:
                    await self._ack(ev.kv.mod_revision)
                    return True, ev.kv
                return False, cur
            if resp.succeeded:
                rev = resp.header.revision
                await self._ack(rev)
                return True, KeyValue(key, value, rev, rev)
            return False, _kv(resp.responses[0].response_range.kvs[0])

    async def update(
        self, key: str, value: bytes, expected_mod_revision: int
    ) -> tuple[bool, KeyValue | None]:
        key, value = _check_key(key), _as_bytes(value)
        self._ensure_open()
        if not 0 < expected_mod_revision <= INT64_MAX:
            return False, (await self.get(key))[1]
        k = _b(key)
        req = rpc.TxnRequest(
            compare=[rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                 mod_revision=expected_mod_revision)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value)),
                     rpc.RequestOp(request_range=rpc.RangeRequest(key=k, keys_only=True))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))])
        deadline = time.monotonic() + self.request_timeout
        while True:
            try:
                resp = await self._txn(req, f"update {key}")
            except _Ambiguous as amb:
                cur = await self._resolve_read(key, amb, deadline)
                if cur is not None and cur.mod_revision == expected_mod_revision:
                    continue  # not applied: the compare still holds, send it again
                # the key changed: the change right after the expected revision was ours, or ours
                # lost to it
                ev = await self._first_event(key, expected_mod_revision, None, amb, deadline)
                if ev.type == PUT and ev.kv.value == value and ev.prev_kv is not None \
                        and ev.prev_kv.mod_revision == expected_mod_revision:
                    await self._ack(ev.kv.mod_revision)
                    return True, ev.kv
                return False, cur
            if resp.succeeded:
                rev = resp.header.revision
                created = resp.responses[1].response_range.kvs[0].create_revision
                await self._ack(rev)
                return True, KeyValue(key, value, created, rev)
            kvs = resp.responses[0].response_range.kvs
            return False, (_kv(kvs[0]) if kvs else None)

    async def delete(
        self, key: str, expected_mod_revision: int = 0
    ) -> tuple[bool, KeyValue | None]:
        key = _check_key(key)
        self._ensure_open()
        if expected_mod_revision < 0 or expected_mod_revision > INT64_MAX:
            return False, (await self.get(key))[1]
        k = _b(key)
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, prev_kv=True))
        if expected_mod_revision:
            compare = [rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                   mod_revision=expected_mod_revision)]
        else:  # unconditional: the key must exist, so that a miss reads nothing back
            compare = [rpc.Compare(key=k, target=rpc.Compare.CREATE, result=rpc.Compare.GREATER,
                                   create_revision=0)]
        req = rpc.TxnRequest(compare=compare, success=[op],
                             failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))])
        deadline = time.monotonic() + self.request_timeout
        while True:
            since = self._hub.revision
            try:
                resp = await self._txn(req, f"delete {key}")
            except _Ambiguous as amb:
                cur = await self._resolve_read(key, amb, deadline)
                if expected_mod_revision:
                    if cur is not None and cur.mod_revision == expected_mod_revision:
                        continue  # not applied: the compare still holds, send it again
                    after = expected_mod_revision
                else:
                    if cur is not None and cur.create_revision <= since:
                        continue  # still the same incarnation: not deleted, send it again
                    if cur is None and (await self._get_at(key, since, amb, deadline)) is None:
                        return False, None  # there was nothing to delete
                    after = since
                # the key changed: the change right after `after` was our delete, or ours lost to it
                ev = await self._first_event(key, after, None, amb, deadline)
                if ev.type == DELETE:
                    await self._ack(ev.kv.mod_revision)
                    return True, ev.kv
                return False, cur
            if resp.succeeded:
                rev = resp.header.revision
                prev = resp.responses[0].response_delete_range.prev_kvs[0]
                await self._ack(rev)
                return True, KeyValue(key, bytes(prev.value), prev.create_revision, rev)
            kvs = resp.responses[0].response_range.kvs
            return False, (_kv(kvs[0]) if kvs else None)

    # -- telling what became of a write whose answer was lost ------------------------------------

    @staticmethod
    def _unknown(amb: _Ambiguous, key: str, why: str = "") -> StorageTimeoutError:
        return StorageTimeoutError(f"write to {key}: outcome unknown (etcd: {amb.cause.details() or amb.cause.code().name}"
                                   f"{'; ' + why if why else ''})")

    async def _resolve_read(self, key: str, amb: _Ambiguous, deadline: float) -> KeyValue | None:
        """After an ambiguous write failure: the key now (read from any member), or the
        outcome-unknown error once the request time is spent."""
        left = deadline - time.monotonic()
        if left <= 0.05:
            raise self._unknown(amb, key) from None
        log.info("etcd: write to %s failed (%s); reading it back", key, amb.cause.details())
        try:
            resp = await self._range(_b(key), timeout=left, what=f"get {key}")
        except UnavailableError as e:
            raise self._unknown(amb, key, str(e)) from None
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def _get_at(self, key: str, revision: int, amb: _Ambiguous, deadline: float) -> KeyValue | None:
        try:
            resp = await self._range(_b(key), revision=revision, timeout=max(deadline - time.monotonic(), 0.1),
                                     what=f"get {key}")
        except StorageError as e:
            raise self._unknown(amb, key, str(e)) from None
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def _first_event(self, key: str, after: int, pred: Any, amb: _Ambiguous, deadline: float) -> Event:
        """The first event of ``key`` after revision ``after`` (matching ``pred``), from its
        history; the caller knows one exists. Outcome unknown if the history is compacted or no
        member answers in time."""
        ep = self._eps[self._cur]
        call = ep.watch.Watch(metadata=_REQUIRE_LEADER)
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=_b(key), start_revision=after + 1, prev_kv=True)))
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.5)):
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF or resp.canceled or resp.compact_revision:
                        raise self._unknown(amb, key, "its history is gone")
                    for pb in resp.events:
                        ev = _event(pb)
                        if pred is None or pred(ev):
                            return ev
        except (grpc.aio.AioRpcError, TimeoutError) as e:
            raise self._unknown(amb, key, f"reading its history: {e}") from None
        finally:
            call.cancel()

    async def compact(self, revision: int) -> int:
        """etcd's Compact(revision); at or below the compact revision in force it is a no-op."""
        self._ensure_open()
        if revision > INT64_MAX:
            raise FutureRevisionError(revision, await self.current_revision())
        if revision <= self._hub.compact_revision:
            return self._hub.compact_revision
        return await self._compact(revision)

    async def _compact(self, revision: int) -> int:
        try:
            await self._call("Compact", rpc.CompactionRequest(revision=revision, physical=False),
                             idempotent=True, what=f"compact {revision}")
        except FutureRevisionError:
            raise FutureRevisionError(revision, await self.current_revision()) from None
        except CompactedError:
            pass  # someone compacted at or past it already
        self._hub.compact_revision = max(self._hub.compact_revision, revision)
        return self._hub.compact_revision

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.compact_interval)
            try:
                await self.compact_once()
            except StorageError as e:
                log.warning("etcd: periodic compaction failed: %s", e)

    async def compact_once(self) -> int:
        """One round of the periodic compactor (upstream's apiserver compactor): compact to
        ``current - compact_keep`` if this server wins the compare-and-swap on
        ``compact_rev_key``'s version. Returns the compact revision in force."""
        resp = await self._range(COMPACT_REV_KEY, what="compactor")
        if resp.kvs:  # the latest compactor write, even if our stream has not delivered it yet
            self._mark_compactor_write(resp.kvs[0].mod_revision)
        target = self._keep_target(resp.header.revision)
        if target <= self._hub.compact_revision or target <= 0:
            return self._hub.compact_revision
        version = resp.kvs[0].version if resp.kvs else 0
        req = rpc.TxnRequest(
            compare=[rpc.Compare(key=COMPACT_REV_KEY, target=rpc.Compare.VERSION,
                                 result=rpc.Compare.EQUAL, version=version)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=COMPACT_REV_KEY, value=b"%d" % target))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=COMPACT_REV_KEY))])
        try:
            tr = await self._txn(req, "compactor")
        except _Ambiguous as amb:
            raise _map_error(amb.cause, "compactor") from None
        if not tr.succeeded:
            return self._hub.compact_revision  # another API server compacts this interval
        await self._ack(tr.header.revision)
        # (the stream has already announced `target` as compacted: compact unconditionally)
        return await self._compact(target)

    def _mark_compactor_write(self, revision: int) -> None:
        marks = self._compactor_revs
        i = bisect.bisect_left(marks, revision)
        if i == len(marks) or marks[i] != revision:
            marks.insert(i, revision)

    def _keep_target(self, current: int) -> int:
        """The revision R that leaves ``compact_keep`` revisions after it, not counting the
        compactors' own writes to ``compact_rev_key`` (seen on the watch stream): those are not
        history anyone reads, and counting them would make an idle cluster compact forever."""
        marks = self._compactor_revs
        target, skipped = current - self.compact_keep, 0
        while True:
            inside = len(marks) - bisect.bisect_right(marks, target)
            if inside <= skipped:
                break
            target -= inside - skipped
            skipped = inside
        del marks[:bisect.bisect_right(marks, min(target, self._hub.compact_revision))]
        return target

    # -- acknowledgement after fan-out ------------------------------------------------------------

    async def _ack(self, revision: int) -> None:
        """Return once the event of ``revision`` has been fanned out (or ``ack_timeout`` passed)."""
        if self._hub.revision >= revision or self._closed:
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (revision, next(self._seq), fut)
        heapq.heappush(self._acks, entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.ack_timeout)
        except TimeoutError:
            log.debug("etcd: revision %d not seen on the watch stream after %.1fs", revision,
                      self.ack_timeout)

    def _wake_acks(self) -> None:
        while self._acks and self._acks[0][0] <= self._hub.revision:
            _, _, fut = heapq.heappop(self._acks)
            if not fut.done():
                fut.set_result(None)

    # -- watches ---------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> BufferedWatch:
        return self._hub.watch(prefix, start_revision)

    def watcher_count(self) -> int:
        """Number of subscribed watchers (for metrics and leak tests)."""
        return self._hub.watcher_count()

    async def _open_watch(self, start: int, ep: _Endpoint) -> Any:
        call = ep.watch.Watch(metadata=_REQUIRE_LEADER)
        await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=ALL_KEYS, range_end=ALL_KEYS, start_revision=start, prev_kv=True)))
        return call

    async def _hub_loop(self, start: int) -> None:
        """Keep the whole-keyspace stream open, from ``start`` on, through member failures."""
        delay = 0.05
        while not self._closed:
            idx = self._cur
            ep = self._eps[idx]
            call = None
            try:
                call = await self._open_watch(start, ep)
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("watch stream ended")
                    if resp.compact_revision:
                        # (etcd's compacted answer carries no current revision: read it)
                        current = (await self._range(COMPACT_REV_KEY, count_only=True,
                                                     what="current revision")).header.revision
                        self._watch_compacted(resp.compact_revision, current)
                        start = current + 1
                        break
                    if resp.canceled:
                        raise ConnectionError(f"watch canceled: {resp.cancel_reason}")
                    if resp.created:
                        if resp.header.revision < start - 1:
                            # etcd went back in time (a snapshot restored under us): what we
                            # served is not its history; every watch relists from the new one
                            self._rewound(resp.header.revision)
                            start = resp.header.revision + 1
                            break
                        delay = 0.05
                    if resp.events:
                        start = self._publish(resp.events) + 1
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, ConnectionError, StorageError) as e:
                if self._closed:
                    return
                detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
                log.warning("etcd: watch stream on %s failed (%s); resuming at revision %d",
                            ep.url, detail, start)
                self._next_endpoint(idx)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as e:  # noqa: BLE001 - a bug here must not leave every cache stale
                log.exception("etcd: watch stream failed; ending every watch, resuming at revision %d", start)
                self._fail_watchers(StorageError(f"etcd watch stream failed: {e}"))
                await asyncio.sleep(1.0)
            finally:
                if call is not None:
                    call.cancel()

    def _publish(self, pbs: Any) -> int:
        events = [_event(pb) for pb in pbs]
        for ev in events:
            if ev.kv.key == "compact_rev_key" and ev.type == PUT:
                self._mark_compactor_write(ev.kv.mod_revision)
                try:  # another API server's compactor announced a compaction
                    self._hub.compact_revision = max(self._hub.compact_revision, int(ev.kv.value))
                except ValueError:
                    pass
        rev = events[-1].kv.mod_revision
        self._hub.publish(events, rev, self._hub.compact_revision)
        self._wake_acks()
        return rev

    def _rewound(self, current: int) -> None:
        log.warning("etcd: the cluster is at revision %d, behind this server's %d (restored from a "
                    "snapshot?); ending every watch", current, self._hub.revision)
        self._fail_watchers(CompactedError(self._hub.compact_revision, current))
        self._hub.revision = current
        self._hub.compact_revision = min(self._hub.compact_revision, current)
        self._compactor_revs.clear()
        self._wake_acks()

    def _fail_watchers(self, err: StorageError) -> None:
        for watchers in list(self._hub._watchers.values()):
            for w in list(watchers):
                w._error = err
                self._hub._unsubscribe(w)
                w._wake()

    def _watch_compacted(self, compact: int, current: int) -> None:
        """The stream's next revision was compacted while it was down: end every watch (410)."""
        log.warning("etcd: watch stream fell behind compaction (compact revision %d); ending every "
                    "watch", compact)
        self._hub.compact_revision = max(self._hub.compact_revision, compact)
        self._fail_watchers(CompactedError(compact, current))
        self._hub.revision = max(self._hub.revision, current)
        self._wake_acks()

    async def _read_backfill(self, prefix: str, start: int) -> list[Event]:
        """Events under ``prefix`` with revision in ``start..`` the last published revision, read
        from a temporary whole-keyspace etcd watch (so the end is known exactly)."""
        self._ensure_open()
        target = self._hub.revision
        if start <= self._hub.compact_revision:
            raise CompactedError(self._hub.compact_revision, target)
        if start > target or target <= 1:  # (revision 1 of a fresh etcd has no event)
            return []
        deadline = time.monotonic() + max(self.request_timeout, 30.0)
        out: list[Event] = []
        while True:
            idx = self._cur
            ep = self._eps[idx]
            call = None
            try:
                call = await self._open_watch(start, ep)
                while start <= target:
                    resp = await asyncio.wait_for(call.read(), max(deadline - time.monotonic(), 0.05))
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("watch stream ended")
                    if resp.compact_revision:
                        self._hub.compact_revision = max(self._hub.compact_revision, resp.compact_revision)
                        raise CompactedError(resp.compact_revision, max(target, resp.header.revision))
                    if resp.canceled:
                        raise ConnectionError(f"watch canceled: {resp.cancel_reason}")
                    for pb in resp.events:
                        if pb.kv.mod_revision > target:
                            start = target + 1
                            break
                        ev = _event(pb)
                        if ev.kv.key.startswith(prefix):
                            out.append(ev)
                        start = pb.kv.mod_revision + 1
                return out
            except (grpc.aio.AioRpcError, ConnectionError) as e:
                self._next_endpoint(idx)
                if time.monotonic() >= deadline or self._closed:
                    if isinstance(e, grpc.aio.AioRpcError):
                        raise _map_error(e, "watch backfill") from None
                    raise UnavailableError(f"watch backfill: {e}") from None
                await asyncio.sleep(0.1)
            except TimeoutError:
                raise StorageTimeoutError(f"watch backfill from revision {start} timed out") from None
            finally:
                if call is not None:
                    call.cancel()


def _unsent(e: grpc.aio.AioRpcError) -> bool:
    """The call certainly never reached a member (no connection could be made)."""
    d = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in d or "connection refused" in d or "no address" in d
        or "connections to all backends failing" in d or "dns resolution failed" in d)
