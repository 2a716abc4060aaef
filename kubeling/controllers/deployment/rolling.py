"""The RollingUpdate strategy (upstream's ``rolling.go``).

Each sync makes one move and returns; the next ReplicaSet or pod event brings the next:

1. Scale the new ReplicaSet up, at most to ``spec.replicas + maxSurge`` pods in all
   (`util.new_rs_new_replicas`).
2. Otherwise scale old ReplicaSets down, never below ``spec.replicas - maxUnavailable``
   available pods, counting the new ReplicaSet's unavailable pods against the budget. Old
   pods that are not available go first (`cleanup_unhealthy_replicas`): removing them costs
   no availability, and a rollout stuck on them (a bad old image) can still finish.
3. When the rollout is complete, delete old ReplicaSets beyond ``revisionHistoryLimit``.

The status, with the Progressing condition, is written after every move (`progress`).
"""

from __future__ import annotations

from kubeling.controllers.deployment import util
from kubeling.controllers.deployment.progress import sync_rollout_status
from kubeling.controllers.deployment.sync import (
    cleanup_deployment,
    get_all_replicasets_and_sync_revision,
    scale_replicaset_and_record_event,
)


async def rollout_rolling(dc, d: dict, rss: list[dict]) -> None:
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=True)
    all_rss = [*olds, new]
    if await reconcile_new_replicaset(dc, all_rss, new, d):
        await sync_rollout_status(dc, all_rss, new, d)
        return
    if await reconcile_old_replicasets(dc, all_rss, util.active(olds), new, d):
        await sync_rollout_status(dc, all_rss, new, d)
        return
    if util.deployment_complete(d, d.get("status") or {}):
        await cleanup_deployment(dc, olds, d)
    await sync_rollout_status(dc, all_rss, new, d)


async def reconcile_new_replicaset(dc, all_rss: list[dict], new: dict, d: dict) -> bool:
    if util.replicas(new) == util.replicas(d):
        return False
    if util.replicas(new) > util.replicas(d):
        return await scale_replicaset_and_record_event(dc, new, util.replicas(d), d)
    return await scale_replicaset_and_record_event(dc, new, util.new_rs_new_replicas(d, all_rss, new), d)


async def reconcile_old_replicasets(dc, all_rss: list[dict], olds: list[dict], new: dict, d: dict) -> bool:
    if util.spec_replica_count(olds) == 0:
        return False  # nothing left to scale down
    min_available = util.replicas(d) - util.max_unavailable(d)
    new_unavailable = util.replicas(new) - util.status_of(new, "availableReplicas")
    max_scaled_down = util.spec_replica_count(all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return False
    cleaned = await cleanup_unhealthy_replicas(dc, olds, d, max_scaled_down)
    scaled = await scale_down_old_replicasets(dc, [*olds, new], olds, d)
    return cleaned + scaled > 0


async def cleanup_unhealthy_replicas(dc, olds: list[dict], d: dict, max_cleanup: int) -> int:
    """Scale old ReplicaSets down by their unavailable pods, oldest first, at most ``max_cleanup``."""
    total = 0
    for rs in util.by_creation(olds):
        if total >= max_cleanup:
            break
        unavailable = util.replicas(rs) - util.status_of(rs, "availableReplicas")
        if util.replicas(rs) == 0 or unavailable <= 0:
            continue
        count = min(max_cleanup - total, unavailable)
        await scale_replicaset_and_record_event(dc, rs, util.replicas(rs) - count, d)
        total += count
    return total


async def scale_down_old_replicasets(dc, all_rss: list[dict], olds: list[dict], d: dict) -> int:
    """Scale old ReplicaSets down, oldest first, while more than minAvailable pods are available."""
    min_available = util.replicas(d) - util.max_unavailable(d)
    available = util.status_count(all_rss, "availableReplicas")
    if available <= min_available:
        return 0
    budget, total = available - min_available, 0
    for rs in util.by_creation(olds):
        if total >= budget:
            break
        if util.replicas(rs) == 0:
            continue
        count = min(util.replicas(rs), budget - total)
        await scale_replicaset_and_record_event(dc, rs, util.replicas(rs) - count, d)
        total += count
    return total
