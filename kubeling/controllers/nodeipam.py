"""Node IPAM controller: gives every Node a podCIDR from the cluster CIDR (upstream's range allocator).

Upstream's ``pkg/controller/nodeipam`` with ``--cidr-allocator-type=RangeAllocator``. The
cluster CIDR (``--cluster-cidr``, default ``10.42.0.0/16`` as k3s) is cut into subnets of
``--node-cidr-mask-size`` (24) bits; each Node gets one as ``spec.podCIDR`` and
``spec.podCIDRs`` (IPv4 only), and the node agent hands its pods IPs from it.

The key is a Node name. State: the allocation map (`CIDRSet`) and which subnet each node holds.

- **Restore before work.** Once the Node cache has synced, and before any worker runs, every
  Node's existing ``spec.podCIDRs`` are marked used, so a restarted controller never hands out
  a subnet a node already has.
- ``sync(name)``, level-triggered:
  * a Node that is gone releases its subnet (so a delete is seen even if the event was missed
    and only the next sync notices);
  * a Node with ``spec.podCIDRs`` keeps them (marked used; a subnet it no longer has is freed);
  * a Node without one gets the next free subnet (round-robin after the last one handed out,
    so a freed subnet is not reused at once) with a strategic merge patch of ``spec.podCIDR``
    and ``spec.podCIDRs``. If none is free it records upstream's Event — reason
    ``CIDRNotAvailable``, "Node <name> status is now: CIDRNotAvailable" — and raises, so the key
    is retried with backoff until a node goes away. A failed patch keeps the reservation for
    the retry; a Node deleted meanwhile releases it.
- The service CIDR (``--service-cluster-ip-range``) is never handed out where it overlaps.
- One worker (upstream's allocator is serialised too): the map needs no lock.

Configuration comes from the context (``ctx.cluster_cidr``, ``ctx.service_cidr``,
``ctx.node_cidr_mask_size``) when it has them, else from the defaults above.
"""

from __future__ import annotations

import ipaddress
import logging

from kubeling.client import is_not_found, object_of
from kubeling.client.events import NORMAL, EventRecorder
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_NODE_CIDR_MASK_SIZE = 24
COMPONENT = "cidrAllocator"  # upstream's event source
CIDR_NOT_AVAILABLE = "CIDRNotAvailable"


class CIDRSetFull(Exception):
    """Every subnet of the cluster CIDR is in use."""


class CIDRSet:
    """The subnets of ``cluster_cidr`` of size ``mask``, each free or used (upstream's cidrset)."""

    def __init__(self, cluster_cidr: str, mask: int) -> None:
        self.cluster = ipaddress.ip_network(cluster_cidr, strict=False)
        if self.cluster.version != 4 or not self.cluster.prefixlen <= mask <= 30:
            raise ValueError(f"cluster CIDR {cluster_cidr} cannot hold /{mask} node subnets")
        self.mask = mask
        self.size = 1 << (mask - self.cluster.prefixlen)
        self.used: set[int] = set()
        self.next_candidate = 0

    def allocate_next(self) -> str:
        for i in range(self.size):
            index = (self.next_candidate + i) % self.size
            if index not in self.used:
                self.used.add(index)
                self.next_candidate = (index + 1) % self.size
                return str(self._subnet(index))
        raise CIDRSetFull(f"CIDR allocation failed; there are no remaining CIDRs left to allocate in the "
                          f"accepted range {self.cluster}")

    def occupy(self, cidr: str) -> bool:
        """Mark every subnet that overlaps ``cidr`` used; False if none does (outside the range)."""
        indexes = self._indexes(cidr)
        self.used.update(indexes)
        return bool(indexes)

    def release(self, cidr: str) -> None:
        self.used.difference_update(self._indexes(cidr))

    def _subnet(self, index: int) -> ipaddress.IPv4Network:
        return ipaddress.ip_network((int(self.cluster.network_address) + (index << (32 - self.mask)), self.mask))

    def _indexes(self, cidr: str) -> range:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return range(0)
        if net.version != 4 or not net.overlaps(self.cluster):
            return range(0)
        lo = max(int(net.network_address), int(self.cluster.network_address))
        hi = min(int(net.broadcast_address), int(self.cluster.broadcast_address))
        base, shift = int(self.cluster.network_address), 32 - self.mask
        return range((lo - base) >> shift, ((hi - base) >> shift) + 1)


def pod_cidrs(node: dict) -> list[str]:
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))


class NodeIPAMController(Controller):
    NAME = "nodeipam"
    WORKERS = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.cidrs = CIDRSet(getattr(ctx, "cluster_cidr", "") or DEFAULT_CLUSTER_CIDR,
                             getattr(ctx, "node_cidr_mask_size", 0) or DEFAULT_NODE_CIDR_MASK_SIZE)
        self.cidrs.occupy(getattr(ctx, "service_cidr", "") or DEFAULT_SERVICE_CIDR)
        self.held: dict[str, str] = {}  # node name -> the subnet we count as its own
        self.recorder = EventRecorder(ctx.client, COMPONENT, clock=ctx.clock)
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.handle(self.nodes, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                    on_delete=self._enqueue)

    def _enqueue(self, node: dict) -> None:
        self.queue.add(object_of(node)["metadata"]["name"])

    async def run(self, workers: int, stop) -> None:
        try:
            await super().run(workers, stop)
        finally:
            await self.recorder.close()

    async def wait_for_caches(self, stop) -> bool:
        if not await super().wait_for_caches(stop):
            return False
        self.restore()
        return True

    def restore(self) -> None:
        """Mark the subnets every cached Node already has as used (before any sync runs)."""
        for node in self.nodes.list():
            self._occupy(node)

    def _occupy(self, node: dict) -> None:
        name = node["metadata"]["name"]
        for cidr in pod_cidrs(node):
            if self.cidrs.occupy(cidr):
                if self.held.get(name) not in (None, cidr):
                    self.cidrs.release(self.held[name])
                self.held[name] = cidr
            else:
                log.warning("nodeipam: node %s has podCIDR %s outside the cluster CIDR %s",
                            name, cidr, self.cidrs.cluster)

    async def sync(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._release(name)
            return
        if pod_cidrs(node):
            self._occupy(node)
            return
        cidr = self.held.get(name)
        if cidr is None:
            try:
                cidr = self.cidrs.allocate_next()
            except CIDRSetFull as e:
                self.recorder.event(node, NORMAL, CIDR_NOT_AVAILABLE, f"Node {name} status is now: {CIDR_NOT_AVAILABLE}")
                raise RuntimeError(f"failed to allocate cidr from cluster cidr at idx:0: {e}") from e
            self.held[name] = cidr
        patch = {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
        try:
            await self.client.patch("", "v1", "nodes", name, patch, patch_type="strategic")
        except Exception as e:
            if is_not_found(e):
                self._release(name)
                return
            raise  # keep the reservation: the retry patches the same subnet
        log.info("nodeipam: node %s gets podCIDR %s", name, cidr)

    def _release(self, name: str) -> None:
        cidr = self.held.pop(name, None)
        if cidr is not None:
            self.cidrs.release(cidr)
            log.info("nodeipam: released %s of deleted node %s", cidr, name)

