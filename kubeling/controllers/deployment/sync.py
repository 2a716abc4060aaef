"""What every Deployment sync shares (upstream's ``sync.go``): finding or creating the new
ReplicaSet and its revision, scaling (proportionally, mid-rollout), cleaning up old
ReplicaSets beyond ``revisionHistoryLimit``, the paused condition, and the status.

Every function takes the controller ``dc`` (for its client, caches, recorder and clock), the
Deployment ``d`` — the sync's private deep copy, which writes refresh in place — and
ReplicaSets that are private copies too: `DeploymentController.update_replicaset` refreshes a
ReplicaSet dict in place, so every list holding it sees the write.
"""

from __future__ import annotations

import copy
import logging

from kubeling.client import is_already_exists, is_not_found
from kubeling.client.events import NORMAL, WARNING
from kubeling.controllers.controller_utils import (
    compute_hash,
    controller_ref,
    get_controller_of,
)
from kubeling.controllers.deployment import util

log = logging.getLogger(__name__)


async def sync_status_only(dc, d: dict, rss: list[dict]) -> None:
    """A Deployment being deleted: only its status follows its ReplicaSets."""
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=False)
    await sync_deployment_status(dc, [*olds, new], new, d)


async def sync(dc, d: dict, rss: list[dict]) -> None:
    """A paused Deployment or a scaling event: scale what exists, create nothing new."""
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=False)
    await scale(dc, d, new, olds)
    if d["spec"].get("paused") and get_rollback_to(d) is None:
        await cleanup_deployment(dc, olds, d)
    await sync_deployment_status(dc, [*olds, new], new, d)


def get_rollback_to(d: dict) -> int | None:
    """The legacy rollback request (``spec.rollbackTo`` became this annotation in apps/v1)."""
    value = (d["metadata"].get("annotations") or {}).get(util.ROLLBACK_TO)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # an invalid request is ignored, as upstream


async def check_paused_conditions(dc, d: dict) -> None:
    """Progressing=Unknown with DeploymentPaused/DeploymentResumed while (un)paused, unless the
    rollout already timed out (that verdict stands)."""
    if not util.has_progress_deadline(d):
        return
    cond = util.get_condition(d.get("status"), util.PROGRESSING)
    if cond is not None and cond.get("reason") == util.TIMED_OUT:
        return
    paused_cond = cond is not None and cond.get("reason") == util.PAUSED
    status = d.setdefault("status", {})
    if d["spec"].get("paused") and not paused_cond:
        util.set_condition(status, util.new_condition(util.PROGRESSING, "Unknown", util.PAUSED,
                                                      "Deployment is paused", dc.now()))
    elif not d["spec"].get("paused") and paused_cond:
        util.set_condition(status, util.new_condition(util.PROGRESSING, "Unknown", util.RESUMED,
                                                      "Deployment is resumed", dc.now()))
    else:
        return
    await dc.update_deployment_status(d)


async def is_scaling_event(dc, d: dict, rss: list[dict]) -> bool:
    """``spec.replicas`` differs from what an active ReplicaSet was last sized for."""
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=False)
    for rs in util.active([*olds, new]):
        desired = util.int_annotation(rs, util.DESIRED_REPLICAS)
        if desired is not None and desired != util.replicas(d):
            return True
    return False


async def get_all_replicasets_and_sync_revision(dc, d: dict, rss: list[dict], create: bool):
    """(the new ReplicaSet or None, every old ReplicaSet); with ``create``, make the new one."""
    _, olds = util.find_old_replicasets(d, rss)
    new = await get_new_replicaset(dc, d, rss, olds, create)
    return new, olds


async def get_new_replicaset(dc, d: dict, rss: list[dict], olds: list[dict], create: bool) -> dict | None:
    existing = util.find_new_replicaset(d, rss)
    new_revision = str(util.max_revision(olds) + 1)
    if existing is not None:
        rs = copy.deepcopy(existing)
        annotations_changed = util.set_new_replicaset_annotations(d, rs, new_revision, exists=True)
        min_ready = int(d["spec"].get("minReadySeconds") or 0)
        if annotations_changed or int(rs["spec"].get("minReadySeconds") or 0) != min_ready:
            rs["spec"]["minReadySeconds"] = min_ready
            await dc.update_replicaset(existing, rs)
            return existing
        needs_update = util.set_deployment_revision(d, util.annotations(existing).get(util.REVISION, ""))
        if util.has_progress_deadline(d) and util.get_condition(d.get("status"), util.PROGRESSING) is None:
            util.set_condition(d.setdefault("status", {}), util.new_condition(
                util.PROGRESSING, "True", util.FOUND_NEW_RS, f'Found new replica set "{existing["metadata"]["name"]}"',
                dc.now()))
            needs_update = True
        if needs_update:
            await dc.update_deployment_status(d)
        return existing
    if not create:
        return None
    return await _create_new_replicaset(dc, d, olds, new_revision)


async def _create_new_replicaset(dc, d: dict, olds: list[dict], new_revision: str) -> dict | None:
    collision_count = (d.get("status") or {}).get("collisionCount")
    pod_hash = compute_hash(d["spec"]["template"], collision_count)
    template = copy.deepcopy(d["spec"]["template"])
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), util.POD_TEMPLATE_HASH: pod_hash}
    selector = copy.deepcopy(d["spec"].get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), util.POD_TEMPLATE_HASH: pod_hash}
    name = f"{d['metadata']['name']}-{pod_hash}"
    namespace = d["metadata"].get("namespace")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": name, "namespace": namespace, "labels": dict(tmeta["labels"]),
                       "ownerReferences": [controller_ref(d, "apps/v1", "Deployment")]},
          "spec": {"replicas": 0, "minReadySeconds": int(d["spec"].get("minReadySeconds") or 0),
                   "selector": selector, "template": template}}
    new_replicas = util.new_rs_new_replicas(d, [*olds, rs], rs)
    rs["spec"]["replicas"] = new_replicas
    util.set_new_replicaset_annotations(d, rs, new_revision, exists=False)
    already_exists = False
    try:
        created = await dc.client.create("apps", "v1", "replicasets", rs, namespace=namespace)
    except Exception as e:
        if is_already_exists(e):
            found = dc.replicasets.get(f"{namespace}/{name}")
            if found is None:
                raise  # ours, made by the previous sync, not in the cache yet: look again later
            ref = get_controller_of(found)
            if (ref is not None and ref.get("uid") == d["metadata"]["uid"]
                    and util.equal_ignore_hash(d["spec"]["template"], found["spec"]["template"])):
                created, already_exists = copy.deepcopy(found), True
            else:
                # a hash collision: the next sync hashes with a higher collisionCount
                status = d.setdefault("status", {})
                status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
                try:
                    await dc.update_deployment_status(d)
                except Exception as update_error:  # noqa: BLE001 - retried with the sync
                    log.info("deployment %s: recording a hash collision failed: %s", name, update_error)
                raise
        else:
            message = f'Failed to create new replica set "{name}": {getattr(e, "message", None) or e}'
            if util.has_progress_deadline(d):
                util.set_condition(d.setdefault("status", {}), util.new_condition(
                    util.PROGRESSING, "False", util.FAILED_RS_CREATE, message, dc.now()))
                try:
                    await dc.update_deployment_status(d)
                except Exception as update_error:  # noqa: BLE001 - the create error is what gets reported
                    log.info("deployment %s: recording %s failed: %s", d["metadata"]["name"], util.FAILED_RS_CREATE,
                             update_error)
            dc.recorder.event(d, WARNING, util.FAILED_RS_CREATE, message)
            raise
    if not already_exists and new_replicas > 0:
        dc.recorder.event(d, NORMAL, "ScalingReplicaSet",
                          f"Scaled up replica set {created['metadata']['name']} to {new_replicas}")
    needs_update = util.set_deployment_revision(d, new_revision)
    if not already_exists and util.has_progress_deadline(d):
        util.set_condition(d.setdefault("status", {}), util.new_condition(
            util.PROGRESSING, "True", util.NEW_RS_CREATED, f'Created new replica set "{created["metadata"]["name"]}"',
            dc.now()))
        needs_update = True
    if needs_update:
        await dc.update_deployment_status(d)
    return created


async def scale(dc, d: dict, new: dict | None, olds: list[dict]) -> None:
    """Scale to ``spec.replicas``: the one active ReplicaSet directly; mid-rollout, spread the
    change over the active ReplicaSets in proportion to their sizes (upstream's
    proportional scaling), leftovers to the largest."""
    only = util.find_active_or_latest(new, olds)
    if only is not None:
        if util.replicas(only) != util.replicas(d):
            await scale_replicaset_and_record_event(dc, only, util.replicas(d), d)
        return
    if util.is_saturated(d, new):
        for old in util.active(olds):
            await scale_replicaset_and_record_event(dc, old, 0, d)
        return
    if not util.is_rolling_update(d):
        return
    live = util.active([*olds, new])
    allowed = util.replicas(d) + util.max_surge(d) if util.replicas(d) > 0 else 0
    to_add = allowed - util.spec_replica_count(live)
    if to_add > 0:
        live, operation = util.by_size_newer(live), "up"
    elif to_add < 0:
        live, operation = util.by_size_older(live), "down"
    else:
        operation = ""
    sizes, added = {}, 0
    for rs in live:
        if to_add != 0:
            share = util.proportion(rs, d, to_add, added)
            sizes[rs["metadata"]["name"]] = util.replicas(rs) + share
            added += share
        else:
            sizes[rs["metadata"]["name"]] = util.replicas(rs)
    for i, rs in enumerate(live):
        name = rs["metadata"]["name"]
        if i == 0 and to_add != 0:
            sizes[name] = max(sizes[name] + to_add - added, 0)
        await scale_replicaset(dc, rs, sizes[name], d, operation)


async def scale_replicaset_and_record_event(dc, rs: dict, new_scale: int, d: dict) -> bool:
    if util.replicas(rs) == new_scale:
        return False
    return await scale_replicaset(dc, rs, new_scale, d, "up" if util.replicas(rs) < new_scale else "down")


async def scale_replicaset(dc, rs: dict, new_scale: int, d: dict, operation: str) -> bool:
    """Set the size (and the desired/max annotations); a ScalingReplicaSet Event when the size
    moved. True if it did."""
    size_changes = util.replicas(rs) != new_scale
    desired, maximum = util.replicas(d), util.replicas(d) + util.max_surge(d)
    if not size_changes and not util.replicas_annotations_need_update(rs, desired, maximum):
        return False
    old_scale = util.replicas(rs)
    changed = copy.deepcopy(rs)
    changed["spec"]["replicas"] = new_scale
    util.set_replicas_annotations(changed, desired, maximum)
    await dc.update_replicaset(rs, changed)
    if size_changes:
        dc.recorder.event(d, NORMAL, "ScalingReplicaSet",
                          f"Scaled {operation} replica set {rs['metadata']['name']} to {new_scale} from {old_scale}")
    return size_changes


async def cleanup_deployment(dc, olds: list[dict], d: dict) -> None:
    """Delete the oldest old ReplicaSets beyond ``revisionHistoryLimit`` — only empty,
    settled ones (no replicas, status observed)."""
    if not util.has_revision_history_limit(d):
        return
    alive = [rs for rs in olds if not rs["metadata"].get("deletionTimestamp")]
    surplus = len(alive) - int(d["spec"]["revisionHistoryLimit"])
    if surplus <= 0:
        return
    for rs in util.by_revision(alive)[:surplus]:
        meta, status = rs["metadata"], rs.get("status") or {}
        if (int(status.get("replicas") or 0) != 0 or util.replicas(rs) != 0
                or int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0)):
            continue
        try:
            await dc.client.delete("apps", "v1", "replicasets", meta["name"], namespace=meta.get("namespace"),
                                   preconditions={"uid": meta["uid"]})
        except Exception as e:
            if not is_not_found(e):
                raise


def calculate_status(dc, all_rss: list[dict | None], new: dict | None, d: dict) -> dict:
    """The status the ReplicaSets give ``d``; conditions carried over, Available recomputed."""
    rss = [rs for rs in all_rss if rs is not None]
    available = util.status_count(rss, "availableReplicas")
    status = {
        "observedGeneration": int(d["metadata"].get("generation") or 0),
        "replicas": util.status_count(rss, "replicas"),
        "updatedReplicas": util.status_count([new], "replicas"),
        "readyReplicas": util.status_count(rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(util.spec_replica_count(rss) - available, 0),
    }
    old = d.get("status") or {}
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= util.replicas(d) - util.max_unavailable(d):
        util.set_condition(status, util.new_condition(util.AVAILABLE, "True", util.MIN_AVAILABLE,
                                                      "Deployment has minimum availability.", dc.now()))
    else:
        util.set_condition(status, util.new_condition(util.AVAILABLE, "False", util.MIN_UNAVAILABLE,
                                                      "Deployment does not have minimum availability.", dc.now()))
    return util.compact_status(status)


async def sync_deployment_status(dc, all_rss: list[dict | None], new: dict | None, d: dict) -> None:
    status = calculate_status(dc, all_rss, new, d)
    if util.compact_status(d.get("status")) == status:
        return
    d["status"] = status
    await dc.update_deployment_status(d)
