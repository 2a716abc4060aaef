"""Support for the cacher tests: a real SQLite store, ConfigMap writes, and a fake HTTP transport
that records what a `CacheWatcher` sends (decoding the HTTP/1.1 chunked framing).

The other ``test_cacher*.py`` modules import these helpers; the tests here check the helpers'
own framing against `watch_cache.frame`."""

from __future__ import annotations

import asyncio
import functools

import orjson
import pytest

from kubeling.apiserver.cacher import Cacher
from kubeling.apiserver import registry
from kubeling.apiserver.resources import ResourceMap, builtin_served
from kubeling.apiserver.watch_cache import frame
from kubeling.storage import SQLiteStore
from kubeling.storage.memory import MemoryStore


@functools.lru_cache(maxsize=1)
def resources() -> ResourceMap:
    return ResourceMap(builtin_served(registry.strategies()))


def served(group: str, version: str, resource: str):
    return resources().get(group, version, resource)


def cm(name: str, ns: str = "default", labels: dict | None = None, data: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {"k": "v"}}


def key(obj: dict, resource: str = "configmaps", group: str = "core") -> str:
    m = obj["metadata"]
    if "namespace" in m:
        return f"/registry/{group}/{resource}/{m['namespace']}/{m['name']}"
    return f"/registry/{group}/{resource}/{m['name']}"


async def create(store, obj: dict, **kw) -> int:
    ok, kv = await store.create(key(obj, **kw), orjson.dumps(obj))
    assert ok
    return kv.mod_revision


async def update(store, obj: dict, **kw) -> int:
    k = key(obj, **kw)
    _, cur = await store.get(k)
    ok, kv = await store.update(k, orjson.dumps(obj), cur.mod_revision)
    assert ok
    return kv.mod_revision


async def delete(store, obj: dict, **kw) -> int:
    ok, kv = await store.delete(key(obj, **kw))
    assert ok
    return kv.mod_revision


BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("memory", id="memory")]


async def open_store(backend: str, tmp_path, **kw):
    if backend == "memory":
        return await MemoryStore.open(**kw)
    return await SQLiteStore.open(str(tmp_path / "db"), compact_interval=0, **kw)


def run(body, tmp_path, store_kw: dict | None = None, backend: str = "sqlite", **cacher_kw):
    """Open a store, start a cacher on it, run ``body(store, cacher)``, stop both."""

    async def main():
        store = await open_store(backend, tmp_path, **(store_kw or {}))
        cacher = Cacher(store, **cacher_kw)
        try:
            await cacher.start()
            return await body(store, cacher)
        finally:
            await cacher.stop()
            await store.close()

    return asyncio.run(main())


class FakeTransport:
    """Records writes; ``buffered`` is what `get_write_buffer_size` reports (a client that
    does not read)."""

    def __init__(self, buffered: int = 0) -> None:
        self.data = bytearray()
        self.buffered = buffered
        self.closing = False
        self.aborted = False
        self.writes = 0

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.data += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = self.closing = True


class FakeProtocol:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


class FakeRequest:
    def __init__(self, transport: FakeTransport) -> None:
        self.protocol = FakeProtocol(transport)


class FakeResponse:
    """aiohttp's StreamResponse as a watch uses it: chunked writes that yield to the loop."""

    chunked = True

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport

    async def write(self, data: bytes) -> None:
        self.transport.write(frame(data))
        await asyncio.sleep(0)


def unchunk(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        j = data.index(b"\r\n", i)
        n = int(data[i:j], 16)
        out += data[j + 2:j + 2 + n]
        assert data[j + 2 + n:j + 4 + n] == b"\r\n", "bad chunk framing"
        i = j + 4 + n
    return bytes(out)


def events(t: FakeTransport) -> list[dict]:
    return [orjson.loads(line) for line in unchunk(bytes(t.data)).splitlines() if line]


def names(evs: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in evs]


class Client:
    """One watch served into a fake transport: ``await Client.open(cacher, ...)`` then
    `stop` (ends it) and `events`."""

    def __init__(self, watcher, timeout: float | None, buffered: int = 0) -> None:
        self.watcher = watcher
        self.transport = FakeTransport(buffered)
        self.task = asyncio.ensure_future(
            watcher.serve(FakeRequest(self.transport), FakeResponse(self.transport), timeout))

    @classmethod
    async def open(cls, cacher: Cacher, sv, namespace, pred, timeout: float | None = 30, buffered: int = 0,
                   **kw) -> Client:
        w = await cacher.watch(sv, namespace, pred, **kw)
        c = cls(w, timeout, buffered)
        await until(lambda: w.live or w.done.done())
        return c

    async def stop(self) -> list[dict]:
        self.watcher.terminate()
        await asyncio.wait_for(self.task, 5)
        return self.events()

    def events(self) -> list[dict]:
        return events(self.transport)


async def until(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def settle(cacher: Cacher, store) -> None:
    """Wait until the cacher has applied (and dispatched) every committed revision."""
    assert await cacher.wait_fresh(await store.current_revision(), 5)
    await asyncio.sleep(0)


@pytest.mark.parametrize("parts", [
    pytest.param([b"{}\n"], id="one"),
    pytest.param([b'{"a":1}\n', b"x" * 300, b""], id="several-and-empty"),
])
def test_frame_and_unchunk_round_trip(parts):
    assert unchunk(b"".join(frame(p) for p in parts if p)) == b"".join(parts)
