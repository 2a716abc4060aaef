"""The Recreate strategy (upstream's ``recreate.go``): scale every old ReplicaSet to zero, wait
until none of their pods is left running (terminating pods count as running: two versions
must never overlap), then create or scale the new ReplicaSet to ``spec.replicas`` at once.
"""

from __future__ import annotations

from kubeling.controllers.deployment import util
from kubeling.controllers.deployment.progress import sync_rollout_status
from kubeling.controllers.deployment.sync import (
    cleanup_deployment,
    get_all_replicasets_and_sync_revision,
    scale_replicaset_and_record_event,
)


async def rollout_recreate(dc, d: dict, rss: list[dict], pod_map: dict[str, list[dict]]) -> None:
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=False)
    all_rss = [*olds, new]
    scaled = False
    for rs in util.active(olds):
        scaled = await scale_replicaset_and_record_event(dc, rs, 0, d) or scaled
    if scaled:
        await sync_rollout_status(dc, all_rss, new, d)
        return
    if old_pods_running(new, olds, pod_map):
        await sync_rollout_status(dc, all_rss, new, d)
        return
    if new is None:
        new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=True)
        all_rss = [*olds, new]
    await scale_replicaset_and_record_event(dc, new, util.replicas(d), d)
    if util.deployment_complete(d, d.get("status") or {}):
        await cleanup_deployment(dc, olds, d)
    await sync_rollout_status(dc, all_rss, new, d)


def old_pods_running(new: dict | None, olds: list[dict], pod_map: dict[str, list[dict]]) -> bool:
    """Any old ReplicaSet still reports pods, or any pod of one is not finished."""
    if util.status_count(olds, "replicas") > 0:
        return True
    new_uid = new["metadata"]["uid"] if new is not None else None
    for uid, pods in pod_map.items():
        if uid == new_uid:
            continue
        if any((p.get("status") or {}).get("phase") not in ("Failed", "Succeeded") for p in pods):
            return True
    return False
