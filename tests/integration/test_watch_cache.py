"""The watch-cache rules (issue 5, acceptance 5) against a real ``kubeling server`` over HTTPS:

- a consistent list never returns data older than a write acknowledged before the list;
- a watch from a revision older than the watch cache's window gets 410 Expired;
- 100 watchers with label selectors each see exactly their own events, in order;
- a list served from the cache equals one served from the store (``resourceVersionMatch=Exact``
  always reads the store), byte for byte once the list's resourceVersion is set aside.

The same rules are tested on the cacher directly in ``tests/unit/test_cacher*.py``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
import harness

from kubeling.apiserver.watch_cache import DEFAULT_CAPACITY


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = harness.Cluster(tmp_path_factory.mktemp("watch-cache"), extra_args=("--controllers", "", "--disable-scheduler"))
    try:
        c.start()
    except harness.ServerNotReady as e:
        c.stop()
        pytest.fail(str(e), pytrace=False)
    yield c
    c.stop()


class API:
    """A small async HTTPS client with the admin certificate (raw bytes when asked)."""

    def __init__(self, cluster: harness.Cluster, connections: int = 8) -> None:
        self.base = cluster.url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=connections),
            timeout=aiohttp.ClientTimeout(total=120))

    async def __aenter__(self) -> API:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def raw(self, method: str, path: str, body=None, ctype: str = "application/json") -> tuple[int, bytes]:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.base + path, data=data,
                                        headers={"Content-Type": ctype}) as r:
            return r.status, await r.read()

    async def call(self, method: str, path: str, body=None, ctype: str = "application/json", ok=(200, 201)):
        status, raw = await self.raw(method, path, body, ctype)
        assert status in ok, (method, path, status, raw[:300])
        return orjson.loads(raw)

    async def namespace(self, name: str) -> str:
        await self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return f"/api/v1/namespaces/{name}/configmaps"

    async def watch(self, path: str, query: str, out: list, opened: asyncio.Event | None = None) -> None:
        async with self.session.get(f"{self.base}{path}?watch=true&{query}",
                                    timeout=aiohttp.ClientTimeout(total=None)) as r:
            assert r.status == 200
            if opened is not None:
                opened.set()
            async for line in r.content:
                if line.strip():
                    out.append(orjson.loads(line))


def cm(name: str, labels: dict | None = None, data: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": data or {"k": "v"}}


def test_consistent_list_never_returns_data_older_than_an_acknowledged_write(cluster):
    async def main():
        async with API(cluster, connections=16) as api:
            base = await api.namespace("consistent")

            async def pair(i: int) -> None:
                for j in range(15):
                    name = f"c{i}-{j}"
                    made = await api.call("POST", base, cm(name, {"pair": str(i)}))
                    lst = await api.call("GET", f"{base}?labelSelector=pair%3D{i}")
                    assert int(lst["metadata"]["resourceVersion"]) >= int(made["metadata"]["resourceVersion"])
                    assert name in [o["metadata"]["name"] for o in lst["items"]]
                    patched = await api.call("PATCH", f"{base}/{name}", {"data": {"k": "new"}},
                                             "application/merge-patch+json")
                    lst = await api.call("GET", base)
                    mine = next(o for o in lst["items"] if o["metadata"]["name"] == name)
                    assert mine["data"] == {"k": "new"}
                    assert mine["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]

            await asyncio.gather(*(pair(i) for i in range(8)))
    asyncio.run(main())


def test_watch_from_a_revision_older_than_the_window_gets_410(cluster):
    async def main():
        async with API(cluster, connections=16) as api:
            base = await api.namespace("window")
            rv0 = (await api.call("POST", base, cm("hot0")))["metadata"]["resourceVersion"]
            for w in range(1, 8):
                await api.call("POST", base, cm(f"hot{w}"))
            # More changes to this resource than its window keeps (one object per writer: no conflicts).
            counter = iter(range(DEFAULT_CAPACITY + 50))

            async def writer(w: int):
                for i in counter:
                    await api.call("PATCH", f"{base}/hot{w}", {"data": {"i": str(i)}}, "application/merge-patch+json")
            await asyncio.gather(*(writer(w) for w in range(8)))
            events: list = []
            await asyncio.wait_for(api.watch(base, f"resourceVersion={rv0}&timeoutSeconds=5", events), 30)
            assert [e["type"] for e in events] == ["ERROR"], [e["type"] for e in events][:5]
            st = events[0]["object"]
            assert (st["kind"], st["status"], st["code"], st["reason"]) == ("Status", "Failure", 410, "Expired")
            assert st["message"].startswith(f"too old resource version: {rv0} ("), st["message"]
    asyncio.run(main())


def test_hundred_watchers_with_selectors_each_see_exactly_their_events_in_order(cluster):
    async def main():
        async with API(cluster, connections=110) as api:
            base = await api.namespace("fanout")
            rv = (await api.call("GET", base))["metadata"]["resourceVersion"]
            outs: list[list] = [[] for _ in range(100)]
            opened = [asyncio.Event() for _ in range(100)]
            tasks = [asyncio.create_task(api.watch(base, f"resourceVersion={rv}&labelSelector=w%3D{i % 10}"
                                                         f"&timeoutSeconds=60", outs[i], opened[i]))
                     for i in range(100)]
            await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 30)
            want: dict[str, list] = {str(k): [] for k in range(10)}
            for j in range(150):
                w = str(j % 10)
                made = await api.call("POST", base, cm(f"o{j:03d}", {"w": w}))
                want[w].append(("ADDED", made["metadata"]["name"], made["metadata"]["resourceVersion"]))
                if j % 3 == 0:
                    moved = str((j + 1) % 10)  # leaves selector w, enters selector w+1
                    p = await api.call("PATCH", f"{base}/o{j:03d}", {"metadata": {"labels": {"w": moved}}},
                                       "application/merge-patch+json")
                    want[w].append(("DELETED", p["metadata"]["name"], p["metadata"]["resourceVersion"]))
                    want[moved].append(("ADDED", p["metadata"]["name"], p["metadata"]["resourceVersion"]))
            total = sum(len(want[str(i % 10)]) for i in range(100))
            for _ in range(200):
                if sum(len(o) for o in outs) >= total:
                    break
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for i, out in enumerate(outs):
                got = [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                       for e in out if e["type"] != "BOOKMARK"]
                assert got == want[str(i % 10)], f"watcher {i} (w={i % 10})"
    asyncio.run(main())


@pytest.mark.parametrize("query", [
    pytest.param("", id="namespace"),
    pytest.param("labelSelector=" + quote("tier in (web)"), id="label-selector"),
    pytest.param("fieldSelector=" + quote("metadata.name!=c03"), id="field-selector"),
    pytest.param("limit=4", id="first-page"),
])
def test_list_from_the_cache_equals_the_store_list_byte_for_byte(cluster, query):
    async def main():
        async with API(cluster) as api:
            ns = f"bytes-{abs(hash(query)) % 10**6}"
            base = await api.namespace(ns)
            for i in range(10):
                await api.call("POST", base, cm(f"c{i:02d}", {"tier": ("web", "db")[i % 2]}, {"i": str(i) * i}))
            await api.call("DELETE", f"{base}/c05")
            await api.call("PATCH", f"{base}/c02", {"data": {"x": "y"}}, "application/merge-patch+json")
            for path in (base, "/api/v1/configmaps"):
                sep = "&" if query else ""
                status, cached = await api.raw("GET", f"{path}?{query}")
                assert status == 200
                rv = orjson.loads(cached)["metadata"]["resourceVersion"]
                status, stored = await api.raw(
                    "GET", f"{path}?{query}{sep}resourceVersion={rv}&resourceVersionMatch=Exact")
                assert status == 200, stored
                assert normalise(cached) == normalise(stored)
    asyncio.run(main())


def normalise(body: bytes) -> bytes:
    """Set aside what may legitimately differ between two reads of one state: nothing but the
    list's own resourceVersion (the same here: no write happens between the two lists)."""
    obj = orjson.loads(body)
    obj["metadata"].pop("resourceVersion")
    return orjson.dumps(obj)
