"""hostPort: DNAT from the node's addresses to a pod, as the portmap CNI plugin does.

Chains of our own in the ``nat`` table, so that we never edit anyone else's rules::

    PREROUTING  -m addrtype --dst-type LOCAL -j KUBELING-HOSTPORTS      (from other hosts, pods)
    OUTPUT      -m addrtype --dst-type LOCAL -j KUBELING-HOSTPORTS      (from the node itself)
    POSTROUTING -j KUBELING-HOSTPORTS-MASQ

    KUBELING-HOSTPORTS       -p tcp [-d <hostIP>] --dport <hostPort>
                             -m comment --comment <sandbox id> -j DNAT --to-destination <podIP>:<port>
    KUBELING-HOSTPORTS-MASQ  -s <podCIDR> -d <podIP>/32 -p tcp --dport <port> -m conntrack --ctstate DNAT
                             -m comment --comment <sandbox id> -j MASQUERADE

The masquerade rule is portmap's SNAT for traffic from the pod network: a pod reaching a hostPort
(its own, through hairpin, or another pod's on this bridge) would otherwise get the reply
straight from the pod IP, which its socket does not expect.

Contracts:

- Every per-pod rule carries the sandbox id as its comment; `remove` deletes exactly those and is
  idempotent. `rules` lists them (the leak count).
- The jumps and chains are created once (`ensure`), idempotently, and never removed: they are
  empty when no pod has a hostPort.
- ``iptables -w`` waits for the xtables lock, so several agents (or kube-proxy) can share a host.
- Connections to 127.0.0.1:<hostPort> are not supported: that needs ``route_localnet`` on the
  bridge, a sysctl we choose not to flip. Use a node address.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Iterable

from kubeling.kubelet.runtime import PortMapping

CHAIN = "KUBELING-HOSTPORTS"
MASQ_CHAIN = "KUBELING-HOSTPORTS-MASQ"
JUMP_COMMENT = "kubeling hostports"
JUMPS = (
    ("PREROUTING", CHAIN, ["-m", "addrtype", "--dst-type", "LOCAL"]),
    ("OUTPUT", CHAIN, ["-m", "addrtype", "--dst-type", "LOCAL"]),
    ("POSTROUTING", MASQ_CHAIN, []),
)


class IptablesError(Exception):
    """An iptables command failed; the message holds its stderr."""


def dnat_rule(sandbox_id: str, pod_ip: str, pm: PortMapping) -> list[str]:
    """The rule spec (after ``-A CHAIN``) that sends ``pm``'s host port to the pod."""
    proto = pm.protocol.lower()
    dest = ["-d", f"{pm.host_ip}/32"] if pm.host_ip and pm.host_ip != "0.0.0.0" else []
    return ["-p", proto, *dest, "-m", proto, "--dport", str(pm.host_port),
            "-m", "comment", "--comment", sandbox_id,
            "-j", "DNAT", "--to-destination", f"{pod_ip}:{pm.container_port}"]


def masq_rule(sandbox_id: str, pod_ip: str, pod_cidr: str, pm: PortMapping) -> list[str]:
    """The rule spec that masquerades hostPort traffic coming from the pod network."""
    proto = pm.protocol.lower()
    return ["-s", pod_cidr, "-d", f"{pod_ip}/32", "-p", proto, "-m", proto, "--dport", str(pm.container_port),
            "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", sandbox_id, "-j", "MASQUERADE"]


def owned(rule_lines: Iterable[str], sandbox_id: str | None = None) -> list[list[str]]:
    """Parse ``iptables -S CHAIN`` lines: the ``-A`` rules tagged with ``sandbox_id`` (any, if None).

    Each result is the full argv after ``-A``: ``[chain, spec...]``, ready for ``-D``."""
    out = []
    for line in rule_lines:
        words = shlex.split(line)
        if len(words) < 2 or words[0] != "-A":
            continue
        comment = _comment(words)
        if comment is None or comment == JUMP_COMMENT:
            continue
        if sandbox_id is None or comment == sandbox_id:
            out.append(words[1:])
    return out


def _comment(words: list[str]) -> str | None:
    for i, w in enumerate(words[:-1]):
        if w == "--comment":
            return words[i + 1]
    return None


class HostPorts:
    """hostPort rules for one node; see the module docstring."""

    def __init__(self, pod_cidr: str, *, iptables: str = "iptables") -> None:
        self.pod_cidr = pod_cidr
        self.iptables = iptables
        self._ensured = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Create our chains and the jumps into them, once per object (idempotent)."""
        async with self._lock:
            if self._ensured:
                return
            for chain in (CHAIN, MASQ_CHAIN):
                if (await self._run("-t", "nat", "-n", "-L", chain, check=False))[0] != 0:
                    await self._run("-t", "nat", "-N", chain)
            for parent, chain, match in JUMPS:
                spec = [*match, "-m", "comment", "--comment", JUMP_COMMENT, "-j", chain]
                if (await self._run("-t", "nat", "-C", parent, *spec, check=False))[0] != 0:
                    await self._run("-t", "nat", "-A", parent, *spec)
            self._ensured = True

    async def add(self, sandbox_id: str, pod_ip: str, mappings: list[PortMapping]) -> None:
        """Install the rules for ``mappings`` (replacing any the sandbox had)."""
        if not mappings:
            return
        await self.ensure()
        await self.remove(sandbox_id)
        for pm in mappings:
            await self._run("-t", "nat", "-A", CHAIN, *dnat_rule(sandbox_id, pod_ip, pm))
            await self._run("-t", "nat", "-A", MASQ_CHAIN, *masq_rule(sandbox_id, pod_ip, self.pod_cidr, pm))

    async def remove(self, sandbox_id: str) -> None:
        """Delete every rule tagged with ``sandbox_id``; nothing to delete is fine."""
        for rule in await self.rules(sandbox_id):
            code, err = await self._run("-t", "nat", "-D", *rule, check=False)
            if code != 0 and "does a matching rule exist" not in err and "No chain" not in err:
                raise IptablesError(f"iptables -D {' '.join(rule)}: {err.strip()}")

    async def rules(self, sandbox_id: str | None = None) -> list[list[str]]:
        """Our per-pod rules (``[chain, spec...]``), of ``sandbox_id`` or of every sandbox."""
        out = []
        for chain in (CHAIN, MASQ_CHAIN):
            code, listing = await self._run("-t", "nat", "-S", chain, check=False, stdout=True)
            if code == 0:  # a missing chain holds no rules
                out += owned(listing.splitlines(), sandbox_id)
        return out

    async def _run(self, *args: str, check: bool = True, stdout: bool = False) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.iptables, "-w", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            # Let a cancelled iptables finish: a rule it appends after our caller's undo would leak.
            await proc.wait()
            raise
        if check and proc.returncode != 0:
            raise IptablesError(f"{self.iptables} {' '.join(args)}: {err.decode(errors='replace').strip()}")
        return proc.returncode, (out if stdout else err).decode(errors="replace")
