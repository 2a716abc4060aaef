"""`run(options, stop)`: the ``kubeling dns`` process — informers, the DNS server, the HTTP
listeners and the ``kube-system/kube-dns`` Service, until ``stop``.

Start-up order, as CoreDNS's: informers start, and the listeners open once they synced or after
``sync_timeout`` seconds (CoreDNS's 5 s), whichever is first, so that a slow API server delays
answers instead of turning every name into NXDOMAIN for long. `kubeling.dns.service.ensure`
then runs in the background, retried with backoff until it succeeds.

The listen address: ``--bind-address``; when it is empty or unspecified (0.0.0.0, ::), the
host's primary address (the default route's source, `kubeling.kubelet.agent.route_source`),
because pods reach the DNS through kube-proxy's DNAT of the cluster DNS IP, which cannot lead to
a loopback address. ``kubeling server`` passes its advertise address, or nothing when that is
loopback (the single-node default ``--bind-address 127.0.0.1``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

from kubeling.dns import health, service
from kubeling.dns.forward import Forward, upstreams
from kubeling.dns.kubernetes import Kubernetes
from kubeling.dns.metrics import Metrics
from kubeling.dns.server import DNSServer

log = logging.getLogger(__name__)


@dataclass
class Options:
    kubeconfig: str = ""
    bind_address: str = ""
    port: int = 53
    cluster_domain: str = "cluster.local"
    cluster_dns: str = ""                    # default: the 10th address of service_cidr
    service_cidr: str = "10.43.0.0/16"
    ttl: int = 5
    upstream: list[str] = field(default_factory=list)
    resolv_conf: str = "/etc/resolv.conf"
    forward_timeout: float = 2.0
    pods: str = "insecure"
    health_port: int = 8080
    ready_port: int = 8181
    metrics_port: int = 9153
    manage_service: bool = True
    node_name: str = ""
    sync_timeout: float = 5.0


def cluster_dns_ip(opts: Options) -> str:
    return opts.cluster_dns or str(ipaddress.ip_network(opts.service_cidr)[10])


def listen_address(bind: str, server_url: str) -> str:
    if bind and bind not in ("0.0.0.0", "::"):
        return bind
    from kubeling.kubelet.agent import route_source
    return route_source(server_url)


async def run(opts: Options, stop: asyncio.Event, *, client=None, on_listening=None) -> None:
    from kubeling.client import RESTClient, SharedInformerFactory
    from kubeling.client import kubeconfig as kc
    own = client is None
    server_url = ""
    if client is None:
        cfg = kc.load(opts.kubeconfig)
        server_url = cfg.server
        client = RESTClient.from_config(cfg, component="kubeling-dns", qps=20, burst=40)
    address = listen_address(opts.bind_address, server_url)
    dns_ip = cluster_dns_ip(opts)
    if ipaddress.ip_address(address).is_loopback and opts.manage_service:
        log.warning("DNS listens on loopback %s: pods cannot reach it through the cluster DNS IP", address)
    metrics = Metrics(f"dns://{address}:{opts.port}")
    kube = Kubernetes(opts.cluster_domain, ttl=opts.ttl, pods=opts.pods, dns_ip=dns_ip, metrics=metrics)
    factory = SharedInformerFactory(client)
    kube.attach(factory)
    factory.start(stop)
    dns = DNSServer(kube, None, metrics)
    runners: list = []
    tasks: list[asyncio.Task] = []
    try:
        synced = await factory.wait_for_cache_sync(opts.sync_timeout)
        if not all(synced.values()):
            log.warning("informers not synced after %.0fs; serving anyway", opts.sync_timeout)
        try:
            port = await dns.start(address, opts.port)
        except OSError as e:
            log.error("cannot serve DNS on %s:%d: %s", address, opts.port, e)
            raise
        dns.forward = Forward(upstreams(opts.upstream, opts.resolv_conf, exclude={(address, port), (dns_ip, 53)}),
                              timeout=opts.forward_timeout, metrics=metrics)
        log.info("forwarding other names to %s", ", ".join(f"{h}:{p}" for h, p in dns.forward.upstreams) or
                 "nobody (SERVFAIL)")
        runners = await health.start(address, health_port=opts.health_port, ready_port=opts.ready_port,
                                     metrics_port=opts.metrics_port, ready=kube.synced, metrics=metrics)
        if opts.manage_service:
            tasks.append(asyncio.create_task(_ensure_service(client, opts, dns_ip, address, port, stop)))
        if on_listening:
            on_listening(address, port)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, factory.failure()], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if factory.failure().done():
            factory.failure().result()
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await dns.close()
        if dns.forward is not None:
            dns.forward.close()
        for r in runners:
            await r.cleanup()
        await factory.shutdown()
        if own:
            await client.close()


async def _ensure_service(client, opts: Options, dns_ip: str, address: str, port: int, stop: asyncio.Event) -> None:
    delay = 1.0
    while not stop.is_set():
        try:
            await service.ensure(client, cluster_ip=dns_ip, address=address, dns_port=port,
                                 metrics_port=opts.metrics_port, node_name=opts.node_name)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - retried: the API may not be ready yet
            log.warning("kube-dns Service: %s; retrying in %.0fs", e, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass
        delay = min(delay * 2, 30)
