"""The scheduler cache (upstream's ``pkg/scheduler/internal/cache``): nodes, the pods bound to
them, and the pods the scheduler *assumed* onto them before the API server confirmed it.

Pod states (upstream's diagram, kept)::

    +-------------------------------------------+  +----+
    |                            Add            |  |    |
    |                                           |  |    | Update
    +      Assume                Add            v  v    |
  Initial +--------> Assumed +------------+---> Added <--+
    ^                +   +               |       +
    |                |   |               |       |
    |                |   |           Add |       | Remove
    |                |   |               |       +
    +----------------+   +-----------> Expired   +----> Deleted
          Forget             Expire

- `assume_pod` puts a pod on its chosen node at once, so the next cycle sees its resources taken
  although the binding is still in flight. `finish_binding` starts the assumed pod's TTL;
  `forget_pod` undoes an assume whose binding failed. When the informer delivers the bound pod
  (`add_pod`) the assumption is confirmed. An assumed pod never confirmed within ``ttl`` after
  its binding finished is expired by `cleanup_assumed_pods` (the binding was lost).
- Every change bumps the `NodeInfo.generation` of the node it touched and marks the node dirty;
  `update_snapshot` looks only at dirty nodes and copies those whose generation moved since the
  snapshot's copy (see `snapshot`), so a refresh costs O(changed nodes), not O(nodes).
- Nodes are listed in `NodeTree` order: zones interleaved, so that a search that stops after
  ``numFeasibleNodesToFind`` nodes still spreads over zones.

Concurrency: one asyncio loop; every method is synchronous and returns before anything else runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kubeling.scheduler.framework.types import NodeInfo, PodInfo, pod_key
from kubeling.scheduler.snapshot import Snapshot

log = logging.getLogger(__name__)

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
DEFAULT_ASSUMED_TTL = 30.0   # upstream's durationToExpireAssumedPod (the binding must land by then)


def pod_uid(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or pod_key(pod)


def node_name_of(pod: dict) -> str:
    return (pod.get("spec") or {}).get("nodeName") or ""


def zone_of(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    region, zone = labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, "")
    return f"{region}:\x00:{zone}" if region or zone else ""


class NodeTree:
    """Node names grouped by zone; `list` interleaves the zones (upstream's nodeTree)."""

    def __init__(self) -> None:
        self.zones: dict[str, list[str]] = {}
        self.zone_of: dict[str, str] = {}
        self.count = 0

    def add(self, node: dict) -> None:
        name = node["metadata"]["name"]
        zone = zone_of(node)
        if name in self.zone_of:
            if self.zone_of[name] == zone:
                return
            self.remove(name)
        self.zones.setdefault(zone, []).append(name)
        self.zone_of[name] = zone
        self.count += 1

    def remove(self, name: str) -> None:
        zone = self.zone_of.pop(name, None)
        if zone is None:
            return
        names = self.zones[zone]
        names.remove(name)
        if not names:
            del self.zones[zone]
        self.count -= 1

    def list(self) -> list[str]:
        if len(self.zones) == 1:
            return list(next(iter(self.zones.values())))
        out: list[str] = []
        lists = list(self.zones.values())
        for i in range(max((len(z) for z in lists), default=0)):
            out.extend(z[i] for z in lists if i < len(z))
        return out


@dataclass
class _PodState:
    pod: dict
    deadline: float | None = None      # set by finish_binding for assumed pods
    binding_finished: bool = False


class Cache:
    """See the module docstring. ``clock`` gives ``now()`` for the assumed pods' TTL."""

    def __init__(self, clock, ttl: float = DEFAULT_ASSUMED_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self.nodes: dict[str, NodeInfo] = {}
        self.node_tree = NodeTree()
        self.pod_states: dict[str, _PodState] = {}
        self.assumed_pods: set[str] = set()
        # bumped when the node set or its order changes: the snapshot then rebuilds its lists
        self.tree_generation = 0
        self.dirty: set[str] = set()   # nodes changed since the last update_snapshot

    # -- nodes -------------------------------------------------------------------------------

    def add_node(self, node: dict) -> NodeInfo:
        name = node["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo()
        elif ni.node is not None:
            return self.update_node(ni.node, node)
        ni.set_node(node)
        self.node_tree.add(node)
        self.tree_generation += 1
        self.dirty.add(name)
        return ni

    def update_node(self, old: dict | None, new: dict) -> NodeInfo:
        name = new["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None or ni.node is None:
            return self.add_node(new)
        if zone_of(ni.node) != zone_of(new):
            self.node_tree.add(new)
            self.tree_generation += 1
        ni.set_node(new)
        self.dirty.add(name)
        return ni

    def remove_node(self, node: dict) -> None:
        """Forget the node; its NodeInfo stays while pods still point at it (the pod deletes follow)."""
        name = node["metadata"]["name"]
        ni = self.nodes.get(name)
        if ni is None:
            return
        self.node_tree.remove(name)
        self.tree_generation += 1
        self.dirty.add(name)
        if ni.pods:
            ni.remove_node()
        else:
            del self.nodes[name]

    # -- pods --------------------------------------------------------------------------------

    def _add_to_node(self, pod: dict) -> None:
        name = node_name_of(pod)
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo()   # the pod's node has not been seen yet
        ni.add_pod_info(PodInfo.of(pod))
        self.dirty.add(name)

    def _remove_from_node(self, pod: dict) -> None:
        name = node_name_of(pod)
        ni = self.nodes.get(name)
        if ni is None:
            return
        ni.remove_pod(pod)
        self.dirty.add(name)
        if not ni.pods and ni.node is None:
            del self.nodes[name]

    def assume_pod(self, pod: dict) -> None:
        """``pod`` has ``spec.nodeName`` set to the chosen node; ValueError if already known."""
        uid = pod_uid(pod)
        if uid in self.pod_states:
            raise ValueError(f"pod {pod_key(pod)} ({uid}) is in the cache, so can't be assumed")
        self._add_to_node(pod)
        self.pod_states[uid] = _PodState(pod)
        self.assumed_pods.add(uid)

    def finish_binding(self, pod: dict) -> None:
        """The binding call returned: the assumed pod expires ``ttl`` from now unless confirmed."""
        st = self.pod_states.get(pod_uid(pod))
        if st is not None and pod_uid(pod) in self.assumed_pods:
            st.binding_finished = True
            st.deadline = self.clock.now() + self.ttl

    def forget_pod(self, pod: dict) -> None:
        """Undo `assume_pod` (the binding failed)."""
        uid = pod_uid(pod)
        st = self.pod_states.get(uid)
        if st is None or uid not in self.assumed_pods:
            return
        if node_name_of(st.pod) != node_name_of(pod):
            log.error("pod %s was assumed on %s but forgotten on %s", pod_key(pod), node_name_of(st.pod),
                      node_name_of(pod))
        self._remove_from_node(st.pod)
        del self.pod_states[uid]
        self.assumed_pods.discard(uid)

    def add_pod(self, pod: dict) -> None:
        """A bound pod from the informer: confirms an assumed pod, or adds it."""
        uid = pod_uid(pod)
        st = self.pod_states.get(uid)
        if st is not None and uid in self.assumed_pods:
            # confirmed; the node may differ if someone else bound it meanwhile
            self._remove_from_node(st.pod)
            self._add_to_node(pod)
            st.pod, st.deadline = pod, None
            self.assumed_pods.discard(uid)
        elif st is not None:
            self.update_pod(st.pod, pod)
        else:
            self._add_to_node(pod)
            self.pod_states[uid] = _PodState(pod)

    def update_pod(self, old: dict, new: dict) -> None:
        uid = pod_uid(new)
        st = self.pod_states.get(uid)
        if st is None or uid in self.assumed_pods:
            self.add_pod(new)
            return
        self._remove_from_node(st.pod)
        self._add_to_node(new)
        st.pod = new

    def remove_pod(self, pod: dict) -> None:
        uid = pod_uid(pod)
        st = self.pod_states.pop(uid, None)
        self.assumed_pods.discard(uid)
        if st is not None:
            self._remove_from_node(st.pod)

    def is_assumed_pod(self, pod: dict) -> bool:
        return pod_uid(pod) in self.assumed_pods

    def get_pod(self, pod: dict) -> dict | None:
        st = self.pod_states.get(pod_uid(pod))
        return st.pod if st is not None else None

    def cleanup_assumed_pods(self) -> list[dict]:
        """Expire assumed pods whose binding finished more than ``ttl`` ago; returns them."""
        now = self.clock.now()
        expired = []
        for uid in list(self.assumed_pods):
            st = self.pod_states[uid]
            if st.binding_finished and st.deadline is not None and now >= st.deadline:
                log.warning("assumed pod %s expired: its binding never showed up", pod_key(st.pod))
                self.remove_pod(st.pod)
                expired.append(st.pod)
        return expired

    # -- reading -----------------------------------------------------------------------------

    def node_count(self) -> int:
        return self.node_tree.count

    def pod_count(self) -> int:
        return len(self.pod_states)

    def update_snapshot(self, snapshot: Snapshot) -> None:
        snapshot.update_from(self.nodes, self.dirty, self.node_tree, self.tree_generation)
        self.dirty.clear()
