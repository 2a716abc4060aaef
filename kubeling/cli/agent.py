"""``kubeling agent`` (the node agent alone) and ``kubeling node cleanup`` (k3s's killall).

``kubeling agent --kubeconfig FILE`` runs one node against any API server; ``kubeling agent
--server https://IP:6443 --token TOKEN`` (or ``--token-file``) first joins the cluster with a
join token — the server's node token, or a bootstrap token from ``kubeling token create``
(`kubeling.kubelet.bootstrap`: the CA is checked against the token, the node's client
certificate comes through a CSR for a bootstrap token, and the credentials are written to
``<data-dir>/agent/kubelet.kubeconfig``, ``kubeproxy.kubeconfig`` and
``kubeling-controller.kubeconfig``). A CA hash that does not match is refused: the agent exits
1 with one line saying so. ``kubeling server`` runs one as its child unless ``--disable-agent``.

A joined agent reaches the API servers through its own load balancer, as k3s's agent does
(`kubeling.kubelet.loadbalancer`): ``--server`` may list several servers separated by commas,
the balancer listens on ``127.0.0.1:--lb-server-port`` (6444) and every kubeconfig the join
writes — the kubelet's, kube-proxy's, the NetworkPolicy controller's — names it, the join
itself goes through it, and it learns every server from the ``default/kubernetes`` Endpoints.
When the server in use dies, the agent's connections move to the next one.

The agent rotates its client certificate (`bootstrap.CertificateManager`) when 70-90 % of its
lifetime has passed (``--client-cert-duration SECONDS`` asks for shorter-lived certificates, at
least 600 s); ``--rotate-certificates-after SECONDS`` (for tests) rotates that often.
kube-proxy runs as ``system:kube-proxy`` with ``--kube-proxy-kubeconfig`` and the NetworkPolicy
controller as ``system:kubeling-controller`` with ``--controller-kubeconfig`` (a join sets
both; without them both use the node's own kubeconfig). The agent's state lives in
``<data-dir>/agent`` (images, containers, pod volumes, logs), so ``kubeling images import
--data-dir DIR`` and the agent agree on where images are.

``kubeling node cleanup [--data-dir DIR]`` stops and removes every container, sandbox, mount,
cgroup and network namespace the agent of that data directory made, and its bridge. Containers
otherwise outlive the agent and the server on purpose (a restart re-adopts them).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run the node agent (kubelet) against an API server")
    agent_flags(p)
    p.add_argument("--kubeconfig", default="", help="credentials of this node (system:node:<name>)")
    p.add_argument("--server", default="",
                   help="join the cluster at https://IP:PORT (with --token), as k3s's agent; several servers "
                        "separated by commas; the agent reaches them through its load balancer")
    p.add_argument("--lb-server-port", type=int, default=6444,
                   help="the agent's load balancer over the API servers listens on 127.0.0.1:PORT (default "
                        "6444, k3s's; a free port when another agent of this network namespace has it)")
    p.add_argument("--token", default="", help="the server's node token (<server data-dir>/server/node-token)")
    p.add_argument("--token-file", default="", help="a file holding the node token")
    p.add_argument("--ca-file", default="", help="the cluster CA, for a token without a CA hash (<id>.<secret>)")
    p.add_argument("--kube-proxy-kubeconfig", default="",
                   help="kube-proxy's credentials (system:kube-proxy; a join with --server writes them)")
    p.add_argument("--controller-kubeconfig", default="",
                   help="the NetworkPolicy controller's credentials (system:kubeling-controller)")
    p.add_argument("--client-cert-duration", type=int, default=0, metavar="SECONDS",
                   help="ask for client certificates this long-lived (the CSR's expirationSeconds, at least "
                        "600; default: the signer's --cluster-signing-duration)")
    p.add_argument("--rotate-certificates-after", type=float, default=0, metavar="SECONDS",
                   help="for tests: rotate the client certificate this often, not at 70-90%% of its lifetime")
    p.add_argument("--data-dir", default=".kubeling", help="state directory; the agent uses <data-dir>/agent")
    p.add_argument("--node-name", default=socket.gethostname().lower())
    p.add_argument("--service-cidr", default="10.43.0.0/16", help="Service IPs: unreachable unless proxied")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_agent)
    node = sub.add_parser("node", help="node maintenance")
    nsub = node.add_subparsers(dest="node_command", required=True)
    c = nsub.add_parser("cleanup", help="kill and remove every container and network object of a node")
    c.add_argument("--data-dir", default=".kubeling")
    c.add_argument("--cgroup-root", default="kubeling")
    c.add_argument("--cluster-cidr", default="10.42.0.0/16")
    c.add_argument("--service-cidr", default="10.43.0.0/16")
    c.set_defaults(func=cmd_cleanup)


def agent_flags(p: argparse.ArgumentParser) -> None:
    """Flags `kubeling server` passes through to its agent as well."""
    p.add_argument("--runtime", choices=("runc", "hollow"), default="runc",
                   help="runc (real containers) or hollow (no processes; for scale tests)")
    p.add_argument("--node-ip", default="", help="the node's InternalIP (default: the route to the server)")
    p.add_argument("--kubelet-port", type=int, default=10250, help="the agent's HTTPS port (default 10250)")
    p.add_argument("--cluster-dns", default="",
                   help="the DNS server IP pods use (default: the 10th address of the service CIDR, 10.43.0.10)")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--cluster-cidr", default="10.42.0.0/16", help="the pod network (default 10.42.0.0/16)")
    p.add_argument("--pod-cidr", default="", help="this node's pod CIDR when no nodeipam controller assigns one")
    p.add_argument("--registry-config", default=None,
                   help="k3s-style registries.yaml (default: <data-dir>/registries.yaml)")
    p.add_argument("--disable-default-registry-endpoint", action="store_true",
                   help="pull only from the mirrors registries.yaml names, never from the registry itself")
    p.add_argument("--cgroup-root", default="kubeling", help="cgroup under which pods go (default kubeling)")
    p.add_argument("--node-label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--flannel-backend", choices=("vxlan", "host-gw", "none"), default="vxlan",
                   help="how pods reach the pods of other nodes (default vxlan; none: no overlay)")
    p.add_argument("--disable-network-policy", action="store_true", help="do not enforce NetworkPolicies")
    p.add_argument("--disable-kube-proxy", action="store_true", help="do not run kube-proxy on this node")
    p.add_argument("--kube-proxy-arg", action="append", default=[], metavar="FLAG=VALUE",
                   help="a flag for kube-proxy, e.g. proxy-mode=nftables (repeatable)")


def options(args: argparse.Namespace):
    from kubeling.kubelet.agent import AgentOptions
    data = Path(args.data_dir)
    labels = dict(item.split("=", 1) for item in args.node_label if "=" in item)
    return AgentOptions(kubeconfig=args.kubeconfig, root=data / "agent", node_name=args.node_name,
                        runtime=args.runtime, cgroup_root=args.cgroup_root, address=args.node_ip,
                        port=args.kubelet_port, cluster_domain=args.cluster_domain,
                        cluster_dns=[args.cluster_dns or str(ipaddress.ip_network(args.service_cidr)[10])],
                        cluster_cidr=args.cluster_cidr, service_cidr=args.service_cidr,
                        registry_config=args.registry_config or str(data / "registries.yaml"),
                        pod_cidr=args.pod_cidr, labels=labels,
                        disable_default_registry_endpoint=args.disable_default_registry_endpoint,
                        flannel_backend=args.flannel_backend, disable_network_policy=args.disable_network_policy,
                        disable_kube_proxy=args.disable_kube_proxy,
                        kube_proxy_args=[f if f.startswith("--") else f"--{f}" for f in args.kube_proxy_arg],
                        kube_proxy_kubeconfig=getattr(args, "kube_proxy_kubeconfig", ""),
                        controller_kubeconfig=getattr(args, "controller_kubeconfig", ""))


def cmd_agent(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from kubeling.kubelet.agent import Agent

    try:
        token = _token(args)
        if args.server:
            from kubeling.kubelet.loadbalancer import server_addresses
            servers = server_addresses(args.server)
        if args.client_cert_duration and args.client_cert_duration < 600:
            raise ValueError("--client-cert-duration: at least 600 seconds (the API's minimum expirationSeconds)")
    except (OSError, ValueError) as e:
        print(f"kubeling agent: {e}", file=sys.stderr)
        return 1

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        lb = None
        if args.server:
            from kubeling.kubelet.agent import route_source
            from kubeling.kubelet.bootstrap import CONTROLLER_KUBECONFIG, KUBE_PROXY_KUBECONFIG, join
            from kubeling.kubelet.loadbalancer import LoadBalancer
            # the serving certificate names the node IP, so pick it before the join (as the agent would)
            args.node_ip = args.node_ip or route_source(args.server.split(",")[0].strip())
            # every component reaches the API servers through the balancer, the join too (k3s's agent)
            lb = LoadBalancer(servers, port=args.lb_server_port, any_port_if_busy=True,
                              state_dir=Path(args.data_dir) / "agent" / "etc")
            await lb.start()
            try:
                kubeconfig = await join(lb.url, token, Path(args.data_dir) / "agent", args.node_name,
                                        args.node_ip, ca_file=args.ca_file or None,
                                        expiration_seconds=args.client_cert_duration or None)
            except BaseException:
                await lb.close()
                raise
            args.kubeconfig = str(kubeconfig)
            args.kube_proxy_kubeconfig = args.kube_proxy_kubeconfig or str(kubeconfig.parent / KUBE_PROXY_KUBECONFIG)
            args.controller_kubeconfig = args.controller_kubeconfig or str(kubeconfig.parent / CONTROLLER_KUBECONFIG)
        agent = Agent(options(args))
        tasks = [asyncio.create_task(agent.run(stop), name="agent")]
        if lb is not None:
            tasks.append(asyncio.create_task(_balance(lb, agent, args.controller_kubeconfig, stop),
                                             name="load-balancer"))
        if agent.cfg is not None and agent.cfg.client_certificate_data:
            from kubeling.kubelet.bootstrap import CertificateManager
            manager = CertificateManager(args.kubeconfig, args.node_name, clients=[agent.client],
                                         rotate_after=args.rotate_certificates_after or None,
                                         expiration_seconds=args.client_cert_duration or None,
                                         on_rotated=[lambda cert, key: agent.credentials_rotated()])
            tasks.append(asyncio.create_task(manager.run(stop), name="certificate-manager"))
        try:
            await tasks[0]
        finally:
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)

    try:
        # The standard event loop, not uvloop: pyroute2's netlink sockets need datagram
        # endpoints of family AF_NETLINK, which uvloop refuses.
        asyncio.run(main())
    except RuntimeError as e:
        print(f"kubeling agent: {e}", file=sys.stderr)
        return 1
    return 0


async def _balance(lb, agent, controller_kubeconfig: str, stop: asyncio.Event) -> None:
    """The balancer's life beside the agent: /readyz checks with the cluster CA, the server list
    from the default/kubernetes Endpoints (read as system:kubeling-controller, as k3s's agent
    reads them as system:k3s-controller), closed when the agent stops."""
    from kubeling.client import kubeconfig as kc
    from kubeling.client.rest import RESTClient
    from kubeling.kubelet.loadbalancer import follow_endpoints, readyz_check
    client = None
    try:
        if agent.cfg is not None and agent.cfg.certificate_authority_data:
            lb.health_check = readyz_check(agent.cfg.certificate_authority_data)
        client = RESTClient.from_config(kc.load(controller_kubeconfig), component="kubeling-agent-lb", qps=5, burst=10)
        await follow_endpoints(lb, client, stop)
    finally:
        if client is not None:
            await client.close()
        await lb.close()


def _token(args: argparse.Namespace) -> str:
    """The node token, checking that exactly one way to reach the server was given."""
    if args.token_file:
        args.token = Path(args.token_file).read_text().strip()
    if bool(args.server) == bool(args.kubeconfig):
        raise ValueError("give either --kubeconfig, or --server with --token/--token-file")
    if args.server and not args.token:
        raise ValueError("--server needs --token or --token-file")
    if args.token and not args.server:
        raise ValueError("--token needs --server")
    return args.token


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` — only in this very process.

    Not `loop.add_signal_handler`: that routes signals through a wakeup fd which forked children
    inherit, so a signal sent to a child between its fork and exec (a netns helper, a
    subprocess being killed) would stop the agent. A plain handler runs only where Python runs
    it, and the pid check covers forked children that run Python code."""
    loop = asyncio.get_running_loop()
    me = os.getpid()

    def handler(signum, frame) -> None:
        if os.getpid() == me:
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def cmd_cleanup(args: argparse.Namespace) -> int:
    from kubeling.kubelet.network import overlay, policy
    from kubeling.kubelet.network.cleanup import cleanup as network_cleanup
    from kubeling.kubelet.runtime.cleanup import cleanup_all
    from kubeling.proxy import cleanup as proxy_cleanup
    root = Path(args.data_dir) / "agent"
    cleanup_all(root, args.cgroup_root)
    # the node's network services, each a no-op when it made nothing (`kube-proxy --cleanup`)
    proxy_cleanup.cleanup_all()
    policy.cleanup()
    overlay.cleanup()
    network_cleanup(root, cidrs=(args.cluster_cidr, args.service_cidr))
    print(f"kubeling node cleanup: removed the containers and pod network of {root}")
    return 0
