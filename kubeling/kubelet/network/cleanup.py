"""Remove a node's pod network (``kubeling node cleanup``, `make down`, the test harness).

Run in the agent's network namespace after its containers are gone (`runtime.cleanup`): deletes
the bridge and any veth still on it, the hostPort chains and the jumps to them, the unreachable
routes for the cluster and service CIDRs and the node's own route to Services (rule and table), and the IPAM state under ``<root>/network``. Blocking
and idempotent; objects that are already gone are skipped.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

from kubeling.kubelet.network.bridge import DEFAULT_BRIDGE, SERVICE_TABLE
from kubeling.kubelet.network.hostport import CHAIN, JUMP_COMMENT, JUMPS, MASQ_CHAIN


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def cleanup(root: Path, *, bridge: str = DEFAULT_BRIDGE, cidrs: tuple[str, ...] = ("10.42.0.0/16", "10.43.0.0/16"),
            iptables: str = "iptables") -> None:
    members = _run("ip", "-o", "link", "show", "master", bridge).stdout
    for line in members.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        _run("ip", "link", "delete", name)
    _run("ip", "link", "delete", bridge)
    for builtin, chain, match in JUMPS:
        spec = [*match, "-m", "comment", "--comment", JUMP_COMMENT, "-j", chain]
        while _run(iptables, "-w", "-t", "nat", "-D", builtin, *spec).returncode == 0:
            pass
    for chain in (CHAIN, MASQ_CHAIN):
        _run(iptables, "-w", "-t", "nat", "-F", chain)
        _run(iptables, "-w", "-t", "nat", "-X", chain)
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        _run("ip", "route", "del", "unreachable", str(net))
        while _run("ip", "rule", "del", "iif", "lo", "to", str(net), "lookup", str(SERVICE_TABLE)).returncode == 0:
            pass
    _run("ip", "route", "flush", "table", str(SERVICE_TABLE))
    shutil.rmtree(Path(root) / "network", ignore_errors=True)
