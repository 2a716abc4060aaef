"""`Agent`: one node's agent process (``kubeling agent``), upstream's kubelet ``Run``.

Start-up, in order (each step needs the one before)::

    REST client (kubeconfig: system:node:<name>) ─▶ Node registered ─▶ spec.podCIDR assigned
    (node IPAM controller) ─▶ pod network (bridge, unreachable routes) ─▶ runtime (runc|hollow)
    ─▶ images, volumes, probes, status manager ─▶ informers (my pods, services) synced
    ─▶ orphans removed ─▶ the HTTPS server, node status, lease, PLEG, pod workers

`run(stop)` returns when ``stop`` is set. Containers keep running when the agent stops (as
upstream's kubelet): a new agent over the same ``root`` re-adopts them without restarts.
`AgentHost` (what the agent's HTTPS server asks) is implemented here.

Seams for many agents in one process (hollow nodes, `kubeling.kubelet.hollow`): ``client`` (a
shared `RESTClient`; the agent then does not close it), ``image_service``, ``host`` (the node
status readings, e.g. one shared `stats.FixedHost`), ``volume_manager`` (a factory taking the
`VolumeHost`) and ``serve=False`` (no HTTPS server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeling.api import quantity
from kubeling.client import kubeconfig as kc
from kubeling.client.events import EventRecorder
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.rest import RESTClient
from kubeling.kubelet import stats as stats_mod
from kubeling.kubelet.kubelet import Kubelet
from kubeling.kubelet.podworkers import PodState
from kubeling.kubelet.status import StatusManager

log = logging.getLogger(__name__)

POD_CIDR_WAIT = 60.0


@dataclass
class AgentOptions:
    kubeconfig: str
    root: Path
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    runtime: str = "runc"                 # runc | hollow
    cgroup_root: str = "kubeling"
    address: str = ""                     # the node's InternalIP; "" = the source of the route to the server
    port: int = 10250
    bind_address: str = "0.0.0.0"
    cluster_dns: list[str] = field(default_factory=lambda: ["10.43.0.10"])
    cluster_domain: str = "cluster.local"
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    registry_config: str | None = None    # registries.yaml; default <root>/../registries.yaml
    pod_cidr: str = ""                    # used when the control plane assigns none
    labels: dict[str, str] = field(default_factory=dict)
    disable_default_registry_endpoint: bool = False
    # the node's network services, run beside the kubelet as k3s's agent runs them
    flannel_backend: str = "vxlan"        # vxlan | host-gw | none (`kubeling.kubelet.network.overlay`)
    disable_network_policy: bool = False  # `kubeling.kubelet.network.policy`
    disable_kube_proxy: bool = False      # `kubeling proxy`, a child process
    kube_proxy_args: list[str] = field(default_factory=list)   # --kube-proxy-arg, e.g. --proxy-mode=nftables
    # their own identities, as k3s's agent has them: "" = the node's kubeconfig
    kube_proxy_kubeconfig: str = ""       # system:kube-proxy
    controller_kubeconfig: str = ""       # system:kubeling-controller (the NetworkPolicy controller)


def _source_towards(host: str, port: int) -> str | None:
    # connect() on a UDP socket only asks the routing table: no packet is sent
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return s.getsockname()[0]
        except OSError:
            return None


def route_source(server_url: str) -> str:
    """The node's InternalIP, as k3s picks it: the address of the default route's interface; on a
    host with no default route (a test namespace), the address packets to the server leave from."""
    from urllib.parse import urlparse
    default = _source_towards("192.0.2.1", 9)          # TEST-NET-1: any routable address will do
    if default and not default.startswith("127."):
        return default
    url = urlparse(server_url)
    return _source_towards(url.hostname or "127.0.0.1", url.port or 443) or "127.0.0.1"


class Agent:
    """See the module docstring."""

    def __init__(self, opts: AgentOptions, *, client: Any = None, image_service: Any = None, host: Any = None,
                 volume_manager: Any = None, serve: bool = True) -> None:
        self.opts = opts
        self._own_client = client is None
        self._image_service, self._host, self._volume_manager, self.serve = image_service, host, volume_manager, serve
        self.node_name = opts.node_name
        self.root = Path(opts.root)
        self.cfg = kc.load(opts.kubeconfig) if client is None else None
        self.client = client or RESTClient.from_config(self.cfg, component="kubelet", qps=50, burst=100)
        self.address = opts.address or (route_source(self.cfg.server) if self.cfg else "127.0.0.1")
        self.runtime: Any = None
        self.kubelet: Kubelet | None = None
        self.informers: SharedInformerFactory | None = None
        self.pods_informer = None
        self._stats: stats_mod.StatsProvider | None = None
        self._stats_lock = asyncio.Lock()
        self._stats_images: Any = None
        self._proxy_restart = asyncio.Event()   # set by credentials_rotated

    # -- AgentHost ------------------------------------------------------------------------------

    def find_pod(self, namespace: str, name: str) -> dict | None:
        pod = self.pods_informer.get(f"{namespace}/{name}") if self.pods_informer else None
        if pod is None:
            return None
        last = self.kubelet.status.last(pod["metadata"]["uid"]) if self.kubelet else None
        return {**pod, "status": last} if last else pod

    def container_id(self, pod: dict, container_name: str) -> str | None:
        key = (pod["metadata"]["uid"], container_name)
        return self.kubelet.current_containers.get(key) if self.kubelet else None

    def sandbox_id(self, pod: dict) -> str | None:
        return self.kubelet.current_sandboxes.get(pod["metadata"]["uid"]) if self.kubelet else None

    def log_dir(self, pod: dict) -> Path:
        meta = pod["metadata"]
        return self.root / "logs" / "pods" / f"{meta.get('namespace', 'default')}_{meta['name']}_{meta['uid']}"

    def running_pods(self) -> list[dict]:
        return self.kubelet.workers.syncing() if self.kubelet else []

    async def stats_summary(self) -> dict:
        async with self._stats_lock:   # the provider's cpu-rate samples allow one collection at a time
            return await self._stats_provider().summary()

    async def metrics_resource(self) -> str:
        async with self._stats_lock:
            return await self._stats_provider().metrics_resource()

    def _stats_provider(self) -> stats_mod.StatsProvider:
        if self._stats is None:
            self._stats = stats_mod.StatsProvider(self.node_name, self.runtime, root=self.root,
                                                  images=self._stats_images, host=self._host)
        return self._stats

    _caches: list = []

    # -- start-up -------------------------------------------------------------------------------------

    def _make_runtime(self, pod_cidr: str, mtu: int = 1500):
        if self.opts.runtime == "hollow":
            from kubeling.kubelet.runtime.hollow import HollowRuntime
            return HollowRuntime(lambda: pod_cidr)
        from pyroute2 import config as pyroute2_config

        from kubeling.kubelet.network.bridge import BridgeNetwork
        from kubeling.kubelet.runtime.runc import RuncRuntime
        # pyroute2 enters a pod's netns in a forked (not exec'd) child that it SIGTERMs when done.
        # A child still alive then would run our asyncio signal handler, whose wakeup fd it
        # shares, and so stop this agent (exit 0, mid-test). Its children must die of SIGTERM.
        pyroute2_config.disable_mp_signal = True
        self.network = BridgeNetwork(self.root, pod_cidr, cluster_cidr=self.opts.cluster_cidr,
                                     service_cidr=self.opts.service_cidr, mtu=mtu)
        return RuncRuntime(self.root, cgroup_root=self.opts.cgroup_root, network=self.network)

    async def _pod_cidr(self, node: dict, stop: asyncio.Event) -> str:
        """Wait for the node IPAM controller to give this node a podCIDR (or use --pod-cidr).

        As upstream's kubelet, it waits for as long as it takes (a busy controller manager, or
        one that is not leading yet), saying so every `POD_CIDR_WAIT` seconds."""
        if self.opts.pod_cidr:
            return self.opts.pod_cidr
        loop = asyncio.get_running_loop()
        next_warning = loop.time() + POD_CIDR_WAIT
        while not stop.is_set():
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                return cidr
            if loop.time() > next_warning:
                log.warning("node %s has no spec.podCIDR yet: is the nodeipam controller running "
                            "(kubeling server --controllers)?", self.node_name)
                next_warning = loop.time() + POD_CIDR_WAIT
            await asyncio.sleep(0.5)
            try:
                node = await self.client.get("", "v1", "nodes", self.node_name)
            except Exception as e:  # noqa: BLE001 - the API server may be busy: ask again
                log.info("node %s: reading the Node failed: %s", self.node_name, e)
        raise asyncio.CancelledError

    async def run(self, stop: asyncio.Event) -> None:
        from kubeling.kubelet.images.puller import ImageManager
        from kubeling.kubelet.images.registries import Registries
        from kubeling.kubelet.images.service import ImageService
        from kubeling.kubelet.nodelease import NodeLease
        from kubeling.kubelet.nodestatus import NodeStatus
        from kubeling.kubelet.objectcache import ObjectCache
        from kubeling.kubelet.prober.manager import ProbeManager
        from kubeling.kubelet.token import TokenManager
        from kubeling.kubelet.volumes import VolumeHost
        from kubeling.kubelet.volumes.manager import VolumeManager

        self.root.mkdir(parents=True, exist_ok=True)
        registries_path = self.opts.registry_config or str(self.root.parent / "registries.yaml")
        image_service = self._image_service or ImageService(self.root / "images", Registries.load(
            registries_path, disable_default_endpoint=self.opts.disable_default_registry_endpoint))
        self._stats_images = image_service
        recorder = EventRecorder(self.client, "kubelet", host=self.node_name)
        tasks: list[asyncio.Task] = []
        try:
            node_status = NodeStatus(self.client, self.node_name, root=self.root, runtime=None,
                                     images=image_service, address=self.address, kubelet_port=self.opts.port,
                                     labels=self.opts.labels, host=self._host)
            node = await node_status.register(stop)
            if node is None:
                return
            # the heartbeat starts with the Node, as upstream's (before pods can run)
            tasks.append(asyncio.create_task(NodeLease(self.client, self.node_name).run(stop), name="node-lease"))
            pod_cidr = await self._pod_cidr(node, stop)
            mtu = 1500
            if self.opts.runtime != "hollow" and self.opts.flannel_backend != "none":
                from kubeling.kubelet.network.overlay import pod_mtu
                mtu = await pod_mtu(self.address, self.opts.flannel_backend)   # pods fit the overlay's MTU
            self.runtime = self._make_runtime(pod_cidr, mtu)
            node_status.runtime = self.runtime
            if self.opts.runtime != "hollow":
                await self.network.ensure_node()
                tasks += self._node_network(pod_cidr, stop)
            try:
                # registered before the runtime existed (NotReady): say Ready now, not in 10 s
                await node_status.update()
            except Exception as e:  # noqa: BLE001 - the status loop retries
                log.warning("node %s: first status update failed: %s", self.node_name, e)
            configmaps, secrets = ObjectCache(self.client, "configmaps"), ObjectCache(self.client, "secrets")
            self._caches = [configmaps, secrets]
            tokens = TokenManager(self.client)
            volume_host = VolumeHost(root=self.root, configmaps=configmaps, secrets=secrets,
                                     token=lambda pod, sa, aud, exp: tokens.get(pod, sa, aud, exp or 3607),
                                     node_allocatable=(node.get("status") or {}).get("allocatable") or {},
                                     client=self.client)
            volumes = (self._volume_manager or VolumeManager)(volume_host)
            capacity = (node.get("status") or {}).get("capacity") or {}
            status = StatusManager(self.client)
            self.informers = SharedInformerFactory(self.client)
            self.pods_informer = self.informers.informer_for("", "v1", "pods",
                                                             field_selector=f"spec.nodeName={self.node_name}")
            services = self.informers.informer_for("", "v1", "services")
            kubelet = Kubelet(client=self.client, node_name=self.node_name, root=self.root, runtime=self.runtime,
                              images=ImageManager(image_service), volumes=volumes, volume_host=volume_host,
                              probes=None, recorder=recorder, status=status, host_ip=self.address,
                              cluster_dns=self.opts.cluster_dns, cluster_domain=self.opts.cluster_domain,
                              memory_capacity=quantity.value(capacity.get("memory", "0")), services=services,
                              secrets=secrets)
            kubelet.probes = ProbeManager(self.runtime, lambda pod, t, r, m: recorder.event(pod, t, r, m),
                                          pod_ip=kubelet.pod_ip)
            kubelet.forget_hooks += [configmaps.unregister_pod, secrets.unregister_pod, tokens.forget]
            self.kubelet = kubelet
            self.pods_informer.add_handler(on_add=kubelet.on_pod, on_update=kubelet.on_pod_update,
                                           on_delete=kubelet.on_pod_delete)
            self.informers.start(stop)
            await self.informers.wait_for_cache_sync()
            await kubelet.remove_orphans({p["metadata"]["uid"] for p in self.pods_informer.list()})
            server = self._make_server() if self.serve else None
            if server is not None:
                await server.start()
                node_status.kubelet_port = server.port
            for name, coro in (("node-status", node_status.run(stop)), ("status-manager", status.run(stop)),
                    ("volume-manager", volumes.run(stop)), ("pleg", kubelet.relist(stop)),
                    ("probe-updates", kubelet.probe_updates(stop)),
                    ("image-gc", self._image_gc(image_service, stop))):
                tasks.append(asyncio.create_task(coro, name=name))
            log.info("agent %s ready: pods from %s, server on %s:%d", self.node_name, pod_cidr, self.address,
                     node_status.kubelet_port)
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and not t.cancelled() and t.exception():
                    raise t.exception()
            if server is not None:
                await server.close()
        finally:
            await asyncio.shield(self._shutdown(tasks, recorder, image_service))

    def _node_network(self, pod_cidr: str, stop: asyncio.Event) -> list[asyncio.Task]:
        """The node's network services, once its bridge exists (k3s's agent runs the same three):
        the overlay to the other nodes' pods (as the node: it reads Nodes), the NetworkPolicy
        enforcer (as ``system:kubeling-controller``: it lists pods, namespaces and policies of the
        whole cluster, which the node may not) and kube-proxy (as ``system:kube-proxy``), each
        with the node's own credentials when not given theirs."""
        tasks = []
        if self.opts.flannel_backend != "none":
            from kubeling.kubelet.network.overlay import Overlay
            overlay = Overlay(self.client, self.node_name, backend=self.opts.flannel_backend, node_ip=self.address,
                              pod_cidr=pod_cidr, cluster_cidr=self.opts.cluster_cidr)
            tasks.append(asyncio.create_task(overlay.run(stop), name="overlay"))
        if not self.opts.disable_network_policy:
            from kubeling.kubelet.network.policy import NetworkPolicyController
            client = self.client
            if not self.opts.controller_kubeconfig:
                log.warning("the NetworkPolicy controller runs with the node's credentials, which may not list "
                            "namespaces and policies: give --controller-kubeconfig (joining with --server/--token "
                            "writes one)")
            else:
                client = RESTClient.from_config(kc.load(self.opts.controller_kubeconfig),
                                                component="kubeling-controller", qps=20, burst=40)
            policy = NetworkPolicyController(client, self.node_name, pod_cidr=pod_cidr,
                                             cluster_cidr=self.opts.cluster_cidr)

            async def run_policy() -> None:
                try:
                    await policy.run(stop)
                finally:
                    if client is not self.client:
                        await client.close()
            tasks.append(asyncio.create_task(run_policy(), name="network-policy"))
        proxy_kubeconfig = self.opts.kube_proxy_kubeconfig or self.opts.kubeconfig
        if not self.opts.disable_kube_proxy and not self.opts.kube_proxy_kubeconfig:
            log.warning("kube-proxy runs with the node's credentials, which may not list EndpointSlices: give "
                        "--kube-proxy-kubeconfig (joining with --server/--token writes one)")
        if not self.opts.disable_kube_proxy and proxy_kubeconfig:
            argv = ["proxy", "--kubeconfig", proxy_kubeconfig, "--hostname-override", self.node_name,
                    "--bind-address", self.address, "--cluster-cidr", self.opts.cluster_cidr,
                    "--service-cidr", self.opts.service_cidr, *self.opts.kube_proxy_args]
            tasks.append(asyncio.create_task(self._kube_proxy(argv, stop), name="kube-proxy"))
        return tasks

    def credentials_rotated(self) -> None:
        """The node's client certificate was rotated (`bootstrap.CertificateManager`): a kube-proxy
        that runs with the node's own kubeconfig restarts to read the new file."""
        if not self.opts.kube_proxy_kubeconfig:
            self._proxy_restart.set()

    async def _kube_proxy(self, argv: list[str], stop: asyncio.Event) -> None:
        """kube-proxy as a supervised child, restarted by `credentials_rotated`."""
        from kubeling.cli._run import supervise_child
        while not stop.is_set():
            self._proxy_restart.clear()
            child_stop = asyncio.Event()
            child = asyncio.create_task(supervise_child(argv, child_stop))
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._proxy_restart.wait())]
            try:
                await asyncio.wait([child, *waits], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                child_stop.set()
                await child
            if not stop.is_set():
                log.info("restarting kube-proxy: the node's credentials were rotated")

    def _make_server(self):
        from kubeling.kubelet.server import AgentServer
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca = pki / "client-ca.crt"
        if self.cfg is not None and self.cfg.certificate_authority_data:
            fd, tmp = tempfile.mkstemp(dir=pki)
            with os.fdopen(fd, "wb") as f:
                f.write(self.cfg.certificate_authority_data)
            os.replace(tmp, ca)
        return AgentServer(self, bind=self.opts.bind_address, port=self.opts.port, cert=pki / "kubelet.crt",
                           key=pki / "kubelet.key", client_ca=ca, addresses=[self.address])

    async def _image_gc(self, image_service: Any, stop: asyncio.Event) -> None:
        """Upstream's image GC: every 5 minutes, images no container uses, least recently used first."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 300.0)
                return
            except asyncio.TimeoutError:
                pass
            try:
                in_use = set()
                for s in await self.runtime.list_pod_sandboxes():
                    in_use |= {c.image for c in await self.runtime.list_containers(s.id)}
                await image_service.gc(in_use)
            except Exception:  # noqa: BLE001 - retried next round
                log.exception("image garbage collection")

    async def _shutdown(self, tasks: list[asyncio.Task], recorder: EventRecorder, image_service: Any) -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.kubelet is not None:
            await self.kubelet.workers.close()
            await self.kubelet.status.flush()
            if self.kubelet.probes is not None:
                await self.kubelet.probes.close()
        if self.informers is not None:
            await self.informers.shutdown()
        await recorder.close()
        await image_service.close()
        for cache in self._caches:
            await cache.close()
        if self.runtime is not None:
            await self.runtime.close()
        if self._own_client:
            await self.client.close()

    def pod_state(self, uid: str) -> PodState | None:
        return self.kubelet.workers.state(uid) if self.kubelet else None
