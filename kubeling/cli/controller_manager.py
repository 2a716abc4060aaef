"""``kubeling controller-manager``: the controllers alone, against any API server.

``kubeling server`` runs this as a child; ``--kube-controller-manager-arg=--flag=value`` on the
server passes a flag through (k3s's spelling). Durations are Go durations (``40s``, ``5m0s``),
as upstream's flags take them.
"""

from __future__ import annotations

import argparse

from kubeling.cli._run import run_until_signalled


def _duration(flag: str):
    def parse(text: str) -> float:
        from kubeling.apiserver.filters.timeout import parse_go_duration
        try:
            return float(parse_go_duration(text))
        except Exception as e:  # noqa: BLE001 - any parse failure is a usage error
            raise argparse.ArgumentTypeError(f"{flag}: {getattr(e, 'message', e)}")
    return parse


def add_subcommands(sub) -> None:
    from kubeling.controllers import manager

    p = sub.add_parser("controller-manager", help="run the controllers against an API server")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--controllers", default="*", help="comma-separated controllers ('*' = all, '-name' = not name)")
    manager.add_leader_election_flags(p, "kube-system/kube-controller-manager")
    p.add_argument("--use-service-account-credentials", action="store_true",
                   help="each controller writes as its own service account kube-system/<controller> (tokens "
                        "from TokenRequest); the informers keep the kubeconfig's identity")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16", help="the pod network nodeipam hands /24s from")
    p.add_argument("--service-cluster-ip-range", default="10.43.0.0/16")
    p.add_argument("--service-account-private-key-file", default="",
                   help="the key that signs legacy service account token Secrets")
    p.add_argument("--cluster-signing-cert-file", default="",
                   help="the CA certificate the csrsigning controller issues certificates with")
    p.add_argument("--cluster-signing-key-file", default="", help="the private key of --cluster-signing-cert-file")
    p.add_argument("--cluster-signing-duration", type=_duration("--cluster-signing-duration"), default=8760 * 3600.0,
                   help="the longest validity of a signed certificate; spec.expirationSeconds may ask for less "
                        "(default: 8760h0m0s)")
    p.add_argument("--node-monitor-period", type=_duration("--node-monitor-period"), default=5.0,
                   help="how often node lifecycle checks node health (default: 5s)")
    p.add_argument("--node-monitor-grace-period", type=_duration("--node-monitor-grace-period"), default=50.0,
                   help="how long a node may go without renewing its Lease before it is Unknown (default: 50s)")
    p.add_argument("--node-startup-grace-period", type=_duration("--node-startup-grace-period"), default=60.0,
                   help="how long a new node may be unresponsive before it is Unknown (default: 1m0s)")
    p.add_argument("--node-eviction-rate", type=float, default=0.1,
                   help="nodes per second tainted for eviction in a healthy zone (default: 0.1)")
    p.add_argument("--secondary-node-eviction-rate", type=float, default=0.01,
                   help="nodes per second tainted in an unhealthy zone of a large cluster (default: 0.01)")
    p.add_argument("--large-cluster-size-threshold", type=int, default=50,
                   help="nodes above which an unhealthy zone keeps evicting at the secondary rate (default: 50)")
    p.add_argument("--unhealthy-zone-threshold", type=float, default=0.55,
                   help="fraction of not-Ready nodes (at least 3) that makes a zone unhealthy (default: 0.55)")
    p.add_argument("--terminated-pod-gc-threshold", type=int, default=12500,
                   help="terminated pods kept before pod GC deletes the oldest (default: 12500)")
    # hidden test seams: the CronJob controller's clock, sped up and/or started at a given time
    p.add_argument("--max-endpoints-per-slice", type=int, default=100,
                   help="endpoints per EndpointSlice the EndpointSlice controller writes (default: 100)")
    p.add_argument("--mirroring-max-endpoints-per-subset", type=int, default=1000,
                   help="addresses of one Endpoints subset mirrored into EndpointSlices (default: 1000)")
    p.add_argument("--endpoint-updates-batch-period", type=_duration("--endpoint-updates-batch-period"),
                   default=0.0, help="batch pod updates of the Endpoints controller this long (default: 0s)")
    p.add_argument("--endpointslice-updates-batch-period",
                   type=_duration("--endpointslice-updates-batch-period"), default=0.0,
                   help="batch pod updates of the EndpointSlice controller this long (default: 0s)")
    p.add_argument("--cronjob-clock-speed", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--cronjob-clock-start", default="", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_controller_manager)


def settings_of(args: argparse.Namespace) -> dict:
    """The `ControllerContext` fields the flags set."""
    return dict(cluster_cidr=args.cluster_cidr, service_cidr=args.service_cluster_ip_range,
                service_account_private_key_file=args.service_account_private_key_file,
                node_monitor_period=args.node_monitor_period,
                node_monitor_grace_period=args.node_monitor_grace_period,
                node_startup_grace_period=args.node_startup_grace_period,
                terminated_pod_gc_threshold=args.terminated_pod_gc_threshold,
                node_eviction_rate=args.node_eviction_rate,
                secondary_node_eviction_rate=args.secondary_node_eviction_rate,
                large_cluster_size_threshold=args.large_cluster_size_threshold,
                unhealthy_zone_threshold=args.unhealthy_zone_threshold,
                max_endpoints_per_slice=args.max_endpoints_per_slice,
                mirroring_max_endpoints_per_subset=args.mirroring_max_endpoints_per_subset,
                endpoint_updates_batch_period=args.endpoint_updates_batch_period,
                endpointslice_updates_batch_period=args.endpointslice_updates_batch_period,
                cronjob_clock_speed=args.cronjob_clock_speed, cronjob_clock_start=args.cronjob_clock_start,
                cluster_signing_cert_file=args.cluster_signing_cert_file,
                cluster_signing_key_file=args.cluster_signing_key_file,
                cluster_signing_duration=args.cluster_signing_duration)


def cmd_controller_manager(args: argparse.Namespace) -> int:
    from kubeling.controllers import manager

    async def main(stop) -> None:
        election = manager.LeaderElection.from_args(args)
        await manager.run(args.kubeconfig, stop, [c for c in args.controllers.split(",") if c], election,
                          settings=settings_of(args),
                          use_service_account_credentials=args.use_service_account_credentials)

    run_until_signalled(main, verbose=args.verbose)
    return 0
