"""`Snapshot`: the nodes one scheduling cycle sees (upstream's ``internal/cache/snapshot.go``).

The cache refreshes it at the start of every cycle (`Cache.update_snapshot`). The refresh is
incremental: only the nodes the cache marked dirty are looked at, and one whose
`NodeInfo.generation` differs from the snapshot's copy is copied (`NodeInfo.snapshot`), so what
the cycle reads does not move under it while binding tasks and informer handlers change the
cache between cycles. The ordered lists are rebuilt only when something changed.

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
        self._index: dict[str, int] = {}
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

    def update_from(self, nodes: dict[str, NodeInfo], dirty: set[str], tree, tree_generation: int) -> None:
        """Refresh from the cache's ``nodes``; ``dirty``: the names changed since the last call."""
        changed = tree_generation != self.tree_generation
        m = self.node_info_map
        affinity_changed = False
        for name in dirty:
            ni = nodes.get(name)
            if ni is None or ni.node is None:
                if m.pop(name, None) is not None:
                    changed = True
                continue
            cur = m.get(name)
            if cur is None or cur.generation != ni.generation:
                copy = m[name] = ni.snapshot()
                changed = True
                if cur is None or bool(cur.pods_with_affinity) != bool(copy.pods_with_affinity) or \
                        bool(cur.pods_with_required_anti_affinity) != bool(copy.pods_with_required_anti_affinity):
                    affinity_changed = True
                elif cur is not None:
                    self._replace(cur, copy)
        if changed and (tree_generation != self.tree_generation or affinity_changed):
            self._rebuild(tree.list())
            self.tree_generation = tree_generation

    def _replace(self, old: NodeInfo, new: NodeInfo) -> None:
        """Put a fresh copy of a node where the old one was, without rebuilding the lists."""
        lst = self.node_info_list
        i = self._index.get(new.name)
        if i is not None and i < len(lst) and lst[i] is old:
            lst[i] = new
        else:
            self._rebuild([n.name for n in lst])
            return
        for aff in (self.have_pods_with_affinity, self.have_pods_with_required_anti_affinity):
            if old.pods_with_affinity or old.pods_with_required_anti_affinity:
                for j, n in enumerate(aff):
                    if n is old:
                        aff[j] = new

    def _rebuild(self, order: list[str]) -> None:
        m = self.node_info_map
        self.node_info_list = [m[n] for n in order if n in m]
        self._index = {n.name: i for i, n in enumerate(self.node_info_list)}
        self.have_pods_with_affinity = [n for n in self.node_info_list if n.pods_with_affinity]
        self.have_pods_with_required_anti_affinity = [n for n in self.node_info_list
                                                      if n.pods_with_required_anti_affinity]
