"""`NetworkPolicyController`: NetworkPolicies enforced on this node's pods, with nftables.

Like kube-router's netpol controller (which k3s embeds), every node enforces the policies of its
own pods: ingress where the destination pod runs, egress where the source pod runs. It watches
Pods, Namespaces and NetworkPolicies (shared informers); any relevant change marks the node
dirty, and one coalesced full sync recomputes everything (`policy_rules.compute_rules`) and
replaces the node's ruleset in one ``nft -f`` transaction (`policy_rules.render_nft`).

Layout (``nft list table ip kubeling-netpol``)::

    chain egress   hook forward, priority filter - 10      chain ingress  hook forward, priority filter - 9
      ct state established,related accept                    ct state established,related accept
      ip saddr vmap @egress-pods                             fib saddr type local accept
                                                             ip daddr vmap @ingress-pods
    map egress-pods  { <local isolated pod IP> : jump pod-egress-<hash> }      (ingress-pods alike)
    chain pod-ingress-<hash>      comment "<namespace>/<pod> <ip>: <its policies>"
      ip saddr <the pod itself> accept              (a pod cannot block itself: hairpin)
      goto allow-ingress-<hash>
    chain allow-ingress-<hash>    (one per distinct list of allows: pods of the same policies share it)
      ip saddr { <peers> } tcp dport { <ports> } accept comment "<namespace>/<policy>"   (one per allow)
      ip saddr @addrs-<hash> ...                    (long address lists: a named interval set)
      reject with icmp type admin-prohibited

Why this shape:

- A table of our own, so we never touch chains others own (kube-proxy's ``KUBE-*``, hostport's,
  iptables-nft's ``filter FORWARD``). Our base chains run before iptables' filter FORWARD (priority
  0). In nftables ``accept`` ends only the current base chain while a drop or reject is final, so
  two base chains make the two directions independent: egress accepts, then ingress decides.
- Pod-to-pod traffic on one node crosses the bridge ``kubeling0``; with br_netfilter
  (``net.bridge.bridge-nf-call-iptables=1``) bridged IPv4 goes through the ``ip`` forward hook too.
  Traffic from other nodes is routed from the overlay into the bridge: forward hook again. The
  hook runs after the nat prerouting DNAT, so traffic to a Service is judged by the pod it goes to.
- Replies of allowed connections pass (conntrack); a connection that was allowed keeps working
  after a policy that would refuse it arrives (kube-router and Calico behave alike).
- The node itself (kubelet probes, ``kubectl port-forward``) always reaches its pods: its own
  packets take the output path, never forward, and ``fib saddr type local`` covers any that would.
  A pod always reaches its own node (input path): upstream says traffic to and from the node a pod
  runs on is always allowed.
- With kube-proxy in userspace mode, a connection to a ClusterIP is redirected to the proxy on
  the client's node, which opens a new one from the node: the client pod's egress policies do not
  see it, and the server's ingress policies see the client's node, not the client pod (upstream's
  userspace proxy had the same limit). The iptables and nftables modes DNAT before the forward
  hook, so policies see both pods.
- hostNetwork pods are not policed (they are the node) and are never matched by pod or namespace
  selectors: their address is their node's. To pods on the same node their traffic is the node's
  (allowed); to pods elsewhere it comes from a node address, which an ``ipBlock`` can match.
- Refused traffic is rejected (ICMP admin-prohibited), so a client fails at once instead of
  waiting for a timeout, as kube-router does.
- Atomic: each sync is one transaction that deletes and re-creates the table; the kernel swaps
  it in whole, so no packet sees half a ruleset. With no isolated pod on the node the table is
  deleted altogether: nothing of ours is left (``count_leaks`` → all 0). The rules stay when the
  agent stops (the pods stay protected while it restarts); ``kubeling node cleanup`` removes them.

A pod is enforced once the agent saw its IP in ``status.podIPs``: between the sandbox starting
and that status reaching the informer a new pod is not yet isolated (as with kube-router).

Contract (used by `kubeling.kubelet.agent.Agent._node_network` and ``kubeling node cleanup``):

- ``NetworkPolicyController(client, node_name, *, pod_cidr, cluster_cidr)``;
  ``await run(stop)`` until ``stop`` is set. Never dies on one bad object: what cannot be
  enforced is logged and reported as a Warning Event on the NetworkPolicy; a failed ``nft`` run
  is logged, reported on the Node and retried, leaving the previous rules in force.
- ``cleanup()``: blocking, idempotent; removes every chain and rule it made in the current
  network namespace. ``count_leaks()`` counts them: ``{"tables", "chains", "rules", "maps", "sets"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from typing import Any

from kubeling.client.events import WARNING, EventRecorder
from kubeling.client.factory import SharedInformerFactory
from kubeling.kubelet.network.policy_rules import FAMILY, TABLE, NodeRules, compute_rules, render_nft

log = logging.getLogger(__name__)

COMPONENT = "network-policy-controller"
RESYNC_PERIOD = 300.0          # a full re-apply even without changes: repairs a table someone flushed
MIN_SYNC_INTERVAL = 0.05       # coalescing: events arriving meanwhile fold into the next sync
RETRY_INTERVAL = 2.0           # after a failed sync; doubling up to MAX_RETRY_INTERVAL
MAX_RETRY_INTERVAL = 60.0
DROP_TABLE = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


class NftError(Exception):
    """``nft`` failed; the message holds its stderr."""


def _nft_binary() -> str:
    return shutil.which("nft") or "/usr/sbin/nft"


def _pod_signature(pod: dict) -> tuple:
    """What of a pod the rules depend on (status-only churn such as probes does not resync)."""
    m, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ports = [(c.get("ports") or []) for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]]
    return (m.get("labels"), bool(m.get("deletionTimestamp")), spec.get("nodeName"), spec.get("hostNetwork"),
            status.get("podIP"), status.get("podIPs"), status.get("phase") in ("Succeeded", "Failed"),
            json.dumps(ports, sort_keys=True))


class NetworkPolicyController:
    """Enforces NetworkPolicies for the pods of ``node_name``; see the module docstring."""

    def __init__(self, client: Any, node_name: str, *, pod_cidr: str, cluster_cidr: str,
                 nft: str | None = None, recorder: EventRecorder | None = None,
                 resync_period: float = RESYNC_PERIOD) -> None:
        self.client, self.node_name, self.pod_cidr, self.cluster_cidr = client, node_name, pod_cidr, cluster_cidr
        self.nft = nft or _nft_binary()
        self.recorder = recorder
        self.resync_period = resync_period
        self.pods = self.namespaces = self.policies = None
        self._dirty = asyncio.Event()
        self._applied: str | None = None          # the ruleset text in force ("" once the table is gone)
        self._reported: set[tuple] = set()
        self.syncs = 0

    # -- informers ---------------------------------------------------------------------------------

    def _kick(self, *_: Any) -> None:
        self._dirty.set()

    def _pod_updated(self, old: dict, new: dict) -> None:
        if _pod_signature(old) != _pod_signature(new):
            self._dirty.set()

    def _namespace_updated(self, old: dict, new: dict) -> None:
        if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels"):
            self._dirty.set()

    def _policy_updated(self, old: dict, new: dict) -> None:
        if old.get("spec") != new.get("spec"):
            self._dirty.set()

    async def run(self, stop: asyncio.Event) -> None:
        own_recorder = self.recorder is None
        if own_recorder:
            self.recorder = EventRecorder(self.client, COMPONENT, host=self.node_name)
        factory = SharedInformerFactory(self.client)
        self.pods = factory.informer_for("", "v1", "pods")
        self.namespaces = factory.informer_for("", "v1", "namespaces")
        self.policies = factory.informer_for("networking.k8s.io", "v1", "networkpolicies")
        self.pods.add_handler(on_add=self._kick, on_update=self._pod_updated, on_delete=self._kick)
        self.namespaces.add_handler(on_add=self._kick, on_update=self._namespace_updated, on_delete=self._kick)
        self.policies.add_handler(on_add=self._kick, on_update=self._policy_updated, on_delete=self._kick)
        factory.start(stop)
        try:
            while not stop.is_set():
                synced = await factory.wait_for_cache_sync(timeout=1.0)
                if all(synced.values()):
                    break
            self._dirty.set()
            last_full, retry = time.monotonic(), RETRY_INTERVAL
            while not stop.is_set():
                timeout = max(0.0, last_full + self.resync_period - time.monotonic())
                waiter = asyncio.ensure_future(self._dirty.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait([waiter, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                if stop.is_set():
                    break
                force = time.monotonic() >= last_full + self.resync_period
                if force:
                    last_full = time.monotonic()
                self._dirty.clear()
                if not await self.sync(force=force):
                    await _sleep_unless(stop, retry)
                    retry = min(retry * 2, MAX_RETRY_INTERVAL)
                    self._dirty.set()
                    continue
                retry = RETRY_INTERVAL
                await _sleep_unless(stop, MIN_SYNC_INTERVAL)
        finally:
            await factory.shutdown()
            if own_recorder:
                await self.recorder.close()

    # -- syncing -----------------------------------------------------------------------------------

    def compute(self) -> NodeRules:
        return compute_rules(self.node_name, self.pods.list(), self.namespaces.list(), self.policies.list())

    async def sync(self, *, force: bool = False) -> bool:
        """Recompute and apply the node's rules; False when they could not be applied."""
        try:
            rules = self.compute()
            self._report(rules)
            text = "" if rules.empty else render_nft(rules, node_name=self.node_name)
        except Exception as e:  # noqa: BLE001 - a bug on some object must not stop enforcement
            log.exception("network policy: computing the rules of node %s failed", self.node_name)
            self._event_on_node("FailedToComputeNetworkPolicies", str(e))
            return False
        if text == self._applied and not force:
            return True
        started = time.monotonic()
        try:
            await self._nft(text or DROP_TABLE)
        except FileNotFoundError as e:
            if not text:                     # nothing to enforce, and no nft to have made anything
                self._applied = text
                return True
            log.error("network policy: cannot enforce the policies of node %s: %s", self.node_name, e)
            self._event_on_node("FailedToSyncNetworkPolicies", f"nft not found: {e}")
            self._applied = None
            return False
        except (NftError, OSError) as e:
            log.error("network policy: applying the rules of node %s failed: %s", self.node_name, e)
            self._event_on_node("FailedToSyncNetworkPolicies", str(e)[:1000])
            self._applied = None
            return False
        self._applied = text
        self.syncs += 1
        log.info("network policy: node %s: %d pod(s) isolated for ingress, %d for egress (%.0f ms)", self.node_name,
                 len(rules.ingress), len(rules.egress), (time.monotonic() - started) * 1000)
        return True

    async def _nft(self, script: str) -> None:
        proc = await asyncio.create_subprocess_exec(self.nft, "-f", "-", stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            raise NftError(err.decode(errors="replace").strip() or f"nft exited {proc.returncode}")

    def _report(self, rules: NodeRules) -> None:
        for p in rules.problems:
            m = p.policy.get("metadata") or {}
            key = (m.get("uid"), m.get("resourceVersion"), p.reason, p.message)
            if key in self._reported:
                continue
            self._reported.add(key)
            log.warning("network policy %s/%s: %s", m.get("namespace"), m.get("name"), p.message)
            if self.recorder is not None:
                self.recorder.event(p.policy, WARNING, p.reason, p.message)
        if len(self._reported) > 10000:
            self._reported.clear()

    def _event_on_node(self, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event({"kind": "Node", "apiVersion": "v1", "name": self.node_name},
                                WARNING, reason, message)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


# -- the node's leftovers ----------------------------------------------------------------------------

def _list_table(nft: str) -> list[dict]:
    done = subprocess.run([nft, "-j", "list", "table", FAMILY, TABLE], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return []          # no such table
    return [o for o in json.loads(done.stdout).get("nftables", []) if "metainfo" not in o]


def count_leaks(nft: str | None = None) -> dict[str, int]:
    """What of ours exists in the current network namespace, by kind; all 0 when nothing does."""
    objs = _list_table(nft or _nft_binary())
    counts = {"tables": 0, "chains": 0, "rules": 0, "maps": 0, "sets": 0}
    for o in objs:
        kind = next(iter(o))
        if kind + "s" in counts:
            counts[kind + "s"] += 1
    return counts


def cleanup(nft: str | None = None) -> None:
    """Remove our table (every chain, map and rule with it) from the current network namespace."""
    nft = nft or _nft_binary()
    if not shutil.which(nft) and not nft.startswith("/"):
        return
    try:
        subprocess.run([nft, "-f", "-"], input=DROP_TABLE, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log.warning("network policy cleanup: %s", getattr(e, "stderr", None) or e)
