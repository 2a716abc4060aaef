"""The iptables proxy mode (upstream ``pkg/proxy/iptables/proxier.go``), kube-proxy's default.

Tables ``nat`` and ``filter``; every sync is ONE ``iptables-restore --noflush`` call carrying
both tables, so the kernel switches from the old rules to the new ones at once.

nat::

    PREROUTING, OUTPUT  -j KUBE-SERVICES          POSTROUTING -j KUBE-POSTROUTING
    KUBE-SERVICES       ClusterIP:port -> KUBE-SVC-<h> (KUBE-SVL-<h> under internalTrafficPolicy Local)
                        externalIP / LB IP:port -> KUBE-EXT-<h> (KUBE-FW-<h> with loadBalancerSourceRanges)
                        last: dst-type LOCAL -> KUBE-NODEPORTS
    KUBE-NODEPORTS      nodePort -> KUBE-EXT-<h>
    KUBE-EXT-<h>        Cluster policy: mark for masquerade, -> KUBE-SVC-<h>
                        Local policy: pods and the node itself -> KUBE-SVC-<h>, others -> KUBE-SVL-<h>
    KUBE-SVC-<h>        masquerade what comes from outside the cluster CIDR; ClientIP affinity
                        (``-m recent --rcheck``), then ``-m statistic --mode random`` over the endpoints
    KUBE-SVL-<h>        the same over this node's endpoints only, no masquerade
    KUBE-SEP-<h>        hairpin masquerade (source is the endpoint), ``recent --set``, DNAT
    KUBE-MARK-MASQ      mark 0x4000;  KUBE-POSTROUTING masquerades marked packets

filter: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT ports with no endpoints (DROP for a Local
policy with no local endpoint), KUBE-NODEPORTS accepts health check node ports, KUBE-FORWARD
accepts marked and established forwarded traffic, KUBE-PROXY-FIREWALL drops LB traffic that
KUBE-FW-<h> did not accept.

Chain names hash as upstream's: base32(sha256(servicePortName + protocol))[:16], and for an
endpoint chain base32(sha256(servicePortName + protocol + "ip:port"))[:16].

Partial syncs (upstream's MinimizeIPTablesRestore): the top-level chains and the filter table
are always rewritten in full, but the per-service chains only for the service ports named in
``changed``; chains no longer wanted are flushed and deleted in the same batch. The first sync
and the one after a failed restore rewrite everything, read the kernel's chains to delete
leftovers of an earlier run, and re-check the jump rules from the built-in chains. The periodic
resync (``changed is None`` after a good sync) does the same reading but rewrites only the
service ports whose rules differ from the last ones written or whose chains in the kernel are
missing or hold another number of rules: iptables-nft's ``--noflush`` restore costs time in
proportion to rules x chains, so rewriting every chain takes minutes at 5,000 services where
this check takes a second. (Upstream rewrites everything at each resync.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field

from kubeling.proxy.types import (NodeContext, ProxyModeUnavailable, ServicePort, ServicePortName, Endpoint,
                                  categorize_endpoints)

log = logging.getLogger(__name__)

MASQ_MARK = "0x4000"

# top-level chains, by table
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL")
SERVICE_CHAIN_RE = re.compile(r"^KUBE-(SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}$")

# (table, built-in chain, match args, target): upstream's iptablesJumpChains, inserted first
JUMPS = (
    ("filter", "INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
     "KUBE-PROXY-FIREWALL"),
    ("filter", "INPUT", '-m comment --comment "kubernetes health check service ports"', "KUBE-NODEPORTS"),
    ("filter", "INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"',
     "KUBE-EXTERNAL-SERVICES"),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
     "KUBE-PROXY-FIREWALL"),
    ("filter", "FORWARD", '-m comment --comment "kubernetes forwarding rules"', "KUBE-FORWARD"),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"',
     "KUBE-SERVICES"),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"',
     "KUBE-EXTERNAL-SERVICES"),
    ("filter", "OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"',
     "KUBE-PROXY-FIREWALL"),
    ("filter", "OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"',
     "KUBE-SERVICES"),
    ("nat", "OUTPUT", '-m comment --comment "kubernetes service portals"', "KUBE-SERVICES"),
    ("nat", "PREROUTING", '-m comment --comment "kubernetes service portals"', "KUBE-SERVICES"),
    ("nat", "POSTROUTING", '-m comment --comment "kubernetes postrouting rules"', "KUBE-POSTROUTING"),
)


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(spn: ServicePortName, protocol: str) -> str:
    return _hash(str(spn) + protocol.lower())


def service_chain(spn: ServicePortName, protocol: str) -> str:
    return "KUBE-SVC-" + port_proto_hash(spn, protocol)


def local_chain(spn: ServicePortName, protocol: str) -> str:
    return "KUBE-SVL-" + port_proto_hash(spn, protocol)


def external_chain(spn: ServicePortName, protocol: str) -> str:
    return "KUBE-EXT-" + port_proto_hash(spn, protocol)


def firewall_chain(spn: ServicePortName, protocol: str) -> str:
    return "KUBE-FW-" + port_proto_hash(spn, protocol)


def endpoint_chain(spn: ServicePortName, protocol: str, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash(str(spn) + protocol.lower() + endpoint)


def probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


@dataclass
class ServiceRules:
    """What one service port contributes to the ruleset."""

    nat_services: list[str] = field(default_factory=list)     # lines of nat KUBE-SERVICES
    nat_nodeports: list[str] = field(default_factory=list)    # lines of nat KUBE-NODEPORTS
    filter: dict[str, list[str]] = field(default_factory=dict)  # filter top-level chain -> lines
    chains: dict[str, list[str]] = field(default_factory=dict)  # its own nat chains -> lines
    no_local_internal: bool = False                            # for the metric
    no_local_external: bool = False


def service_rules(spn: ServicePortName, svc: ServicePort, endpoints, node: NodeContext) -> ServiceRules:
    """The rules of one service port (upstream's per-service loop of ``syncProxyRules``)."""
    out = ServiceRules()
    if not svc.cluster_ip:
        return out
    proto = svc.protocol.lower()
    name = str(spn)
    cat = categorize_endpoints(endpoints or (), svc)
    svc_chain, svl_chain = service_chain(spn, proto), local_chain(spn, proto)
    ext_chain, fw_chain = external_chain(spn, proto), firewall_chain(spn, proto)

    has_endpoints = bool(cat.all_reachable)
    uses_cluster_chain = bool(cat.cluster) and svc.uses_cluster_endpoints
    uses_local_chain = bool(cat.local) and svc.uses_local_endpoints

    internal_chain, has_internal = svc_chain, has_endpoints
    if svc.internal_policy_local:
        internal_chain = svl_chain
        has_internal = bool(cat.local)
    external_policy_chain, has_external = svc_chain, has_endpoints
    if svc.external_policy_local:
        external_policy_chain = svl_chain
        has_external = bool(cat.local)
    uses_ext_chain = has_endpoints and svc.externally_accessible
    uses_fw_chain = has_external and bool(svc.load_balancer_source_ranges) and bool(svc.load_balancer_ips)
    lb_chain = fw_chain if uses_fw_chain else ext_chain

    int_filter_target, int_filter_comment = "REJECT", f"{name} has no endpoints"
    ext_filter_target, ext_filter_comment = "REJECT", f"{name} has no endpoints"
    # endpoints elsewhere but none here, for a Local policy: DROP (upstream), not REJECT
    usable_somewhere = any(e.ready or (e.serving and e.terminating) for e in endpoints or ())
    if usable_somewhere and svc.internal_policy_local and not has_internal:
        int_filter_target, int_filter_comment = "DROP", f"{name} has no local endpoints"
        out.no_local_internal = True
    if usable_somewhere and svc.external_policy_local and not has_external:
        ext_filter_target, ext_filter_comment = "DROP", f"{name} has no local endpoints"
        out.no_local_external = True

    m = f"-m {proto} -p {proto}"
    filt: dict[str, list[str]] = {}

    def f(chain: str, line: str) -> None:
        filt.setdefault(chain, []).append(f"-A {chain} {line}")

    # the cluster IP
    if has_internal:
        out.nat_services.append(f"-A KUBE-SERVICES {_comment(name + ' cluster IP')} {m} -d {svc.cluster_ip}/32 "
                                f"--dport {svc.port} -j {internal_chain}")
    else:
        f("KUBE-SERVICES", f"{_comment(int_filter_comment)} {m} -d {svc.cluster_ip}/32 --dport {svc.port} "
                           f"-j {int_filter_target}")

    # external IPs
    for ip in svc.external_ips:
        if has_external:
            out.nat_services.append(f"-A KUBE-SERVICES {_comment(name + ' external IP')} {m} -d {ip}/32 "
                                    f"--dport {svc.port} -j {ext_chain}")
        else:
            f("KUBE-EXTERNAL-SERVICES", f"{_comment(ext_filter_comment)} {m} -d {ip}/32 --dport {svc.port} "
                                        f"-j {ext_filter_target}")

    # load balancer ingress IPs
    for ip in svc.load_balancer_ips:
        if has_external:
            out.nat_services.append(f"-A KUBE-SERVICES {_comment(name + ' loadbalancer IP')} {m} -d {ip}/32 "
                                    f"--dport {svc.port} -j {lb_chain}")
        if uses_fw_chain:
            f("KUBE-PROXY-FIREWALL", f"{_comment(f'{name} traffic not accepted by {fw_chain}')} {m} -d {ip}/32 "
                                     f"--dport {svc.port} -j DROP")
    if not has_external:
        for ip in svc.load_balancer_ips:
            f("KUBE-EXTERNAL-SERVICES", f"{_comment(ext_filter_comment)} {m} -d {ip}/32 --dport {svc.port} "
                                        f"-j {ext_filter_target}")

    # the node port
    if svc.node_port:
        if has_external:
            out.nat_nodeports.append(f"-A KUBE-NODEPORTS {_comment(name)} {m} --dport {svc.node_port} -j {ext_chain}")
        else:
            f("KUBE-EXTERNAL-SERVICES", f"{_comment(ext_filter_comment)} -m addrtype --dst-type LOCAL {m} "
                                        f"--dport {svc.node_port} -j {ext_filter_target}")

    if svc.health_check_node_port:
        f("KUBE-NODEPORTS", f"{_comment(name + ' health check node port')} -m tcp -p tcp "
                            f"--dport {svc.health_check_node_port} -j ACCEPT")
    out.filter = filt

    chains = out.chains
    # KUBE-SVC: the cluster policy chain
    if uses_cluster_chain:
        rules = chains.setdefault(svc_chain, [])
        if node.masquerade_all:
            rules.append(f"-A {svc_chain} {_comment(name + ' cluster IP')} {m} -d {svc.cluster_ip}/32 "
                         f"--dport {svc.port} -j KUBE-MARK-MASQ")
        elif node.cluster_cidr:
            rules.append(f"-A {svc_chain} {_comment(name + ' cluster IP')} {m} -d {svc.cluster_ip}/32 "
                         f"--dport {svc.port} ! -s {node.cluster_cidr} -j KUBE-MARK-MASQ")
        _balance(rules, svc_chain, spn, svc, cat.cluster)

    # KUBE-EXT: external traffic
    if uses_ext_chain:
        rules = chains.setdefault(ext_chain, [])
        if not svc.external_policy_local:
            rules.append(f"-A {ext_chain} {_comment(f'masquerade traffic for {name} external destinations')} "
                         f"-j KUBE-MARK-MASQ")
        else:
            pod_chain = svc_chain if uses_cluster_chain else (svl_chain if uses_local_chain else "")
            if pod_chain and node.cluster_cidr:
                rules.append(f"-A {ext_chain} {_comment(f'pod traffic for {name} external destinations')} "
                             f"-s {node.cluster_cidr} -j {pod_chain}")
            rules.append(f"-A {ext_chain} {_comment(f'masquerade LOCAL traffic for {name} external destinations')} "
                         f"-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
            if uses_cluster_chain:
                rules.append(f"-A {ext_chain} {_comment(f'route LOCAL traffic for {name} external destinations')} "
                             f"-m addrtype --src-type LOCAL -j {svc_chain}")
        if has_external:
            rules.append(f"-A {ext_chain} -j {external_policy_chain}")

    # KUBE-FW: loadBalancerSourceRanges
    if uses_fw_chain:
        rules = chains.setdefault(fw_chain, [])
        for src in svc.load_balancer_source_ranges:
            rules.append(f"-A {fw_chain} {_comment(name + ' loadbalancer IP')} -s {src} -j {ext_chain}")
        rules.append(f"-A {fw_chain} {_comment(f'other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL')}")

    # KUBE-SVL: the local policy chain
    if uses_local_chain:
        rules = chains.setdefault(svl_chain, [])
        _balance(rules, svl_chain, spn, svc, cat.local)

    # KUBE-SEP: one per endpoint
    for ep in cat.all_reachable:
        sep = endpoint_chain(spn, proto, str(ep))
        rules = chains.setdefault(sep, [])
        rules.append(f"-A {sep} {_comment(name)} -s {ep.ip}/32 -j KUBE-MARK-MASQ")
        recent = f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource " if svc.affinity else ""
        rules.append(f"-A {sep} {_comment(name)} {recent}{m} -j DNAT --to-destination {ep}")
    return out


def _balance(rules: list[str], chain: str, spn: ServicePortName, svc: ServicePort, endpoints: list[Endpoint]) -> None:
    """Upstream's writeServiceToEndpointRules: affinity checks first, then random balancing."""
    proto = svc.protocol.lower()
    name = str(spn)
    if svc.affinity:
        for ep in endpoints:
            sep = endpoint_chain(spn, proto, str(ep))
            rules.append(f"-A {chain} {_comment(f'{name} -> {ep}')} -m recent --rcheck --seconds "
                         f"{svc.sticky_max_age_seconds} --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}")
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        sep = endpoint_chain(spn, proto, str(ep))
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f"-A {chain} {_comment(f'{name} -> {ep}')}{stat} -j {sep}")


def skeleton_nat(node: NodeContext) -> dict[str, list[str]]:
    """The top-level nat rules that exist with no service at all."""
    nodeports = []
    if node.nodeport_addresses:
        for cidr in node.nodeport_addresses:
            nodeports.append(f"-A KUBE-SERVICES {_comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} "
                             f"-d {cidr} -j KUBE-NODEPORTS")
    else:
        nodeports.append(f"-A KUBE-SERVICES {_comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} "
                         f"-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
    return {
        "KUBE-SERVICES": nodeports,
        "KUBE-POSTROUTING": [
            f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
            f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
            f"-A KUBE-POSTROUTING {_comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
        ],
        "KUBE-MARK-MASQ": [f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"],
    }


def skeleton_filter() -> dict[str, list[str]]:
    return {"KUBE-FORWARD": [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f"-A KUBE-FORWARD {_comment('kubernetes forwarding rules')} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        f"-A KUBE-FORWARD {_comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED "
        f"-j ACCEPT",
    ]}


# -- the kernel side ------------------------------------------------------------------------------

async def _exec(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def parse_save(text: str) -> dict[str, dict[str, list[str]]]:
    """``iptables-save`` output -> {table: {chain: [rule lines]}} (every declared chain present)."""
    tables: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = tables.setdefault(line[1:].strip(), {})
        elif cur is None or not line or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            cur.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain = line.split()[1]
            cur.setdefault(chain, []).append(line)
    return tables


def _owned(chain: str, table: str) -> bool:
    return bool(SERVICE_CHAIN_RE.match(chain)) or chain in (NAT_CHAINS if table == "nat" else FILTER_CHAINS)


class IPTablesError(RuntimeError):
    pass


class Proxier:
    """The iptables mode (see the module docstring)."""

    mode = "iptables"

    def __init__(self, node: NodeContext, *, iptables: str = "iptables") -> None:
        self.node = node
        self.iptables = iptables
        self.save_cmd = iptables + "-save"
        self.restore_cmd = iptables + "-restore"
        self._rules: dict[ServicePortName, ServiceRules] = {}
        self._live_chains: set[str] = set()      # service chains in the kernel after the last good sync
        self._synced_once = False
        self._written_nat_top: list[str] = []
        self._written_filter: list[str] = []
        self._pending_top: tuple[list[str], list[str]] = ([], [])
        self.last_rule_counts: dict[str, int] = {"nat": 0, "filter": 0}
        self.last_sync_partial = False
        self.last_sync_kind = ""
        self.last_rewritten = 0
        self.restore_failures = 0
        self.partial_restore_failures = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        for cmd in (self.restore_cmd, self.save_cmd, self.iptables):
            if shutil.which(cmd) is None:
                raise ProxyModeUnavailable(f"{cmd} is not installed (Debian package iptables); "
                                           f"install it or use --proxy-mode=nftables")
        for table in ("nat", "filter"):
            rc, _, err = await _exec(self.iptables, "-w", "5", "-t", table, "-S")
            if rc != 0:
                raise ProxyModeUnavailable(f"iptables cannot read the {table} table here ({err.strip()}); "
                                           f"use --proxy-mode=nftables")
        try:
            v = open("/proc/sys/net/bridge/bridge-nf-call-iptables").read().strip()
            if v != "1":
                log.warning("net.bridge.bridge-nf-call-iptables is %s: traffic between pods on one bridge "
                            "will bypass service rules", v)
        except OSError:
            log.warning("br_netfilter is not loaded: pods on one bridge will not reach services hosted beside them")

    async def sync(self, services, endpoints, changed: set[ServicePortName] | None = None) -> None:
        if not self._synced_once:
            kind = "full"
        elif changed is None:
            kind = "verify"
        else:
            kind = "partial"
        existing: dict[str, dict[str, list[str]]] | None = None
        rewrite: set[ServicePortName] | None = None
        if kind == "full":
            self._rules = {spn: service_rules(spn, svc, endpoints.get(spn, ()), self.node)
                           for spn, svc in services.items()}
            existing = await self._save()
        elif kind == "verify":
            # the periodic resync: recompute every service port, read the kernel's chains, and
            # rewrite the ports whose rules changed or whose chains are missing or altered (by
            # rule count); iptables-nft's --noflush restore costs time in proportion to rules x
            # chains, so rewriting 20,000 unchanged chains would take minutes at 5,000 services
            fresh = {spn: service_rules(spn, svc, endpoints.get(spn, ()), self.node) for spn, svc in services.items()}
            existing = await self._save()
            nat = existing.get("nat", {})
            rewrite = set()
            for spn, r in fresh.items():
                if self._rules.get(spn) != r or any(len(nat.get(c) or ()) != len(lines) or c not in nat
                                                    for c, lines in r.chains.items()):
                    rewrite.add(spn)
            self._rules = fresh
        else:
            rewrite = {s for s in changed if s in services} | {s for s in services if s not in self._rules}
            for spn in rewrite:
                self._rules[spn] = service_rules(spn, services[spn], endpoints.get(spn, ()), self.node)
            # a port that vanished (named in `changed` or not)
            for spn in [s for s in self._rules if s not in services]:
                del self._rules[spn]
        text, chains = self._render(rewrite=rewrite, existing=existing)
        try:
            await self._restore(text)
        except IPTablesError:
            self.restore_failures += 1
            if kind == "partial":
                self.partial_restore_failures += 1
            self._synced_once = False          # the next sync must be a full one
            raise
        self._live_chains = chains
        self._written_nat_top, self._written_filter = self._pending_top
        self._synced_once = True
        self.last_sync_kind = kind
        self.last_sync_partial = kind != "full"
        self.last_rewritten = len(self._rules) if rewrite is None else len(rewrite)

    def _render(self, *, rewrite: set[ServicePortName] | None,
                existing: dict[str, dict[str, list[str]]] | None) -> tuple[str, set[str]]:
        """The restore input; ``rewrite`` None means every service chain. The top-level chains
        (and the filter table) are left out of a partial sync when their rules are the ones
        written last (an endpoint change touches only its service's chains)."""
        node = self.node
        nat_skel, filter_skel = skeleton_nat(node), skeleton_filter()
        ordered = sorted(self._rules)
        wanted_chains: set[str] = set()
        for r in self._rules.values():
            wanted_chains.update(r.chains)

        nat_top = nat_skel["KUBE-POSTROUTING"] + nat_skel["KUBE-MARK-MASQ"]
        for spn in ordered:
            nat_top += self._rules[spn].nat_services
        nat_top += nat_skel["KUBE-SERVICES"]
        for spn in ordered:
            nat_top += self._rules[spn].nat_nodeports
        filt_top = list(filter_skel["KUBE-FORWARD"])
        for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
            for spn in ordered:
                filt_top += self._rules[spn].filter.get(chain, ())
        everything = existing is not None or rewrite is None
        write_nat_top = everything or nat_top != self._written_nat_top
        write_filter = everything or filt_top != self._written_filter
        self._pending_top = (nat_top, filt_top)

        declared: list[str] = []
        chain_lines: list[str] = []
        for spn in ordered:
            if rewrite is None or spn in rewrite:
                r = self._rules[spn]
                declared.extend(r.chains)
                for lines in r.chains.values():
                    chain_lines += lines
        stale = set(self._live_chains) - wanted_chains
        if existing is not None:
            stale |= {c for c in existing.get("nat", {}) if SERVICE_CHAIN_RE.match(c)} - wanted_chains

        nat: list[str] = ["*nat"]
        if write_nat_top:
            nat += [f":{c} - [0:0]" for c in NAT_CHAINS]
        nat += [f":{c} - [0:0]" for c in declared]
        nat += [f":{c} - [0:0]" for c in sorted(stale)]
        if write_nat_top:
            nat += nat_top
        nat += chain_lines
        nat += [f"-X {c}" for c in sorted(stale)]

        filt: list[str] = ["*filter"]
        if write_filter:
            filt += [f":{c} - [0:0]" for c in FILTER_CHAINS]
            filt += filt_top

        if existing is not None:
            # the jump rules from the built-in chains, inserted where missing
            for table, builtin, match, target in reversed(JUMPS):   # each is inserted first
                have = existing.get(table, {}).get(builtin, [])
                if not any(line.split(" -j ")[-1].split()[0] == target for line in have if " -j " in line):
                    (nat if table == "nat" else filt).append(f"-I {builtin} 1 {match} -j {target}")

        self.last_rule_counts = {
            "nat": len(nat_top) + sum(len(lines) for r in self._rules.values() for lines in r.chains.values()),
            "filter": len(filt_top)}
        out = (filt + ["COMMIT"] if len(filt) > 1 else []) + nat + ["COMMIT", ""]
        return "\n".join(out), wanted_chains

    async def _save(self) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for table in ("nat", "filter"):
            rc, text, err = await _exec(self.save_cmd, "-t", table)
            if rc != 0:
                raise IPTablesError(f"{self.save_cmd} -t {table}: {err.strip()}")
            out.update(parse_save(text))
            out.setdefault(table, {})
        return out

    async def _restore(self, text: str) -> None:
        rc, _, err = await _exec(self.restore_cmd, "-w", "5", "--noflush", stdin=text)
        if rc != 0:
            log.debug("iptables-restore input:\n%s", text)
            raise IPTablesError(f"{self.restore_cmd} failed: {err.strip()}")

    async def cleanup(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, cleanup)
        self._rules.clear()
        self._live_chains.clear()
        self._synced_once = False

    async def count_leaks(self) -> dict[str, int]:
        tables = await self._save()
        return count_leaks_in(tables, self.node)


def count_leaks_in(tables: dict[str, dict[str, list[str]]], node: NodeContext) -> dict[str, int]:
    """Service chains, and rules beyond the no-service skeleton, in the saved tables."""
    skel = {"nat": {k: len(v) for k, v in skeleton_nat(node).items()},
            "filter": {k: len(v) for k, v in skeleton_filter().items()}}
    chains = rules = 0
    for table in ("nat", "filter"):
        for chain, lines in tables.get(table, {}).items():
            if SERVICE_CHAIN_RE.match(chain):
                chains += 1
                rules += len(lines)
            elif _owned(chain, table):
                rules += max(0, len(lines) - skel[table].get(chain, 0))
    return {"chains": chains, "rules": rules}


def cleanup(iptables: str = "iptables") -> dict[str, int]:
    """Remove every rule and chain the iptables mode made in this network namespace (upstream's
    ``CleanupLeftovers``): the jumps from the built-in chains, then our chains. Blocking,
    idempotent; returns what it removed ({"chains": n, "jumps": n})."""
    import subprocess
    if shutil.which(iptables + "-restore") is None:
        return {"chains": 0, "jumps": 0}
    tables: dict[str, dict[str, list[str]]] = {}
    for table in ("nat", "filter"):
        res = subprocess.run([iptables + "-save", "-t", table], capture_output=True, text=True)
        if res.returncode == 0:
            tables.update(parse_save(res.stdout))
    text: list[str] = []
    removed = {"chains": 0, "jumps": 0}
    for table in ("nat", "filter"):
        chains = tables.get(table, {})
        ours = sorted(c for c in chains if _owned(c, table))
        if not ours:
            continue
        text.append(f"*{table}")
        text += [f":{c} - [0:0]" for c in ours]
        for builtin in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"):
            for line in chains.get(builtin, []):
                target = line.split(" -j ")[-1].split()[0] if " -j " in line else ""
                if target in ours:
                    text.append("-D " + line[3:])
                    removed["jumps"] += 1
        # rules in chains we do not own that jump to ours (another tool's chain) stop the delete: drop them too
        for chain, lines in chains.items():
            if chain in ours or chain in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"):
                continue
            for line in lines:
                target = line.split(" -j ")[-1].split()[0] if " -j " in line else ""
                if target in ours:
                    text.append("-D " + line[3:])
        text += [f"-X {c}" for c in ours]
        text.append("COMMIT")
        removed["chains"] += len(ours)
    if text:
        res = subprocess.run([iptables + "-restore", "-w", "5", "--noflush"], input="\n".join(text) + "\n",
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise IPTablesError(f"{iptables}-restore (cleanup) failed: {res.stderr.strip()}")
    return removed
