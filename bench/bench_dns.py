"""Benchmark of the cluster DNS (issue 8, acceptance 12): ``python bench/bench_dns.py [--quick]``.

Starts a plain API server on 127.0.0.1 (harness, no controllers), creates ``--services``
ClusterIP Services and a headless Service with 3 endpoints, then ``kubeling dns`` on a free
loopback port (``--skip-service``, forwarding to a resolver this script runs on loopback), and
drives it with a UDP load generator in a separate process: ``--inflight`` queries outstanding at
once, for ``--seconds`` per scenario (or ``--queries``, whichever first). Every query's latency is
measured from send to its answer; a query unanswered for 2 s counts as lost.

Scenarios (each reports queries/s, p50, p99 and lost):

- ``hot``: one ClusterIP name, over and over (the answer cache);
- ``services``: the ``--services`` names in turn, with a random letter case per query (DNS 0x20),
  so that every query misses the cache and takes the full path: parse, index lookup, pack;
- ``headless``: the headless Service's A records (3 answers), random case;
- ``nxdomain``: names that do not exist, random case;
- ``forward``: names outside the zone, through the forwarder to the local resolver.

Everything runs on loopback; everything it starts it stops by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402

NS = "bench-dns"

RESOLVER = textwrap.dedent('''
    # answers every question with one A record, 192.0.2.10, spliced onto the query (no parsing
    # library: the resolver must not be what the forward scenario measures)
    import socket, struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    rr = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.10")
    while True:
        data, addr = s.recvfrom(4096)
        end = 12
        while data[end]:
            end += data[end] + 1
        end += 5
        head = data[:2] + bytes([0x80 | (data[2] & 0x01), 0x80]) + struct.pack("!HHHH", 1, 1, 0, 0)
        s.sendto(head + data[12:end] + rr, addr)
''')

# The load generator: its own process (and CPU), prints one JSON line.
LOADGEN = textwrap.dedent('''
    import asyncio, json, random, socket, struct, sys, time
    from dnslib import DNSRecord
    port, names, qtype, inflight, seconds, limit, randcase = json.loads(sys.argv[1])

    def spell(name):
        return "".join(c.upper() if random.random() < 0.5 else c for c in name) if randcase else name

    # every query packed before the clock starts: the generator's own cost stays small
    packets = [DNSRecord.question(spell(names[i % len(names)]), qtype).pack()
               for i in range(min(limit, 150000) if randcase else len(names))]

    async def worker(lat, stats, deadline, i):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        n = i
        while time.perf_counter() < deadline and stats["sent"] < limit:
            data = struct.pack("!H", n & 0xFFFF) + packets[n % len(packets)][2:]
            n += inflight
            stats["sent"] += 1
            t0 = time.perf_counter()
            await loop.sock_sendall(sock, data)
            try:
                while True:
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
                    if reply[:2] == data[:2]:
                        break
            except asyncio.TimeoutError:
                stats["lost"] += 1
                continue
            lat.append(time.perf_counter() - t0)
            if reply[3] & 0x0F not in (0, 3):
                stats["errors"] += 1
        sock.close()

    async def main():
        lat, stats = [], {"sent": 0, "lost": 0, "errors": 0}
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(worker(lat, stats, deadline, i) for i in range(inflight)))
        elapsed = time.perf_counter() - t0
        print(json.dumps({"lat": sorted(lat), "elapsed": elapsed, **stats}))

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
''')


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted seconds, in ms."""
    if not samples:
        return 0.0
    return samples[min(len(samples) - 1, max(0, int(round(p * len(samples) + 0.5)) - 1))] * 1000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def create_objects(kubeconfig: Path, services: int) -> None:
    from kubeling.client.rest import RESTClient
    client = RESTClient.from_kubeconfig(str(kubeconfig), component="bench-dns", qps=0)
    try:
        await client.create("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await client.create("", "v1", "services", {
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": NS},
                    "spec": {"selector": {"app": f"a{i}"}, "ports": [{"name": "http", "port": 80}]}}, namespace=NS)
        await asyncio.gather(*(one(i) for i in range(services)))
        await client.create("", "v1", "services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless", "namespace": NS},
            "spec": {"clusterIP": "None", "selector": {"app": "h"}, "ports": [{"name": "web", "port": 80}]}},
            namespace=NS)
        await client.create("discovery.k8s.io", "v1", "endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "headless-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "headless"}},
            "addressType": "IPv4", "ports": [{"name": "web", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.42.0.{i}"], "hostname": f"web-{i}", "conditions": {"ready": True}}
                          for i in range(1, 4)]}, namespace=NS)
    finally:
        await client.close()


def run_load(port: int, names: list[str], qtype: str, args, randcase: bool) -> dict:
    spec = json.dumps([port, names, qtype, args.inflight, args.seconds, args.queries, randcase])
    out = subprocess.run([sys.executable, "-c", LOADGEN, spec], capture_output=True, text=True, check=True,
                         timeout=args.seconds + 60)
    return json.loads(out.stdout)


def wait_answering(port: int, name: str, timeout: float = 60) -> None:
    from dnslib import DNSRecord
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", port, timeout=1))
            if r.rr:
                return
        except (OSError, socket.timeout):
            pass
        time.sleep(0.2)
    raise SystemExit(f"kubeling dns did not answer {name} within {timeout}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    p.add_argument("--queries", type=int, default=500_000, help="per scenario, at most")
    p.add_argument("--inflight", type=int, default=32, help="queries outstanding at once")
    p.add_argument("--quick", action="store_true", help="smoke run: 100 services, 3 s per scenario")
    args = p.parse_args()
    if args.quick:
        args.services, args.seconds = 100, 3.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-dns-"))
    cluster = resolver = dns = None
    try:
        cluster = harness.Cluster(tmp / "server", extra_args=("--controllers=", "--disable-scheduler",
                                                               "--disable", "ingress")).start()
        t0 = time.monotonic()
        asyncio.run(create_objects(cluster.kubeconfig, args.services))
        made = time.monotonic() - t0
        resolver = subprocess.Popen([sys.executable, "-c", RESOLVER], stdout=subprocess.PIPE, text=True)
        up_port = int(resolver.stdout.readline())
        port = free_port()
        dns = subprocess.Popen([*harness._server_command(), "dns", "--kubeconfig", str(cluster.kubeconfig),
                                "--bind-address", "127.0.0.1", "--port", str(port), "--skip-service",
                                "--upstream", f"127.0.0.1:{up_port}", "--health-port", "0", "--ready-port", "0",
                                "--metrics-port", str(free_port())],
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "dns.log", "wb"))
        t0 = time.monotonic()
        wait_answering(port, f"svc-{args.services - 1}.{NS}.svc.cluster.local")
        synced = time.monotonic() - t0
        zone = f"{NS}.svc.cluster.local"
        scenarios = [
            ("hot (one name, answer cache)", [f"svc-0.{zone}"], "A", False),
            (f"services ({args.services} names, random case: no cache)",
             [f"svc-{i}.{zone}" for i in range(args.services)], "A", True),
            ("headless (3 A records, random case)", [f"headless.{zone}"], "A", True),
            ("nxdomain (random case)", [f"nope-{i}.{zone}" for i in range(1000)], "A", True),
            ("forward (to a loopback resolver)", [f"host-{i}.example.test" for i in range(1000)], "A", False),
        ]
        print(f"## Cluster DNS (`kubeling dns`), {args.services} Services\n")
        print(f"Objects created in {made:.1f}s; `kubeling dns` answering the last Service "
              f"{synced:.1f}s after start (informers synced). UDP on 127.0.0.1, {args.inflight} queries "
              f"in flight from a separate load-generator process, {args.seconds:.0f}s per scenario, "
              f"{os.cpu_count()} CPUs shared by both.\n")
        print("| scenario | queries | queries/s | p50 ms | p99 ms | lost | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for title, names, qtype, randcase in scenarios:
            r = run_load(port, names, qtype, args, randcase)
            n = len(r["lat"])
            print(f"| {title} | {n} | {n / r['elapsed']:.0f} | {pct(r['lat'], 0.50):.2f} | "
                  f"{pct(r['lat'], 0.99):.2f} | {r['lost']} | {r['errors']} |", flush=True)
    finally:
        for proc in (dns, resolver):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if cluster is not None:
            cluster.stop()
        harness.remove_cluster_dir(cluster) if cluster is not None else None


if __name__ == "__main__":
    random.seed(1)
    main()
