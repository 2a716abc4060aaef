"""Hollow nodes: many node agents in one process, each with the hollow runtime (kubemark's
hollow-node, kwok's idea), for scale tests and benchmarks.

`HollowNodes(opts).run(stop)` runs ``opts.count`` `Agent`\\ s named ``<prefix><index>`` in one
event loop. Each one is a real agent as far as the API server can tell: it registers its Node,
waits for the node IPAM controller's ``spec.podCIDR``, renews its Lease every 10 s, patches its
status when it changes, watches the pods bound to it and writes their status. Its pods go
Running (events Pulled, Created, Started; IPs from the node's podCIDR) and nothing runs.

What they share, so that a node costs a few hundred KiB and a few tasks:

- one `RESTClient` (one connection pool; its token bucket is sized for all of them: ``qps`` per
  node) with the kubeconfig's credentials. Upstream's kubemark also gives every hollow kubelet
  the same kubeconfig; the identity is ``system:node:<name>`` only if that file says so;
- one `stats.FixedHost` (4 cpus, 16 GiB, 100 GiB disk): node status never reads the real host;
- no HTTPS server (``serve=False``): exec, attach, logs and port-forward have nothing to reach,
  as the hollow runtime runs no processes. ``daemonEndpoints`` shows the configured port.

What each has of its own: a `HollowRuntime`, a `HollowImageService` (images "pull" at once and
stay in memory), a volume manager with `hollow_plugins` (directories under the node's root, no
mounts: no tmpfs, no hostPath on the host) and a state directory ``<root>/<node name>``.

Start-up is staggered (``start_interval`` between agents, 20 ms by default) so that 200 nodes
do not hit the API server with 200 registrations in the same millisecond; kubemark's hollow
nodes start as pods, which spreads them the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeling.kubelet.images import reference
from kubeling.kubelet.runtime import Image
from kubeling.kubelet.stats import FixedHost
from kubeling.kubelet.volumes import REGISTRY, VolumeHost
from kubeling.kubelet.volumes.manager import VolumeManager

log = logging.getLogger(__name__)

# What a pulled hollow image says about itself: enough for the kubelet to build a command line
# for a container that names none (the command is never run).
IMAGE_CONFIG = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}
MIB = 1024 * 1024
IMAGE_FS_CAPACITY = 100 << 30


class HollowImageService:
    """`runtime.ImageService` in memory: a pull succeeds at once with a stable id per reference.

    Ids are digests of the canonical reference, so two nodes "pulling" ``busybox`` agree on its
    imageID, as nodes pulling from one registry do. Sizes are plausible (2–65 MiB) and stable.
    """

    def __init__(self, *, capacity: int = IMAGE_FS_CAPACITY, clock=time.time) -> None:
        self.capacity = capacity
        self.clock = clock
        self._images: dict[str, Image] = {}      # canonical reference -> image
        self._last_used: dict[str, float] = {}   # image id -> last pull

    async def pull_image(self, ref: str, auth: dict | None = None) -> Image:
        parsed = reference.parse(ref).with_tag_default()
        canonical = parsed.string()
        image = self._images.get(canonical)
        if image is None:
            digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
            image = Image(id=digest, repo_tags=[canonical], repo_digests=[f"{parsed.name}@{digest}"],
                          size=(2 + zlib.crc32(canonical.encode()) % 64) * MIB, config=dict(IMAGE_CONFIG))
            self._images[canonical] = image
        self._last_used[image.id] = self.clock()
        return image

    async def image_status(self, ref: str) -> Image | None:
        try:
            return self._images.get(reference.parse(ref).with_tag_default().string())
        except Exception:  # noqa: BLE001 - a reference that does not parse is not present
            return None

    async def list_images(self) -> list[Image]:
        return list({i.id: i for i in self._images.values()}.values())

    async def remove_image(self, image_id: str) -> None:
        for name in [n for n, i in self._images.items() if i.id == image_id]:
            del self._images[name]
        self._last_used.pop(image_id, None)

    async def fs_info(self) -> dict:
        used = sum(i.size for i in await self.list_images())
        return {"capacity_bytes": self.capacity, "used_bytes": used, "available_bytes": self.capacity - used,
                "inodes_free": 5_000_000}

    async def gc(self, in_use: set[str], high: int = 85, low: int = 80, min_age: float = 120.0) -> list[str]:
        """Upstream's thresholds: nothing to do below ``high`` percent used (always, here)."""
        info = await self.fs_info()
        if info["used_bytes"] * 100 < high * self.capacity:
            return []
        removed = []
        now = self.clock()
        for image in sorted(await self.list_images(), key=lambda i: self._last_used.get(i.id, 0)):
            if (await self.fs_info())["used_bytes"] * 100 < low * self.capacity:
                break
            if image.id not in in_use and now - self._last_used.get(image.id, 0) >= min_age:
                await self.remove_image(image.id)
                removed.append(image.id)
        return removed

    async def close(self) -> None:
        return None


class _HollowPlugin:
    """A volume plugin that makes an empty directory: the checks of the real one that the API
    can see (a missing ConfigMap or Secret fails the mount with upstream's message), no content,
    no mount. Subclasses name the real plugin they stand for."""

    NAME = ""
    SOURCE = ""
    needs_refresh = False
    read_only = False

    def __init__(self, host: VolumeHost) -> None:
        self.host = host

    def can_support(self, volume: dict) -> bool:
        return self.SOURCE in volume

    async def setup(self, pod: dict, volume: dict, dir: Path) -> Path:
        source = volume.get(self.SOURCE) or {}
        cache = {"configMap": self.host.configmaps, "secret": self.host.secrets}.get(self.SOURCE)
        name = source.get("name") if self.SOURCE == "configMap" else source.get("secretName")
        if cache is not None and name and not source.get("optional"):
            namespace = (pod.get("metadata") or {}).get("namespace") or "default"
            if await cache.get(namespace, name) is None:
                raise LookupError(cache.not_found_message(name))
        dir.mkdir(parents=True, exist_ok=True)
        return dir

    async def teardown(self, dir: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, dir, True)


def hollow_plugins() -> list[type]:
    """One hollow plugin per real one, with its name, source and flags."""
    return [type(f"Hollow{cls.__name__}", (_HollowPlugin,),
                 {"NAME": cls.NAME, "SOURCE": cls.SOURCE, "needs_refresh": cls.needs_refresh,
                  "read_only": cls.read_only})
            for cls in REGISTRY.values()]


def hollow_volume_manager(host: VolumeHost) -> VolumeManager:
    return VolumeManager(host, plugins=hollow_plugins())


@dataclass
class HollowOptions:
    kubeconfig: str
    root: Path
    count: int
    name_prefix: str = "hollow-node-"
    first_index: int = 0
    qps_per_node: float = 5.0             # the shared client's token bucket: qps = this x count
    start_interval: float = 0.02          # seconds between two agents' start
    address: str = ""                     # InternalIP of every node; "" = the route to the server
    kubelet_port: int = 10250             # advertised only: nothing listens
    labels: dict[str, str] = field(default_factory=dict)
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    pod_cidr: str = ""                    # only when no nodeipam controller runs (all nodes share it)

    def names(self) -> list[str]:
        return [f"{self.name_prefix}{i}" for i in range(self.first_index, self.first_index + self.count)]


class HollowNodes:
    """See the module docstring. ``agents`` holds the `Agent` of each node once `run` began."""

    def __init__(self, opts: HollowOptions, *, client: Any = None) -> None:
        self.opts = opts
        self.client = client
        self.host = FixedHost()
        self.agents: list[Any] = []

    def _client(self) -> Any:
        from kubeling.client import kubeconfig as kc
        from kubeling.client.rest import RESTClient
        cfg = kc.load(self.opts.kubeconfig)
        qps = max(self.opts.qps_per_node * self.opts.count, 50.0)
        return cfg, RESTClient.from_config(cfg, component="kubelet", qps=qps, burst=int(2 * qps))

    async def run(self, stop: asyncio.Event) -> None:
        from kubeling.kubelet.agent import Agent, AgentOptions, route_source
        own = self.client is None
        cfg = None
        if own:
            cfg, self.client = self._client()
        address = self.opts.address or (route_source(cfg.server) if cfg else "127.0.0.1")
        tasks: list[asyncio.Task] = []
        try:
            for name in self.opts.names():
                agent = Agent(AgentOptions(kubeconfig=self.opts.kubeconfig, root=Path(self.opts.root) / name,
                                           node_name=name, runtime="hollow", address=address,
                                           port=self.opts.kubelet_port, cluster_cidr=self.opts.cluster_cidr,
                                           service_cidr=self.opts.service_cidr, pod_cidr=self.opts.pod_cidr,
                                           labels={"kubemark": "true", **self.opts.labels}),
                              client=self.client, image_service=HollowImageService(), host=self.host,
                              volume_manager=hollow_volume_manager, serve=False)
                self.agents.append(agent)
                tasks.append(asyncio.create_task(self._run_one(agent, stop), name=f"hollow-{name}"))
                if stop.is_set():
                    break
                if self.opts.start_interval > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), self.opts.start_interval)
                    except TimeoutError:
                        pass
            log.info("hollow nodes: %d agents started (%s...)", len(tasks), self.opts.names()[0])
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own and self.client is not None:
                await self.client.close()

    @staticmethod
    async def _run_one(agent: Any, stop: asyncio.Event) -> None:
        """One agent; a failure ends that node only (logged), never its neighbours."""
        try:
            await agent.run(stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hollow node %s stopped", agent.node_name)
