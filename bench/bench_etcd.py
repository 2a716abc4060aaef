"""etcd as kubeling's datastore, measured in one run: ``python bench/bench_etcd.py``.

Everything runs on this machine, in one process's run, so the figures share the machine's state:

1. **raw etcd** (a fresh single-member etcd from Debian, ``tests/support/etcd.py``), ~1 KB JSON
   values, closed loops at each concurrency level (default 1 and 32) over one client:
   - aetcd ``put`` — the ceiling the issue names;
   - aetcd create transaction (``mod_revision == 0`` → put), which is what a create costs;
   - the same two through etcd's generated gRPC stubs called directly on a ``grpc.aio`` channel
     (the stubs aetcd ships, which ``kubeling.storage.etcd`` uses on channels of its own), to see
     what aetcd's wrapper costs ("justify the client choice");
   - the store itself (``kubeling.storage.etcd.EtcdStore.create``: the Txn, then the wait for its
     event on the store's watch stream before the write is acknowledged), no HTTP.
2. **kubeling on etcd vs on SQLite**: one ``kubeling server`` on each (the e2e harness, no
   controllers), driven over HTTPS with aiohttp and the admin client certificate:
   ConfigMap creates/s at the same concurrency levels, GET latency, LIST of 1,000 objects
   (unpaginated, and kubectl's ``limit=500`` pages), and watch delivery latency (a write's
   request sent → its event read by a watcher on another connection).
3. the target: kubeling creates on etcd ≥ 50 % of the raw etcd put rate at the same concurrency.

``--check-perf`` adds ``etcdctl check perf`` (about 60 s) on its own fresh member;
``--profile FILE`` records each server with py-spy (collapsed stacks, FILE-etcd and FILE-sqlite)
during its creates at the highest level and prints the files and frames that dominate (take the
figures from a run without it).
Counts and durations are bounded; a run takes about two minutes. etcd members and servers are
started by this script and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import harness  # noqa: E402
import orjson  # noqa: E402

from tests.support.etcd import EtcdCluster  # noqa: E402

PAYLOAD = {f"key{i}": "v" * 40 for i in range(20)}   # ~1 KB of data per ConfigMap, as bench_api


def configmap_json(ns: str, name: str) -> bytes:
    """What the store holds for a ConfigMap: the size of the values of the raw-etcd loops."""
    return orjson.dumps({"kind": "ConfigMap", "apiVersion": "v1",
                         "metadata": {"name": name, "namespace": ns, "uid": "0" * 36,
                                      "resourceVersion": "", "creationTimestamp": "2026-12-02T00:00:00Z",
                                      "managedFields": [{"manager": "bench", "operation": "Update",
                                                         "apiVersion": "v1", "time": "2026-12-02T00:00:00Z",
                                                         "fieldsType": "FieldsV1",
                                                         "fieldsV1": {"f:data": {}}}]},
                         "data": PAYLOAD})


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.rates: dict[tuple[str, int], float] = {}

    def add(self, what: str, clients: int, count: int, seconds: float, lat: list[float], note: str = "",
            key: str | None = None) -> None:
        rate = count / seconds if seconds else 0.0
        if key:
            self.rates[(key, clients)] = rate
        self.rows.append((what, clients, count, rate, pct(lat, .5), pct(lat, .99), note))
        print(f"  {what:<52} c={clients:<3} n={count:<5} {rate:8,.0f}/s  p50 {pct(lat, .5):7.2f} ms"
              f"  p99 {pct(lat, .99):7.2f} ms  {note}", flush=True)

    def markdown(self) -> str:
        out = ["| what | concurrency | count | rate | p50 ms | p99 ms | note |", "|---|---|---|---|---|---|---|"]
        out += [f"| {w} | {c} | {n} | {r:,.0f}/s | {p50:.2f} | {p99:.2f} | {note} |"
                for w, c, n, r, p50, p99, note in self.rows]
        return "\n".join(out)


async def closed_loop(clients: int, total: int, call, budget: float) -> tuple[int, float, list[float]]:
    """``clients`` callers share up to ``total`` calls and stop at ``budget`` seconds."""
    lat: list[float] = []
    counter = iter(range(total))
    t0 = time.perf_counter()
    deadline = t0 + budget

    async def caller() -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t = time.perf_counter()
            await call(i)
            lat.append(time.perf_counter() - t)
    await asyncio.gather(*(caller() for _ in range(clients)))
    return len(lat), time.perf_counter() - t0, lat


# -- 1. raw etcd ----------------------------------------------------------------------------------

def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.split("://", 1)[1].rpartition(":")
    return host, int(port)


async def raw_etcd(etcd: EtcdCluster, table: Table, levels: list[int], total: int, budget: float) -> None:
    import aetcd
    import grpc
    from aetcd import rpc
    from aetcd.rpc import rpc_pb2

    host, port = _host_port(etcd.endpoints[0])
    value = configmap_json("bench", "x" * 10)

    def txn_create(key: bytes) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL,
                                     mod_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))])

    print("raw etcd (one client, ~%d-byte values)" % len(value), flush=True)
    async with aetcd.Client(host=host, port=port, timeout=30) as client:
        await client.put(b"/bench/warm", value)
        for c in levels:
            async def put(i, c=c):
                await client.put(f"/bench/aetcd-put/c{c}/{i:06d}".encode(), value)
            n, dt, lat = await closed_loop(c, total, put, budget)
            table.add("raw etcd: aetcd put", c, n, dt, lat, key="aetcd put")

            async def create(i, c=c):
                key = f"/bench/aetcd-txn/c{c}/{i:06d}".encode()
                # aetcd's own transaction builder: compare mod == 0, then put.
                ok, _ = await client.transaction(compare=[client.transactions.mod(key) == 0],
                                                 success=[client.transactions.put(key, value)],
                                                 failure=[client.transactions.get(key)])
                assert ok, key
            n, dt, lat = await closed_loop(c, total, create, budget)
            table.add("raw etcd: aetcd txn create (mod_revision == 0)", c, n, dt, lat, key="aetcd txn")

    channel = grpc.aio.insecure_channel(f"{host}:{port}")
    try:
        kv = rpc.KVStub(channel)
        for c in levels:
            async def put(i, c=c):
                await kv.Put(rpc_pb2.PutRequest(key=f"/bench/stub-put/c{c}/{i:06d}".encode(), value=value),
                             timeout=30)
            n, dt, lat = await closed_loop(c, total, put, budget)
            table.add("raw etcd: gRPC stub Put (grpc.aio)", c, n, dt, lat, key="stub put")

            async def create(i, c=c):
                resp = await kv.Txn(txn_create(f"/bench/stub-txn/c{c}/{i:06d}".encode()), timeout=30)
                assert resp.succeeded
            n, dt, lat = await closed_loop(c, total, create, budget)
            table.add("raw etcd: gRPC stub Txn create", c, n, dt, lat, key="stub txn")
    finally:
        await channel.close()

    from kubeling.storage.etcd import EtcdStore
    store = await EtcdStore.open(etcd.endpoint, compact_interval=0)
    try:
        for c in levels:
            async def create(i, c=c):
                ok, _ = await store.create(f"/registry/configmaps/bench-store-c{c}/cm-{i:06d}", value)
                assert ok
            n, dt, lat = await closed_loop(c, total, create, budget)
            table.add("EtcdStore.create (kubeling's store, no HTTP)", c, n, dt, lat, key="store create")
    finally:
        await store.close()


def check_perf(base: Path) -> str:
    """``etcdctl check perf`` (load "s", 60 s) against a fresh member of its own. It offers a fixed
    load (150 writes/s for "s") and checks etcd keeps up: a pass/fail of the disk, not a ceiling."""
    with EtcdCluster(base / "check-perf", members=1) as etcd:
        proc = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "check", "perf"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "ETCDCTL_API": "3"})
    # Drop the progress bar; keep the verdict lines.
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and not ln.rstrip().endswith("%")
             and " / " not in ln]
    return "\n".join(lines[-8:])


# -- 2. kubeling on etcd and on SQLite ------------------------------------------------------------

class Kube:
    def __init__(self, cluster: harness.Cluster) -> None:
        self.c = cluster
        self.base = cluster.url

    def session(self, limit: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.c.ssl_context(), limit=limit),
                                     timeout=aiohttp.ClientTimeout(total=60))

    async def req(self, s, method: str, path: str, body=None, ok=(200, 201)) -> bytes:
        data = orjson.dumps(body) if body is not None else None
        async with s.request(method, self.base + path, data=data,
                             headers={"Content-Type": "application/json"}) as r:
            raw = await r.read()
            if r.status not in ok:
                raise RuntimeError(f"{method} {path} -> {r.status}: {raw[:300]!r}")
            return raw

    @staticmethod
    def cms(ns: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")

    async def namespace(self, s, name: str) -> None:
        await self.req(s, "POST", "/api/v1/namespaces", {"metadata": {"name": name}})


async def kubeling_rows(label: str, cluster: harness.Cluster, table: Table, levels: list[int], total: int,
                        budget: float, profile: Path | None) -> None:
    k = Kube(cluster)
    pid = cluster.proc.pid
    print(f"kubeling on {label} (server pid {pid})", flush=True)
    async with k.session(max(levels) + 2) as s:
        for c in levels:
            ns = f"bench-create-c{c}"
            await k.namespace(s, ns)
            await k.req(s, "POST", k.cms(ns), {"metadata": {"name": "warm"}, "data": PAYLOAD})

            async def create(i, ns=ns):
                await k.req(s, "POST", k.cms(ns), {"metadata": {"name": f"cm-{i:06d}"}, "data": PAYLOAD})
            spy = None
            if profile is not None and c == max(levels):
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                        "--rate", "200", "-o", str(profile), "--pid", str(pid), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(1.0)   # py-spy attaches
            cpu0 = cpu_seconds(pid)
            n, dt, lat = await closed_loop(c, total, create, budget)
            note = f"server CPU {(cpu_seconds(pid) - cpu0) / max(n, 1) * 1000:.2f} ms/create"
            if spy is not None:
                spy.send_signal(2)   # SIGINT: py-spy writes its file and exits
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
            table.add(f"kubeling on {label}: create ConfigMap", c, n, dt, lat, note, key=f"{label} create")

        # GET latency, one client, objects of the c=max level
        ns = f"bench-create-c{max(levels)}"
        made = max(1, min(total, 500))

        async def get(i, ns=ns):
            await k.req(s, "GET", k.cms(ns, f"cm-{random.randrange(made):06d}"))
        n, dt, lat = await closed_loop(1, 500, get, budget)
        table.add(f"kubeling on {label}: GET ConfigMap", 1, n, dt, lat)

        # LIST of 1,000 objects
        await k.namespace(s, "bench-list")

        async def fill(i):
            await k.req(s, "POST", k.cms("bench-list"), {"metadata": {"name": f"l-{i:04d}"}, "data": PAYLOAD})
        filled, _, _ = await closed_loop(16, 1000, fill, 60)
        assert filled == 1000, filled
        got = orjson.loads(await k.req(s, "GET", k.cms("bench-list")))
        assert len(got["items"]) == 1000, len(got["items"])

        async def lst(i):
            await k.req(s, "GET", k.cms("bench-list"))
        n, dt, lat = await closed_loop(1, 20, lst, budget)
        table.add(f"kubeling on {label}: LIST 1,000 ConfigMaps (one call)", 1, n, dt, lat)

        async def paged(i):
            body = orjson.loads(await k.req(s, "GET", k.cms("bench-list") + "?limit=500"))
            token = body["metadata"].get("continue")
            body = orjson.loads(await k.req(s, "GET", k.cms("bench-list") + f"?limit=500&continue={token}"))
            assert not body["metadata"].get("continue")
        n, dt, lat = await closed_loop(1, 20, paged, budget)
        table.add(f"kubeling on {label}: LIST 1,000 as 2 pages of 500 (kubectl)", 1, n, dt, lat)

    await watch_latency(k, label, table, budget)


async def watch_latency(k: Kube, label: str, table: Table, budget: float, writes: int = 200) -> None:
    """One watcher, one writer on another connection; latency = request sent → event read."""
    ns = "bench-watch"
    sent: dict[str, float] = {}
    lat: list[float] = []
    async with k.session(2) as s, k.session(2) as ws:
        await k.namespace(s, ns)
        rv = orjson.loads(await k.req(s, "GET", k.cms(ns)))["metadata"]["resourceVersion"]
        done = asyncio.Event()

        async def watcher() -> None:
            url = f"{k.base}{k.cms(ns)}?watch=1&resourceVersion={rv}&timeoutSeconds=300"
            async with ws.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
                assert r.status == 200, r.status
                ready.set()
                async for line in r.content:
                    now = time.perf_counter()
                    ev = orjson.loads(line)
                    name = ev["object"].get("metadata", {}).get("name", "")
                    if ev["type"] == "ADDED" and name in sent:
                        lat.append(now - sent[name])
                        if len(lat) == writes:
                            done.set()
                            return
        ready = asyncio.Event()
        task = asyncio.create_task(watcher())
        await asyncio.wait_for(ready.wait(), 30)
        t0 = time.perf_counter()
        for i in range(writes):
            if time.perf_counter() - t0 > budget:
                break
            name = f"w-{i:04d}"
            sent[name] = time.perf_counter()
            await k.req(s, "POST", k.cms(ns), {"metadata": {"name": name}, "data": PAYLOAD})
            await asyncio.sleep(0.01)   # ~paced: one write at a time, 10 ms apart
        try:
            await asyncio.wait_for(done.wait(), 15)
        except asyncio.TimeoutError:
            pass
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    table.add(f"kubeling on {label}: watch delivery (write sent → event)", 1, len(lat),
              time.perf_counter() - t0, lat, f"{len(lat)}/{len(sent)} events seen")


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    files: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        for f in {f.split(" (", 1)[1].split(":")[0] for f in stack.split(";") if " (" in f}:
            files[f] += n
    out = [f"py-spy: {total} samples", "inclusive, by file:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in files.most_common(top)]
    out += ["inclusive, by function:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    out += ["self:"] + [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def profile_path(base: Path | None, label: str) -> Path | None:
    return None if base is None else base.with_name(f"{base.stem}-{label}{base.suffix}")


# -- main -----------------------------------------------------------------------------------------

async def run(args, base: Path) -> None:
    table = Table()
    levels = [int(x) for x in args.levels.split(",")]
    phases = set(args.phases.split(","))
    t_start = time.perf_counter()
    if "raw" in phases:
        with EtcdCluster(base / "raw-etcd", members=1) as etcd:
            await raw_etcd(etcd, table, levels, args.raw_total, args.budget)
    for label in ("etcd", "sqlite"):
        if label not in phases:
            continue
        cluster = harness.Cluster(base / f"kubeling-{label}", datastore=label,
                                  extra_args=("--controllers", ""))
        try:
            cluster.start()
            await kubeling_rows(label, cluster, table, levels, args.creates, args.budget,
                                profile_path(args.profile, label))
        finally:
            cluster.stop()
    perf = check_perf(base) if args.check_perf else ""
    elapsed = time.perf_counter() - t_start

    print(f"\n### Results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {elapsed:.0f} s)\n")
    print(table.markdown())
    print("\n| target | figure | goal | met |\n|---|---|---|---|")
    for c in levels:
        raw = table.rates.get(("aetcd put", c))
        kube = table.rates.get(("etcd create", c))
        if raw and kube:
            r = kube / raw
            print(f"| kubeling creates on etcd / raw aetcd put, c={c} | {kube:,.0f} / {raw:,.0f} = "
                  f"{100 * r:.0f} % | ≥ 50 % | {'yes' if r >= 0.5 else 'no'} |")
        txn = table.rates.get(("aetcd txn", c))
        if txn and kube:
            print(f"| (for reference) creates on etcd / raw aetcd txn create, c={c} | {100 * kube / txn:.0f} % | | |")
        stub, aput = table.rates.get(("stub put", c)), table.rates.get(("aetcd put", c))
        if stub and aput:
            print(f"| (client choice) aetcd put / gRPC stub Put, c={c} | {100 * aput / stub:.0f} % | | |")
    if perf:
        print("\n`etcdctl check perf` (fresh member, load s):\n\n```\n" + perf + "\n```")
    for label in ("etcd", "sqlite"):
        path = profile_path(args.profile, label)
        if path is not None and path.exists():
            print(f"\nServer on {label}, creates at c={max(levels)}:\n\n```\n" + summarize_profile(path) + "\n```")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default="1,32", help="client concurrency levels (default 1,32)")
    p.add_argument("--raw-total", type=int, default=3000, help="operations per raw etcd loop (default 3000)")
    p.add_argument("--creates", type=int, default=2000, help="creates per kubeling level (default 2000)")
    p.add_argument("--budget", type=float, default=8.0, help="seconds at most per loop (default 8)")
    p.add_argument("--phases", default="raw,etcd,sqlite", help="subset of raw,etcd,sqlite")
    p.add_argument("--check-perf", action="store_true", help="also run etcdctl check perf (≈ 60 s)")
    p.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the etcd server's creates")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kubeling-bench-etcd-"))
    try:
        asyncio.run(run(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
