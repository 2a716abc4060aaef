"""List (with pagination and resourceVersion semantics) and watch, over the store.

The watch cache (`cacher.Cacher`) serves most lists and every watch from memory; it sends here
the lists that need a store snapshot (``resourceVersionMatch=Exact``, ``continue`` tokens,
``limit`` with an exact ``resourceVersion``) and lists made while it is not ready. The watch
path below (`watch_objects`) serves the API server's own loops (admission caches, the CRD
controller, the aggregator), never clients; its rules are the cacher's.

List resourceVersion semantics, as upstream:
- ``""``: the most recent state (a consistent read).
- ``"0"``: any state; we serve the most recent, which is allowed.
- ``N`` with ``resourceVersionMatch=Exact`` (or a continue token): the snapshot at N, 410 if
  compacted.
- ``N`` with ``NotOlderThan`` (or no match): the most recent state, provided it is at least N.

A continue token is base64(JSON{"v":"meta.k8s.io/v1","rv":R,"start":K}): the snapshot
revision R and the last key K returned. Once R is compacted the token is 410 Expired.

Watch: ``resourceVersion`` ``""``/``"0"`` or ``sendInitialEvents=true`` first sends a
synthetic ADDED per existing object (and with sendInitialEvents a BOOKMARK annotated
``k8s.io/initial-events-end``), then changes; an exact N sends every change after N or an
ERROR event with a 410 Status once N is compacted. With a label or field selector, an object
that stops matching is sent as DELETED and one that starts matching as ADDED.
"""

from __future__ import annotations

import base64
from typing import AsyncIterator, Callable

import orjson

from kubeling.api import errors
from kubeling.apiserver import conversion
from kubeling.apiserver.registry.codec import decode
from kubeling.apiserver.resources import Served
from kubeling.storage.interface import CompactedError, FutureRevisionError, Store

Filter = Callable[[dict], bool]

EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list.")


def encode_continue(rv: int, last_key: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": last_key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        rv, start = int(data["rv"]), str(data["start"])
        if data.get("v") != "meta.k8s.io/v1" or rv <= 0 or not start.startswith(prefix):
            raise ValueError
        return rv, start
    except Exception:  # noqa: BLE001 - any malformed token is the client's error
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                 "(version meta.k8s.io/v1)") from None


def parse_rv(value: str | None, what: str = "resourceVersion") -> int:
    if value in (None, ""):
        return 0
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError
        return rv
    except ValueError:
        raise errors.StatusError(400, "BadRequest", f"{what}: Invalid value: \"{value}\": "
                                 f"must be a valid resource version") from None


async def list_objects(store: Store, served: Served, namespace: str | None, match: Filter, *,
                       limit: int = 0, continue_token: str = "", resource_version: str = "",
                       rv_match: str = "") -> tuple[list[dict], int, str, int | None]:
    """Returns (items in the request's version, list revision, continue token, remainingItemCount)."""
    prefix = served.list_prefix(namespace)
    read_rv, start_after = 0, ""
    if continue_token:
        if resource_version not in ("", None):
            raise errors.bad_request('specifying resource version is not allowed when using continue')
        read_rv, start_after = decode_continue(continue_token, prefix)
    elif rv_match == "Exact":
        read_rv = parse_rv(resource_version)
        if read_rv == 0:
            raise errors.bad_request('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
    elif rv_match not in ("", "NotOlderThan"):
        raise errors.bad_request(f'resourceVersionMatch: Unsupported value: "{rv_match}": supported values: '
                                 f'"Exact", "NotOlderThan"')
    elif resource_version not in ("", "0", None):
        want = parse_rv(resource_version)
        cur = await store.current_revision()
        if want > cur:
            raise errors.StatusError(504, "Timeout", f"Too large resource version: {want}, current: {cur}",
                                     details={"causes": [{"reason": "ResourceVersionTooLarge",
                                                          "message": "Too large resource version"}],
                                              "retryAfterSeconds": 1})
    items: list[dict] = []
    last_key = start_after
    remaining: int | None = None
    token = ""
    while True:
        chunk = max(limit - len(items), 0) if limit else 0
        if limit and match is not _match_all:
            chunk = max(chunk, 100)
        try:
            res = await store.list(prefix, revision=read_rv, start_after=last_key, limit=chunk)
        except CompactedError:
            if continue_token:
                raise errors.StatusError(410, "Expired", EXPIRED_CONTINUE) from None
            raise errors.StatusError(410, "Expired", f"too old resource version: {read_rv} "
                                     f"({store.compact_revision})") from None
        except FutureRevisionError:
            raise errors.StatusError(504, "Timeout", f"Too large resource version: {read_rv}") from None
        read_rv = res.revision
        for i, kv in enumerate(res.kvs):
            last_key = kv.key
            obj = decode(kv)
            if match(obj):
                items.append(conversion.from_storage(served, obj))
                if limit and len(items) >= limit:
                    more = i < len(res.kvs) - 1 or res.more
                    if more:
                        token = encode_continue(read_rv, last_key)
                        if match is _match_all:
                            remaining = res.count - (i + 1)
                    return items, read_rv, token, remaining
        if not res.more:
            return items, read_rv, "", None


def _match_all(obj: dict) -> bool:
    return True


MATCH_ALL: Filter = _match_all


def check_watch_options(resource_version: str | None, send_initial: bool | None, rv_match: str) -> bool:
    """Validate watch parameters before the stream starts; returns whether to send initial events."""
    parse_rv(resource_version)
    if send_initial is None:
        if rv_match:
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [errors.forbidden(
                "resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents "
                "is provided")])
        return resource_version in ("", "0", None)
    if rv_match != "NotOlderThan":
        raise errors.invalid("ListOptions", "meta.k8s.io", "", [errors.forbidden(
            "resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")])
    return send_initial


async def watch_objects(store: Store, served: Served, namespace: str | None, match: Filter, *,
                        resource_version: str = "", send_initial: bool | None = None,
                        rv_match: str = "") -> AsyncIterator[tuple[str, dict]]:
    """Yields (event type, object in ``served``'s version) pairs; ``("INITIAL_END", {"revision":
    R})`` marks the end of the initial events. Serves the API server's own loops
    (`GenericStore.reflect`), one consumer per watch, so each event is decoded for it alone.

    Raises `errors.StatusError` (410) before the first event when the start revision is gone.
    """
    prefix = served.list_prefix(namespace)
    rv = parse_rv(resource_version)
    send_initial = check_watch_options(resource_version, send_initial, rv_match)
    start = rv + 1
    if send_initial:
        res = await store.list(prefix)
        start = res.revision + 1
        for kv in res.kvs:
            obj = decode(kv)
            if match(obj):
                yield "ADDED", conversion.from_storage(served, obj)
        yield "INITIAL_END", {"revision": res.revision}
    elif rv == 0:
        start = await store.current_revision() + 1
    w = store.watch(prefix, start)
    try:
        async for ev in w:
            obj = decode(ev.kv)
            etype = _event_type(ev, obj, match)
            if etype:
                yield etype, conversion.from_storage(served, obj)
    except CompactedError:
        raise errors.StatusError(410, "Expired", f"too old resource version: {rv} ({store.compact_revision})") \
            from None
    finally:
        w.close()


def _event_type(ev, obj: dict, match: Filter) -> str | None:
    """The event a watcher with filter ``match`` sees, or None: an object that stops matching is
    DELETED for it, one that starts matching ADDED."""
    if ev.type == "DELETE":
        return "DELETED" if match(obj) else None
    now = match(obj)
    if ev.prev_kv is None or ev.kv.create_revision == ev.kv.mod_revision:
        return "ADDED" if now else None
    before = True if match is _match_all else match(decode(ev.prev_kv))
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None
