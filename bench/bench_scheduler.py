"""Benchmark of the scheduler (issue 7, acceptance 13): ``python bench/bench_scheduler.py [--quick]``.

For each node count of ``--nodes`` (default ``100,1000``): a plain ``kubeling server``
(127.0.0.1, default controllers and the scheduler child, no agent) plus
``kubeling hollow-nodes --count N`` (kubemark-style nodes in one process; bound pods go Running
with no processes). Once every node is Ready, ``--pods`` pods (tiny requests, default 2000) are
created by ``--creators`` concurrent clients as fast as the API server takes them, and a watch
records when each pod shows ``spec.nodeName``.

Reported per node count:

- throughput: pods bound per second, from the first pod created to the last one bound (this
  includes the API server's create rate, which bounds it from above) and over the middle 80 % of
  the bindings (steady state);
- latency from just before each create request to the watch event showing the binding: p50,
  p90, p99;
- CPU of the scheduler process over the run (% of one core), and per pod (ms): the inverse of
  what the scheduler alone could sustain on one free core; and the API server's CPU.

``--cycle`` measures the scheduler's algorithm alone, in this process: the default profile over
N fake nodes in the cache (no API server, bindings answered at once), P pods through
the queue and ``schedule_one``; it reports cycles/s and the p50/p99 of one cycle. This is the ceiling the
scheduler puts on throughput, independent of the API server and of the machine's other load.

Everything it starts it stops, by pid, and its temp dirs are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

import harness

from kubeling.client.rest import RESTClient

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "bench-sched"


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile, in ms."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(p * len(s) + 0.5) - 1))] * 1000 if s else 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_with(pid: int, word: str) -> int:
    for line in subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                               text=True, check=False).stdout.splitlines():
        child, _, args = line.strip().partition(" ")
        if word in args.split():
            return int(child)
    raise RuntimeError(f"no child of {pid} runs {word!r}")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
                                     "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}],
                     "terminationGracePeriodSeconds": 0}}


async def wait_nodes_ready(client: RESTClient, n: int, proc: subprocess.Popen, log: Path) -> float:
    t0 = last = time.monotonic()
    registered = ready = 0
    while time.monotonic() - t0 < 600:
        items = (await client.list("", "v1", "nodes"))["items"]
        registered = len(items)
        ready = sum(1 for x in items for c in (x.get("status") or {}).get("conditions") or []
                    if c["type"] == "Ready" and c["status"] == "True")
        if ready >= n:
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"hollow-nodes exited: {log.read_text()[-3000:]}")
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"# {last - t0:.0f} s: {registered} nodes registered, {ready} Ready (load {load()})",
                  file=sys.stderr, flush=True)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not all {n} hollow nodes Ready in 600 s: {registered} registered, {ready} Ready\n"
                       f"{log.read_text()[-2000:]}")


async def ensure_namespace(client: RESTClient) -> None:
    await client.create("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for _ in range(300):
        try:
            await client.get("", "v1", "serviceaccounts", "default", namespace=NS)
            return
        except Exception:  # noqa: BLE001 - the serviceaccount controller makes it soon
            await asyncio.sleep(0.1)
    raise RuntimeError("no default ServiceAccount")


async def measure(client: RESTClient, n_pods: int, creators: int, sched_pid: int, server_pid: int) -> dict:
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    rv = (await client.list("", "v1", "pods", namespace=NS, limit=1))["metadata"]["resourceVersion"]
    done = asyncio.Event()

    async def watch() -> None:
        async with client.watch("", "v1", "pods", namespace=NS, resource_version=rv) as w:
            async for typ, obj in w:
                name = obj["metadata"]["name"]
                if (obj.get("spec") or {}).get("nodeName") and name not in bound:
                    bound[name] = time.monotonic()
                    if len(bound) >= n_pods:
                        done.set()
                        return
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    names = [f"p-{i:05}" for i in range(n_pods)]
    queue = list(reversed(names))

    async def creator() -> None:
        while queue:
            name = queue.pop()
            created[name] = time.monotonic()
            await client.create("", "v1", "pods", pod(name), namespace=NS)
    c0, s0 = cpu_seconds(sched_pid), cpu_seconds(server_pid)
    t0 = time.monotonic()
    await asyncio.gather(*(creator() for _ in range(creators)))
    t_created = time.monotonic()
    try:
        await asyncio.wait_for(done.wait(), timeout=max(120.0, n_pods / 20))
    except asyncio.TimeoutError:
        print(f"# only {len(bound)} of {n_pods} pods bound in time; figures are over those", file=sys.stderr)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    names = [n for n in names if n in bound]
    n_pods = len(names)
    t_end = max(bound.values())
    cpu_used = cpu_seconds(sched_pid) - c0
    cpu = cpu_used / (t_end - t0) * 100
    server_cpu = (cpu_seconds(server_pid) - s0) / (t_end - t0) * 100
    times = sorted(bound.values())
    lo, hi = times[len(times) // 10], times[(len(times) * 9) // 10 - 1]
    lat = [bound[n] - created[n] for n in names]
    return {"pods": n_pods, "create_rate": n_pods / (t_created - t0), "overall": n_pods / (t_end - t0),
            "steady": (len(times) * 8 // 10) / (hi - lo) if hi > lo else float("nan"),
            "p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99), "cpu": cpu,
            "cpu_per_pod": cpu_used / n_pods * 1000, "server_cpu": server_cpu}


async def one_size(n_nodes: int, args) -> dict:
    base = Path(tempfile.mkdtemp(prefix="klbench-sched-"))
    # nodeipam hands every node a /24: the default /16 pod network stops at 256 nodes
    cluster = harness.Cluster(base / "cluster", extra_args=("--cluster-cidr", "10.64.0.0/10"))
    proc = client = None
    log = base / "hollow.log"
    try:
        cluster.start()
        sched = child_with(cluster.proc.pid, "scheduler")
        client = RESTClient.from_kubeconfig(str(cluster.kubeconfig), component="bench", qps=0)
        with open(log, "wb") as f:
            proc = subprocess.Popen([*harness._server_command(), "hollow-nodes", "--kubeconfig",
                                     str(cluster.kubeconfig), "--count", str(n_nodes), "--data-dir",
                                     str(base / "hollow-data"), "--start-interval", str(args.start_interval),
                                     # hollow pods need no network: do not wait for nodeipam, which
                                     # a loaded machine may not serve within the agent's 60 s
                                     "--pod-cidr", "10.244.0.0/24"],
                                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        ready = await wait_nodes_ready(client, n_nodes, proc, log)
        await ensure_namespace(client)
        await asyncio.sleep(args.settle)   # past the nodes' start-up burst
        r = await measure(client, args.pods, args.creators, sched, cluster.proc.pid)
        r.update(nodes=n_nodes, ready=ready, load=load())
        return r
    except BaseException:
        # the server log (with its children's) goes with the temp dir: keep the part that explains
        text = cluster.log_path.read_text(errors="replace") if cluster.log_path.exists() else ""
        keep = [line for line in text.splitlines() if "INFO" not in line and "GET " not in line]
        print("\n".join(keep[-150:]), file=sys.stderr)
        raise
    finally:
        if client is not None:
            await client.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def cycle_only(n_nodes: int, n_pods: int) -> dict:
    """Scheduling cycles over fake nodes, in process (see the module docstring)."""
    from kubeling.client.factory import SharedInformerFactory
    from kubeling.client.fake import FakeClient
    from kubeling.scheduler.plugins.registry import IN_TREE_REGISTRY
    from kubeling.scheduler.scheduler import Scheduler

    class InstantBinder:
        NAME = "DefaultBinder"

        def __init__(self, args=None, handle=None):
            pass

        async def bind(self, state, p, node_name):
            return None

    async def go() -> dict:
        c = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        s = Scheduler(c, SharedInformerFactory(c), registry={**IN_TREE_REGISTRY, "DefaultBinder": InstantBinder})
        for i in range(n_nodes):
            s.cache.add_node({"metadata": {"name": f"n{i}", "labels": {"kubernetes.io/hostname": f"n{i}"}},
                              "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}})
        for i in range(n_pods):
            p = pod(f"p-{i:05}")
            p["metadata"].update(namespace=NS, uid=f"uid-{i}")
            s.queue.add(p)
        times = []
        t0 = time.perf_counter()
        for _ in range(n_pods):
            t = time.perf_counter()
            s.schedule_one(await s.queue.pop())
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        await s.drain()
        await s.recorder.close()
        return {"nodes": n_nodes, "pods": n_pods, "rate": n_pods / total, "p50": pct(times, 0.5),
                "p99": pct(times, 0.99)}
    return asyncio.run(go())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="100,1000", help="comma-separated node counts")
    p.add_argument("--pods", type=int, default=2000)
    p.add_argument("--creators", type=int, default=32, help="concurrent create requests")
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait after all nodes are Ready")
    p.add_argument("--start-interval", type=float, default=0.02, help="hollow-nodes --start-interval")
    p.add_argument("--quick", action="store_true", help="smoke run: 20 nodes, 200 pods")
    p.add_argument("--cycle", action="store_true", help="the algorithm alone, in process (see above)")
    args = p.parse_args()
    sizes = [int(x) for x in args.nodes.split(",") if x]
    if args.quick:
        sizes, args.pods, args.settle = [20], 200, 2.0
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    if args.cycle:
        print(f"bench_scheduler.py --cycle, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load()}\n\n"
              "| fake nodes | pods | cycles/s | p50 cycle | p99 cycle |\n|---:|---:|---:|---:|---:|")
        for n in sizes:
            r = cycle_only(n, args.pods)
            print(f"| {r['nodes']} | {r['pods']} | {r['rate']:.0f}/s | {r['p50']:.2f} ms | {r['p99']:.2f} ms |",
                  flush=True)
        return 0
    out = [(f"bench_scheduler.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
            f"{args.pods} pods, {args.creators} concurrent creators"), "",
           ("| hollow nodes | all Ready | create rate | bound/s overall | bound/s steady | p50 | p90 | p99 "
            "| scheduler CPU | scheduler CPU per pod | API server CPU | load |"),
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    print("\n".join(out), flush=True)
    for n in sizes:
        r = asyncio.run(one_size(n, args))
        print(f"| {r['nodes']} | {r['ready']:.0f} s | {r['create_rate']:.0f}/s | {r['overall']:.0f}/s "
              f"| {r['steady']:.0f}/s | {r['p50']:.0f} ms | {r['p90']:.0f} ms | {r['p99']:.0f} ms "
              f"| {r['cpu']:.0f} % | {r['cpu_per_pod']:.1f} ms | {r['server_cpu']:.0f} % | {r['load']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
