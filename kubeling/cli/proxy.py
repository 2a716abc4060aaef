"""``kubeling proxy``: kube-proxy for one node (the node agent runs it as its child, with
``--kube-proxy-arg`` flags passed through). Flags keep upstream's names and defaults:
``--proxy-mode`` (iptables), ``--sync-period`` (30s), ``--min-sync-period`` (1s; upstream's
``--iptables-sync-period`` / ``--iptables-min-sync-period`` are accepted too),
``--metrics-bind-address`` (127.0.0.1:10249), ``--healthz-bind-address`` (0.0.0.0:10256),
``--masquerade-all``, ``--nodeport-addresses``, ``--cleanup`` (remove every mode's rules and exit).
"""

from __future__ import annotations

import argparse
import sys

from kubeling.cli._run import run_until_signalled

MODES = ("userspace", "iptables", "nftables", "ipvs")


def _duration(text: str) -> float:
    from kubeling.apiserver.filters.timeout import parse_go_duration
    try:
        seconds = parse_go_duration(text)
    except Exception as e:  # noqa: BLE001 - a usage error
        raise argparse.ArgumentTypeError(str(getattr(e, "message", e)))
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return seconds


def add_subcommands(sub) -> None:
    p = sub.add_parser("proxy", help="run kube-proxy (service rules) for one node")
    p.add_argument("--kubeconfig", default="", help="kubeconfig of the node (default: $KUBECONFIG)")
    p.add_argument("--hostname-override", default="", help="this node's name (default: the hostname)")
    p.add_argument("--bind-address", default="0.0.0.0",
                   help="the node's IP; 0.0.0.0 reads the Node's InternalIPs (default: 0.0.0.0)")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16",
                   help="pod CIDR; traffic from outside it to a cluster IP is masqueraded (default: 10.42.0.0/16)")
    p.add_argument("--service-cidr", default="10.43.0.0/16", help="service CIDR (default: 10.43.0.0/16)")
    p.add_argument("--proxy-mode", default="iptables", choices=MODES, help="default: iptables")
    p.add_argument("--masquerade-all", action="store_true", help="SNAT all traffic sent via service cluster IPs")
    p.add_argument("--nodeport-addresses", default="",
                   help="comma-separated CIDRs NodePorts answer on, or 'primary' (the node's IPs); "
                        "default: every local address")
    p.add_argument("--sync-period", "--iptables-sync-period", dest="sync_period", type=_duration, default=30.0,
                   metavar="DURATION", help="the longest time between full syncs of the rules (default: 30s)")
    p.add_argument("--min-sync-period", "--iptables-min-sync-period", dest="min_sync_period", type=_duration,
                   default=1.0, metavar="DURATION",
                   help="the shortest time between syncs; changes meanwhile coalesce (default: 1s)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10249",
                   help="host:port of /metrics; empty to disable (default: 127.0.0.1:10249)")
    p.add_argument("--healthz-bind-address", default="0.0.0.0:10256",
                   help="host:port of /healthz and /livez; empty to disable (default: 0.0.0.0:10256)")
    p.add_argument("--cleanup", action="store_true", help="remove the rules of every proxy mode and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--v", dest="klog_v", type=int, default=0, help="klog verbosity, as upstream (4 and up: debug)")
    p.set_defaults(func=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    if args.cleanup:
        from kubeling.proxy.cleanup import cleanup_all
        cleanup_all()
        return 0
    from kubeling.proxy.server import ProxyOptions, run
    from kubeling.proxy.types import ProxyModeUnavailable
    if args.sync_period < args.min_sync_period or args.sync_period <= 0:
        print("kubeling proxy: --sync-period must be positive and at least --min-sync-period", file=sys.stderr)
        return 2
    nodeport = tuple(c.strip() for c in args.nodeport_addresses.split(",") if c.strip())
    if nodeport == ("primary",):
        nodeport = (f"{args.bind_address}/32",) if args.bind_address not in ("", "0.0.0.0") else ()
    opts = ProxyOptions(kubeconfig=args.kubeconfig, hostname_override=args.hostname_override,
                        bind_address=args.bind_address, cluster_cidr=args.cluster_cidr,
                        service_cidr=args.service_cidr, mode=args.proxy_mode, masquerade_all=args.masquerade_all,
                        nodeport_addresses=nodeport, min_sync_period=args.min_sync_period,
                        sync_period=args.sync_period, metrics_bind_address=args.metrics_bind_address,
                        healthz_bind_address=args.healthz_bind_address)
    try:
        run_until_signalled(lambda stop: run(opts, stop), verbose=args.verbose or args.klog_v >= 4)
    except ProxyModeUnavailable as e:
        print(f"kubeling proxy: {args.proxy_mode} mode is unavailable: {e}", file=sys.stderr)
        return 1
    return 0
