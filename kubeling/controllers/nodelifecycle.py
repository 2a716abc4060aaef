"""Node lifecycle controller: node health from Leases, the condition taints, and rate-limited NoExecute tainting.

Upstream's ``pkg/controller/nodelifecycle`` (with taint-based eviction, the only mode upstream
has left; the evictions themselves are `tainteviction`'s). Three loops share one node-health map:

1. **monitor** (every ``--node-monitor-period``), `monitor_node_health`:
   * new nodes get ``RegisteredNode`` ("Node n event: Registered Node n in Controller") and any
     stale NoExecute taint of ours removed; vanished nodes get ``RemovingNode``;
   * a node is *probed* when its ``kube-node-lease`` Lease is renewed or its Ready condition's
     ``lastHeartbeatTime`` moves; one unprobed for ``--node-monitor-grace-period`` (for a node
     that never posted Ready: ``--node-startup-grace-period`` from its creation) gets Ready,
     MemoryPressure, DiskPressure and PIDPressure set to ``Unknown`` (reason
     ``NodeStatusUnknown``, "Kubelet stopped posting node status."; a condition never posted
     gets ``NodeStatusNeverUpdated``, "Kubelet never posted node status.");
   * on the Ready → not-Ready transition: ``NodeNotReady`` on the node ("Node n status is now:
     NodeNotReady") and every pod on it gets Ready=False (upstream's ``MarkPodsNotReady``, a
     Warning ``NodeNotReady`` "Node is not ready" on each); a failed pod update is retried on
     the next pass;
   * a not-Ready node is queued for its NoExecute taint — ``node.kubernetes.io/not-ready`` for
     Ready=False, ``node.kubernetes.io/unreachable`` for Unknown (an existing opposite taint is
     swapped at once); a Ready node has both removed;
   * zones (``topology.kubernetes.io/region`` + ``zone`` labels, "" without them): a zone is
     *FullDisruption* with no Ready node, *PartialDisruption* with more than 2 not-Ready nodes
     making at least ``unhealthy_zone_threshold`` (0.55) of it, else *Normal*. Normal and
     FullDisruption zones taint at ``--node-eviction-rate`` (0.1 nodes/s, burst 1); a
     PartialDisruption zone at ``secondary_node_eviction_rate`` (0.01) if it has more than
     ``large_cluster_size_threshold`` (50) nodes, else not at all. When **every** zone is fully
     disrupted (the control plane's own network is the likelier culprit) all NoExecute taints of
     ours are removed and tainting stops, until some node is Ready again. Nodes labelled
     ``node.kubernetes.io/exclude-disruption`` are left out of the zone counts.
2. **tainter**, `do_no_execute_tainting_pass`: per zone, a queue of nodes ordered by when they
   were queued, drained under the zone's token bucket (upstream's RateLimitedTimedQueue). It runs
   every ``NODE_EVICTION_PERIOD`` while anything is queued and sleeps otherwise.
3. **workers** on ``("node", name)`` keys from Node events (upstream's ``TaintNodesByCondition``):
   the NoSchedule taints mirroring conditions (Ready False → not-ready, Unknown → unreachable,
   MemoryPressure/DiskPressure/PIDPressure/NetworkUnavailable True → memory-pressure, …) and
   ``node.kubernetes.io/unschedulable`` for ``spec.unschedulable`` (cordon) are added and
   removed, and ``beta.kubernetes.io/os``/``arch`` follow ``kubernetes.io/os``/``arch``; and on
   ``("pod", "ns/name")`` keys from pods newly bound to a node: a pod bound to a not-Ready node is
   marked not Ready.

Taint writes read the node fresh and send the whole list with its ``resourceVersion`` (so a
concurrent writer, say ``kubectl taint``, makes it retry rather than lose a taint); added taints
get ``timeAdded``. Simplified from upstream: one monitor pass handles nodes one after another (no
parallel pass), and the legacy (non-taint) eviction path does not exist. The rates and zone
thresholds are the controller manager's ``--node-eviction-rate``,
``--secondary-node-eviction-rate``, ``--large-cluster-size-threshold`` and
``--unhealthy-zone-threshold`` (upstream's flags).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from kubeling.client import is_conflict, is_not_found, object_of
from kubeling.client.events import NORMAL, WARNING
from kubeling.client.flowcontrol import TokenBucket
from kubeling.client.store import meta_namespace_key
from kubeling.controllers.base import (
    Controller,
    ControllerContext,
    run_workers,
    sleep_or_stop,
)
from kubeling.controllers.controller_utils import parse_time
from kubeling.controllers.tainteviction import POD_NODE_NAME_INDEX, pod_node_name

log = logging.getLogger(__name__)

COMPONENT = "node-controller"
LEASE_NAMESPACE = "kube-node-lease"
NODE_EVICTION_PERIOD = 0.1
NODE_HEALTH_UPDATE_RETRY = 5
TAINT_UPDATE_RETRY = 5
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
UNREACHABLE_TAINT = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
UNSCHEDULABLE_KEY = "node.kubernetes.io/unschedulable"
EXCLUDE_DISRUPTION = "node.kubernetes.io/exclude-disruption"
HEALTH_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
# condition type -> {status -> NoSchedule taint key} (upstream's nodeConditionToTaintKeyStatusMap)
CONDITION_TAINTS = {
    "Ready": {"False": "node.kubernetes.io/not-ready", "Unknown": "node.kubernetes.io/unreachable"},
    "MemoryPressure": {"True": "node.kubernetes.io/memory-pressure"},
    "DiskPressure": {"True": "node.kubernetes.io/disk-pressure"},
    "NetworkUnavailable": {"True": "node.kubernetes.io/network-unavailable"},
    "PIDPressure": {"True": "node.kubernetes.io/pid-pressure"},
}
CONDITION_TAINT_KEYS = {k for m in CONDITION_TAINTS.values() for k in m.values()}
LABEL_RECONCILE = (("kubernetes.io/os", "beta.kubernetes.io/os"), ("kubernetes.io/arch", "beta.kubernetes.io/arch"))
INITIAL, NORMAL_STATE, FULL_DISRUPTION, PARTIAL_DISRUPTION = "Initial", "Normal", "FullDisruption", "PartialDisruption"


# -- small helpers ------------------------------------------------------------------------------

def node_condition(node: dict, type_: str) -> dict | None:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def zone_key(node: dict) -> str:
    """Upstream's ``GetZoneKey``: region and zone labels (new names first), "" when neither is set."""
    labels = node["metadata"].get("labels") or {}
    region = labels.get("topology.kubernetes.io/region") or labels.get("failure-domain.beta.kubernetes.io/region", "")
    zone = labels.get("topology.kubernetes.io/zone") or labels.get("failure-domain.beta.kubernetes.io/zone", "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def taint_matches(a: dict, b: dict) -> bool:
    """Upstream's ``Taint.MatchTaint``: the same key and effect (the value does not matter)."""
    return a.get("key") == b.get("key") and a.get("effect") == b.get("effect")


def has_taint(node: dict, taint: dict) -> bool:
    return any(taint_matches(t, taint) for t in (node.get("spec") or {}).get("taints") or ())


def _rfc3339(clock) -> str:
    return clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_ref(node: dict) -> dict:
    m = node["metadata"]
    return {"apiVersion": "v1", "kind": "Node", "name": m["name"], "uid": m.get("uid", "")}


async def swap_node_taints(client, clock, name: str, add: list[dict], remove: list[dict]) -> bool:
    """Add (or update) ``add`` and remove ``remove`` (matched by key and effect) on Node ``name``.

    Reads the node fresh and writes the whole list with its resourceVersion, retrying on conflict.
    Returns False when there was nothing to change (or the node is gone)."""
    stamped = [dict(t, timeAdded=_rfc3339(clock)) for t in add]
    for attempt in range(TAINT_UPDATE_RETRY):
        try:
            node = await client.get("", "v1", "nodes", name)
        except Exception as e:
            if is_not_found(e):
                return False
            raise
        old = list((node.get("spec") or {}).get("taints") or ())
        new = [t for t in old if not any(taint_matches(t, r) for r in remove)]
        for t in stamped:
            same = next((i for i, o in enumerate(new) if taint_matches(o, t)), None)
            if same is None:
                new.append(t)
            elif (new[same].get("value") or "") != (t.get("value") or ""):
                new[same] = t
        if new == old:
            return False
        patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": new or None}}
        try:
            await client.patch("", "v1", "nodes", name, patch, patch_type="merge")
            return True
        except Exception as e:
            if is_not_found(e):
                return False
            if not is_conflict(e) or attempt == TAINT_UPDATE_RETRY - 1:
                raise
    return False


# -- the zone tainting queue ----------------------------------------------------------------------

class ZoneTainter:
    """Upstream's RateLimitedTimedQueue for one zone: a set of node names, drained under a token bucket.

    A name stays a *member* after it has been processed (so `add` refuses it) until `remove` —
    that is how the monitor knows a node was tainted already."""

    def __init__(self, qps: float, clock, on_change=None) -> None:
        self.clock = clock
        self.on_change = on_change  # called when the limiter changes (the tainter loop wakes)
        self.members: set[str] = set()
        self.pending: dict[str, float] = {}  # name -> process at
        self.qps = qps
        self.limiter = TokenBucket(qps, 1, clock) if qps > 0 else None  # starts full: the first node goes at once

    def swap_limiter(self, qps: float) -> None:
        if qps == self.qps:
            return
        saturated = self.limiter is None or not self.limiter.try_accept()
        self.limiter = TokenBucket(qps, 1, self.clock) if qps > 0 else None
        if self.limiter is not None and saturated:
            self.limiter.try_accept()  # we were waiting on the old bucket: the new one starts drained
        self.qps = qps
        if self.on_change is not None:
            self.on_change()

    def add(self, name: str) -> bool:
        if name in self.members:
            return False
        self.members.add(name)
        self.pending[name] = self.clock.now()
        return True

    def remove(self, name: str) -> bool:
        self.pending.pop(name, None)
        if name in self.members:
            self.members.discard(name)
            return True
        return False

    async def try_(self, fn) -> None:
        """Process due names in order while the bucket has tokens; ``fn(name)`` returns (done, retry_after)."""
        while self.pending:
            name = min(self.pending, key=self.pending.get)
            if self.limiter is None or not self.limiter.try_accept():
                return
            now = self.clock.now()
            if now < self.pending[name]:
                return
            done, wait = await fn(name)
            if done:
                self.pending.pop(name, None)
            elif name in self.pending:
                self.pending[name] = now + wait + 1e-9


@dataclass
class NodeHealth:
    ready: dict | None  # the Ready condition last seen
    probe: float  # clock time of the last sign of life
    transition: float
    lease_renew: str | None = None


class NodeLifecycleController(Controller):
    NAME = "nodelifecycle"
    WORKERS = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.monitor_period = ctx.node_monitor_period
        self.grace_period = ctx.node_monitor_grace_period
        self.startup_grace_period = ctx.node_startup_grace_period
        self.eviction_qps = ctx.node_eviction_rate
        self.secondary_eviction_qps = ctx.secondary_node_eviction_rate
        self.large_cluster_threshold = ctx.large_cluster_size_threshold
        self.unhealthy_zone_threshold = ctx.unhealthy_zone_threshold
        self.health: dict[str, NodeHealth] = {}
        self.known: dict[str, dict] = {}
        self.zone_states: dict[str, str] = {}
        self.tainters: dict[str, ZoneTainter] = {}
        self.retry_pods: set[str] = set()  # nodes whose MarkPodsNotReady must run again
        self._tainter_wake = asyncio.Event()
        self.nodes = ctx.informers.informer_for("", "v1", "nodes")
        self.leases = ctx.informers.informer_for("coordination.k8s.io", "v1", "leases", namespace=LEASE_NAMESPACE)
        self.pods = ctx.informers.informer_for("", "v1", "pods", indexers={POD_NODE_NAME_INDEX: pod_node_name})
        self.handle(self.nodes, on_add=self._node_event, on_update=lambda old, new: self._node_event(new),
                    on_delete=lambda n: self.retry_pods.discard(object_of(n)["metadata"]["name"]))
        self.handle(self.leases)
        self.handle(self.pods, on_add=lambda p: self._pod_event(None, p), on_update=self._pod_event)

    def _node_event(self, node: dict) -> None:
        self.queue.add(("node", node["metadata"]["name"]))

    def _pod_event(self, old: dict | None, new: dict) -> None:
        name = (new.get("spec") or {}).get("nodeName")
        if name and (old is None or (old.get("spec") or {}).get("nodeName") != name):
            self.queue.add(("pod", meta_namespace_key(new)))

    # -- running ----------------------------------------------------------------------------------

    async def run(self, workers: int, stop: asyncio.Event) -> None:
        try:
            if not await self.wait_for_caches(stop):
                return
            loops = [asyncio.create_task(self._monitor_loop(stop), name=f"{self.NAME}-monitor"),
                     asyncio.create_task(self._tainter_loop(stop), name=f"{self.NAME}-tainter")]
            try:
                await run_workers(self.NAME, self.queue, self.sync, stop, workers)
            finally:
                for t in loops:
                    t.cancel()
                await asyncio.shield(asyncio.gather(*loops, return_exceptions=True))
        finally:
            self.shutdown()
            await self.recorder.close()

    async def _monitor_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.monitor_node_health()
            except Exception:
                log.exception("%s: monitoring node health failed", self.NAME)
            if await sleep_or_stop(self.clock, self.monitor_period, stop):
                return

    async def _tainter_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # sleep while nothing can be tainted (no queue, or every queue's zone stopped)
            if not any(t.pending and t.limiter is not None for t in self.tainters.values()):
                self._tainter_wake.clear()
                waiter = asyncio.ensure_future(self._tainter_wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            try:
                await self.do_no_execute_tainting_pass()
            except Exception:
                log.exception("%s: NoExecute tainting pass failed", self.NAME)
            if await sleep_or_stop(self.clock, NODE_EVICTION_PERIOD, stop):
                return

    async def sync(self, item) -> None:
        kind, name = item
        if kind == "node":
            await self.do_no_schedule_tainting_pass(name)
            await self.reconcile_node_labels(name)
        else:
            await self.process_pod(name)

    # -- TaintNodesByCondition (NoSchedule) and labels ---------------------------------------------

    async def do_no_schedule_tainting_pass(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        want = []
        for cond in (node.get("status") or {}).get("conditions") or ():
            key = CONDITION_TAINTS.get(cond.get("type"), {}).get(cond.get("status"))
            if key:
                want.append({"key": key, "effect": "NoSchedule"})
        if (node.get("spec") or {}).get("unschedulable"):
            want.append({"key": UNSCHEDULABLE_KEY, "effect": "NoSchedule"})
        have = [t for t in (node.get("spec") or {}).get("taints") or ()
                if t.get("effect") == "NoSchedule" and (t.get("key") == UNSCHEDULABLE_KEY or t.get("key") in CONDITION_TAINT_KEYS)]
        add = [t for t in want if not any(taint_matches(t, h) for h in have)]
        remove = [h for h in have if not any(taint_matches(t, h) for t in want)]
        if add or remove:
            await swap_node_taints(self.client, self.clock, name, add, remove)

    async def reconcile_node_labels(self, name: str) -> None:
        node = self.nodes.get(name)
        labels = (node or {}).get("metadata", {}).get("labels") or {}
        update = {second: labels[first] for first, second in LABEL_RECONCILE
                  if first in labels and labels.get(second) != labels[first]}
        if update:
            try:
                await self.client.patch("", "v1", "nodes", name, {"metadata": {"labels": update}}, patch_type="merge")
            except Exception as e:
                if not is_not_found(e):
                    raise

    # -- pods newly bound to a node ----------------------------------------------------------------

    async def process_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        name = pod["spec"].get("nodeName")
        health = self.health.get(name)
        if health is None or health.ready is None or self.nodes.get(name) is None:
            return  # not gathered yet: the node's next pass handles it
        if health.ready.get("status") != "True":
            await self.mark_pods_not_ready([pod], name)

    async def mark_pods_not_ready(self, pods: list[dict], node_name: str) -> None:
        """Upstream's ``MarkPodsNotReady``: Ready=False on each pod of the node; raises after trying all."""
        errors = []
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != node_name:
                continue
            ready = next((c for c in (pod.get("status") or {}).get("conditions") or () if c.get("type") == "Ready"), None)
            if ready is None or ready.get("status") == "False":
                continue
            cond = dict(ready, status="False", lastTransitionTime=_rfc3339(self.clock))
            m = pod["metadata"]
            patch = {"metadata": {"uid": m["uid"]}, "status": {"conditions": [cond]}}
            try:
                await self.client.patch("", "v1", "pods", m["name"], patch, namespace=m["namespace"],
                                        subresource="status", patch_type="strategic")
            except Exception as e:  # noqa: BLE001 - try the rest; the caller retries the node
                if not is_not_found(e) and not is_conflict(e):  # gone, or replaced (uid precondition)
                    errors.append(e)
                continue
            self.recorder.event({"apiVersion": "v1", "kind": "Pod", "namespace": m["namespace"], "name": m["name"],
                                 "uid": m["uid"]}, WARNING, "NodeNotReady", "Node is not ready")
        if errors:
            raise errors[0]

    # -- the monitor -------------------------------------------------------------------------------

    async def monitor_node_health(self) -> None:
        """One pass over every cached node: see the module docstring, item 1."""
        nodes = sorted(self.nodes.list(), key=lambda n: n["metadata"]["name"])
        names = {n["metadata"]["name"] for n in nodes}
        for node in nodes:
            name = node["metadata"]["name"]
            if name not in self.known:
                self._record_node_event(node, "RegisteredNode", f"Registered Node {name} in Controller")
                self.known[name] = node
                self._add_zone(node)
                await self._guard(name, self.mark_node_as_reachable(node))
            elif zone_key(node) not in self.zone_states:
                self._add_zone(node)
        for name in sorted(set(self.known) - names):
            self._record_node_event(self.known.pop(name), "RemovingNode", f"Removing Node {name} from Controller")
            self.health.pop(name, None)
        zone_conditions: dict[str, list[dict | None]] = {}
        for node in nodes:
            current = await self._guard(node["metadata"]["name"], self._update_node(node))
            if current is not None and EXCLUDE_DISRUPTION not in (node["metadata"].get("labels") or {}):
                zone_conditions.setdefault(zone_key(node), []).append(current[0])
        await self.handle_disruption(zone_conditions, nodes)

    async def _guard(self, name: str, coro):
        """Run one node's step; a failure is logged and never stops the other nodes."""
        try:
            return await coro
        except Exception as e:  # noqa: BLE001
            log.warning("%s: node %s: %s", self.NAME, name, e)
            return None

    async def _update_node(self, node: dict) -> tuple[dict | None]:
        name = node["metadata"]["name"]
        for attempt in range(NODE_HEALTH_UPDATE_RETRY):
            try:
                observed, current = await self.try_update_node_health(node)
                break
            except Exception as e:
                if attempt == NODE_HEALTH_UPDATE_RETRY - 1:
                    raise
                log.info("%s: updating node %s health: %s; retrying", self.NAME, name, e)
                node = await self.client.get("", "v1", "nodes", name)
        if current is not None:
            await self.process_taint_based_eviction(node, observed)
            if current.get("status") != "True" and (observed.get("status") == "True" or name in self.retry_pods):
                if observed.get("status") == "True":
                    self._record_node_event(node, "NodeNotReady", None)
                try:
                    await self.mark_pods_not_ready(self.pods.by_index(POD_NODE_NAME_INDEX, name), name)
                except Exception:
                    self.retry_pods.add(name)
                    raise
        self.retry_pods.discard(name)
        return (current,)

    async def try_update_node_health(self, node: dict) -> tuple[dict, dict | None]:
        """Upstream's ``tryUpdateNodeHealth``: (the observed Ready condition, the current one) after
        marking a silent node's conditions Unknown. The observed one is synthesised (Unknown,
        from the creation time) when the kubelet never posted it."""
        name = node["metadata"]["name"]
        now = self.clock.now()
        health = self.health.get(name)
        current = node_condition(node, "Ready")
        if current is None:
            created = self._clock_time(node["metadata"].get("creationTimestamp"))
            observed = {"type": "Ready", "status": "Unknown"}
            grace = self.startup_grace_period
            if health is None:
                health = NodeHealth(None, created, created)
        else:
            observed = dict(current)
            grace = self.grace_period
        saved = health.ready if health is not None else None
        if health is None or (saved is None and current is not None) or (saved is not None and current is None):
            health = NodeHealth(current and dict(current), now, now, health.lease_renew if health else None)
        elif current is not None and saved.get("lastHeartbeatTime") != current.get("lastHeartbeatTime"):
            moved = saved.get("lastTransitionTime") != current.get("lastTransitionTime")
            health = NodeHealth(dict(current), now, now if moved else health.transition, health.lease_renew)
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        if renew and (health.lease_renew is None or _later(renew, health.lease_renew)):
            health.lease_renew = renew
            health.probe = now
        self.health[name] = health
        if now <= health.probe + grace:
            return observed, current
        updated = self._mark_unknown(node)
        current = node_condition(updated, "Ready")
        if current != observed:
            written = await self.client.update_status("", "v1", "nodes", updated)
            self.health[name] = dataclasses.replace(health, ready=node_condition(written, "Ready"), transition=now)
        return observed, current

    def _mark_unknown(self, node: dict) -> dict:
        node = {**node, "status": dict(node.get("status") or {})}
        conditions = [dict(c) for c in node["status"].get("conditions") or ()]
        stamp = _rfc3339(self.clock)
        for type_ in HEALTH_CONDITIONS:
            cond = next((c for c in conditions if c.get("type") == type_), None)
            if cond is None:
                conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                                   "lastTransitionTime": stamp})
            elif cond.get("status") != "Unknown":
                cond.update(status="Unknown", reason="NodeStatusUnknown",
                            message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
        node["status"]["conditions"] = conditions
        return node

    def _clock_time(self, rfc3339: str | None) -> float:
        """A wall-clock timestamp as a time on our (monotonic) clock."""
        when = parse_time(rfc3339)
        if when is None:
            return self.clock.now()
        return self.clock.now() - (self.clock.wall() - when).total_seconds()

    def _record_node_event(self, node: dict, reason: str, message: str | None) -> None:
        name = node["metadata"]["name"]
        text = f"Node {name} status is now: {reason}" if message is None else f"Node {name} event: {message}"
        self.recorder.event(_node_ref(node), NORMAL, reason, text)

    # -- NoExecute tainting ------------------------------------------------------------------------

    def _add_zone(self, node: dict) -> None:
        zone = zone_key(node)
        if zone not in self.zone_states:
            self.zone_states[zone] = INITIAL
            self.tainters[zone] = ZoneTainter(self.eviction_qps, self.clock, on_change=self._tainter_wake.set)

    def _tainter(self, node: dict) -> ZoneTainter:
        self._add_zone(node)
        return self.tainters[zone_key(node)]

    async def process_taint_based_eviction(self, node: dict, observed: dict) -> None:
        status = observed.get("status")
        name = node["metadata"]["name"]
        if status in ("False", "Unknown"):
            want, opposite = (NOT_READY_TAINT, UNREACHABLE_TAINT) if status == "False" else (UNREACHABLE_TAINT, NOT_READY_TAINT)
            if has_taint(node, opposite):
                await swap_node_taints(self.client, self.clock, name, [want], [opposite])
            else:
                tainter = self._tainter(node)
                if not has_taint(node, want):
                    tainter.remove(name)
                if tainter.add(name):
                    self._tainter_wake.set()
        elif status == "True":
            await self.mark_node_as_reachable(node)

    async def mark_node_as_reachable(self, node: dict) -> bool:
        name = node["metadata"]["name"]
        if has_taint(node, UNREACHABLE_TAINT) or has_taint(node, NOT_READY_TAINT):
            await swap_node_taints(self.client, self.clock, name, [], [UNREACHABLE_TAINT, NOT_READY_TAINT])
        return self._tainter(node).remove(name)

    async def do_no_execute_tainting_pass(self) -> None:
        for zone in list(self.tainters):
            await self.tainters[zone].try_(self._taint_one)

    async def _taint_one(self, name: str) -> tuple[bool, float]:
        node = self.nodes.get(name)
        if node is None:
            return True, 0.0
        ready = node_condition(node, "Ready")
        if ready is None:
            return False, 0.05
        if ready.get("status") == "False":
            want, opposite = NOT_READY_TAINT, UNREACHABLE_TAINT
        elif ready.get("status") == "Unknown":
            want, opposite = UNREACHABLE_TAINT, NOT_READY_TAINT
        else:
            return True, 0.0  # ready again: nothing to taint
        try:
            await swap_node_taints(self.client, self.clock, name, [want], [opposite])
        except Exception as e:  # noqa: BLE001 - retried by the queue
            log.warning("%s: tainting node %s: %s", self.NAME, name, e)
            return False, 0.0
        log.info("%s: node %s tainted %s", self.NAME, name, want["key"])
        return True, 0.0

    # -- zones ------------------------------------------------------------------------------------

    def compute_zone_state(self, conditions: list[dict | None]) -> tuple[int, str]:
        ready = sum(1 for c in conditions if c is not None and c.get("status") == "True")
        not_ready = len(conditions) - ready
        if ready == 0 and not_ready > 0:
            return not_ready, FULL_DISRUPTION
        if not_ready > 2 and not_ready / len(conditions) >= self.unhealthy_zone_threshold:
            return not_ready, PARTIAL_DISRUPTION
        return not_ready, NORMAL_STATE

    def _zone_qps(self, size: int, state: str) -> float:
        if state == PARTIAL_DISRUPTION:
            return self.secondary_eviction_qps if size > self.large_cluster_threshold else 0.0
        return self.eviction_qps  # Normal, and FullDisruption of one zone among others

    async def handle_disruption(self, zone_conditions: dict[str, list], nodes: list[dict]) -> None:
        new_states = {z: self.compute_zone_state(c)[1] for z, c in zone_conditions.items()}
        all_full_now = all(s == FULL_DISRUPTION for s in new_states.values())
        for zone in list(self.zone_states):
            if zone not in zone_conditions:
                del self.zone_states[zone]
        for zone in zone_conditions:
            self.zone_states.setdefault(zone, INITIAL)
        all_full_before = all(s == FULL_DISRUPTION for s in self.zone_states.values())
        if all_full_now and all_full_before:
            return
        if all_full_now:
            log.info("%s: every node is not Ready: entering master disruption mode", self.NAME)
            for node in nodes:
                await self._guard(node["metadata"]["name"], self.mark_node_as_reachable(node))
            for zone in self.zone_states:
                self.tainters[zone].swap_limiter(0)
                self.zone_states[zone] = FULL_DISRUPTION
            return
        exiting = all_full_before and bool(self.zone_states)
        if exiting:
            log.info("%s: some nodes are Ready: exiting master disruption mode", self.NAME)
            now = self.clock.now()
            for h in self.health.values():
                h.probe = h.transition = now
        for zone, state in new_states.items():
            if exiting or self.zone_states.get(zone) != state:
                log.info("%s: zone %r is now %s", self.NAME, zone, state)
                self.tainters[zone].swap_limiter(self._zone_qps(len(zone_conditions[zone]), state))
                self.zone_states[zone] = state


def _later(a: str, b: str) -> bool:
    ta, tb = parse_time(a), parse_time(b)
    return ta is not None and (tb is None or ta > tb)
