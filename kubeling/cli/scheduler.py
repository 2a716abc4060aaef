"""``kubeling scheduler``: the scheduler alone, against any API server (``kubeling server`` runs it
as a child; ``--kube-scheduler-arg=--flag=value`` on the server passes a flag through)."""

from __future__ import annotations

import argparse

from kubeling.cli._run import run_until_signalled


def add_subcommands(sub) -> None:
    from kubeling.controllers.manager import add_leader_election_flags

    p = sub.add_parser("scheduler", help="run the scheduler against an API server")
    p.add_argument("--kubeconfig", required=True)
    add_leader_election_flags(p, "kube-system/kube-scheduler")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a KubeSchedulerConfiguration file (profiles, plugins, pluginConfig)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_scheduler)


def cmd_scheduler(args: argparse.Namespace) -> int:
    from kubeling.scheduler import server

    run_until_signalled(lambda stop: server.run(args, stop), verbose=args.verbose)
    return 0
