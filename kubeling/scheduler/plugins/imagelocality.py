"""ImageLocality (Score): prefer nodes that already have the pod's images.

The score sums, over the pod's containers and init containers, the size of each image the node
has, scaled by the share of nodes that have it (``size * nodes_with_image / all_nodes``, so an
image everywhere does not pull every pod to one node). The sum is clamped to
``[23 MB, 1000 MB * containers]`` and mapped linearly onto 0..100.

Contract with the scheduler cache: ``NodeInfo.image_states`` maps every name of every image in
``node.status.images`` to ``ImageStateSummary(size, num_nodes)`` where ``num_nodes`` counts the
nodes reporting that name; `node_image_sizes` gives the cache the per-node names and sizes.
Image names are matched as upstream does: the pod's image gets ``:latest`` when it has no tag,
nothing else is normalised.
"""

from __future__ import annotations

from kubeling.scheduler.framework.interface import (
    MAX_NODE_SCORE,
    CycleState,
    Plugin,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo

NAME = "ImageLocality"
PRE_SCORE_STATE_KEY = "PreScore" + NAME
MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def normalized_image_name(name: str) -> str:
    """``name:latest`` when the reference has no tag (a ``:`` after the last ``/``)."""
    if name.rfind(":") <= name.rfind("/"):
        return name + ":latest"
    return name


def node_image_sizes(node: dict) -> dict[str, int]:
    """Every name of every image in ``node.status.images`` with its size in bytes."""
    out: dict[str, int] = {}
    for image in (node.get("status") or {}).get("images") or ():
        size = image.get("sizeBytes") or 0
        for name in image.get("names") or ():
            out[name] = size
    return out


def pod_images(pod: dict) -> list[str]:
    spec = pod.get("spec") or {}
    return [normalized_image_name(c.get("image") or "")
            for c in list(spec.get("initContainers") or ()) + list(spec.get("containers") or ())]


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


def sum_image_scores(node_info: NodeInfo, images: list[str], total_nodes: int) -> int:
    total = 0
    states = node_info.image_states
    for image in images:
        st = states.get(image)
        if st is not None and total_nodes:
            total += int(st.size * (st.num_nodes / total_nodes))
    return total


class ImageLocality(Plugin):
    NAME = NAME

    def pre_score(self, state: CycleState, pod: dict, nodes: list[NodeInfo]) -> Status | None:
        # All nodes of the snapshot, not just the feasible ones: the spread is cluster-wide.
        total = len(self.handle.snapshot_shared_lister().list()) if self.handle is not None else len(nodes)
        state.write(PRE_SCORE_STATE_KEY, (pod_images(pod), total))
        return None

    def score(self, state: CycleState, pod: dict, node_info: NodeInfo) -> tuple[int, Status | None]:
        try:
            images, total = state.read(PRE_SCORE_STATE_KEY)
        except KeyError:
            images = pod_images(pod)
            total = len(self.handle.snapshot_shared_lister().list()) if self.handle is not None else 1
        if not images:
            return 0, None
        return calculate_priority(sum_image_scores(node_info, images, total), len(images)), None

    def score_extensions(self):
        return None
