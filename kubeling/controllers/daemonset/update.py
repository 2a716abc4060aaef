"""DaemonSet updates: ControllerRevision history and the RollingUpdate plan (upstream's
``pkg/controller/daemon/update.go``).

History (`construct_history`): the current revision is the one whose data equals the set's
template; an equal revision that is not the newest (a rollback) is renumbered newest;
duplicates are merged into the newest one (their pods relabelled first); a missing one is
created, bumping ``status.collisionCount`` on a hash collision. Its ``controller-revision-hash``
label is the *hash* that daemon pods carry. `cleanup_history` deletes old revisions no pod
uses, oldest first, beyond ``revisionHistoryLimit``.

Rolling update (`rolling_update_plan`, pure: it returns what to delete and where to surge):

- ``maxSurge == 0``: an old pod that is not available is replaced at once; otherwise old pods
  are deleted while the number of unavailable nodes stays within ``maxUnavailable``. The manage
  step then creates the new pod on the emptied node.
- ``maxSurge > 0``: a new pod is started next to an old one on up to ``maxSurge`` nodes (at once
  where the old pod is unavailable); the old pod is deleted once the new one is available.

A node with two old or two new pods is left to the manage step (which keeps the oldest).
"""

from __future__ import annotations

import datetime as dt
import logging

from kubeling.controllers import history
from kubeling.controllers.controller_utils import is_pod_available, parse_time
from kubeling.controllers.daemonset import util

log = logging.getLogger(__name__)

HASH_LABEL = history.CONTROLLER_REVISION_HASH_LABEL


def pod_hash(pod: dict) -> str:
    return (pod["metadata"].get("labels") or {}).get(HASH_LABEL, "")


def is_updated(ds: dict, pod: dict, hash_: str) -> bool:
    """At the set's current template: the revision hash matches (or, for pods made before
    revisions existed, the template generation)."""
    if hash_ and pod_hash(pod) == hash_:
        return True
    generation = util.template_generation(ds)
    labels = pod["metadata"].get("labels") or {}
    return not pod_hash(pod) and generation is not None and labels.get(util.TEMPLATE_GENERATION_LABEL) == generation


def find_updated_pods_on_node(ds: dict, pods: list[dict], hash_: str) -> tuple[dict | None, dict | None, bool]:
    """(new pod, old pod, ok): ok is False when a node has two pods of one kind."""
    new = old = None
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if is_updated(ds, pod, hash_):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def rolling_update_plan(ds: dict, node_to_pods: dict[str, list[dict]], hash_: str, desired: int,
                        now: dt.datetime) -> tuple[list[dict], list[str]]:
    """(old pods to delete, nodes that get a surge pod). See the module docstring."""
    max_surge, max_unavailable = util.rolling_update_bounds(ds, desired)
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)

    def available(p: dict) -> bool:
        return is_pod_available(p, min_ready, now)

    if max_surge == 0:
        unavailable, replace, candidates = 0, [], []
        for node in sorted(node_to_pods):
            new, old, ok = find_updated_pods_on_node(ds, node_to_pods[node], hash_)
            if not ok or (new is None) == (old is None):
                unavailable += 1  # nothing, or both: the manage step sorts it out
            elif new is not None:
                unavailable += not available(new)
            elif not available(old):
                replace.append(old)  # already unavailable: replacing it costs nothing
                unavailable += 1
            elif unavailable < max_unavailable:
                candidates.append(old)
        room = max(0, max_unavailable - unavailable)
        return replace + candidates[:room], []

    surging, wanting, candidates, delete = 0, [], [], []
    for node in sorted(node_to_pods):
        new, old, ok = find_updated_pods_on_node(ds, node_to_pods[node], hash_)
        if not ok:
            surging += 1
            continue
        if old is None:
            continue  # nothing old here: the manage step creates what is missing
        if new is None:
            if not available(old):
                wanting.append(node)  # nothing to lose: surge here at once
            elif surging < max_surge:
                candidates.append(node)
        elif not available(new):
            surging += 1  # a surge pod still on its way
        else:
            delete.append(old)
    room = max(0, max_surge - surging)
    return delete, wanting + candidates[:room]


async def construct_history(client, ds: dict, revisions: list[dict], pods: list[dict]) -> tuple[dict, list[dict], int]:
    """(current revision, old revisions, collision count). See the module docstring."""
    collision = int((ds.get("status") or {}).get("collisionCount") or 0)
    revisions = history.sort_revisions(revisions)
    template_labels = (((ds.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
    needle = history.new_controller_revision(ds, template_labels, history.template_patch(ds), 0, collision)
    equal = history.find_equal_revisions(revisions, needle)
    newest = history.next_revision(revisions) - 1
    current: dict | None = None
    if equal:
        current = equal[-1]
        for dup in equal[:-1]:  # merge duplicates into the newest: relabel its pods, then drop it
            await _relabel(client, pods, pod_hash_of_revision(dup), pod_hash_of_revision(current))
            await history.delete_revision(client, dup)
        if current.get("revision", 0) < newest:
            current = await history.update_revision_number(client, current, newest + 1)
    else:
        needle["revision"] = newest + 1
        current, collision = await history.create_controller_revision(client, ds, needle, collision)
    names = {r["metadata"]["name"] for r in equal}
    old = [r for r in revisions if r["metadata"]["name"] not in names]
    return current, old, collision


def pod_hash_of_revision(revision: dict) -> str:
    return (revision["metadata"].get("labels") or {}).get(HASH_LABEL, "")


async def _relabel(client, pods: list[dict], old_hash: str, new_hash: str) -> None:
    if not old_hash or old_hash == new_hash:
        return
    for pod in pods:
        if pod_hash(pod) == old_hash:
            meta = pod["metadata"]
            await client.patch("", "v1", "pods", meta["name"], {"metadata": {"labels": {HASH_LABEL: new_hash}}},
                               namespace=meta.get("namespace"), patch_type="merge")


async def cleanup_history(client, ds: dict, old: list[dict], pods: list[dict]) -> list[str]:
    live_hashes = {pod_hash(p) for p in pods}
    live = {r["metadata"]["name"] for r in old if pod_hash_of_revision(r) in live_hashes}
    limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
    return await history.truncate_history(client, old, live, None if limit is None else int(limit))


def oldest_first(pods: list[dict]) -> list[dict]:
    """Upstream's ``podByCreationTimestampAndPhase``: older first; on a tie, Running first."""
    def key(p: dict) -> tuple:
        created = parse_time(p["metadata"].get("creationTimestamp"))
        running = (p.get("status") or {}).get("phase") == "Running"
        return (created.timestamp() if created else 0.0, 0 if running else 1, p["metadata"]["name"])
    return sorted(pods, key=key)
