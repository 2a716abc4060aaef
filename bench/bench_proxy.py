"""Benchmark of the kube-proxy modes (issue 8, acceptance 12): ``python bench/bench_proxy.py
--mode nftables[,iptables,userspace,ipvs] --services 100,1000,5000``.

Run as root. Everything happens in a `tests.support.netlab.NetLab` (a node netns with four
echo pods and a "host" netns, no uplink); the mode runs in the node netns through
`ProxyProcess`, exactly as the data-plane tests run it. Nothing touches the caller's netns.

For each mode (a mode whose module is missing, or that refuses to start here, is reported and
skipped) and each service count N:

- **full sync**: N ClusterIP services, ``--endpoints`` (3) endpoints each (two real services
  point at the lab's pods, the rest at addresses in the pod CIDR), programmed from nothing, then
  ``--full-repeats`` more full syncs (``changed=None``, the periodic resync);
- **partial sync** and **network programming latency**: ``--repeats`` times, one service's
  endpoints move from pod p0 to p1 (or back) and the proxy gets a partial sync
  (``changed={that port}``). "sync" is the proxier's ``sync`` call, timed inside the proxy
  process. "live" is from the start of that call until a probe in pod p2, which opens new
  connections to the ClusterIP in a loop (one every ~2 ms), first reaches the new pod.

Then, once per mode with the largest N still programmed, **connection latency and throughput**
through the mode's ClusterIP against a direct connection to the pod IP, in the same run,
interleaved (``--rounds`` rounds of each): latency is one TCP connect + a short answer +
close, to pod p3 (``--connections`` per round); throughput is one connection streaming
``--megabytes`` MB from p3. Both from pod p2 (whose direct connection is bridged, the
ClusterIP one routed through the node) and from the host netns (both routed; the ClusterIP
one also masqueraded), so that the mode's own cost shows apart from bridging vs routing. (p3 is not the probe's target, so the probe's
thousands of connections leave no state on the measured path.)

p50/p99 are nearest-rank percentiles. ``--json FILE`` also writes the raw figures. The sizes
and repeats bound the run; ``--quick`` is a smoke run (100 and 1000 services, few repeats).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubeling.proxy.types import Endpoint, ServicePort, ServicePortName  # noqa: E402
from tests.support.netlab import TCP_PORT, NetLab, ProxyProcess  # noqa: E402

PROBE_SVC = ServicePortName("bench", "probe", "", "TCP")      # toggled between p0 and p1
ECHO_SVC = ServicePortName("bench", "echo", "", "TCP")        # p3's echo server, never changed
BULK_SVC = ServicePortName("bench", "bulk", "", "TCP")        # p3's bulk server
PROBE_VIP, ECHO_VIP, BULK_VIP, BULK_PORT = "10.43.0.2", "10.43.0.4", "10.43.0.3", 9000
CLIENT, TARGET = "p2", 3

PROBE = textwrap.dedent("""
    import json, socket, sys, time
    ip, port = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    for line in sys.stdin:
        want, limit = line.split()
        deadline, seen, tries = time.monotonic() + float(limit), None, 0
        while time.monotonic() < deadline:
            tries += 1
            try:
                s = socket.create_connection((ip, port), timeout=1)
                s.settimeout(1)
                data = s.recv(256).decode()
                s.close()
            except OSError:
                data = ""
            if data.startswith(want + " "):
                seen = time.monotonic()
                break
            time.sleep(0.002)
        print(json.dumps({"seen": seen, "tries": tries}), flush=True)
""")

BULK_SERVER = textwrap.dedent("""
    import socket, sys
    port, total = int(sys.argv[1]), int(sys.argv[2])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    chunk = b"x" * 262144
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        try:
            left = total
            while left > 0:
                left -= c.send(chunk[:min(left, len(chunk))])
        except OSError:
            pass
        finally:
            c.close()
""")

MEASURE = textwrap.dedent("""
    import json, socket, sys, time
    kind, ip, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection((ip, port), timeout=5)
        got = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += len(b)
        s.close()
        out.append([time.perf_counter() - t0, got])
    print(json.dumps(out))
""")


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile, in ms."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))] * 1000 if s else float("nan")


def services_for(lab: NetLab, n: int, per: int, probe_pod: int):
    """N service ports: the probe (real pod ``probe_pod``), the echo and bulk ones (pod p3),
    then fakes (addresses in the pod CIDR that no pod holds)."""
    def real(pod: int, port: int) -> list[Endpoint]:
        return [Endpoint(lab.pod_ips[pod], port, node_name="node-1", is_local=True)]
    services = {PROBE_SVC: ServicePort(PROBE_VIP, 80), ECHO_SVC: ServicePort(ECHO_VIP, 80),
                BULK_SVC: ServicePort(BULK_VIP, BULK_PORT)}
    endpoints = {PROBE_SVC: real(probe_pod, TCP_PORT), ECHO_SVC: real(TARGET, TCP_PORT), BULK_SVC: real(TARGET, BULK_PORT)}
    k = 0
    for i in range(max(0, n - 3)):
        spn = ServicePortName("bench", f"svc-{i}", "http", "TCP")
        vip = 10 * 256 + i                      # 10.43.10.0 and up
        services[spn] = ServicePort(f"10.43.{vip // 256}.{vip % 256}", 80)
        eps = []
        for _ in range(per):
            k += 1
            eps.append(Endpoint(f"10.42.{1 + k // 250}.{1 + k % 250}", 8080, node_name="node-2"))
        endpoints[spn] = eps
    return services, endpoints


class Probe:
    """The probe loop in pod p2 (see the module docstring)."""

    def __init__(self, lab: NetLab) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns(CLIENT), sys.executable, "-c", PROBE, PROBE_VIP, "80"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, want: str, limit: float) -> None:
        self.proc.stdin.write(f"{want} {limit}\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bench_size(lab: NetLab, proxy: ProxyProcess, n: int, args) -> dict:
    current = 0
    services, endpoints = services_for(lab, n, args.endpoints, current)
    row: dict = {"services": n}
    t0 = time.monotonic()
    first = proxy.sync(services, endpoints)
    row["first_sync_s"] = first["seconds"]
    row["first_sync_wall_s"] = time.monotonic() - t0
    full = [proxy.sync(services, endpoints)["seconds"] for _ in range(args.full_repeats)]
    row["full_sync_ms"] = {"p50": pct(full, 0.5), "max": max(full) * 1000 if full else float("nan")}
    probe = Probe(lab)
    syncs, lives, misses = [], [], 0
    try:
        # the probe reaches the current pod before the first change
        probe.start(f"p{current}", 10)
        if probe.result()["seen"] is None:
            raise RuntimeError("the probe never reached the service")
        for _ in range(args.repeats):
            current = 1 - current
            endpoints[PROBE_SVC] = [Endpoint(lab.pod_ips[current], TCP_PORT, node_name="node-1", is_local=True)]
            probe.start(f"p{current}", 10)
            answer = proxy.sync(services, endpoints, changed={PROBE_SVC})
            t_reply = time.monotonic()
            seen = probe.result()["seen"]
            syncs.append(answer["seconds"])
            if seen is None:
                misses += 1
            else:
                lives.append(max(0.0, seen - (t_reply - answer["seconds"])))
    finally:
        probe.close()
    row["partial_sync_ms"] = {"p50": pct(syncs, 0.5), "p99": pct(syncs, 0.99)}
    row["live_ms"] = {"p50": pct(lives, 0.5), "p99": pct(lives, 0.99), "missed": misses}
    return row


def measure(lab: NetLab, where: str, ip: str, port: int, n: int) -> list[list[float]]:
    out = lab.exec(where, sys.executable, "-c", MEASURE, "x", ip, str(port), str(n), timeout=120).stdout
    return json.loads(out)


def bench_dataplane(lab: NetLab, args) -> dict:
    """From pod p2 (a direct connection is bridged) and from the host netns (both routed
    through the node; the ClusterIP one is also masqueraded), interleaved."""
    res = {}
    for client in (CLIENT, "host"):
        lat: dict[str, list[float]] = {"direct": [], "service": []}
        thr: dict[str, list[float]] = {"direct": [], "service": []}
        for _ in range(args.rounds):
            for kind, ip, port in (("direct", lab.pod_ips[TARGET], TCP_PORT), ("service", ECHO_VIP, 80)):
                lat[kind] += [t for t, _ in measure(lab, client, ip, port, args.connections)]
            for kind, ip in (("direct", lab.pod_ips[TARGET]), ("service", BULK_VIP)):
                for t, got in measure(lab, client, ip, BULK_PORT, 1):
                    thr[kind].append(got / t / 1e6)
        res[client] = {kind: {"conn_p50_ms": pct(lat[kind], 0.5), "conn_p99_ms": pct(lat[kind], 0.99),
                              "mb_per_s": sorted(thr[kind])[len(thr[kind]) // 2]} for kind in ("direct", "service")}
    return res


def bench_mode(mode: str, sizes: list[int], args) -> dict:
    if importlib.util.find_spec(f"kubeling.proxy.{mode}") is None:
        return {"mode": mode, "skipped": f"kubeling/proxy/{mode}.py does not exist"}
    result: dict = {"mode": mode, "sizes": []}
    with NetLab(pods=4) as lab:
        bulk = subprocess.Popen(["ip", "netns", "exec", lab.ns(f"p{TARGET}"), sys.executable, "-c", BULK_SERVER,
                                 str(BULK_PORT), str(args.megabytes * 1_000_000)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert bulk.stdout.readline().strip() == "ready"
            try:
                proxy = ProxyProcess(lab, mode).__enter__()
            except RuntimeError as e:
                return {"mode": mode, "skipped": str(e)}
            try:
                for n in sizes:
                    try:
                        result["sizes"].append(bench_size(lab, proxy, n, args))
                    except Exception as e:  # noqa: BLE001 - reported, next size
                        result["sizes"].append({"services": n, "error": f"{type(e).__name__}: {e}"[:300]})
                        break
                    print(f"# {mode} {n}: {json.dumps(result['sizes'][-1])}", file=sys.stderr, flush=True)
                try:
                    result["dataplane"] = bench_dataplane(lab, args)
                    result["dataplane"]["with_services"] = result["sizes"][-1]["services"]
                except Exception as e:  # noqa: BLE001
                    result["dataplane"] = {"error": f"{type(e).__name__}: {e}"[:300]}
                t0 = time.monotonic()
                result["leaks_after_cleanup"] = proxy.cleanup()
                result["cleanup_s"] = time.monotonic() - t0
            finally:
                proxy.close()
        finally:
            bulk.kill()
            bulk.wait()
    return result


def markdown(results: list[dict]) -> str:
    out = ["| mode | services | first sync (s) | full resync p50 (ms) | partial sync p50 / p99 (ms) | "
           "endpoint change → live p50 / p99 (ms) |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "skipped" in r:
            out.append(f"| {r['mode']} | — | skipped: {r['skipped']} | | | |")
            continue
        for s in r["sizes"]:
            if "error" in s:
                out.append(f"| {r['mode']} | {s['services']} | error: {s['error']} | | | |")
                continue
            live = s["live_ms"]
            miss = f" ({live['missed']} missed)" if live["missed"] else ""
            out.append(f"| {r['mode']} | {s['services']} | {s['first_sync_s']:.2f} | {s['full_sync_ms']['p50']:.0f} | "
                       f"{s['partial_sync_ms']['p50']:.1f} / {s['partial_sync_ms']['p99']:.1f} | "
                       f"{live['p50']:.1f} / {live['p99']:.1f}{miss} |")
    out += ["", "| mode | client | services programmed | connect+answer p50 / p99 (ms): direct | via ClusterIP | "
            "throughput (MB/s): direct | via ClusterIP | ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        d = r.get("dataplane")
        if not d:
            continue
        if "error" in d:
            out.append(f"| {r['mode']} | error: {d['error']} | | | | | | |")
            continue
        for client in (CLIENT, "host"):
            a, b = d[client]["direct"], d[client]["service"]
            label = "pod p2 (direct: bridged)" if client == CLIENT else "host (both routed)"
            out.append(f"| {r['mode']} | {label} | {d['with_services']} | {a['conn_p50_ms']:.2f} / {a['conn_p99_ms']:.2f} | "
                       f"{b['conn_p50_ms']:.2f} / {b['conn_p99_ms']:.2f} | {a['mb_per_s']:.0f} | {b['mb_per_s']:.0f} | "
                       f"{b['mb_per_s'] / a['mb_per_s']:.2f} |")
    leaks = {r["mode"]: r.get("leaks_after_cleanup") for r in results if "skipped" not in r}
    out += ["", f"leaks after cleanup: {json.dumps(leaks)}"]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="nftables", help="comma-separated: nftables,iptables,userspace,ipvs")
    p.add_argument("--services", default="100,1000,5000")
    p.add_argument("--endpoints", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30, help="partial syncs per size")
    p.add_argument("--full-repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="interleaved data-plane rounds")
    p.add_argument("--connections", type=int, default=200, help="connections per data-plane round")
    p.add_argument("--megabytes", type=int, default=200, help="bytes streamed per throughput sample")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the raw figures here")
    args = p.parse_args()
    sizes = [int(x) for x in args.services.split(",") if x]
    if args.quick:
        sizes = [s for s in sizes if s <= 1000] or sizes[:1]
        args.repeats, args.full_repeats, args.rounds, args.connections, args.megabytes = 8, 1, 2, 50, 50
    results = [bench_mode(mode.strip(), sizes, args) for mode in args.mode.split(",") if mode.strip()]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
