"""``kubeling hollow-nodes``: many hollow node agents in one process (upstream's kubemark).

``kubeling hollow-nodes --kubeconfig FILE --count N [--name-prefix hollow-node-]`` registers the
nodes ``hollow-node-0`` .. ``hollow-node-<N-1>`` and keeps them alive (Lease, status) until
SIGTERM/SIGINT; pods bound to them go Running with no processes (`kubeling.kubelet.hollow`).
The control plane must run the nodeipam controller (``kubeling server`` does by default) or
``--pod-cidr`` must be given. State goes to ``<data-dir>/hollow/<node name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hollow-nodes", help="run many hollow nodes (no processes) in one process, like kubemark")
    p.add_argument("--kubeconfig", required=True, help="credentials the hollow nodes use against the API server")
    p.add_argument("--count", type=int, required=True, help="how many nodes")
    p.add_argument("--name-prefix", default="hollow-node-", help="node names are <prefix><index>")
    p.add_argument("--first-index", type=int, default=0, help="index of the first node (default 0)")
    p.add_argument("--data-dir", default=".kubeling", help="state goes to <data-dir>/hollow/<node name>")
    p.add_argument("--node-ip", default="", help="the nodes' InternalIP (default: the route to the server)")
    p.add_argument("--kubelet-port", type=int, default=10250, help="the port the nodes advertise")
    p.add_argument("--pod-cidr", default="", help="pod CIDR of every node when no nodeipam controller runs")
    p.add_argument("--qps-per-node", type=float, default=5.0,
                   help="client rate limit per node; the shared client allows count x this (default 5)")
    p.add_argument("--start-interval", type=float, default=0.02,
                   help="seconds between two nodes' start (default 0.02)")
    p.add_argument("--node-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_hollow_nodes)


def cmd_hollow_nodes(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.count < 1:
        print("kubeling hollow-nodes: --count must be at least 1", file=sys.stderr)
        return 2
    from kubeling.kubelet.hollow import HollowNodes, HollowOptions
    labels = dict(item.split("=", 1) for item in args.node_label if "=" in item)
    opts = HollowOptions(kubeconfig=args.kubeconfig, root=Path(args.data_dir) / "hollow", count=args.count,
                         name_prefix=args.name_prefix, first_index=args.first_index, qps_per_node=args.qps_per_node,
                         start_interval=args.start_interval, address=args.node_ip, kubelet_port=args.kubelet_port,
                         labels=labels, pod_cidr=args.pod_cidr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await HollowNodes(opts).run(stop)

    try:
        import uvloop  # no netlink here (unlike `kubeling agent`), so uvloop's speed is welcome
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0
