"""``kubeling dns``: the cluster DNS server alone, against any API server (``kubeling server``
runs it as a child unless ``--disable coredns``). See `kubeling.dns`."""

from __future__ import annotations

import argparse


def add_subcommands(sub) -> None:
    p = sub.add_parser("dns", help="run the cluster DNS server (CoreDNS's kubernetes and forward plugins)")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--bind-address", default="",
                   help="the address to serve on (default: the host's primary address, the default route's source)")
    p.add_argument("--port", type=int, default=53, help="UDP and TCP port (default 53)")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--cluster-dns", default="",
                   help="the kube-dns Service's clusterIP (default: the 10th address of --service-cidr, 10.43.0.10)")
    p.add_argument("--service-cidr", default="10.43.0.0/16")
    p.add_argument("--ttl", type=int, default=5, help="TTL of the cluster zone's records, seconds (default 5)")
    p.add_argument("--upstream", action="append", default=[], metavar="HOST[:PORT]",
                   help="a resolver for names outside the zone (repeatable; default: --resolv-conf's nameservers)")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf")
    p.add_argument("--forward-timeout", type=float, default=2.0, help="seconds per upstream try (default 2)")
    p.add_argument("--pods", choices=("insecure", "verified", "disabled"), default="insecure",
                   help="a-b-c-d.<ns>.pod.<zone> records, as CoreDNS's 'pods' option (default insecure, as k3s)")
    p.add_argument("--health-port", type=int, default=8080, help="/health (default 8080; 0: off)")
    p.add_argument("--ready-port", type=int, default=8181, help="/ready (default 8181; 0: off)")
    p.add_argument("--metrics-port", type=int, default=9153, help="/metrics (default 9153; 0: off)")
    p.add_argument("--skip-service", action="store_true",
                   help="do not create or update the kube-system/kube-dns Service and its endpoints")
    p.add_argument("--node-name", default="", help="the nodeName written on the kube-dns endpoint")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_dns)


def options(args: argparse.Namespace):
    from kubeling.dns.app import Options
    return Options(kubeconfig=args.kubeconfig, bind_address=args.bind_address, port=args.port,
                   cluster_domain=args.cluster_domain, cluster_dns=args.cluster_dns, service_cidr=args.service_cidr,
                   ttl=args.ttl, upstream=args.upstream, resolv_conf=args.resolv_conf,
                   forward_timeout=args.forward_timeout, pods=args.pods, health_port=args.health_port,
                   ready_port=args.ready_port, metrics_port=args.metrics_port, manage_service=not args.skip_service,
                   node_name=args.node_name)


def cmd_dns(args: argparse.Namespace) -> int:
    from kubeling.cli._run import run_until_signalled
    from kubeling.dns import app

    opts = options(args)
    run_until_signalled(lambda stop: app.run(opts, stop), verbose=args.verbose)
    return 0
