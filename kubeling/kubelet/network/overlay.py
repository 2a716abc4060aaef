"""`Overlay`: routes from this node to every other node's pods (flannel's vxlan and host-gw
backends), programmed from the Node objects. Filled in by the overlay work of issue 8.

Contract (used by `kubeling.kubelet.agent.Agent._node_network` and ``kubeling node cleanup``):

- ``Overlay(client, node_name, *, backend, node_ip, pod_cidr, cluster_cidr)``;
  ``await run(stop)`` until ``stop`` is set.
- ``cleanup()``: blocking, idempotent; removes every device, route, neighbour, FDB entry and
  rule the overlay made in the current network namespace.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Overlay:
    def __init__(self, client: Any, node_name: str, *, backend: str, node_ip: str, pod_cidr: str,
                 cluster_cidr: str) -> None:
        self.client, self.node_name, self.backend = client, node_name, backend
        self.node_ip, self.pod_cidr, self.cluster_cidr = node_ip, pod_cidr, cluster_cidr

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def cleanup() -> None:
    return None
