"""Benchmark of the SQLite store: ``python bench/bench_storage.py [--synchronous FULL|NORMAL]``.

Prints, for 1, 10 and 50 concurrent asyncio callers, the peak create rate and the create latency
percentiles; then the latency of a paced mixed workload (create/update/delete at 200 writes/s,
with 100 watchers on the prefix, the target being p99 <= 25 ms); then list and get rates.
Values are ~1.5 KB JSON documents, the size of a typical Pod.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import orjson  # noqa: E402

from kubeling.storage.sqlite import SQLiteStore  # noqa: E402


def _value(i: int) -> bytes:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {"name": "c", "image": "nginx:1.27", "env": [{"name": f"E{j}", "value": "x" * 40}
                                                             for j in range(20)]}
            ]
        },
    }
    return orjson.dumps(doc)


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


async def creates(store: SQLiteStore, callers: int, total: int, tag: str) -> None:
    value = _value(0)
    lat: list[float] = []
    per = total // callers

    async def caller(c: int) -> None:
        for i in range(per):
            t = time.perf_counter()
            ok, _ = await store.create(f"/registry/pods/{tag}/c{c}-{i}", value)
            lat.append(time.perf_counter() - t)
            assert ok

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    dt = time.perf_counter() - t0
    print(
        f"creates  callers={callers:3d}  {len(lat) / dt:8.0f} creates/s   "
        f"p50={_pct(lat, 0.5):6.2f} ms  p99={_pct(lat, 0.99):6.2f} ms"
    )


async def paced(store: SQLiteStore, rate: float, seconds: float, watchers: int) -> None:
    """Open-loop mixed writes at ``rate``/s; each write is its own task, like API requests."""
    received = 0

    async def watcher() -> None:
        nonlocal received
        async for _ in store.watch("/registry/mixed/", 0):
            received += 1

    wtasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    live: dict[str, int] = {}
    lat: list[float] = []
    rng = random.Random(1)

    async def one(i: int) -> None:
        t = time.perf_counter()
        if len(live) < 50 or rng.random() < 0.4:
            key = f"/registry/mixed/k{i}"
            ok, kv = await store.create(key, _value(i))
            live[key] = kv.mod_revision
        else:
            key = rng.choice(list(live))
            rev = live.pop(key)
            if rng.random() < 0.7:
                ok, kv = await store.update(key, _value(i), rev)
                if ok:
                    live[key] = kv.mod_revision
            else:
                await store.delete(key, rev)
        lat.append(time.perf_counter() - t)

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.2)
    for t in wtasks:
        t.cancel()
    await asyncio.gather(*wtasks, return_exceptions=True)
    print(
        f"paced    {rate:.0f} writes/s for {seconds:.0f}s, {watchers} watchers: "
        f"p50={_pct(lat, 0.5):6.2f} ms  p99={_pct(lat, 0.99):6.2f} ms"
        f"  max={max(lat) * 1000:6.2f} ms"
        f"  events delivered={received} (expected {n * watchers})"
    )


async def reads(store: SQLiteStore) -> None:
    t = time.perf_counter()
    res = await store.list("/registry/pods/c10/")
    dt = time.perf_counter() - t
    print(f"list     {len(res.kvs)} keys in {dt * 1000:.1f} ms")
    keys = [kv.key for kv in res.kvs[:2000]]
    lat: list[float] = []

    async def getter(ks: list[str]) -> None:
        for k in ks:
            t = time.perf_counter()
            await store.get(k)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(getter(keys[i::10]) for i in range(10)))
    dt = time.perf_counter() - t0
    print(f"get      10 callers  {len(lat) / dt:8.0f} gets/s   p50={_pct(lat, 0.5):.2f} ms"
          f"  p99={_pct(lat, 0.99):.2f} ms")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synchronous", default="FULL")
    ap.add_argument("--total", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = await SQLiteStore.open(
            os.path.join(d, "bench.db"), synchronous=args.synchronous, compact_interval=0
        )
        print(f"synchronous={args.synchronous}, value={len(_value(0))} bytes")
        try:
            for callers in (1, 10, 50):
                await creates(store, callers, args.total if callers > 1 else args.total // 5,
                              f"c{callers}")
            await paced(store, 200, 10, 100)
            await reads(store)
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
