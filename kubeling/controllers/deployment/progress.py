"""The Progressing condition and progressDeadlineSeconds (upstream's ``progress.go``).

``kubectl rollout status`` reads exactly this, so the reasons and messages are upstream's:

- ``NewReplicaSetAvailable`` (True) once the rollout is complete: every replica updated and
  available. That verdict then stands until a new rollout (a new ReplicaSet) begins.
- ``ReplicaSetUpdated`` (True) whenever the rollout made progress since the stored status (more
  updated, ready or available pods, fewer old ones); its ``lastUpdateTime`` is the time of the
  last progress and ``lastTransitionTime`` is kept while it stays True.
- ``ProgressDeadlineExceeded`` (False) once ``lastUpdateTime`` is more than
  ``progressDeadlineSeconds`` old without progress. kubectl then says
  ``deployment "x" exceeded its progress deadline`` and exits non-zero.

A ``ReplicaFailure`` condition of a ReplicaSet (quota, admission) is copied to the Deployment.
A rollout that has not finished nor timed out is looked at again just after its deadline
(`requeue_stuck_deployment`), since no event may come to wake it.
"""

from __future__ import annotations

import copy

from kubeling.controllers.deployment import util
from kubeling.controllers.deployment.sync import calculate_status


async def sync_rollout_status(dc, all_rss: list[dict | None], new: dict | None, d: dict) -> None:
    status = calculate_status(dc, all_rss, new, d)
    if not util.has_progress_deadline(d):
        util.remove_condition(status, util.PROGRESSING)
    current = util.get_condition(d.get("status"), util.PROGRESSING)
    complete_before = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                       and current is not None and current.get("reason") == util.NEW_RS_AVAILABLE)
    if util.has_progress_deadline(d) and not complete_before:
        subject = (f'ReplicaSet "{new["metadata"]["name"]}"' if new is not None
                   else f'Deployment "{d["metadata"]["name"]}"')
        if util.deployment_complete(d, status):
            util.set_condition(status, util.new_condition(util.PROGRESSING, "True", util.NEW_RS_AVAILABLE,
                                                          f"{subject} has successfully progressed.", dc.now()))
        elif util.deployment_progressing(d, status):
            cond = util.new_condition(util.PROGRESSING, "True", util.REPLICASET_UPDATED,
                                      f"{subject} is progressing.", dc.now())
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                util.remove_condition(status, util.PROGRESSING)
            # replaced, not merged: lastUpdateTime must move with every sign of progress
            status["conditions"] = [*(status.get("conditions") or []), cond]
        elif util.deployment_timed_out(d, status, dc.wall()):
            util.set_condition(status, util.new_condition(util.PROGRESSING, "False", util.TIMED_OUT,
                                                          f"{subject} has timed out progressing.", dc.now()))
    failures = replica_failures(all_rss, new)
    if failures:
        util.set_condition(status, failures[0])
    else:
        util.remove_condition(status, util.REPLICA_FAILURE)
    status = util.compact_status(status)
    if util.compact_status(d.get("status")) == status:
        requeue_stuck_deployment(dc, d, status)
        return
    d["status"] = status
    await dc.update_deployment_status(d)


def replica_failures(all_rss: list[dict | None], new: dict | None) -> list[dict]:
    """ReplicaFailure conditions of the new ReplicaSet, else of any, as Deployment conditions."""
    def of(rs):
        out = []
        for c in (rs.get("status") or {}).get("conditions") or ():
            if c.get("type") == util.REPLICA_FAILURE:
                cond = copy.deepcopy(c)
                cond.setdefault("lastUpdateTime", c.get("lastTransitionTime"))
                out.append(cond)
        return out
    if new is not None and of(new):
        return of(new)
    return [c for rs in all_rss if rs is not None for c in of(rs)]


def requeue_stuck_deployment(dc, d: dict, status: dict) -> float | None:
    """Look at an unfinished rollout again right after its deadline; the delay, or None."""
    current = util.get_condition(d.get("status"), util.PROGRESSING)
    if not util.has_progress_deadline(d) or current is None:
        return None
    if util.deployment_complete(d, status) or current.get("reason") == util.TIMED_OUT:
        return None
    since = util.parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    after = (since - dc.wall()).total_seconds() + int(d["spec"]["progressDeadlineSeconds"])
    key = dc.key(d)
    if after < 1:
        dc.queue.add_rate_limited(key)
        return 0.0
    dc.queue.add_after(key, after + 1)
    return after
