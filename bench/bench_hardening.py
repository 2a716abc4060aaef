"""Benchmark of the API server's hardening (issue 10): ``python bench/bench_hardening.py [--quick]``.

Starts its own ``kubeling server`` through the e2e harness (127.0.0.1, fresh data dir, no
controllers, a bench bearer token for a user outside ``system:masters``) and prints Markdown:

1. ``watchers``: server RSS with 2,000 idle watches open (admin certificate, one connection each);
   first, because later phases leave freed heap behind that blurs a per-watch figure;
2. ``slow``: server RSS while 20 clients each ask for a ~30 MB list and never read (finding 4),
   sampled over ``--slow-seconds`` (past the 60 s request timeout), then after they leave;
3. ``readyz``: ``/readyz`` latency (p50/p99/max), polled every 20 ms, alone and while one client
   creates then replaces a ConfigMap of ~3 MB (200,000 keys) in a loop (finding 10);
4. ``overload``: closed-loop lists at rising concurrency, once as the admin (``system:masters``,
   exempt from the in-flight limits, as upstream) and once as the non-privileged bench user:
   offered and answered requests/s, the share of 429s, p99, and ``/readyz`` p99 meanwhile.

Every phase is bounded in count and time; ``--phases`` picks a subset. Client and server share
the machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import aiohttp
import harness
import orjson
import uvloop

TOKEN = "bench-hardening-token"
READYZ_EVERY = 0.02


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return 0.0
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


class Bench:
    def __init__(self, cluster: harness.Cluster, quick: bool):
        self.c = cluster
        self.pid = cluster.proc.pid
        self.quick = quick

    def session(self, limit: int, token: str | None = None) -> aiohttp.ClientSession:
        if token:  # bearer token only: no client certificate
            ctx = ssl.create_default_context(cafile=str(self.ca))
            headers = {"Authorization": f"Bearer {token}"}
        else:
            ctx, headers = self.c.ssl_context(), {}
        conn = aiohttp.TCPConnector(ssl=ctx, limit=limit, force_close=False)
        return aiohttp.ClientSession(base_url=self.c.url, connector=conn, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=120))

    @property
    def ca(self) -> Path:
        p = self.c.data_dir / "pki" / "ca.crt"
        return p

    async def ensure_ns(self, s, ns: str) -> None:
        async with s.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": ns}}) as r:
            assert r.status in (201, 409), await r.text()

    # -- 1. /readyz during a 3 MB write -------------------------------------------------------

    async def poll_readyz(self, stop: asyncio.Event) -> list[float]:
        lat = []
        async with self.session(1) as s:
            while not stop.is_set():
                t = time.perf_counter()
                async with s.get("/readyz") as r:
                    await r.read()
                lat.append(time.perf_counter() - t)
                await asyncio.sleep(READYZ_EVERY)
        return lat

    async def readyz(self) -> list[str]:
        rows = []
        stop = asyncio.Event()
        poller = asyncio.create_task(self.poll_readyz(stop))
        await asyncio.sleep(2 if self.quick else 5)
        stop.set()
        alone = await poller
        rows.append(f"| /readyz, idle server | {len(alone)} | {pct(alone, .5):.1f} | {pct(alone, .99):.1f} | "
                    f"{pct(alone, 1):.1f} | |")
        async with self.session(2) as s:
            await self.ensure_ns(s, "bench-big")
        # 200k keys (~2.8 MB) is finding 10's object, which the server may now refuse before decoding
        # it; 40k keys (~0.6 MB, ~1.3 MB stored with its managedFields) fits under the 1.5 MiB object
        # limit, so it is decoded, checked and stored in full.
        for keys in (200_000, 40_000):
            rows.append(await self.readyz_during_write(keys, 1 if self.quick else 4))
        return rows

    async def readyz_during_write(self, keys: int, writes: int) -> str:
        name = f"big{keys}"
        data = {f"k{i:06d}": "v" for i in range(keys)}
        body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        statuses, durations = [], []
        async with self.session(2) as s:
            stop = asyncio.Event()
            poller = asyncio.create_task(self.poll_readyz(stop))
            await asyncio.sleep(0.5)
            for i in range(writes):
                t = time.perf_counter()
                if i == 0 or statuses[0] != 201:  # replace only what exists: else each try is a create
                    req = s.post("/api/v1/namespaces/bench-big/configmaps", data=body,
                                 headers={"Content-Type": "application/json"})
                else:
                    req = s.put(f"/api/v1/namespaces/bench-big/configmaps/{name}", data=body,
                                headers={"Content-Type": "application/json"})
                async with req as r:
                    await r.read()
                    statuses.append(r.status)
                durations.append(time.perf_counter() - t)
            stop.set()
            during = await poller
        return (f"| /readyz while a {len(body) / 1e6:.1f} MB ConfigMap ({keys // 1000}k keys) is written {writes}x "
                f"(create, then replace if it was created) | {len(during)} | {pct(during, .5):.1f} | "
                f"{pct(during, .99):.1f} | {pct(during, 1):.1f} | write statuses {statuses}, each "
                f"{min(durations):.1f}–{max(durations):.1f} s |")

    # -- 2. 2,000 idle watchers ---------------------------------------------------------------

    async def watchers(self, n: int) -> list[str]:
        before = rss_mib(self.pid)
        async with self.session(n) as s:
            await self.ensure_ns(s, "bench-watch")
            responses = []
            t = time.perf_counter()

            async def open_one():
                r = await s.get("/api/v1/namespaces/bench-watch/configmaps?watch=1&allowWatchBookmarks=false")
                responses.append(r)

            for i in range(0, n, 200):
                await asyncio.gather(*(open_one() for _ in range(min(200, n - i))))
            opened = time.perf_counter() - t
            await asyncio.sleep(3)
            ok = sum(r.status == 200 for r in responses)
            during = rss_mib(self.pid)
            for r in responses:
                r.close()
        await asyncio.sleep(3)
        after = rss_mib(self.pid)
        return [(f"| {n:,} idle watches (admin certificate, one connection each) | {before:.0f} | {during:.0f} | "
                 f"{after:.0f} | {ok} of {n} answered 200 in {opened:.1f} s; "
                 f"{(during - before) * 1024 / max(ok, 1):.0f} KiB per watch |")]

    # -- 3. 20 slow readers of a 30 MB list ---------------------------------------------------

    async def slow_readers(self, n: int, seconds: float) -> list[str]:
        ns = "bench-slow"
        blob = "x" * 1_000_000
        async with self.session(4) as s:
            await self.ensure_ns(s, ns)
            for i in range(30):
                async with s.post(f"/api/v1/namespaces/{ns}/configmaps",
                                  json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"},
                                        "data": {"blob": blob}}) as r:
                    assert r.status in (201, 409), await r.text()
            async with s.get(f"/api/v1/namespaces/{ns}/configmaps") as r:
                full = len(await r.read())
        await asyncio.sleep(2)
        before = rss_mib(self.pid)
        socks = []
        for _ in range(n):
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", self.c.port))
            tls = self.c.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(f"GET /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Accept: application/json\r\n\r\n".encode())
            socks.append(tls)
        samples = []
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            samples.append((elapsed, rss_mib(self.pid)))
            await asyncio.sleep(1)
        received, cut = [], 0
        for sock in socks:  # what the server still holds for each reader, and whether it gave up
            got = 0
            sock.settimeout(2)
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except OSError:
                pass
            received.append(got)
            cut += got < full
            sock.close()
        await asyncio.sleep(5)
        after = rss_mib(self.pid)
        peak = max(samples, key=lambda x: x[1])
        at = {round(e): r for e, r in samples}
        marks = ", ".join(f"{k} s: {at[k]:.0f}" for k in (5, 30, 55, 65) if k in at)
        return [(f"| {n} readers of a {full / 1e6:.0f} MB list that never read | {before:.0f} | "
                 f"{peak[1]:.0f} (at {peak[0]:.0f} s) | {after:.0f} | RSS MiB at {marks}; "
                 f"{cut} of {n} cut short by the server before they read |")]

    # -- 4. overload --------------------------------------------------------------------------

    async def overload(self, levels: list[int], seconds: float) -> list[str]:
        rows = []
        async with self.session(4) as s:
            await self.ensure_ns(s, "bench-load")
            for i in range(20):
                async with s.post("/api/v1/namespaces/bench-load/configmaps",
                                  json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"},
                                        "data": {"k": "v" * 1000}}) as r:
                    assert r.status in (201, 409)
        for who, token in (("admin (system:masters)", None), ("bench user (not system:masters)", TOKEN)):
            for n in levels:
                rows.append(await self.overload_level(who, token, n, seconds))
        return rows

    async def overload_level(self, who: str, token: str | None, n: int, seconds: float) -> str:
        codes: dict[int, int] = {}
        lat: list[float] = []
        sent = 0
        deadline = time.monotonic() + seconds
        stop = asyncio.Event()
        poller = asyncio.create_task(self.poll_readyz(stop))
        async with self.session(n, token) as s:
            async def caller():
                nonlocal sent
                while time.monotonic() < deadline:
                    sent += 1
                    t = time.perf_counter()
                    try:
                        async with s.get("/api/v1/namespaces/bench-load/configmaps") as r:
                            await r.read()
                            codes[r.status] = codes.get(r.status, 0) + 1
                    except (TimeoutError, aiohttp.ClientError):
                        codes[-1] = codes.get(-1, 0) + 1
                    lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(n)))
            took = time.perf_counter() - t0
        stop.set()
        ready = await poller
        answered = sum(v for k, v in codes.items() if k > 0)
        share = codes.get(429, 0) / max(sent, 1) * 100
        shown = ", ".join(f"{'error' if k < 0 else k}: {v}" for k, v in sorted(codes.items()))
        return (f"| {who} | {n} | {sent / took:,.0f}/s | {answered / took:,.0f}/s | {share:.1f} % | "
                f"{pct(lat, .99):.0f} | {pct(ready, .99):.1f} | {shown} |")


SSAR = orjson.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                     "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})


async def threshold(b: Bench, limit: int, burst: int) -> list[str]:
    """The 429 threshold: hold ``held`` mutations in flight (bodies sent slowly, as a slow or busy
    writer does), then send ``burst`` quick mutations; how many are refused. The bench user may
    create SelfSubjectAccessReviews (every authenticated user may), and is not in system:masters,
    which the in-flight filter never refuses."""
    rows = []
    for held in sorted({max(limit // 2, 1), max(limit - 1, 1), limit, 2 * limit}):
        release = asyncio.Event()

        async def slow_body():
            yield SSAR[:10]
            await release.wait()
            yield SSAR[10:]

        async with b.session(held + 20, TOKEN) as s:
            headers = {"Content-Type": "application/json"}

            async def hold():
                async with s.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", data=slow_body(),
                                  headers=headers) as r:
                    await r.read()
                    return r.status

            holders = [asyncio.create_task(hold()) for _ in range(held)]
            await asyncio.sleep(1.0)  # every held request is in flight
            codes: dict[int, int] = {}
            t0 = time.perf_counter()

            async def quick():
                async with s.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", data=SSAR,
                                  headers=headers) as r:
                    await r.read()
                    codes[r.status] = codes.get(r.status, 0) + 1
                    return r.headers.get("Retry-After")

            retry = await asyncio.gather(*(quick() for _ in range(burst)))
            took = time.perf_counter() - t0
            release.set()
            held_codes = await asyncio.gather(*holders)
        refused = codes.get(429, 0)
        rows.append(f"| {held} of {limit} | {burst} | {refused / burst * 100:.0f} % | {took * 1000:.0f} ms | "
                    f"{', '.join(sorted(set(r for r in retry if r)) or ['-'])} | "
                    f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))} | "
                    f"{sum(1 for c in held_codes if c == 201)} of {held} |")
    return rows


async def run(args, cluster: harness.Cluster) -> None:
    b = Bench(cluster, args.quick)
    phases = set(args.phases.split(","))
    await asyncio.sleep(2)
    print(f"Server RSS idle: {rss_mib(cluster.proc.pid):.0f} MiB\n")
    if {"watchers", "slow"} & phases:
        print("| load | RSS MiB before | RSS MiB during (peak) | RSS MiB after | notes |\n|---|---:|---:|---:|---|")
        if "watchers" in phases:
            for row in await b.watchers(200 if args.quick else 2000):
                print(row, flush=True)
        if "slow" in phases:
            for row in await b.slow_readers(20, 10 if args.quick else args.slow_seconds):
                print(row, flush=True)
        print()
    if "readyz" in phases:
        print("| probe | samples | p50 ms | p99 ms | max ms | notes |\n|---|---:|---:|---:|---:|---|")
        for row in await b.readyz():
            print(row, flush=True)
        print()
    if "overload" in phases:
        print("| client | concurrent connections | offered | answered | 429 share | p99 ms | /readyz p99 ms | "
              "status counts |\n|---|---:|---:|---:|---:|---:|---:|---|")
        levels = [50, 200] if args.quick else [50, 200, 500, 800]
        for row in await b.overload(levels, 3 if args.quick else 8):
            print(row, flush=True)
    if "threshold" in phases:
        limit = next((int(a.split("=", 1)[1]) for a in args.server_arg
                      if a.startswith("--max-mutating-requests-inflight=")), 200)
        print("\n| mutations held in flight (of the budget) | quick mutations sent | refused with 429 | burst took | "
              "Retry-After | statuses | held ones completed |\n|---|---:|---:|---:|---|---|---|")
        for row in await threshold(b, limit, 50 if args.quick else 200):
            print(row, flush=True)
    print(f"\nServer RSS after the run: {rss_mib(cluster.proc.pid):.0f} MiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    p.add_argument("--phases", default="readyz,watchers,slow,overload,threshold",
                   help="comma-separated subset of readyz,watchers,slow,overload,threshold")
    p.add_argument("--slow-seconds", type=float, default=75.0,
                   help="how long the slow readers stay (default 75: past the 60 s request timeout)")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for kubeling server")
    args = p.parse_args()
    data_dir = tempfile.mkdtemp(prefix="kubeling-bench-hardening-")
    tokens = Path(data_dir) / "bench-tokens.csv"
    tokens.write_text(f'{TOKEN},bench-user,bench-user,"bench"\n')
    cluster = harness.Cluster(data_dir, extra_args=("--controllers", "", "--token-auth-file", str(tokens),
                                                    *args.server_arg))
    cluster.start()
    try:
        print(f"kubeling server pid {cluster.proc.pid} on {cluster.url}, {os.cpu_count()} CPUs, "
              f"phases {args.phases}\n")
        uvloop.run(run(args, cluster))
    finally:
        cluster.stop()
        harness.remove_cluster_dir(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
