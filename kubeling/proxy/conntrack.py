"""Clearing stale conntrack entries after a sync (upstream ``pkg/proxy/conntrack/cleanup.go``).

TCP needs nothing: a connection to an endpoint that went away is reset. UDP (and SCTP) flows
are connectionless, so conntrack would keep sending a client's packets to a dead endpoint (or
keep remembering that a service had no endpoint) until the entry times out. After each good
sync the runner asks `stale_flows` what to forget and `clear` deletes it, over netlink
(pyroute2's conntrack support; no ``conntrack`` binary is needed):

- an endpoint that is no longer reachable through a service port: the entries whose original
  destination is one of the port's addresses (cluster IP, external IPs, LB IPs at the port, or
  any address at the node port) and whose reply comes from that endpoint;
- a service port that had no endpoint and now has one: every entry to its addresses, as
  upstream does for the "stale services".
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from kubeling.proxy.types import EndpointsMap, ServicePortMap, ServicePortName, categorize_endpoints

log = logging.getLogger(__name__)

PROTOCOLS = {"UDP": socket.IPPROTO_UDP, "SCTP": 132}


@dataclass(frozen=True)
class Flow:
    """Entries to delete: protocol, original destination (None: any) and port, and reply source
    (None: any)."""

    proto: int
    dst: str | None
    dport: int
    reply_src: str | None = None


def _targets(svc) -> list[tuple[str | None, int]]:
    out: list[tuple[str | None, int]] = [(svc.cluster_ip, svc.port)]
    out += [(ip, svc.port) for ip in (*svc.external_ips, *svc.load_balancer_ips)]
    if svc.node_port:
        out.append((None, svc.node_port))
    return out


def stale_flows(old_services: ServicePortMap, old_endpoints: EndpointsMap, services: ServicePortMap,
                endpoints: EndpointsMap, changed: Iterable[ServicePortName] | None = None) -> list[Flow]:
    """What a sync from the old snapshot to the new one leaves stale (``changed`` None: look at
    every port)."""
    names = set(old_services) | set(services) if changed is None else set(changed)
    out: list[Flow] = []
    for spn in sorted(names):
        proto = PROTOCOLS.get(spn.protocol)
        if proto is None:
            continue
        old_svc, new_svc = old_services.get(spn), services.get(spn)
        old_eps = {e.ip for e in categorize_endpoints(old_endpoints.get(spn, ()), old_svc).all_reachable} \
            if old_svc else set()
        new_eps = {e.ip for e in categorize_endpoints(endpoints.get(spn, ()), new_svc).all_reachable} \
            if new_svc else set()
        if old_svc:
            for ip in sorted(old_eps - new_eps):
                out += [Flow(proto, dst, port, ip) for dst, port in _targets(old_svc)]
        if new_svc and new_eps and not old_eps:
            out += [Flow(proto, dst, port) for dst, port in _targets(new_svc)]
    return out


def _matches(entry, flow: Flow) -> bool:
    o, r = entry.tuple_orig, entry.tuple_reply
    if o.proto != flow.proto or o.dport != flow.dport:
        return False
    if flow.dst is not None and o.daddr != flow.dst:
        return False
    return flow.reply_src is None or r.saddr == flow.reply_src


def clear(flows: list[Flow]) -> int:
    """Delete the conntrack entries ``flows`` describe, in this network namespace. Blocking;
    returns how many went. Errors are logged, never raised (the next change retries)."""
    if not flows:
        return 0
    try:
        from pyroute2 import Conntrack
    except ImportError:                              # pragma: no cover - pyroute2 is a dependency
        log.warning("pyroute2 is not installed: stale UDP conntrack entries stay until they time out")
        return 0
    deleted = 0
    protos = {f.proto for f in flows}
    ct = Conntrack()
    try:
        doomed = [e for e in ct.dump_entries() if e.tuple_orig.proto in protos and any(_matches(e, f) for f in flows)]
        for e in doomed:
            try:
                ct.delete(e)
                deleted += 1
            except Exception as err:  # noqa: BLE001 - the entry may have expired meanwhile
                log.debug("conntrack delete %s: %s", e, err)
    except Exception as err:  # noqa: BLE001 - best effort, as upstream
        log.warning("conntrack clean-up failed: %s", err)
    finally:
        ct.close()
    return deleted
