"""The network of a one-machine cluster: a bridge in the caller's namespace, one namespace per node.

Layout (``kubeling cluster up``)::

    caller's netns                                  node netns <cluster>-<node>
    ┌──────────────────────────────┐               ┌──────────────────────────────────────┐
    │ bridge kl-<cluster>  .1/24   │── veth ──────▶│ eth0 .N/24   lo up                    │
    │ (the API server binds here)  │  klv<hash>    │ unreachable <cluster CIDR>, <svc CIDR>│
    └──────────────────────────────┘               │ no default route: nothing leaves      │
                                                   └──────────────────────────────────────┘

The subnet is a /24 of `POOL` that overlaps no route or address of the caller's namespace (nor
the cluster and service CIDRs), so the bridge never shadows a network the machine uses.
Interface names are at most 15 characters (IFNAMSIZ) and derived from the cluster and node names
by a hash, so that clusters never collide. Isolating a node sets its bridge-side veth down: the
node loses its carrier, as when a cable is pulled.

Everything here runs ``ip`` (iproute2) synchronously; callers are CLI commands and test
harnesses, not event loops. Deleting is idempotent: objects already gone are skipped.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

POOL = ipaddress.ip_network("10.44.0.0/16")
NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 15


class NetworkError(RuntimeError):
    """An ``ip`` command failed; ``str()`` names the command and its error."""


def ip(*args: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    argv = [*(nsenter(netns) if netns else []), "ip", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def nsenter(netns: str) -> list[str]:
    """The prefix running a command in ``netns`` with only the network namespace changed (not
    ``ip netns exec``, whose private mount namespace would hide the agent's mounts)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}"]


def ifname(prefix: str, *parts: str) -> str:
    """A stable interface name of at most 15 characters for ``parts``."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return (prefix + digest)[:IFNAMSIZ]


def bridge_name(cluster: str) -> str:
    name = f"kl-{cluster}"
    return name if len(name) <= IFNAMSIZ else ifname("klb", cluster)


def veth_name(cluster: str, node: str) -> str:
    return ifname("klv", cluster, node)


def netns_name(cluster: str, node: str) -> str:
    return f"{cluster}-{node}"


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network routed or assigned in the caller's namespace (all routing tables)."""
    found: list[ipaddress.IPv4Network] = []
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("default", "") or ":" in dst:
            continue
        try:
            found.append(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            continue
    for link in json.loads(ip("-j", "-4", "addr", "show").stdout or "[]"):
        for a in link.get("addr_info") or []:
            found.append(ipaddress.ip_network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False))
    return found


def pick_subnet(used: Iterable[ipaddress.IPv4Network], avoid: Iterable[str] = (),
                pool: ipaddress.IPv4Network = POOL) -> ipaddress.IPv4Network:
    """The first /24 of ``pool`` that overlaps none of ``used`` nor ``avoid``; NetworkError if none."""
    taken = [*used, *(ipaddress.ip_network(a, strict=False) for a in avoid)]
    for candidate in pool.subnets(new_prefix=24):
        if not any(candidate.overlaps(t) for t in taken if t.prefixlen > 0):
            return candidate
    raise NetworkError(f"no free /24 left in {pool}: give one with --subnet")


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_bridge(name: str, address: ipaddress.IPv4Interface) -> None:
    """The bridge with ``address`` (e.g. 10.44.0.1/24), up. Idempotent."""
    if not link_exists(name):
        ip("link", "add", name, "type", "bridge")
    if str(address) not in ip("-4", "-o", "addr", "show", "dev", name).stdout:
        ip("addr", "add", str(address), "dev", name)
    ip("link", "set", name, "up")


def create_node_netns(netns: str, veth: str, bridge: str, address: ipaddress.IPv4Interface,
                      unreachable: Iterable[str]) -> None:
    """A node's namespace: ``eth0`` (``address``) joined to ``bridge`` by the veth ``veth``,
    loopback up, and ``unreachable`` routes for the pod and service networks, so that a packet
    for an address no node serves fails at once instead of lingering. Idempotent."""
    if not netns_exists(netns):
        ip("netns", "add", netns)
    if not link_exists(veth):
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")
    if str(address) not in ip("-4", "-o", "addr", "show", "dev", "eth0", netns=netns).stdout:
        ip("addr", "add", str(address), "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    ip("link", "set", "lo", "up", netns=netns)
    for cidr in unreachable:
        ip("route", "replace", "unreachable", str(ipaddress.ip_network(cidr, strict=False)), netns=netns)


def set_link(name: str, up: bool) -> None:
    ip("link", "set", name, "up" if up else "down")


def link_is_up(name: str) -> bool:
    out = ip("-j", "link", "show", "dev", name, check=False).stdout
    try:
        return "UP" in (json.loads(out or "[]")[0].get("flags") or [])
    except (ValueError, IndexError):
        return False


def delete_link(name: str) -> None:
    ip("link", "delete", name, check=False)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        ip("netns", "delete", name, check=False)
