"""`NetworkPolicyController`: NetworkPolicies enforced on this node's pods. Filled in by the
NetworkPolicy work of issue 8.

Contract (used by `kubeling.kubelet.agent.Agent._node_network` and ``kubeling node cleanup``):

- ``NetworkPolicyController(client, node_name, *, pod_cidr, cluster_cidr)``;
  ``await run(stop)`` until ``stop`` is set.
- ``cleanup()``: blocking, idempotent; removes every chain and rule it made in the current
  network namespace.
"""

from __future__ import annotations

import asyncio
from typing import Any


class NetworkPolicyController:
    def __init__(self, client: Any, node_name: str, *, pod_cidr: str, cluster_cidr: str) -> None:
        self.client, self.node_name, self.pod_cidr, self.cluster_cidr = client, node_name, pod_cidr, cluster_cidr

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def cleanup() -> None:
    return None
