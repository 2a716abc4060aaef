"""`Snapshot`: the nodes one scheduling cycle sees (upstream's ``internal/cache/snapshot.go``).

The cache refreshes it at the start of every cycle (`Cache.update_snapshot`). The refresh is
incremental: a node whose `NodeInfo.generation` equals the snapshot's copy is kept as is; a
changed one is copied (`NodeInfo.snapshot`), so what the cycle reads does not move under it
while binding tasks and informer handlers change the cache between cycles.

``list()`` is in the cache's `NodeTree` order (zones interleaved) and holds only nodes whose
Node object exists. It implements the framework's `SharedLister`.
"""

from __future__ import annotations

from kubeling.scheduler.framework.types import NodeInfo


class Snapshot:
    def __init__(self, nodes: list[NodeInfo] | None = None) -> None:
        self.node_info_map: dict[str, NodeInfo] = {}
        self.node_info_list: list[NodeInfo] = []
        self.have_pods_with_affinity: list[NodeInfo] = []
        self.have_pods_with_required_anti_affinity: list[NodeInfo] = []
        self.tree_generation = -1
        if nodes:
            # a fixed snapshot (tests, preemption dry runs)
            self.node_info_map = {n.name: n for n in nodes}
            self._rebuild([n.name for n in nodes])

    # -- SharedLister ------------------------------------------------------------------------

    def list(self) -> list[NodeInfo]:
        return self.node_info_list

    def get(self, node_name: str) -> NodeInfo:
        """The node's NodeInfo; KeyError if it is not in the snapshot."""
        return self.node_info_map[node_name]

    def have_pods_with_affinity_list(self) -> list[NodeInfo]:
        return self.have_pods_with_affinity

    def have_pods_with_required_anti_affinity_list(self) -> list[NodeInfo]:
        return self.have_pods_with_required_anti_affinity

    def num_nodes(self) -> int:
        return len(self.node_info_list)

    # -- refresh -----------------------------------------------------------------------------

    def update_from(self, nodes: dict[str, NodeInfo], tree, tree_generation: int) -> None:
        changed = tree_generation != self.tree_generation
        m = self.node_info_map
        for name, ni in nodes.items():
            if ni.node is None:
                continue
            cur = m.get(name)
            if cur is None or cur.generation != ni.generation:
                m[name] = ni.snapshot()
                changed = True
        if len(m) != tree.count:
            for name in [n for n, ni in m.items() if n not in nodes or nodes[n].node is None]:
                del m[name]
            changed = True
        if changed:
            self._rebuild(tree.list())
            self.tree_generation = tree_generation

    def _rebuild(self, order: list[str]) -> None:
        m = self.node_info_map
        self.node_info_list = [m[n] for n in order if n in m]
        self.have_pods_with_affinity = [n for n in self.node_info_list if n.pods_with_affinity]
        self.have_pods_with_required_anti_affinity = [n for n in self.node_info_list
                                                      if n.pods_with_required_anti_affinity]
