"""Benchmark: a 100-replica Deployment to all Ready on one real node (issue 7, acceptance 13).

``python bench/bench_deployment.py [--replicas 100] [--runs 3] [--quick]``, as root.

It starts a `NodeCluster` (tests/e2e/nodes.py: ``kubeling server`` with its controller manager,
scheduler and agent, in a network namespace the bench makes, the seeded registry as the
docker.io mirror), pulls busybox once with a warm-up pod, then per run:

1. creates a Deployment of ``--replicas`` busybox ``sleep 3600`` pods (no probes, so Ready is
   Running with every container started) through the API, and times from just before the
   create request to the first **watch** event of the Deployment with
   ``status.readyReplicas == replicas``; a pod watch gives the breakdown (last pod created,
   last pod bound, last pod Ready);
2. takes CPU seconds (``/proc/<pid>/stat`` utime+stime) of the API server, controller manager,
   scheduler and agent over that window, the agent's waited-for children (runc, ip: its
   cutime+cstime) and this cluster's live shims (``shim.py`` whose config lies under the data dir);
3. deletes the Deployment and waits (watch) until its pods are gone.

The baseline, in the same run, is the **same bundle** (the config.json of a container the agent
started, on an overlay of the same image layers, fresh namespaces, without the pod's own mounts)
started ``--replicas`` times at once with bare ``runc create`` + ``runc start`` (bench_node's
`BareRunc`), timed to the last ``start``. Runs are reported one per line, then the median.

Everything it starts it stops, by pid; the cluster is destroyed (``kubeling node cleanup``) and
bare runc's containers, mount and cgroups are removed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

import bench_node as bn
import nodes

from kubeling.client.rest import RESTClient

NS = "bench-deploy"
NAME = "sleeper"
COMPONENTS = ("server", "controller-manager", "scheduler", "agent")


def deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": NAME}},
                     "template": {"metadata": {"labels": {"app": NAME}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "app", "image": "busybox",
                                                           "imagePullPolicy": "IfNotPresent",
                                                           "command": ["sleep", "3600"]}]}}}}


def ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class PodTimes:
    """A pod watch on the namespace: when each pod was first seen, bound, Ready, and gone."""

    def __init__(self, client: RESTClient) -> None:
        self.client = client
        self.seen: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.live: set[str] = set()
        self.task: asyncio.Task | None = None
        self.armed = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self.armed.wait()

    def reset(self) -> None:
        self.seen.clear()
        self.bound.clear()
        self.ready.clear()

    async def _run(self) -> None:
        listed = await self.client.list("", "v1", "pods", namespace=NS)
        self.live = {p["metadata"]["name"] for p in listed["items"]}
        rv = listed["metadata"]["resourceVersion"]
        while True:
            async with self.client.watch("", "v1", "pods", namespace=NS, resource_version=rv) as w:
                self.armed.set()
                async for typ, obj in w:
                    now = time.perf_counter()
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"].get("name")
                    if typ == "BOOKMARK" or not name:
                        continue
                    if typ == "DELETED":
                        self.live.discard(name)
                        continue
                    self.live.add(name)
                    self.seen.setdefault(name, now)
                    if obj["spec"].get("nodeName"):
                        self.bound.setdefault(name, now)
                    if ready(obj):
                        self.ready.setdefault(name, now)

    async def until_empty(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.live:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.live)} pods still there after {timeout} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until_ready(client: RESTClient, replicas: int, timeout: float) -> float:
    """The first watch event of the Deployment with readyReplicas == replicas (perf_counter)."""
    async def watch() -> float:
        async with client.watch("apps", "v1", "deployments", namespace=NS, name=NAME,
                                resource_version="0") as w:
            async for typ, obj in w:
                if typ != "BOOKMARK" and (obj.get("status") or {}).get("readyReplicas") == replicas:
                    return time.perf_counter()
        raise RuntimeError("the Deployment watch ended")
    return await asyncio.wait_for(watch(), timeout)


def cluster_pids(cluster: nodes.NodeCluster) -> dict[str, int]:
    server = cluster.proc.pid
    return {"server": server, **{c: bn.child_with(server, c) for c in COMPONENTS[1:]}}


def shim_pids(cluster: nodes.NodeCluster) -> list[int]:
    return [p for p in bn._all_pids() if "shim.py" in (cl := bn.cmdline(p)) and str(cluster.data_dir) in cl]


def zygote_pids(agent: int) -> list[int]:
    """The agent's shim zygote (``shim.py --zygote``), whose forks start every shim."""
    return [p for p in bn.children(agent) if bn.cmdline(p).rstrip().endswith("shim.py --zygote")]


def children_cpu(pid: int) -> float:
    """cutime + cstime: CPU of the children ``pid`` has waited for (runc, ip, shim launchers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / bn.CLK_TCK


def safe_cpu(pid: int) -> float:
    """utime+stime+cutime+cstime: a shim's own CPU and its ``runc create``'s."""
    try:
        return bn.cpu_seconds(pid) + children_cpu(pid)
    except OSError:
        return 0.0


def start_profile(pid: int, out: Path) -> subprocess.Popen:
    """py-spy (from the venv) on ``pid`` and its children, collapsed stacks to ``out``."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--subprocesses", "--rate", "100",
                             "--nonblocking", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_run(client: RESTClient, cluster: nodes.NodeCluster, pods: PodTimes, replicas: int,
                  timeout: float, profile: Path | None = None) -> dict:
    pids = cluster_pids(cluster)
    spy = start_profile(pids["agent"], profile) if profile else None
    c0 = {k: bn.cpu_seconds(p) for k, p in pids.items()}
    kids0 = children_cpu(pids["agent"])
    zygotes0 = {z: safe_cpu(z) for z in zygote_pids(pids["agent"])}
    pods.reset()
    waiter = asyncio.create_task(until_ready(client, replicas, timeout))
    await asyncio.sleep(0.2)   # the watch is open before the create
    load0 = bn.load()
    t0 = time.perf_counter()
    await client.create("apps", "v1", "deployments", deployment(replicas), namespace=NS)
    try:
        t_ready = await waiter
    finally:
        if spy is not None:
            stop_profile(spy)
    cpu = {k: bn.cpu_seconds(p) - c0[k] for k, p in pids.items()}
    cpu["agent children"] = children_cpu(pids["agent"]) - kids0
    shims = shim_pids(cluster)
    cpu["shims"] = sum(safe_cpu(p) for p in shims)   # all born in this window
    cpu["shims"] += sum(safe_cpu(z) - zygotes0.get(z, 0.0) for z in zygote_pids(pids["agent"]))
    result = {
        "ready": t_ready - t0, "load": f"{load0}→{bn.load()}", "cpu": cpu, "shims": len(shims),
        "created": max(pods.seen.values()) - t0 if pods.seen else 0.0,
        "bound": max(pods.bound.values()) - t0 if pods.bound else 0.0,
        "pods_ready": max(pods.ready.values()) - t0 if pods.ready else 0.0,
    }
    await client.delete("apps", "v1", "deployments", NAME, namespace=NS, propagation_policy="Background")
    await asyncio.sleep(1)   # the garbage collector deletes the ReplicaSet, then its pods
    await pods.until_empty()
    return result


async def bare_runc_round(bare: bn.BareRunc, count: int, tag: str) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(bare.create_start(f"klbd-{os.getpid()}-{tag}-{i}") for i in range(count)))
    took = time.perf_counter() - t0
    await bare.remove_all()
    return took


async def bench(cluster: nodes.NodeCluster, args, out: list[str]) -> None:
    client = RESTClient.from_kubeconfig(str(cluster.kubeconfig), component="bench", qps=0)
    work = Path(tempfile.mkdtemp(prefix="klbench-deploy-runc-"))
    bare = None
    pods = PodTimes(client)
    runs: list[dict] = []
    bare_times: list[float] = []
    try:
        bn.NS = NS
        await bn.ensure_namespace(client)
        await pods.start()
        # Warm-up: the image pull and the agent's first pod; its bundle is bare runc's.
        warmup = bn.Watcher(client)
        await warmup.start()
        await bn.start_pods(client, warmup, ["warm"])
        warm = await client.get("", "v1", "pods", "warm", namespace=NS)
        cid = warm["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        bare = bn.BareRunc(cluster.data_dir / "agent", cid, work)
        bare.prepare()
        await bn.delete_pods(client, warmup, ["warm"])
        await warmup.stop()
        await pods.until_empty()
        for r in range(args.runs):
            profile = Path(args.profile) / f"agent-run{r + 1}.txt" if args.profile else None
            runs.append(await one_run(client, cluster, pods, args.replicas, args.timeout, profile))
            print(f"run {r + 1}: {runs[-1]['ready']:.1f} s to {args.replicas} ready", file=sys.stderr, flush=True)
            bare_times.append(await bare_runc_round(bare, args.replicas, f"r{r}"))
            print(f"bare runc {r + 1}: {bare_times[-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        await pods.stop()
        await client.close()
        if bare is not None:
            await bare.remove_all()
            bare.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    n = args.replicas
    out += ["", (f"{n}-replica Deployment (busybox `sleep 3600`, no probes, image cached), create → "
            f"`readyReplicas == {n}` seen on a watch; {len(runs)} run(s), one after the other:"), "",
            ("| run | all Ready | last pod created | last pod bound | last pod Ready | bare runc ×"
            f"{n} at once | ratio | load avg (start→end) |"),
            "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, (r, b) in enumerate(zip(runs, bare_times), 1):
        out.append(f"| {i} | {r['ready']:.1f} s | {r['created']:.1f} s | {r['bound']:.1f} s | "
                   f"{r['pods_ready']:.1f} s | {b:.1f} s | {r['ready'] / b:.1f}× | {r['load']} |")
    med = statistics.median(r["ready"] for r in runs)
    med_bare = statistics.median(bare_times)
    out.append(f"| **median** | **{med:.1f} s** | | | | {med_bare:.1f} s | {med / med_bare:.1f}× | |")
    keys = [*COMPONENTS, "agent children", "shims"]
    out += ["", ("CPU seconds per component over create → all Ready (median of the runs; "
            "\"agent children\" = runc/ip/shim launchers the agent waited for, \"shims\" = this "
            "cluster's live shims, the `runc` each ran, and the shim zygote):"), "",
            "| " + " | ".join(keys) + " | total |", "|" + "---:|" * (len(keys) + 1)]
    cells = [statistics.median(r["cpu"][k] for r in runs) for k in keys]
    out.append("| " + " | ".join(f"{c:.1f}" for c in cells) + f" | {sum(cells):.1f} |")
    out.append(f"\nShims alive with {n} pods running: {statistics.median(r['shims'] for r in runs):.0f}.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all Ready")
    p.add_argument("--quick", action="store_true", help="smoke run: 10 replicas, one run")
    p.add_argument("--profile", metavar="DIR", help="py-spy the agent (and its children) during each run, "
                   "collapsed stacks to DIR/agent-run<N>.txt")
    args = p.parse_args()
    if args.quick:
        args.replicas, args.runs = 10, 1
    if os.geteuid() != 0:
        print("bench_deployment.py needs root (runc, network namespaces)", file=sys.stderr)
        return 2
    out = [f"bench_deployment.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs"]

    async def go() -> None:
        from tests.support.registry import build_images
        base = Path(tempfile.mkdtemp(prefix="klbench-deploy-"))
        cluster = nodes.NodeCluster(base / "cluster", images_dir=build_images(base / "images"))
        try:
            cluster.start()
            cluster.wait_node_ready()
            await bench(cluster, args, out)
        finally:
            cluster.destroy()
            shutil.rmtree(base, ignore_errors=True)
    # SIGTERM (a timeout) unwinds like Ctrl-C, so the finally blocks remove the cluster.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    asyncio.run(go())
    print("\n".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
