"""``kubeling ingress``: the Ingress controller with a real nginx, against any API server.

``kubeling server`` runs it as a child, as k3s runs Traefik (``--disable ingress`` or
``--disable traefik`` turns it off; ``--ingress-http-port``/``--ingress-https-port`` move it).
"""

from __future__ import annotations

import argparse

from kubeling.cli._run import run_until_signalled


def add_subcommands(sub) -> None:
    p = sub.add_parser("ingress", help="run the Ingress controller (a real nginx) against an API server")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--data-dir", default=".kubeling",
                   help="nginx's configuration, pid file and certificates go to <data-dir>/ingress")
    p.add_argument("--http-port", type=int, default=80, help="port nginx serves HTTP on (default: 80)")
    p.add_argument("--https-port", type=int, default=443, help="port nginx serves HTTPS on (default: 443)")
    p.add_argument("--bind-address", default="0.0.0.0", help="address nginx listens on (default: 0.0.0.0)")
    p.add_argument("--publish-address", action="append", default=[], metavar="ADDRESS",
                   help="address (IP or hostname) written to the Ingresses' status.loadBalancer (repeatable; "
                        "default: --bind-address, or the API server's host when that is 0.0.0.0)")
    p.add_argument("--ingress-class", default="nginx",
                   help="the IngressClass to create at start if missing (default: nginx)")
    p.add_argument("--controller-class", default="kubeling.io/ingress-nginx",
                   help="IngressClass spec.controller this controller implements")
    p.add_argument("--nginx-binary", default="/usr/sbin/nginx")
    p.add_argument("--worker-processes", default="auto", help="nginx worker_processes (default: auto)")
    p.add_argument("--healthz-port", type=int, default=10254,
                   help="port of /metrics and /healthz on --bind-address (default: 10254, as ingress-nginx; 0: off)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_ingress)


def cmd_ingress(args: argparse.Namespace) -> int:
    from kubeling.ingress import server

    opts = server.Options(kubeconfig=args.kubeconfig, data_dir=args.data_dir, http_port=args.http_port,
                          https_port=args.https_port, bind_address=args.bind_address,
                          publish_addresses=list(args.publish_address), ingress_class=args.ingress_class,
                          controller_class=args.controller_class, nginx_binary=args.nginx_binary,
                          worker_processes=args.worker_processes, healthz_port=args.healthz_port)
    run_until_signalled(lambda stop: server.run(opts, stop), verbose=args.verbose)
    return 0
