"""Multi-node clusters on one machine, without Docker (``kubeling cluster``; kind's idea, k3s's
agents): `netns` makes the bridge and the per-node network namespaces, `cluster.Cluster` starts
the server and the agents, records them in ``<data-dir>/cluster.json`` and removes them again.
The e2e harness (tests/e2e/multinode.py) drives the same `Cluster`.
"""

from kubeling.cluster.cluster import Cluster, ClusterError, ClusterState, ControlPlaneState, NodeState

__all__ = ["Cluster", "ClusterError", "ClusterState", "ControlPlaneState", "NodeState"]
