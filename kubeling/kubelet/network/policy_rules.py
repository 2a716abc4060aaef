"""What NetworkPolicies allow for this node's pods, and the nftables ruleset that enforces it.

Two pure steps, so that both can be tested without a kernel:

1. `compute_rules(node_name, pods, namespaces, policies)` → `NodeRules`: for every pod on this
   node that some policy isolates, the OR-ed list of `Allow`s (peer addresses × ports), per
   direction. ``networking.k8s.io/v1`` semantics:

   - a policy selects the pods of its namespace matching ``spec.podSelector`` (``{}``: all);
   - ``policyTypes`` (the API server defaults it: Ingress always, Egress when egress rules exist;
     defaulted here too for objects that were not). A pod selected by no policy of a type is not
     isolated for that type; a selected pod gets only what some rule of some policy allows;
   - peers: ``podSelector`` (pods of the policy's namespace), ``namespaceSelector`` (every pod of
     the matching namespaces), both (matching pods in matching namespaces), ``ipBlock`` with
     ``except``; an empty or missing ``from``/``to`` means every address;
   - ports: protocol (TCP default, UDP, SCTP), a number, a number with ``endPort``, or a name.
     Ingress names resolve against the destination (the selected pod's ``containerPort``s); egress
     names against each destination pod (so ``to`` peers that are ipBlocks never match a named
     port, and with no ``to`` every pod of the cluster is a candidate). A name no container has
     matches nothing. An empty or missing ``ports`` means every port and protocol;
   - pods count as peers when they have an IPv4 pod IP, are not hostNetwork (their address is
     their node's) and are not finished (Succeeded/Failed: their IP may be reused).

   Problems in an object (a bad selector, a bad CIDR) become `Problem`s; the policy or the peer
   is skipped (a bad peer matches nothing), never the whole computation.

2. `render_nft(rules)` → the text of one ``nft -f`` transaction that replaces our table
   atomically (see `kubeling.kubelet.network.policy` for the layout and the reasons).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from kubeling.api.labels import EVERYTHING, Selector, SelectorError, from_label_selector

TABLE = "kubeling-netpol"
FAMILY = "ip"
INGRESS_MAP, EGRESS_MAP = "ingress-pods", "egress-pods"
INGRESS_CHAIN, EGRESS_CHAIN = "ingress", "egress"
# before iptables' filter FORWARD (priority 0), where kube-proxy and others keep their chains
EGRESS_PRIORITY, INGRESS_PRIORITY = "filter - 10", "filter - 9"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
FINISHED = ("Succeeded", "Failed")


class Peer(NamedTuple):
    """An address block (a pod is a /32) minus ``excepts``. (Tuples: thousands are sorted and hashed.)"""

    cidr: str
    excepts: tuple[str, ...] = ()


class PortMatch(NamedTuple):
    """One protocol, and a port or an inclusive port range (``port`` None: every port)."""

    protocol: str                 # tcp, udp, sctp
    port: int | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Allow:
    """Traffic from/to ``peers`` (None: any address) on ``ports`` (None: any), allowed by ``policy``."""

    policy: str                               # namespace/name
    peers: tuple[Peer, ...] | None = None
    ports: tuple[PortMatch, ...] | None = None


@dataclass
class PodFirewall:
    """One isolated pod in one direction: what its policies allow (empty: nothing)."""

    namespace: str
    name: str
    ip: str
    policies: list[str] = field(default_factory=list)
    allows: list[Allow] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Problem:
    """Something in a policy that cannot be enforced as written (reported as an Event)."""

    policy: dict
    reason: str
    message: str


@dataclass
class NodeRules:
    ingress: dict[str, PodFirewall] = field(default_factory=dict)     # by pod IP
    egress: dict[str, PodFirewall] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.ingress and not self.egress


# -- pods --------------------------------------------------------------------------------------------

def pod_ips(pod: dict) -> list[str]:
    """The pod's IPv4 addresses, if it takes part in NetworkPolicy at all (see the module docstring)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in FINISHED:
        return []
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)] or [status.get("podIP")]
    out = []
    for ip in ips:
        try:
            if ip and ipaddress.ip_address(ip).version == 4:
                out.append(ip)
        except ValueError:
            continue
    return out


def _named_ports(pod: dict) -> dict[tuple[str, str], int]:
    """(name, protocol) -> containerPort, for every container (sidecars among the init containers too)."""
    spec = pod.get("spec") or {}
    out: dict[tuple[str, str], int] = {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            if p.get("name") and isinstance(p.get("containerPort"), int):
                out.setdefault((p["name"], (p.get("protocol") or "TCP").upper()), p["containerPort"])
    return out


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _key(obj: dict) -> str:
    m = _meta(obj)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


# -- computing ---------------------------------------------------------------------------------------

class _Cluster:
    """Indexes of the pods and namespaces, for selector evaluation."""

    def __init__(self, pods: Iterable[dict], namespaces: Iterable[dict]) -> None:
        self.pods_by_ns: dict[str, list[tuple[dict, list[str]]]] = {}
        for p in pods:
            ips = pod_ips(p)
            if ips:
                self.pods_by_ns.setdefault(_meta(p).get("namespace", ""), []).append((p, ips))
        self.ns_labels: dict[str, dict] = {}
        self._ports: dict[int, dict] = {}
        for ns in namespaces:
            name = _meta(ns).get("name", "")
            self.ns_labels[name] = {**(_meta(ns).get("labels") or {}), NAMESPACE_NAME_LABEL: name}

    def named_ports(self, pod: dict) -> dict[tuple[str, str], int]:
        got = self._ports.get(id(pod))
        if got is None:
            got = self._ports[id(pod)] = _named_ports(pod)
        return got

    def namespaces(self, sel: Selector) -> list[str]:
        names = set(self.ns_labels) | set(self.pods_by_ns)
        return sorted(n for n in names if sel.matches(self.ns_labels.get(n, {NAMESPACE_NAME_LABEL: n})))

    def pods(self, namespaces: Iterable[str], sel: Selector) -> list[tuple[dict, list[str]]]:
        return [(p, ips) for ns in namespaces for p, ips in self.pods_by_ns.get(ns, [])
                if sel.matches(_meta(p).get("labels"))]

    def all_pods(self) -> list[tuple[dict, list[str]]]:
        return [pi for ns in sorted(self.pods_by_ns) for pi in self.pods_by_ns[ns]]


def policy_types(spec: dict) -> set[str]:
    """``spec.policyTypes``, or upstream's default when unset."""
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", *(["Egress"] if spec.get("egress") else [])}


class _PolicyEval:
    """One policy's rules turned into `Allow`s (peers and ports resolved against the cluster)."""

    def __init__(self, policy: dict, cluster: _Cluster, problems: list[Problem]) -> None:
        self.policy, self.cluster, self.problems = policy, cluster, problems
        self.name = _key(policy)
        self.namespace = _meta(policy).get("namespace", "")
        self._from: dict[int, tuple[Peer, ...]] = {}

    def problem(self, reason: str, message: str) -> None:
        self.problems.append(Problem(self.policy, reason, message))

    def _selector(self, ls, what: str) -> Selector | None:
        try:
            return from_label_selector(ls) if ls is not None else EVERYTHING
        except SelectorError as e:
            self.problem("InvalidSelector", f"{what}: {e}; it matches nothing")
            return None

    def peers(self, raw: list, what: str) -> tuple[list[Peer], list[tuple[dict, list[str]]]]:
        """Addresses of ``raw`` peers (pods as /32s, ipBlocks), and the peer pods themselves."""
        addrs: list[Peer] = []
        pods: list[tuple[dict, list[str]]] = []
        for i, peer in enumerate(raw):
            where = f"{what}[{i}]"
            if not isinstance(peer, dict):
                self.problem("InvalidPeer", f"{where}: not an object; it matches nothing")
                continue
            block = peer.get("ipBlock")
            if block is not None:
                p = self._ip_block(block, where)
                if p is not None:
                    addrs.append(p)
                continue
            if "podSelector" not in peer and "namespaceSelector" not in peer:
                self.problem("InvalidPeer", f"{where}: no podSelector, namespaceSelector or ipBlock; "
                             "it matches nothing")
                continue
            pod_sel = self._selector(peer.get("podSelector"), f"{where}.podSelector")
            if "namespaceSelector" in peer:
                ns_sel = self._selector(peer.get("namespaceSelector"), f"{where}.namespaceSelector")
                namespaces = self.cluster.namespaces(ns_sel) if ns_sel is not None else []
            else:
                namespaces = [self.namespace]
            if pod_sel is None:
                continue
            found = self.cluster.pods(namespaces, pod_sel)
            pods += found
            addrs += [Peer(f"{ip}/32") for _, ips in found for ip in ips]
        return addrs, pods

    def _ip_block(self, block: dict, where: str) -> Peer | None:
        try:
            net = ipaddress.ip_network(str(block.get("cidr", "")), strict=False)
            excepts = [ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or []]
        except ValueError as e:
            self.problem("InvalidIPBlock", f"{where}.ipBlock: {e}; it matches nothing")
            return None
        if net.version != 4:
            return None        # an IPv6 block never matches this IPv4 pod network
        return Peer(str(net), tuple(str(e) for e in excepts if e.version == 4 and e.subnet_of(net)))

    def ports(self, raw: list, what: str) -> tuple[list[PortMatch], list[tuple[str, str]]]:
        """Numeric port matches, and the (name, PROTOCOL) of named ones (resolved by the caller)."""
        numeric: list[PortMatch] = []
        named: list[tuple[str, str]] = []
        for i, p in enumerate(raw):
            where = f"{what}[{i}]"
            proto = str((p or {}).get("protocol") or "TCP").upper()
            if proto not in PROTOCOLS:
                self.problem("UnsupportedProtocol", f"{where}: protocol {proto!r}; it matches nothing")
                continue
            port = (p or {}).get("port")
            if port is None:
                numeric.append(PortMatch(PROTOCOLS[proto]))
            elif isinstance(port, int) and not isinstance(port, bool):
                end = p.get("endPort")
                if isinstance(end, int) and end > port:
                    numeric.append(PortMatch(PROTOCOLS[proto], port, end))
                else:
                    numeric.append(PortMatch(PROTOCOLS[proto], port))
            elif isinstance(port, str) and port.isdigit():
                numeric.append(PortMatch(PROTOCOLS[proto], int(port)))
            elif isinstance(port, str) and port:
                named.append((port, proto))
            else:
                self.problem("InvalidPort", f"{where}: port {port!r}; it matches nothing")
        return numeric, named

    def ingress_allows(self, target: dict) -> list[Allow]:
        out = []
        for i, rule in enumerate((self.policy.get("spec") or {}).get("ingress") or []):
            rule = rule or {}
            peers = None
            if rule.get("from"):
                if i not in self._from:       # the same for every selected pod: computed once
                    self._from[i] = tuple(sorted(set(self.peers(rule["from"], f"spec.ingress[{i}].from")[0])))
                peers = self._from[i]
                if not peers:
                    continue
            ports = None
            if rule.get("ports"):
                numeric, named = self.ports(rule["ports"], f"spec.ingress[{i}].ports")
                have = _named_ports(target)
                numeric += [PortMatch(PROTOCOLS[proto], have[(n, proto)]) for n, proto in named if (n, proto) in have]
                if not numeric:
                    continue
                ports = tuple(sorted(set(numeric), key=_port_order))
            out.append(Allow(self.name, peers, ports))
        return out

    def egress_allows(self) -> list[Allow]:
        out = []
        for i, rule in enumerate((self.policy.get("spec") or {}).get("egress") or []):
            rule = rule or {}
            peers, peer_pods = None, None
            if rule.get("to"):
                addrs, peer_pods = self.peers(rule["to"], f"spec.egress[{i}].to")
                if not addrs:
                    continue
                peers = tuple(sorted(set(addrs)))
            if not rule.get("ports"):
                out.append(Allow(self.name, peers, None))
                continue
            numeric, named = self.ports(rule["ports"], f"spec.egress[{i}].ports")
            if numeric:
                out.append(Allow(self.name, peers, tuple(sorted(set(numeric), key=_port_order))))
            if named:
                candidates = self.cluster.all_pods() if peer_pods is None else peer_pods
                by_port: dict[PortMatch, set[Peer]] = {}
                for pod, ips in candidates:
                    have = self.cluster.named_ports(pod)
                    for n, proto in named:
                        if (n, proto) in have:
                            by_port.setdefault(PortMatch(PROTOCOLS[proto], have[(n, proto)]), set()).update(
                                Peer(f"{ip}/32") for ip in ips)
                for pm in sorted(by_port, key=_port_order):
                    out.append(Allow(self.name, tuple(sorted(by_port[pm])), (pm,)))
        return out


def _port_order(p: PortMatch) -> tuple:
    return (p.protocol, p.port or 0, p.end_port or 0)


def compute_rules(node_name: str, pods: Iterable[dict], namespaces: Iterable[dict],
                  policies: Iterable[dict]) -> NodeRules:
    """The rules for the pods of ``node_name`` (see the module docstring)."""
    pods = list(pods)
    cluster = _Cluster(pods, namespaces)
    out = NodeRules()
    by_ip: dict[str, dict] = {}
    for p in pods:
        if (p.get("spec") or {}).get("nodeName") == node_name:
            for ip in pod_ips(p):
                # two pods with one IP: a leaving pod yields it to the one that replaced it
                if ip not in by_ip or _meta(by_ip[ip]).get("deletionTimestamp"):
                    by_ip[ip] = p
    local: dict[str, list[tuple[dict, list[str]]]] = {}
    owners: dict[int, tuple[dict, list[str]]] = {}
    for ip, p in by_ip.items():
        owners.setdefault(id(p), (p, []))[1].append(ip)
    for p, ips in owners.values():
        local.setdefault(_meta(p).get("namespace", ""), []).append((p, sorted(ips)))
    for policy in sorted(policies, key=_key):
        ns = _meta(policy).get("namespace", "")
        if ns not in local:
            continue
        spec = policy.get("spec") or {}
        ev = _PolicyEval(policy, cluster, out.problems)
        sel = ev._selector(spec.get("podSelector") or {}, "spec.podSelector")
        if sel is None:
            continue
        selected = [(p, ips) for p, ips in local[ns] if sel.matches(_meta(p).get("labels"))]
        if not selected:
            continue
        types = policy_types(spec)
        egress = ev.egress_allows() if "Egress" in types else []
        for pod, ips in selected:
            ingress = ev.ingress_allows(pod) if "Ingress" in types else []
            for ip in ips:
                for direction, allows, wanted in ((out.ingress, ingress, "Ingress"), (out.egress, egress, "Egress")):
                    if wanted not in types:
                        continue
                    fw = _firewall(direction, pod, ip)
                    fw.policies.append(ev.name)
                    fw.allows += allows
    return out


def _firewall(direction: dict[str, PodFirewall], pod: dict, ip: str) -> PodFirewall:
    if ip not in direction:
        m = _meta(pod)
        direction[ip] = PodFirewall(m.get("namespace", ""), m.get("name", ""), ip)
    return direction[ip]


# -- rendering ---------------------------------------------------------------------------------------

def chain_name(direction: str, fw: PodFirewall) -> str:
    digest = hashlib.sha256(f"{fw.key}/{fw.ip}".encode()).hexdigest()[:16]
    return f"pod-{direction}-{digest}"


def _quote(text: str, limit: int = 127) -> str:
    text = text.replace('"', "'").replace("\\", "/")
    return '"' + text.encode()[:limit].decode(errors="ignore") + '"'


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


INLINE_ADDRESSES = 8          # more addresses than this go into a named set, shared by every rule using them


class _Renderer:
    """Rules as nft text, with everything shared that can be: one named set per distinct address
    list, one ``allow-<hash>`` chain per distinct list of `Allow`s (pods selected by the same
    policies share it), each computed once."""

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict
        self.sets: dict[str, list[str]] = {}
        self.chains: dict[str, list[str]] = {}
        self._addrs: dict[tuple, list[str]] = {}
        self._ports: dict[tuple, list[str]] = {}
        self._allow_chains: dict[tuple, str] = {}
        self._keep: list = []

    def addr_matches(self, peers: tuple[Peer, ...] | None, field_: str) -> list[str]:
        if peers is None:
            return [""]
        key = (id(peers), field_)          # peers tuples are shared by the rules that use them
        if key not in self._addrs:
            self._addrs[key] = (peers, self._addr_matches(peers, field_))
        return self._addrs[key][1]

    def _addr_matches(self, peers: tuple[Peer, ...], field_: str) -> list[str]:
        plain = [p.cidr for p in peers if not p.excepts]
        out = []
        if plain and all(c.endswith("/32") for c in plain):      # pods only: nothing can overlap
            merged = sorted({c[:-3] for c in plain}, key=lambda a: socket.inet_aton(a))
        elif plain:
            merged = [str(n) if n.prefixlen < 32 else str(n.network_address)
                      for n in ipaddress.collapse_addresses(ipaddress.ip_network(c) for c in plain)]
        if plain:
            if len(merged) == 1:
                out.append(f"ip {field_} {merged[0]}")
            elif len(merged) <= INLINE_ADDRESSES:
                out.append(f"ip {field_} {{ {', '.join(merged)} }}")
            else:
                name = f"addrs-{_digest(','.join(merged))}"
                self.sets[name] = merged
                out.append(f"ip {field_} @{name}")
        for p in peers:
            if p.excepts:
                ex = [str(n) for n in ipaddress.collapse_addresses(ipaddress.ip_network(e) for e in p.excepts)]
                out.append(f"ip {field_} {p.cidr} ip {field_} != {{ {', '.join(ex)} }}")
        return out

    def port_matches(self, ports: tuple[PortMatch, ...] | None) -> list[str]:
        if ports is None:
            return [""]
        if ports not in self._ports:
            self._ports[ports] = _port_matches(ports)
        return self._ports[ports]

    def allow_chain(self, direction: str, allows: list[Allow]) -> str:
        """The chain that accepts what ``allows`` allow and refuses the rest (shared)."""
        key = (direction, tuple((a.policy, id(a.peers), a.ports) for a in allows))
        name = self._allow_chains.get(key)
        if name is not None:
            return name
        peer_field = "saddr" if direction == "ingress" else "daddr"
        lines, seen = [], set()
        for allow in allows:
            for a in self.addr_matches(allow.peers, peer_field):
                for p in self.port_matches(allow.ports):
                    rule = " ".join(x for x in (a, p) if x)
                    if (rule, allow.policy) in seen:
                        continue
                    seen.add((rule, allow.policy))
                    lines.append(f"    {rule + ' ' if rule else ''}accept comment {_quote(allow.policy)}")
        lines.append(f"    {self.verdict}")
        name = f"allow-{direction}-{_digest(chr(10).join(lines))}"
        self._allow_chains[key] = name
        self._keep.append(allows)         # the ids in the key stay valid while we render
        self.chains.setdefault(name, lines)
        return name

    def pod_chain(self, direction: str, fw: PodFirewall) -> list[str]:
        peer_field = "saddr" if direction == "ingress" else "daddr"
        return [f"  chain {chain_name(direction, fw)} {{",
                f"    comment {_quote(fw.key + ' ' + fw.ip + ': ' + ', '.join(fw.policies))}",
                # a pod cannot block its own traffic (hairpin through a Service)
                f"    ip {peer_field} {fw.ip} accept",
                f"    goto {self.allow_chain(direction, fw.allows)}", "  }"]


def _port_matches(ports: tuple[PortMatch, ...] | None) -> list[str]:
    if ports is None:
        return [""]
    out = []
    for proto in sorted({p.protocol for p in ports}):
        mine = [p for p in ports if p.protocol == proto]
        if any(p.port is None for p in mine):
            out.append(f"meta l4proto {proto}")
            continue
        ranges = sorted((p.port, p.end_port or p.port) for p in mine)
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged]
        out.append(f"{proto} dport {items[0]}" if len(items) == 1 else f"{proto} dport {{ {', '.join(items)} }}")
    return out


def render_nft(rules: NodeRules, *, verdict: str = "reject with icmp type admin-prohibited",
               node_name: str = "") -> str:
    """One transaction replacing our table by ``rules`` (``add``+``delete`` first, so that it works
    whether or not the table exists, and nothing is ever half applied)."""
    r = _Renderer(verdict)
    out = [f"table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{",
           f"  comment {_quote('NetworkPolicies of node ' + node_name if node_name else 'NetworkPolicies')}"]
    for direction, pods, vmap, chain, prio, field_ in (
            ("egress", rules.egress, EGRESS_MAP, EGRESS_CHAIN, EGRESS_PRIORITY, "saddr"),
            ("ingress", rules.ingress, INGRESS_MAP, INGRESS_CHAIN, INGRESS_PRIORITY, "daddr")):
        out += [f"  chain {chain} {{", f"    type filter hook forward priority {prio}; policy accept;",
                "    ct state established,related accept"]
        if direction == "ingress":
            out.append("    fib saddr type local accept")       # the node itself (probes) always gets in
        if pods:
            out.append(f"    ip {field_} vmap @{vmap}")
        out.append("  }")
        if pods:
            elements = ", ".join(f"{ip} : jump {chain_name(direction, pods[ip])}" for ip in sorted(
                pods, key=ipaddress.ip_address))
            out += [f"  map {vmap} {{", "    type ipv4_addr : verdict", f"    elements = {{ {elements} }}", "  }"]
            for ip in sorted(pods, key=ipaddress.ip_address):
                out += r.pod_chain(direction, pods[ip])
    for name, lines in r.chains.items():
        out += [f"  chain {name} {{", *lines, "  }"]
    for name, elements in r.sets.items():
        out += [f"  set {name} {{", "    type ipv4_addr", "    flags interval",
                f"    elements = {{ {', '.join(elements)} }}", "  }"]
    out.append("}")
    return "\n".join(out) + "\n"
