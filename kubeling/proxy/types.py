"""What every proxy mode is given: the services, their endpoints and the node (upstream
``pkg/proxy/types.go``, ``serviceport.go``, ``endpoint.go``).

The runner (`kubeling.proxy.server`) turns Services and EndpointSlices into these frozen values
(`servicechangetracker`, `endpointschangetracker`) and hands a whole snapshot to the mode's
`Proxier.sync`. A mode never reads API objects.

- `ServicePortName` names one port of one Service; it is the key of both maps.
- `ServicePort` is what a mode programs for that port (upstream's ``BaseServicePortInfo``).
- `Endpoint` is one backend of that port, already resolved to a number (named target ports are
  resolved by the endpoint slice controller, as upstream).
- `NodeContext` is this node: its name and addresses, the cluster CIDR (for masquerading) and
  the NodePort addresses.
- `Proxier` is the mode: ``sync`` programs the snapshot, ``cleanup`` removes all it made,
  ``count_leaks`` counts what it still holds (0 everywhere after ``cleanup`` or an empty sync).

Each mode is a module ``kubeling.proxy.<mode>`` (userspace, iptables, nftables, ipvs) with a
class ``Proxier(node: NodeContext)``: constructing it is cheap and touches nothing; a mode that
cannot run on this machine (no ``ip_vs`` in the kernel, no ``nft``) raises
`ProxyModeUnavailable` from ``await Proxier.start()`` with a message that says why, and the
process exits with it at start-up. Every call happens in the network namespace of the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, order=True)
class ServicePortName:
    """``namespace/name:port`` (the port's name; "" for an unnamed single port) and its protocol."""

    namespace: str
    name: str
    port: str = ""
    protocol: str = "TCP"

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def service(self) -> str:
        """``namespace/name``: the Service this port belongs to."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service, as a proxy programs it (upstream's ``BaseServicePortInfo``)."""

    cluster_ip: str                                 # "" for headless and ExternalName (never proxied)
    port: int
    protocol: str = "TCP"                           # TCP | UDP | SCTP
    node_port: int = 0                              # 0: none
    external_ips: tuple[str, ...] = ()              # spec.externalIPs
    load_balancer_ips: tuple[str, ...] = ()         # status.loadBalancer.ingress[].ip
    load_balancer_source_ranges: tuple[str, ...] = ()
    session_affinity: str = "None"                  # None | ClientIP
    sticky_max_age_seconds: int = 10800             # sessionAffinityConfig.clientIP.timeoutSeconds
    external_policy_local: bool = False             # externalTrafficPolicy: Local (NodePort/LB/externalIPs)
    internal_policy_local: bool = False             # internalTrafficPolicy: Local
    health_check_node_port: int = 0

    @property
    def uses_local_endpoints(self) -> bool:
        return self.external_policy_local or self.internal_policy_local

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Some traffic to this port may go to any endpoint in the cluster (upstream's
        ``UsesClusterEndpoints``): internal traffic under Cluster, or any external traffic at all
        (even under an external Local policy, pods' traffic to an external IP short-circuits to
        the cluster endpoints)."""
        return not self.internal_policy_local or self.externally_accessible

    @property
    def affinity(self) -> bool:
        return self.session_affinity == "ClientIP"


@dataclass(frozen=True)
class Endpoint:
    """One backend of a service port (upstream's ``BaseEndpointInfo``)."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""
    zone: str = ""
    is_local: bool = False                          # node_name is this node

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class NodeContext:
    """This node, as the proxy sees it."""

    node_name: str
    node_ips: tuple[str, ...]                       # InternalIPs; NodePorts answer on these
    cluster_cidr: str = "10.42.0.0/16"              # traffic from outside it to a ClusterIP is masqueraded
    service_cidr: str = "10.43.0.0/16"
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] = ()        # CIDRs; () = every address in node_ips


ServicePortMap = Mapping[ServicePortName, ServicePort]
EndpointsMap = Mapping[ServicePortName, Sequence[Endpoint]]


@dataclass
class Categorized:
    """`categorize_endpoints`'s answer, as upstream's ``CategorizeEndpoints``."""

    cluster: list[Endpoint] = field(default_factory=list)    # for traffic under the Cluster policy
    local: list[Endpoint] = field(default_factory=list)      # for traffic under a Local policy
    all_reachable: list[Endpoint] = field(default_factory=list)
    has_any: bool = False            # a usable endpoint (ready, or serving and terminating) anywhere


def categorize_endpoints(endpoints: Sequence[Endpoint], svc: ServicePort) -> Categorized:
    """Which endpoints a service port sends traffic to, as upstream's ``CategorizeEndpoints``:

    - cluster: the ready endpoints; when none is ready, the serving-and-terminating ones (so a
      rolling update that terminates the last ready pod keeps its connections served);
    - local: the same choice among the endpoints on this node, computed only when the service
      uses a Local policy (empty otherwise); cluster stays empty when no traffic uses the
      Cluster policy (internalTrafficPolicy Local and no external Cluster traffic);
    - all_reachable: the union of both, for conntrack clean-up;
    - has_any: whether a usable endpoint exists anywhere (none means REJECT; some, but no local
      one for a Local policy, means DROP).
    """
    out = Categorized(has_any=any(e.ready or (e.serving and e.terminating) for e in endpoints))

    def pick(eps: Sequence[Endpoint]) -> list[Endpoint]:
        ready = [e for e in eps if e.ready]
        if ready:
            return ready
        return [e for e in eps if e.serving and e.terminating]

    if svc.uses_cluster_endpoints:
        out.cluster = pick(endpoints)
    if not svc.uses_local_endpoints:
        out.all_reachable = list(out.cluster)
        return out
    out.local = pick([e for e in endpoints if e.is_local])
    if not svc.uses_cluster_endpoints:
        out.all_reachable = list(out.local)
        return out
    seen = {str(e): e for e in out.cluster}
    for e in out.local:
        seen.setdefault(str(e), e)
    out.all_reachable = list(seen.values())
    return out


class ProxyModeUnavailable(RuntimeError):
    """This proxy mode cannot run here; ``str()`` says why and what to do instead."""


class Proxier(Protocol):
    """A proxy mode (userspace, iptables, nftables, ipvs)."""

    mode: str

    async def start(self) -> None:
        """Check that the mode can run here (raise `ProxyModeUnavailable` if not) and set up
        what every sync needs (base chains, tables, sockets). Called once, before ``sync``."""

    async def sync(self, services: ServicePortMap, endpoints: EndpointsMap,
                   changed: set[ServicePortName] | None = None) -> None:
        """Make the node's rules match this snapshot (every service port this node proxies).

        ``changed`` names the ports whose service or endpoints changed since the last successful
        sync; ``None`` asks for a full sync (the first one, the periodic resync, and any sync
        after a failure). A mode may ignore it and always rewrite everything. Raises on
        failure, leaving the previous rules in force; the runner then retries with a full sync."""

    async def cleanup(self) -> None:
        """Remove every rule, chain, map, listener and kernel object this mode made. Idempotent."""

    async def count_leaks(self) -> dict[str, int]:
        """What this mode holds now, by kind ({"chains": n, "rules": n, ...}): all 0 once
        ``cleanup`` ran, or once a sync with no services ran."""
