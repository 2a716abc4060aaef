"""The kube-proxy process (upstream ``cmd/kube-proxy/app/server.go``): ``kubeling proxy``.

::

    kubeconfig ─▶ RESTClient ─▶ informers: Services, EndpointSlices (both without the labels
                                 service.kubernetes.io/service-proxy-name and .../headless, as
                                 upstream), this Node (metadata.name=<node>)
      Service events ─▶ ServiceChangeTracker ─┐
      slice events ───▶ EndpointsChangeTracker ┴─▶ BoundedFrequencyRunner.run()
      runner ─▶ sync(full): snapshot ─▶ Proxier.sync(services, endpoints, changed | None)
                         ─▶ metrics, stale UDP conntrack entries, health check node ports
      /healthz, /livez on --healthz-bind-address; /metrics (and /healthz) on --metrics-bind-address

The mode is ``kubeling.proxy.<mode>.Proxier(NodeContext)``; a mode that cannot run here raises
`ProxyModeUnavailable` from ``start()`` and the command exits with its message. The node's
addresses are ``--bind-address`` when it names one, else the Node's InternalIPs; if those
change, the process exits so that its supervisor restarts it with the new ones (upstream does
the same). Rules stay in place when the process stops, as upstream's do; ``kubeling node
cleanup`` removes them.

Failure model: a sync that fails is retried as a full sync (the runner); one bad object is
logged and skipped (the trackers); an informer that crashes ends the process (its supervisor,
the node agent, restarts it).
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field

from aiohttp import web

from kubeling.proxy import conntrack
from kubeling.proxy.endpointschangetracker import EndpointsChangeTracker
from kubeling.proxy.healthcheck import ProxierHealth, ServiceHealthServer
from kubeling.proxy.metrics import ProxyMetrics
from kubeling.proxy.runner import BoundedFrequencyRunner
from kubeling.proxy.servicechangetracker import HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL, ServiceChangeTracker
from kubeling.proxy.types import NodeContext, ProxyModeUnavailable, ServicePortName, categorize_endpoints

log = logging.getLogger(__name__)

MODES = ("userspace", "iptables", "nftables", "ipvs")
PROXY_LABEL_SELECTOR = f"!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"


@dataclass
class ProxyOptions:
    kubeconfig: str = ""
    hostname_override: str = ""
    bind_address: str = "0.0.0.0"
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    mode: str = "iptables"
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] = ()
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    metrics_bind_address: str = "127.0.0.1:10249"
    healthz_bind_address: str = "0.0.0.0:10256"
    extra: dict = field(default_factory=dict)


class NodeIPsChanged(RuntimeError):
    pass


def node_internal_ips(node: dict) -> tuple[str, ...]:
    out = []
    for a in (node.get("status") or {}).get("addresses") or ():
        if a.get("type") == "InternalIP":
            try:
                out.append(str(ipaddress.IPv4Address(a.get("address", ""))))
            except ValueError:
                continue
    return tuple(out)


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    if not text:
        return "", 0
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host.strip("[]") or "0.0.0.0", int(port)


def _wildcard(ip: str) -> bool:
    return ip in ("", "0.0.0.0", "::")


class ProxyServer:
    """One kube-proxy: trackers, runner, mode, health and metrics (see the module docstring)."""

    def __init__(self, opts: ProxyOptions, client, node_name: str, proxier, *, metrics: ProxyMetrics | None = None,
                 node_ips: tuple[str, ...] = ()) -> None:
        self.opts = opts
        self.client = client
        self.node_name = node_name
        self.proxier = proxier
        self.node_ips = node_ips
        self.metrics = metrics or ProxyMetrics()
        self.services = ServiceChangeTracker()
        self.endpoints = EndpointsChangeTracker(node_name)
        self.health = ProxierHealth(2 * opts.sync_period, self.metrics)
        self.service_health = ServiceHealthServer()
        self.runner = BoundedFrequencyRunner(f"sync-runner ({opts.mode})", self._sync, min_interval=opts.min_sync_period,
                                             max_interval=opts.sync_period)
        self._pending: set[ServicePortName] = set()
        self._last_services: dict = {}
        self._last_endpoints: dict = {}
        self._pending_triggers: list[float] = []
        self.syncs = 0
        self._fatal: asyncio.Future | None = None

    # -- events ---------------------------------------------------------------------------------

    def _queue(self) -> None:
        now = time.time()
        self.health.queued()
        self.metrics.last_queued_timestamp.set(now)
        self.metrics.service_changes_pending.set(self.services.pending())
        self.metrics.endpoint_changes_pending.set(self.endpoints.pending())
        self.runner.run()

    def on_service(self, old: dict | None, new: dict | None) -> None:
        if self.services.update(old, new):
            self.metrics.service_changes_total.inc()
            self._queue()

    def on_slice(self, old: dict | None, new: dict | None) -> None:
        if self.endpoints.update(old, new):
            self.metrics.endpoint_changes_total.inc()
            self._queue()

    def on_node(self, old: dict | None, new: dict | None) -> None:
        if new is None:
            self.health.node_eligible = False
            return
        self.health.node_eligible = not (new.get("metadata") or {}).get("deletionTimestamp")
        ips = node_internal_ips(new)
        if self.node_ips and ips and set(ips) != set(self.node_ips) and _wildcard(self.opts.bind_address):
            msg = f"the node's addresses changed from {list(self.node_ips)} to {list(ips)}: restarting"
            log.warning("%s", msg)
            if self._fatal is not None and not self._fatal.done():
                self._fatal.set_exception(NodeIPsChanged(msg))

    # -- the sync -------------------------------------------------------------------------------

    async def _sync(self, full: bool) -> None:
        self._pending |= self.services.take_changes() | self.endpoints.take_changes()
        self._pending_triggers += self.endpoints.take_trigger_times()
        services = dict(self.services.map)
        endpoints = dict(self.endpoints.map)
        changed = None if full else set(self._pending)
        t0 = time.perf_counter()
        try:
            await self.proxier.sync(services, endpoints, changed)
        finally:
            self._mode_metrics()
        elapsed = time.perf_counter() - t0
        m = self.metrics
        m.sync_duration.observe(elapsed)
        (m.sync_full_duration if full else m.sync_partial_duration).observe(elapsed)
        now = time.time()
        for t in self._pending_triggers:
            if now >= t:
                m.network_programming.observe(now - t)
        self._pending_triggers = []
        flows = conntrack.stale_flows(self._last_services, self._last_endpoints, services, endpoints,
                                      None if full else self._pending)
        if flows:
            n = await asyncio.get_running_loop().run_in_executor(None, conntrack.clear, flows)
            if n:
                m.conntrack_deleted.inc(n)
        self._last_services, self._last_endpoints = services, endpoints
        self._pending = set()
        self.syncs += 1
        self.health.updated()
        m.last_timestamp.set(now)
        m.service_changes_pending.set(self.services.pending())
        m.endpoint_changes_pending.set(self.endpoints.pending())
        await self._sync_health_check_ports(services, endpoints)
        log.debug("synced %d service ports (%s) in %.3fs", len(services), "full" if full else "partial", elapsed)

    def _mode_metrics(self) -> None:
        p, m = self.proxier, self.metrics
        counts = getattr(p, "last_rule_counts", None)
        if counts:
            for table, n in counts.items():
                m.iptables_total.labels(table).set(n)
                m.iptables_last.labels(table).set(n)
        for attr, counter in (("restore_failures", m.iptables_restore_failures),
                              ("partial_restore_failures", m.iptables_partial_restore_failures)):
            have = getattr(p, attr, None)
            if isinstance(have, int):
                seen = getattr(self, "_seen_" + attr, 0)
                if have > seen:
                    counter.inc(have - seen)
                setattr(self, "_seen_" + attr, have)

    async def _sync_health_check_ports(self, services, endpoints) -> None:
        wanted: dict[str, int] = {}
        local: dict[str, int] = {}
        no_local = {"internal": 0, "external": 0}
        for spn, svc in services.items():
            if svc.uses_local_endpoints:
                cat = categorize_endpoints(endpoints.get(spn, ()), svc)
                if cat.all_reachable and not cat.local:
                    if svc.internal_policy_local:
                        no_local["internal"] += 1
                    if svc.external_policy_local:
                        no_local["external"] += 1
            if svc.health_check_node_port:
                wanted[spn.service] = svc.health_check_node_port
                local[spn.service] = max(local.get(spn.service, 0),
                                         len(categorize_endpoints(endpoints.get(spn, ()), svc).local))
        for k, v in no_local.items():
            self.metrics.no_local_endpoints.labels(k).set(v)
        try:
            await self.service_health.sync(wanted, local)
        except Exception:  # noqa: BLE001 - health checks never stop the proxy
            log.exception("health check node ports")

    # -- running --------------------------------------------------------------------------------

    async def _serve_http(self, bind: str, default_port: int, routes: list) -> web.AppRunner | None:
        host, port = split_hostport(bind, default_port)
        if not port:
            return None
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", host, port, e)
            await runner.cleanup()
            return None
        return runner

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def run(self, stop: asyncio.Event) -> None:
        from kubeling.client.factory import SharedInformerFactory

        loop = asyncio.get_running_loop()
        self._fatal = loop.create_future()
        runners = [r for r in (
            await self._serve_http(self.opts.healthz_bind_address, 10256, self.health.routes()),
            await self._serve_http(self.opts.metrics_bind_address, 10249,
                                   [web.get("/metrics", self._metrics), *self.health.routes()]),
        ) if r is not None]
        halt = asyncio.Event()
        factory = SharedInformerFactory(self.client)
        factory.informer_for("", "v1", "services", label_selector=PROXY_LABEL_SELECTOR).add_handler(
            on_add=lambda o: self.on_service(None, o), on_update=self.on_service,
            on_delete=lambda o: self.on_service(_obj(o), None))
        factory.informer_for("discovery.k8s.io", "v1", "endpointslices", label_selector=PROXY_LABEL_SELECTOR).add_handler(
            on_add=lambda o: self.on_slice(None, o), on_update=self.on_slice,
            on_delete=lambda o: self.on_slice(_obj(o), None))
        factory.informer_for("", "v1", "nodes", field_selector=f"metadata.name={self.node_name}").add_handler(
            on_add=lambda o: self.on_node(None, o), on_update=self.on_node, on_delete=lambda o: self.on_node(_obj(o), None))
        factory.start(halt)
        tasks: list[asyncio.Task] = []
        waiter = asyncio.ensure_future(stop.wait())
        try:
            synced = asyncio.ensure_future(self._wait_synced(factory))
            done, _ = await asyncio.wait([waiter, synced, factory.failure(), self._fatal],
                                         return_when=asyncio.FIRST_COMPLETED)
            synced.cancel()
            if not stop.is_set():
                for f in (factory.failure(), self._fatal):
                    if f.done():
                        raise f.exception()
                log.info("caches synced: %d service ports, %d with endpoints; syncing rules (%s mode)",
                         len(self.services.map), len(self.endpoints.map), self.opts.mode)
                tasks.append(asyncio.create_task(self.runner.loop(halt), name="sync-runner"))
                done, _ = await asyncio.wait([waiter, factory.failure(), self._fatal, tasks[0]],
                                             return_when=asyncio.FIRST_COMPLETED)
                if not stop.is_set():
                    for f in (factory.failure(), self._fatal, tasks[0]):
                        if f.done():
                            raise f.exception() or RuntimeError("the sync runner returned before stop")
        finally:
            waiter.cancel()
            halt.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await factory.shutdown()
            await self.service_health.close()
            for r in runners:
                await r.cleanup()
            if not self._fatal.done():
                self._fatal.cancel()

    async def _wait_synced(self, factory) -> None:
        while True:
            status = await factory.wait_for_cache_sync(timeout=5.0)
            if all(status.values()):
                return
            log.info("waiting for caches: %s", [str(k) for k, ok in status.items() if not ok])


def _obj(o):
    from kubeling.client.store import object_of
    return object_of(o)


async def _node_ips(client, node_name: str, bind_address: str, stop: asyncio.Event) -> tuple[str, ...]:
    if not _wildcard(bind_address):
        return (bind_address,)
    deadline = time.monotonic() + 60
    while not stop.is_set():
        try:
            ips = node_internal_ips(await client.get("", "v1", "nodes", node_name))
            if ips:
                return ips
        except Exception as e:  # noqa: BLE001 - retried
            log.info("waiting for node %s: %s", node_name, e)
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    log.warning("node %s has no InternalIP; NodePorts answer on every local address", node_name)
    return ()


def make_proxier(mode: str, node: NodeContext):
    if mode not in MODES:
        raise ProxyModeUnavailable(f"unknown proxy mode {mode!r}: use one of {', '.join(MODES)}")
    try:
        module = importlib.import_module(f"kubeling.proxy.{mode}")
    except ImportError as e:
        raise ProxyModeUnavailable(f"proxy mode {mode} is not available in this build ({e})") from e
    return module.Proxier(node)


async def run(opts: ProxyOptions, stop: asyncio.Event) -> None:
    """``kubeling proxy``: raises `ProxyModeUnavailable` at start-up when the mode cannot run."""
    from kubeling.client import kubeconfig as kc
    from kubeling.client.events import EventRecorder
    from kubeling.client.rest import RESTClient

    cfg = kc.load(opts.kubeconfig or None)
    client = RESTClient.from_config(cfg, component="kube-proxy")
    node_name = opts.hostname_override or socket.gethostname()
    try:
        node_ips = await _node_ips(client, node_name, opts.bind_address, stop)
        node = NodeContext(node_name=node_name, node_ips=node_ips, cluster_cidr=opts.cluster_cidr,
                           service_cidr=opts.service_cidr, masquerade_all=opts.masquerade_all,
                           nodeport_addresses=tuple(opts.nodeport_addresses))
        proxier = make_proxier(opts.mode, node)
        await proxier.start()
        log.info("kube-proxy: %s mode on node %s (%s)", opts.mode, node_name, ", ".join(node_ips) or "no address")
        # upstream's start-up Event on the Node (its reference names the node as its uid too)
        recorder = EventRecorder(client, "kube-proxy", host=node_name)
        recorder.event({"kind": "Node", "name": node_name, "uid": node_name}, "Normal", "Starting",
                       "Starting kube-proxy.")
        server = ProxyServer(opts, client, node_name, proxier, node_ips=node_ips)
        try:
            await server.run(stop)
        finally:
            await recorder.close()
    finally:
        await client.close()
