"""``kubeling cluster``: a multi-node cluster on one machine (`kubeling.cluster`).

    kubeling cluster up --nodes N [--data-dir DIR] [--registry-config FILE] [--name NAME]
                        [--subnet CIDR] [--bind-address IP] [--secure-port PORT]
                        [--kube-controller-manager-arg FLAG=VALUE]... [--kube-scheduler-arg ...]
                        [--server-arg FLAG]... [--agent-arg FLAG]... [--node-agent-arg NODE=FLAG]...
                        [--flannel-backend vxlan|host-gw|none]
                        [--control-planes N --datastore sqlite|etcd]
    kubeling cluster down [--data-dir DIR]
    kubeling cluster status [--data-dir DIR]
    kubeling cluster node stop|start|isolate [--undo]|connect|add|remove NAME [--data-dir DIR]
    kubeling cluster node add NAME [--agent-arg FLAG]... [--token-file FILE]
    kubeling cluster server stop|start|kill NAME [--data-dir DIR]     (server-<i>, etcd layout)
    kubeling cluster etcd stop|start|kill NAME [--data-dir DIR]       (etcd-<i>)
    kubeling cluster routes [--control-plane NAME] [--data-dir DIR]
                                                 (run by ``up``: routes to every node's pods)

``--datastore etcd`` (with ``--control-planes N``, default 1) gives each control plane a network
namespace on the bridge (``<name>-server-<i>``) with an etcd member (client ``https://<ip>:2379``,
peer ``<ip>:2380``, client certificates required: DIR/etcd/pki/ has the CA and ``client.crt``/
``.key`` for etcdctl) and a ``kubeling server --datastore-endpoint <every member> --token <DIR/token>``;
agents are given every server; ``up`` prints server-1's admin kubeconfig, and each server writes
its own in ``DIR/server-<i>/admin.kubeconfig``. ``server kill`` and ``etcd kill`` are SIGKILL (a crash),
``stop`` a clean shutdown; ``start`` brings one back with its data.

``--agent-arg`` flags go to every agent, ``--node-agent-arg node-2=--kube-proxy-arg=proxy-mode=nftables``
to one (after the others, so it wins where a flag is given twice). ``node add --token-file FILE``
joins the node with that token (a bootstrap token from ``kubeling token create``: the agent
files a CSR for its certificate) instead of the server's node token.

``up`` returns once every node is Ready and prints ``export KUBECONFIG=...`` on stdout (so
``eval "$(kubeling cluster up --nodes 3)"`` works); progress goes to stderr. Every command needs
root (namespaces, bridges, cgroups). Failures are one paragraph on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA_DIR = ".kubeling-cluster"


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="a server and N agents on this machine, one network namespace each")
    csub = p.add_subparsers(dest="cluster_command", required=True)

    def with_dir(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                            help=f"the cluster's directory (default {DEFAULT_DATA_DIR})")
        return parser

    up = with_dir(csub.add_parser("up", help="start a server and N agents; return when every node is Ready"))
    up.add_argument("--nodes", type=int, default=3, help="how many agents (default 3)")
    up.add_argument("--name", default="kubeling", help="prefix of the network namespaces and the bridge")
    up.add_argument("--subnet", default="", help="the /24 of the bridge (default: a free one of 10.44.0.0/16)")
    up.add_argument("--bind-address", default="", help="where the API server listens (default: the bridge address)")
    up.add_argument("--secure-port", type=int, default=6443)
    up.add_argument("--registry-config", default="", help="k3s-style registries.yaml every agent uses")
    up.add_argument("--kube-controller-manager-arg", action="append", default=[], metavar="FLAG=VALUE",
                    help="passed to the server, e.g. node-monitor-grace-period=10s (repeatable)")
    up.add_argument("--kube-scheduler-arg", action="append", default=[], metavar="FLAG=VALUE")
    up.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                    help="any other `kubeling server` flag, e.g. --server-arg=--request-timeout=30s (repeatable)")
    up.add_argument("--agent-arg", action="append", default=[], metavar="FLAG",
                    help="any other `kubeling agent` flag, e.g. --agent-arg=--disable-default-registry-endpoint")
    up.add_argument("--node-agent-arg", action="append", default=[], metavar="NODE=FLAG",
                    help="a `kubeling agent` flag for one node, e.g. node-2=--kube-proxy-arg=proxy-mode=nftables")
    up.add_argument("--flannel-backend", choices=("vxlan", "host-gw", "none"), default="vxlan",
                    help="how pods reach the pods of other nodes (default vxlan)")
    up.add_argument("--control-planes", type=int, default=1,
                    help="API servers (default 1); more than one needs --datastore etcd")
    up.add_argument("--datastore", choices=("sqlite", "etcd"), default="sqlite",
                    help="sqlite (default: one server here) or etcd (a member beside each server, in the "
                         "control plane's own network namespace)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server and the nodes")
    up.set_defaults(func=cmd_up)
    with_dir(csub.add_parser("down", help="remove every process, namespace, link, mount and cgroup of the cluster")
             ).set_defaults(func=cmd_down)
    with_dir(csub.add_parser("status", help="the server and the nodes, their PIDs, readiness and links")
             ).set_defaults(func=cmd_status)
    node = csub.add_parser("node", help="break, mend and add nodes")
    nsub = node.add_subparsers(dest="node_command", required=True)
    for verb, text in (("stop", "SIGKILL the node's agent and containers (a node failure)"),
                       ("start", "start the node's agent again"),
                       ("isolate", "cut the node's link (--undo restores it)"),
                       ("connect", "restore an isolated node's link"),
                       ("add", "join one more node to the running cluster"),
                       ("remove", "remove a node: its agent, containers, netns and Node object")):
        n = with_dir(nsub.add_parser(verb, help=text))
        n.add_argument("name")
        if verb == "isolate":
            n.add_argument("--undo", action="store_true")
        if verb in ("start", "add"):
            n.add_argument("--timeout", type=float, default=180.0)
        if verb == "add":
            n.add_argument("--agent-arg", action="append", default=[], metavar="FLAG",
                           help="an extra `kubeling agent` flag for this node (repeatable)")
            n.add_argument("--token-file", default="",
                           help="join with the token in this file (e.g. from `kubeling token create`: the node "
                                "gets its certificate through a CSR) instead of the server's node token")
        n.set_defaults(func=cmd_node)
    for what, names, text in (("server", "server-<i>", "the API server"), ("etcd", "etcd-<i>", "the etcd member")):
        parser = csub.add_parser(what, help=f"stop, start or kill {text} of a control plane (etcd layout)")
        vsub = parser.add_subparsers(dest="cp_command", required=True)
        for verb, help_text in (("stop", f"stop {text} cleanly (SIGTERM)"), ("start", f"start {text} again"),
                                ("kill", f"SIGKILL {text} (a crash; for failure tests)")):
            v = with_dir(vsub.add_parser(verb, help=help_text))
            v.add_argument("name", help=names)
            if verb == "start":
                v.add_argument("--timeout", type=float, default=180.0)
            v.set_defaults(func=cmd_server if what == "server" else cmd_etcd)
    routes = with_dir(csub.add_parser("routes", help="keep routes from here to every node's pod CIDR (run by `up`)"))
    routes.add_argument("--control-plane", default="", metavar="NAME",
                        help="run for this control plane (in its netns, with its server's kubeconfig)")
    routes.set_defaults(func=cmd_routes)


def _run(fn) -> int:
    from kubeling.cluster import ClusterError
    from kubeling.cluster.netns import NetworkError
    try:
        fn()
        return 0
    except (ClusterError, NetworkError, OSError) as e:
        print(f"kubeling cluster: {e}", file=sys.stderr)
        return 1


def cmd_up(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster
    if args.nodes < 1:
        print("kubeling cluster up: --nodes must be at least 1", file=sys.stderr)
        return 1
    server_args = [f"--kube-controller-manager-arg={a}" for a in args.kube_controller_manager_arg]
    server_args += [f"--kube-scheduler-arg={a}" for a in args.kube_scheduler_arg]
    node_agent_args: dict[str, list[str]] = {}
    for item in args.node_agent_arg:
        node, sep, flag = item.partition("=")
        if not sep or not node or not flag:
            print(f"kubeling cluster up: --node-agent-arg {item!r}: expected NODE=FLAG", file=sys.stderr)
            return 1
        node_agent_args.setdefault(node, []).append(flag)
    c = Cluster(args.data_dir)

    def up() -> None:
        c.up(args.nodes, name=args.name, subnet=args.subnet, bind_address=args.bind_address,
             secure_port=args.secure_port, registry_config=args.registry_config,
             server_args=server_args + args.server_arg, agent_args=args.agent_arg,
             node_agent_args=node_agent_args, flannel_backend=args.flannel_backend,
             control_planes=args.control_planes, datastore=args.datastore, timeout=args.timeout)
        print(f"export KUBECONFIG={c.kubeconfig}", flush=True)
    code = _run(up)
    if code:
        print(f"(the cluster is left as it is for a look at {c.dir / 'logs'}; "
              f"`kubeling cluster down --data-dir {args.data_dir}` removes it)", file=sys.stderr)
    return code


def cmd_down(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster
    return _run(Cluster(args.data_dir).down)


def cmd_status(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster

    def status() -> None:
        rows = [("NAME", "ADDRESS", "PID", "READY", "LINK"), *Cluster(args.data_dir).status_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return _run(status)


def cmd_node(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster
    c = Cluster(args.data_dir)
    verb = args.node_command
    actions = {
        "stop": lambda: c.stop_node(args.name),
        "start": lambda: c.start_node(args.name, timeout=args.timeout),
        "isolate": lambda: c.isolate(args.name, cut=not args.undo),
        "connect": lambda: c.isolate(args.name, cut=False),
        "add": lambda: c.add_node(args.name, timeout=args.timeout, agent_args=[
            *args.agent_arg, *([f"--token-file={Path(args.token_file).resolve()}"] if args.token_file else [])]),
        "remove": lambda: c.remove_node(args.name),
    }
    return _run(actions[verb])


def cmd_server(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster
    c = Cluster(args.data_dir)
    actions = {
        "stop": lambda: c.stop_cp_server(args.name),
        "kill": lambda: c.stop_cp_server(args.name, kill=True),
        "start": lambda: c.start_cp_server(args.name, timeout=args.timeout),
    }
    return _run(actions[args.cp_command])


def cmd_etcd(args: argparse.Namespace) -> int:
    from kubeling.cluster import Cluster
    c = Cluster(args.data_dir)
    actions = {
        "stop": lambda: c.stop_etcd(args.name),
        "kill": lambda: c.stop_etcd(args.name, kill=True),
        "start": lambda: c.start_etcd(args.name, timeout=args.timeout),
    }
    return _run(actions[args.cp_command])


def cmd_routes(args: argparse.Namespace) -> int:
    """Routes from this namespace to every node's pod CIDR, via the node's IP, kept current from
    the Node objects (`kubeling.kubelet.network.overlay` in routes-only mode), until SIGTERM."""
    import asyncio
    import logging

    from kubeling.cluster import Cluster
    from kubeling.cli.agent import install_stop_handlers
    from kubeling.client import kubeconfig as kc
    from kubeling.client.rest import RESTClient
    from kubeling.kubelet.network.overlay import Overlay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    c = Cluster(args.data_dir)
    st = c.load()
    kubeconfig = c.cp_kubeconfig(c.control_plane(args.control_plane)) if args.control_plane else c.kubeconfig
    # beside several servers (the etcd layout), the helper outside them balances over all of them
    # as an agent does, so that it outlives any one server; each control plane's own helper asks
    # its own server, which dies with it
    servers = [] if args.control_plane else [f"{cp.ip}:{st.secure_port}" for cp in st.control_planes.values()]

    async def main() -> None:
        import dataclasses

        from kubeling.kubelet.loadbalancer import LoadBalancer, readyz_check

        stop = asyncio.Event()
        install_stop_handlers(stop)
        cfg = kc.load(str(kubeconfig))
        lb = None
        if len(servers) > 1:
            ca = cfg.certificate_authority_data
            lb = LoadBalancer(servers, port=0, name="routes", health_check=readyz_check(ca) if ca else None,
                              state_dir=c.dir / "routes")
            await lb.start()
            cfg = dataclasses.replace(cfg, server=lb.url, tls_server_name=None)
        client = RESTClient.from_config(cfg, component="kubeling-cluster-routes")
        try:
            await Overlay(client, "", backend="host-gw", node_ip="", pod_cidr="", cluster_cidr=st.cluster_cidr,
                          routes_only=True).run(stop)
        finally:
            await client.close()
            if lb is not None:
                await lb.close()

    # the standard event loop: pyroute2's netlink sockets are refused by uvloop
    asyncio.run(main())
    return 0
