"""The process `tests.support.netlab.ProxyProcess` runs inside the lab's node netns.

One JSON line in, one JSON line out: ``{"op": "sync", "state": ...}`` -> ``{"seconds": s}``,
``{"op": "count_leaks"}`` / ``{"op": "cleanup"}`` -> ``{"leaks": {...}}``; any failure ->
``{"error": "..."}``. The first line out answers start-up. EOF on stdin ends it (the mode's
rules stay until ``cleanup``, as a real kube-proxy's do).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time

from kubeling.proxy.types import NodeContext
from tests.support.netlab import CLUSTER_CIDR, SERVICE_CIDR, decode


def _say(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    node = NodeContext(node_name=args.node_name, node_ips=(args.node_ip,), cluster_cidr=CLUSTER_CIDR,
                       service_cidr=SERVICE_CIDR)
    try:
        proxier = importlib.import_module(f"kubeling.proxy.{args.mode}").Proxier(node)
        await proxier.start()
    except Exception as e:  # noqa: BLE001 - reported to the test
        _say({"error": f"{type(e).__name__}: {e}"})
        return
    _say({"ok": True})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        doc = json.loads(line)
        try:
            if doc["op"] == "sync":
                services, endpoints, changed = decode(doc["state"])
                t0 = time.perf_counter()
                await proxier.sync(services, endpoints, changed)
                _say({"seconds": time.perf_counter() - t0})
            elif doc["op"] == "count_leaks":
                _say({"leaks": await proxier.count_leaks()})
            elif doc["op"] == "cleanup":
                await proxier.cleanup()
                _say({"leaks": await proxier.count_leaks()})
            else:
                _say({"error": f"unknown op {doc['op']!r}"})
        except Exception as e:  # noqa: BLE001 - reported to the test
            _say({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True)
    p.add_argument("--node-name", default="node-1")
    p.add_argument("--node-ip", required=True)
    asyncio.run(main(p.parse_args()))
