"""The pod network on a node: the plugin the runtime calls for every sandbox (CNI's ADD and DEL).

::

    bridge.py    `BridgeNetwork`: bridge + veth per pod + routes (CNI's bridge plugin)
    ipam.py      `HostLocalIPAM`: pod IPs from the node's podCIDR, one file per IP (CNI host-local)
    hostport.py  `HostPorts`: hostPort DNAT in iptables chains of our own (CNI portmap)

The protocol (`NetworkPlugin`), which ``runtime.runc.RuncRuntime(network=...)`` calls:

- ``await setup(sandbox_id, netns_path, config) -> ip``: after the runtime made the sandbox's
  netns (``/run/netns/kl-<16 hex>``) and before any container starts in it. Returns the pod IP.
  A failure raises `SandboxError` (reason ``CreatePodSandboxError``) with nothing left behind.
- ``await teardown(sandbox_id, netns_path, config)``: when the sandbox stops, before its netns is
  removed. Idempotent; also works when the netns is already gone (after a crash).
- ``await ensure_node()``: once at agent start.

hostNetwork pods never reach the plugin: the runtime skips `setup`/`teardown` for them and
reports an empty sandbox IP, so the kubelet uses the node's IP.

All work happens in the network namespace the agent runs in. `leaks` counts what a plugin left
behind, for the issue's leak test (acceptance 10).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from kubeling.kubelet.network.bridge import DEFAULT_BRIDGE, BridgeNetwork, host_veth_name
from kubeling.kubelet.network.hostport import HostPorts
from kubeling.kubelet.network.ipam import HostLocalIPAM, IPAMError, reservations
from kubeling.kubelet.runtime import SandboxConfig

__all__ = ["BridgeNetwork", "HostLocalIPAM", "HostPorts", "IPAMError", "NetworkPlugin", "NoNetwork",
           "count_leaks", "leaks"]


class NetworkPlugin(Protocol):
    """What the runtime needs from a pod network; see the module docstring."""

    NAME: str

    async def ensure_node(self) -> None: ...

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str: ...

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None: ...


class NoNetwork:
    """No pod network: for nodes that run only hostNetwork pods, and for hollow nodes.

    `setup` touches nothing and returns "" (no pod IP); `teardown` has nothing to undo."""

    NAME = "none"

    async def ensure_node(self) -> None:
        return None

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        return ""

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        return None


async def count_leaks(root: Path, live: Iterable[str] = (), *, bridge: str = DEFAULT_BRIDGE) -> dict[str, int]:
    """What the network holds for sandboxes not in ``live``, in the current netns.

    ``{"veths": veth ports on the bridge, "ips": IP reservations, "hostport_rules": iptables rules}``
    — with ``live`` empty (every pod deleted) each must be 0."""
    from pyroute2 import AsyncIPRoute  # here: `leaks` is also for tools that never build a plugin

    live = set(live)
    alive_veths = {host_veth_name(s) for s in live}
    veths = 0
    async with AsyncIPRoute() as ipr:
        found = await ipr.link_lookup(ifname=bridge)
        if found:
            async for link in await ipr.link("dump", master=found[0]):
                name = link.get_attr("IFLA_IFNAME")
                kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
                if kind == "veth" and name not in alive_veths:
                    veths += 1
    ips = sum(1 for owner in reservations(Path(root) / "network").values() if owner not in live)
    rules = [r for r in await HostPorts("0.0.0.0/0").rules() if _rule_owner(r) not in live]
    return {"veths": veths, "ips": ips, "hostport_rules": len(rules)}


def leaks(root: Path, live: Iterable[str] = (), *, bridge: str = DEFAULT_BRIDGE) -> dict[str, int]:
    """`count_leaks` for synchronous callers (tests, tools); not from inside a running loop."""
    return asyncio.run(count_leaks(root, live, bridge=bridge))


def _rule_owner(rule: list[str]) -> str:
    return rule[rule.index("--comment") + 1]
