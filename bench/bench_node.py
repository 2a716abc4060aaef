"""Benchmark of the node agent (issue 6, acceptance 14): ``python bench/bench_node.py [--quick]``.

Run as root (it starts runc containers). Prints Markdown, three phases (``--phases``):

1. ``startup``: pod startup against a `NodeCluster` (tests/e2e/nodes.py: server + agent in a
   network namespace of their own, the seeded registry as the docker.io mirror). The image is
   pulled once first, then every pod uses ``imagePullPolicy: IfNotPresent``. Latency is from
   just before the create request to the first watch event showing ``phase: Running``: one pod
   at a time (``--repeat``, 20) and ``--parallel`` (30) created at once (``--rounds`` times).
   In the same run, the **same bundle** (the config.json of a container the agent started, on
   an overlay of the same image layers, with fresh namespaces instead of the pod's) is started
   with bare ``runc create`` + ``runc start``, one at a time and 30 at once.
2. ``idle``: the agent process's RSS and CPU (% of one core over ``--idle-seconds``), with no
   pods and with 10 running; the shims (one per container; a sandbox has one only with
   shareProcessNamespace) are counted apart.
3. ``hollow``: a plain server (127.0.0.1, default controllers, so nodeipam) and
   ``kubeling hollow-nodes --count 200``: time to all Ready, then in steady state over
   ``--steady-seconds``: Lease writes/s and Node writes/s (counted on watches), and the CPU of
   the API server, the controller manager and the hollow-nodes process.

Everything it starts it stops, by pid; runc containers, mounts and cgroups of the bare-runc
measurement are removed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
import nodes

from kubeling.client.rest import RESTClient

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "bench-node"


# -- small measures ---------------------------------------------------------------------------------

def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile, in ms."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))] * 1000 if s else 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError):
                pass
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_with(pid: int, word: str) -> int:
    found = [c for c in children(pid) if f" {word} " in f" {cmdline(c)} "]
    if not found:
        raise RuntimeError(f"no child of {pid} runs {word!r}")
    return found[0]


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def row(what: str, samples: list[float], note: str = "") -> str:
    return (f"| {what} | {len(samples)} | {pct(samples, 0.5):.0f} | {pct(samples, 0.99):.0f} | "
            f"{max(samples) * 1000:.0f} | {note} |")


# -- phase 1: pod startup against runc ----------------------------------------------------------------

def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"bench": "startup"}},
            "spec": {"nodeName": nodes.NODE_NAME, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}


class Watcher:
    """One pod watch for the namespace; records when each pod was first seen Running or gone."""

    def __init__(self, client: RESTClient) -> None:
        self.client = client
        self.running: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self.ready.wait()

    async def _run(self) -> None:
        rv = (await self.client.list("", "v1", "pods", namespace=NS))["metadata"]["resourceVersion"]
        while True:
            async with self.client.watch("", "v1", "pods", namespace=NS, resource_version=rv) as w:
                self.ready.set()
                async for typ, obj in w:
                    now = time.perf_counter()
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"].get("name")
                    if typ == "DELETED":
                        self.deleted.setdefault(name, now)
                    elif (obj.get("status") or {}).get("phase") == "Running":
                        self.running.setdefault(name, now)

    async def until(self, names: list[str], where: dict, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in where for n in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods not seen in time: {[n for n in names if n not in where]}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def start_pods(client: RESTClient, watcher: Watcher, names: list[str]) -> list[float]:
    t0 = {}

    async def one(name: str) -> None:
        t0[name] = time.perf_counter()
        await client.create("", "v1", "pods", pod(name), namespace=NS)
    await asyncio.gather(*(one(n) for n in names))
    await watcher.until(names, watcher.running)
    return [watcher.running[n] - t0[n] for n in names]


async def delete_pods(client: RESTClient, watcher: Watcher, names: list[str]) -> None:
    await asyncio.gather(*(client.delete("", "v1", "pods", n, namespace=NS) for n in names))
    await watcher.until(names, watcher.deleted, timeout=180)


async def ensure_namespace(client: RESTClient) -> None:
    try:
        await client.create("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": NS}})
    except Exception as e:
        if getattr(e, "code", None) != 409:
            raise
    for _ in range(300):
        try:
            await client.get("", "v1", "serviceaccounts", "default", namespace=NS)
            return
        except Exception:  # noqa: BLE001 - the controller makes it soon
            await asyncio.sleep(0.1)
    raise RuntimeError("no default ServiceAccount")


class BareRunc:
    """The agent's bundle of one container, re-run with bare runc (see the module docstring)."""

    def __init__(self, agent_root: Path, container_id: str, work: Path) -> None:
        self.work = work
        self.state = work / "runc-state"
        self.bundle = work / "bundle"
        self.cgroup = f"klbench-{os.getpid()}"
        self.started: list[str] = []
        src = agent_root / "containers" / container_id
        self.layers = _overlay_lowerdir(src / "rootfs")
        config = json.loads((src / "config.json").read_text())
        linux = config["linux"]
        # Fresh namespaces where the agent's container joined its pod's (net, ipc, uts).
        linux["namespaces"] = [{"type": n["type"]} for n in linux.get("namespaces") or []]
        linux["cgroupsPath"] = f"/{self.cgroup}/bare"
        config["process"]["terminal"] = False
        # The pod's own files (hosts, resolv.conf, termination log, token, shm) belong to its
        # sandbox; the bare container keeps the generic mounts (proc, dev, sys...).
        keep = []
        for m in config.get("mounts") or []:
            source = str(m.get("source", ""))
            if source.startswith(str(agent_root)) or source.startswith("/run/netns"):
                continue
            keep.append(m)
        config["mounts"] = keep
        config["hooks"] = {}
        self.config = config

    def prepare(self) -> None:
        for d in (self.state, self.bundle / "rootfs", self.work / "upper", self.work / "ovl-work"):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.layers},upperdir={self.work / 'upper'},workdir={self.work / 'ovl-work'}",
                        str(self.bundle / "rootfs")], check=True)
        # One bundle directory per container (its own cgroup), all on the one overlay rootfs.
        self.config["root"] = {**self.config.get("root", {}), "path": str(self.bundle / "rootfs")}

    async def _runc(self, *args: str) -> None:
        # Not a pipe: without a terminal the container inherits runc's stdio, and a pipe it holds
        # would never reach EOF. A file per call keeps runc's error text.
        err_path = self.work / f"runc-{args[0]}-{args[-1]}.err"
        with open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                "runc", "--root", str(self.state), *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"runc {' '.join(args)}: no answer in 60 s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"runc {' '.join(args)}: {err_path.read_text().strip()}")

    async def create_start(self, cid: str) -> float:
        bundle = self.work / "bundles" / cid
        bundle.mkdir(parents=True)
        self.config["linux"]["cgroupsPath"] = f"/{self.cgroup}/{cid}"
        (bundle / "config.json").write_text(json.dumps(self.config))
        t0 = time.perf_counter()   # the bundle exists before the clock starts, as the agent's does
        await self._runc("create", "--bundle", str(bundle), cid)
        self.started.append(cid)
        await self._runc("start", cid)
        return time.perf_counter() - t0

    async def remove_all(self) -> None:
        await asyncio.gather(*(self._runc("delete", "--force", cid) for cid in self.started),
                             return_exceptions=True)
        self.started.clear()

    def cleanup(self) -> None:
        for cid in list(os.listdir(self.state)) if self.state.exists() else []:
            subprocess.run(["runc", "--root", str(self.state), "delete", "--force", cid], capture_output=True)
        subprocess.run(["umount", str(self.bundle / "rootfs")], capture_output=True)
        for controller in Path("/sys/fs/cgroup").iterdir():
            for d in sorted((controller / self.cgroup).glob("*"), reverse=True) if \
                    (controller / self.cgroup).is_dir() else []:
                if d.is_dir():
                    os.rmdir(d)
            if (controller / self.cgroup).is_dir():
                os.rmdir(controller / self.cgroup)


def _overlay_lowerdir(target: Path) -> str:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split(" - ")
        if parts[0].split()[4] == str(target):
            for opt in parts[1].split()[2].split(","):
                if opt.startswith("lowerdir="):
                    return opt[len("lowerdir="):]
    raise RuntimeError(f"no overlay mounted at {target}")


async def bare_runc_rounds(bare: BareRunc, repeat: int, parallel: int, rounds: int) -> tuple[list, list]:
    single, par = [], []
    for i in range(repeat):
        single.append(await bare.create_start(f"klb-{os.getpid()}-s{i}"))
        await bare.remove_all()
    for r in range(rounds):
        par += await asyncio.gather(*(bare.create_start(f"klb-{os.getpid()}-p{r}-{i}") for i in range(parallel)))
        await bare.remove_all()
    return single, par


async def phase_startup(cluster: nodes.NodeCluster, args, out: list[str]) -> None:
    client = RESTClient.from_kubeconfig(str(cluster.kubeconfig), component="bench", qps=0)
    watcher = Watcher(client)
    work = Path(tempfile.mkdtemp(prefix="klbench-runc-"))
    bare = None
    try:
        await ensure_namespace(client)
        await watcher.start()
        # Warm-up: the pull, and the agent's first pod (pause rootfs, caches).
        await start_pods(client, watcher, ["warm"])
        warm = await client.get("", "v1", "pods", "warm", namespace=NS)
        cid = warm["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        bare = BareRunc(cluster.data_dir / "agent", cid, work)
        bare.prepare()
        await delete_pods(client, watcher, ["warm"])

        single: list[float] = []
        for i in range(args.repeat):
            name = f"one-{i}"
            single += await start_pods(client, watcher, [name])
            await delete_pods(client, watcher, [name])
        parallel: list[float] = []
        for r in range(args.rounds):
            names = [f"par-{r}-{i}" for i in range(args.parallel)]
            parallel += await start_pods(client, watcher, names)
            await delete_pods(client, watcher, names)
        bare_single, bare_parallel = await bare_runc_rounds(bare, args.repeat, args.parallel, args.rounds)
    finally:
        await watcher.stop()
        await client.close()
        if bare is not None:
            await bare.remove_all()
            bare.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    out += ["", f"Pod startup, create -> Running seen on a watch (image cached), load average {load()}:", "",
            "| what | samples | p50 ms | p99 ms | max ms | notes |", "|---|---:|---:|---:|---:|---|",
            row("pod, one at a time", single, f"{args.repeat} pods in turn"),
            row(f"pods, {args.parallel} at once", parallel, f"{args.rounds} round(s) of {args.parallel}"),
            row("bare `runc create` + `runc start`, one at a time", bare_single, "same bundle"),
            row(f"bare `runc create` + `runc start`, {args.parallel} at once", bare_parallel,
                f"{args.rounds} round(s) of {args.parallel}"),
            "",
            f"Ratios to bare runc: one pod p50 {pct(single, .5) / pct(bare_single, .5):.1f}x, "
            f"p99 {pct(single, .99) / pct(bare_single, .99):.1f}x; {args.parallel} at once p50 "
            f"{pct(parallel, .5) / pct(bare_parallel, .5):.1f}x, p99 {pct(parallel, .99) / pct(bare_parallel, .99):.1f}x."]


# -- phase 2: the agent at rest ---------------------------------------------------------------------

async def phase_idle(cluster: nodes.NodeCluster, args, out: list[str]) -> None:
    agent = child_with(cluster.proc.pid, "agent")
    client = RESTClient.from_kubeconfig(str(cluster.kubeconfig), component="bench", qps=0)
    watcher = Watcher(client)
    lines = []
    try:
        await ensure_namespace(client)
        await watcher.start()
        for count in (0, 10):
            names = [f"idle-{count}-{i}" for i in range(count)]
            if names:
                await start_pods(client, watcher, names)
            await asyncio.sleep(5)   # settle: status writes and first probes are done
            c0, t0 = cpu_seconds(agent), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            cpu = (cpu_seconds(agent) - c0) / (time.monotonic() - t0) * 100
            # this cluster's shims only (their shim.json is under its data dir), not other clusters'
            shims = [p for p in _all_pids() if "shim.py" in cmdline(p) and str(cluster.data_dir) in cmdline(p)]
            shim_rss = sum(rss_mib(p) for p in shims)
            lines.append(f"| {count} | {rss_mib(agent):.1f} MiB | {cpu:.2f} % | {len(shims)} shims, "
                         f"{shim_rss:.0f} MiB RSS in all |")
            if names:
                await delete_pods(client, watcher, names)
    finally:
        await watcher.stop()
        await client.close()
    out += ["", f"The agent process at rest, CPU over {args.idle_seconds:.0f} s (load average {load()}):", "",
            "| pods running | agent RSS | agent CPU (% of one core) | shims |", "|---:|---:|---:|---|", *lines]


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# -- phase 3: 200 hollow nodes -----------------------------------------------------------------------

async def phase_hollow(args, out: list[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="klbench-hollow-"))
    cluster = harness.Cluster(base / "cluster")
    proc = None
    log = base / "hollow.log"
    try:
        cluster.start()
        server = cluster.proc.pid
        cm = child_with(server, "controller-manager")
        client = RESTClient.from_kubeconfig(str(cluster.kubeconfig), component="bench", qps=0)
        t0 = time.monotonic()
        with open(log, "wb") as f:
            proc = subprocess.Popen([*harness._server_command(), "hollow-nodes", "--kubeconfig",
                                     str(cluster.kubeconfig), "--count", str(args.hollow), "--data-dir",
                                     str(base / "hollow-data")], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        registered = ready = None
        while time.monotonic() - t0 < 300:
            items = (await client.list("", "v1", "nodes"))["items"]
            if registered is None and len(items) >= args.hollow:
                registered = time.monotonic() - t0
            n_ready = sum(1 for n in items for c in (n.get("status") or {}).get("conditions") or []
                          if c["type"] == "Ready" and c["status"] == "True")
            if n_ready >= args.hollow:
                ready = time.monotonic() - t0
                break
            if proc.poll() is not None:
                raise RuntimeError(f"hollow-nodes exited: {log.read_text()[-3000:]}")
            await asyncio.sleep(0.25)
        if ready is None:
            raise RuntimeError(f"not all {args.hollow} hollow nodes Ready in 300 s")
        await asyncio.sleep(15)   # past the start-up burst: the first status patches are done
        counts = {"leases": 0, "nodes": 0}

        async def count(resource: str, group: str, namespace: str | None) -> None:
            rv = (await client.list(group, "v1", resource, namespace=namespace))["metadata"]["resourceVersion"]
            async with client.watch(group, "v1", resource, namespace=namespace, resource_version=rv) as w:
                async for typ, _ in w:
                    if typ in ("MODIFIED", "ADDED"):
                        counts[resource] += 1
        watches = [asyncio.create_task(count("leases", "coordination.k8s.io", "kube-node-lease")),
                   asyncio.create_task(count("nodes", "", None))]
        await asyncio.sleep(1)
        pids = {"server": server, "controller-manager": cm, "hollow-nodes": proc.pid}
        c0 = {k: cpu_seconds(p) for k, p in pids.items()}
        counts.update(leases=0, nodes=0)
        s0 = time.monotonic()
        await asyncio.sleep(args.steady_seconds)
        span = time.monotonic() - s0
        cpu = {k: (cpu_seconds(p) - c0[k]) / span * 100 for k, p in pids.items()}
        got = dict(counts)
        for t in watches:
            t.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await client.close()
        rss = {k: rss_mib(p) for k, p in pids.items()}
        out += ["", f"{args.hollow} hollow nodes (`kubeling hollow-nodes --count {args.hollow}`, one process) "
                f"against `kubeling server --disable-agent` (default controllers), load average {load()}:", "",
                "| measure | value |", "|---|---:|",
                f"| all Nodes registered, from process start | {registered:.1f} s |",
                f"| all Ready, from process start | {ready:.1f} s |",
                f"| Lease writes, steady state ({span:.0f} s) | {got['leases'] / span:.1f}/s "
                f"(expected {args.hollow / 10.2:.1f}/s: one per node per 10 s, jittered) |",
                f"| Node writes (status patches), steady state | {got['nodes'] / span:.2f}/s |",
                f"| API server CPU, steady state | {cpu['server']:.1f} % of one core (RSS {rss['server']:.0f} MiB) |",
                f"| controller manager CPU | {cpu['controller-manager']:.1f} % (RSS {rss['controller-manager']:.0f} MiB) |",
                f"| hollow-nodes process CPU | {cpu['hollow-nodes']:.1f} % (RSS {rss['hollow-nodes']:.0f} MiB, "
                f"{rss['hollow-nodes'] * 1024 / args.hollow:.0f} KiB per node) |"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- main ---------------------------------------------------------------------------------------------

async def run_node_phases(args, out: list[str], flush) -> None:
    from tests.support.registry import build_images
    base = Path(tempfile.mkdtemp(prefix="klbench-node-"))
    cluster = nodes.NodeCluster(base / "cluster", images_dir=build_images(base / "images"))
    try:
        cluster.start()
        cluster.wait_node_ready()
        if "idle" in args.phases:
            await phase_idle(cluster, args, out)
            flush()
        if "startup" in args.phases:
            await phase_startup(cluster, args, out)
            flush()
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="startup,idle,hollow")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--parallel", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--hollow", type=int, default=200)
    p.add_argument("--steady-seconds", type=float, default=60.0)
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, short windows")
    args = p.parse_args()
    args.phases = set(args.phases.split(","))
    if args.quick:
        args.repeat, args.parallel, args.rounds, args.idle_seconds = 3, 5, 1, 5.0
        args.hollow, args.steady_seconds = 20, 12.0
    if os.geteuid() != 0 and args.phases & {"startup", "idle"}:
        print("bench_node.py: the startup and idle phases need root (runc, network namespaces)", file=sys.stderr)
        return 2
    out: list[str] = [f"bench_node.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                      f"{os.cpu_count()} CPUs"]

    def flush() -> None:   # each phase's table as soon as it is done: a later failure keeps it
        print("\n".join(out), flush=True)
        out.clear()

    async def go() -> None:
        if args.phases & {"startup", "idle"}:
            await run_node_phases(args, out, flush)
        if "hollow" in args.phases:
            await phase_hollow(args, out)
            flush()
    # SIGTERM (a timeout) unwinds like Ctrl-C, so the finally blocks remove clusters and containers.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    asyncio.run(go())
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
