"""Pure helpers of the Deployment controller: upstream's ``pkg/controller/deployment/util``.

Everything here is a function of plain dicts (a Deployment, its ReplicaSets) and, where time
matters, an explicit ``now``; nothing does I/O. The controller modules (`sync`, `rolling`,
`recreate`, `progress`, `rollback`) compose them.

- Annotations kubectl and the controller share: ``deployment.kubernetes.io/revision`` (each
  ReplicaSet's revision; the Deployment carries its new ReplicaSet's), ``revision-history``
  (earlier revisions of a ReplicaSet that a rollback made current again),
  ``desired-replicas`` and ``max-replicas`` (the Deployment's size and size+surge when the
  ReplicaSet was last scaled; proportional scaling reads them).
- Fenceposts: ``maxSurge`` rounds *up* and ``maxUnavailable`` rounds *down* from a percentage
  of ``spec.replicas``; if both resolve to 0 (only possible by rounding), maxUnavailable is 1,
  or a rollout could never move.
- Conditions: `set_condition` keeps ``lastTransitionTime`` while the status stays the same and
  does nothing when status and reason are unchanged, as upstream's ``SetDeploymentCondition``.
- Orders: `by_creation` (oldest first, then name), `by_size_older`/`by_size_newer` (largest
  first; ties to the older/newer), `by_revision`.
"""

from __future__ import annotations

import copy
import functools
import math

from kubeling.controllers.controller_utils import parse_time

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
POD_TEMPLATE_HASH = "pod-template-hash"
MAX_REV_HISTORY_CHARS = 2000
MAX_INT32 = 2147483647

# condition types and reasons (kubectl rollout status and describe read them)
AVAILABLE, PROGRESSING, REPLICA_FAILURE = "Available", "Progressing", "ReplicaFailure"
REPLICASET_UPDATED = "ReplicaSetUpdated"
FAILED_RS_CREATE = "ReplicaSetCreateError"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
# rollback event reasons
ROLLBACK_REVISION_NOT_FOUND = "DeploymentRollbackRevisionNotFound"
ROLLBACK_TEMPLATE_UNCHANGED = "DeploymentRollbackTemplateUnchanged"
ROLLBACK_DONE = "DeploymentRollback"

_SKIP_COPY = {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, ROLLBACK_TO}


# -- small accessors --------------------------------------------------------------------------

def replicas(obj: dict | None) -> int:
    """``spec.replicas`` (the API server defaults it to 1)."""
    if obj is None:
        return 0
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def status_of(obj: dict | None, field: str) -> int:
    return int(((obj or {}).get("status") or {}).get(field) or 0)


def annotations(obj: dict) -> dict:
    return obj["metadata"].setdefault("annotations", {})


def strategy_type(d: dict) -> str:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type") or "RollingUpdate"


def is_rolling_update(d: dict) -> bool:
    return strategy_type(d) == "RollingUpdate"


def _unset_or_max(value) -> bool:
    return value is None or int(value) == MAX_INT32


def has_progress_deadline(d: dict) -> bool:
    return not _unset_or_max(d["spec"].get("progressDeadlineSeconds"))


def has_revision_history_limit(d: dict) -> bool:
    return not _unset_or_max(d["spec"].get("revisionHistoryLimit"))


def revision(rs: dict) -> int:
    """The ReplicaSet's revision; 0 when it has none. A malformed one raises ValueError."""
    value = (rs["metadata"].get("annotations") or {}).get(REVISION, "")
    return int(value) if value else 0


def max_revision(rss: list[dict]) -> int:
    best = 0
    for rs in rss:
        try:
            best = max(best, revision(rs))
        except ValueError:
            continue  # a hand-written annotation: not a revision
    return best


def last_revision(rss: list[dict]) -> int:
    """The second highest revision: the one ``rollbackTo.revision: 0`` means."""
    top = second = 0
    for rs in rss:
        try:
            v = revision(rs)
        except ValueError:
            continue
        if v >= top:
            top, second = v, top
        elif v > second:
            second = v
    return second


# -- fenceposts -------------------------------------------------------------------------------

def scaled_value(value, total: int, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"N%"`` of ``total`` rounded."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a percentage: {text!r}")
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def resolve_fenceposts(max_surge, max_unavailable, desired: int) -> tuple[int, int]:
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, True)
    unavailable = scaled_value(max_unavailable if max_unavailable is not None else 0, desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # validation refuses 0/0; rounding down can still reach it
    return surge, unavailable


def _rolling(d: dict) -> dict:
    return ((d["spec"].get("strategy") or {}).get("rollingUpdate")) or {}


def max_surge(d: dict) -> int:
    if not is_rolling_update(d):
        return 0
    ru = _rolling(d)
    return resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas(d))[0]


def max_unavailable(d: dict) -> int:
    if not is_rolling_update(d) or replicas(d) == 0:
        return 0
    ru = _rolling(d)
    unavailable = resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas(d))[1]
    return min(unavailable, replicas(d))


# -- replica set selection --------------------------------------------------------------------

def template_without_hash(template: dict) -> dict:
    t = copy.deepcopy(template or {})
    meta = t.get("metadata") or {}
    labels = meta.get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH, None)
    # kubectl sends ``creationTimestamp: null`` in templates; upstream compares decoded structs,
    # where null and absent are one zero time, so the stored ReplicaSet's template (without it)
    # is still equal. Compared as dicts, they differed and every sync made a new ReplicaSet.
    if "creationTimestamp" in meta and meta["creationTimestamp"] is None:
        del meta["creationTimestamp"]
    return t


def equal_ignore_hash(t1: dict, t2: dict) -> bool:
    """Two pod templates equal but for the ``pod-template-hash`` label."""
    return template_without_hash(t1) == template_without_hash(t2)


def _creation_cmp(a: dict, b: dict) -> int:
    ta, tb = parse_time(a["metadata"].get("creationTimestamp")), parse_time(b["metadata"].get("creationTimestamp"))
    if ta != tb and ta is not None and tb is not None:
        return -1 if ta < tb else 1
    na, nb = a["metadata"]["name"], b["metadata"]["name"]
    return (na > nb) - (na < nb)


def by_creation(rss: list[dict], reverse: bool = False) -> list[dict]:
    return sorted(rss, key=functools.cmp_to_key(_creation_cmp), reverse=reverse)


def by_size_older(rss: list[dict]) -> list[dict]:
    """Largest first; among equals, the older first (scale-down order of proportional scaling)."""
    def cmp(a, b):
        if replicas(a) != replicas(b):
            return -1 if replicas(a) > replicas(b) else 1
        return _creation_cmp(a, b)
    return sorted(rss, key=functools.cmp_to_key(cmp))


def by_size_newer(rss: list[dict]) -> list[dict]:
    """Largest first; among equals, the newer first (scale-up order of proportional scaling)."""
    def cmp(a, b):
        if replicas(a) != replicas(b):
            return -1 if replicas(a) > replicas(b) else 1
        return _creation_cmp(b, a)
    return sorted(rss, key=functools.cmp_to_key(cmp))


def by_revision(rss: list[dict]) -> list[dict]:
    def rev(rs):
        try:
            return revision(rs)
        except ValueError:
            return 0

    def cmp(a, b):
        if rev(a) != rev(b):
            return -1 if rev(a) < rev(b) else 1
        return _creation_cmp(a, b)
    return sorted(rss, key=functools.cmp_to_key(cmp))


def find_new_replicaset(d: dict, rss: list[dict]) -> dict | None:
    """The oldest ReplicaSet whose template is the Deployment's (several can match after a
    hash collision; the oldest is the one the Deployment has been scaling)."""
    for rs in by_creation(rss):
        if equal_ignore_hash(rs["spec"].get("template"), d["spec"].get("template")):
            return rs
    return None


def find_old_replicasets(d: dict, rss: list[dict]) -> tuple[list[dict], list[dict]]:
    """(old ReplicaSets that have replicas, every old ReplicaSet)."""
    new = find_new_replicaset(d, rss)
    every = [rs for rs in rss if new is None or rs["metadata"]["uid"] != new["metadata"]["uid"]]
    return [rs for rs in every if replicas(rs) != 0], every


def active(rss: list[dict | None]) -> list[dict]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def find_active_or_latest(new: dict | None, olds: list[dict]) -> dict | None:
    """The single ReplicaSet with replicas; with none, the new one or else the newest old one;
    None when several have replicas (a rollout is under way)."""
    if new is None and not olds:
        return None
    olds = by_creation(olds, reverse=True)
    live = active([*olds, new])
    if not live:
        return new if new is not None else olds[0]
    return live[0] if len(live) == 1 else None


def spec_replica_count(rss: list[dict | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def status_count(rss: list[dict | None], field: str) -> int:
    return sum(status_of(rs, field) for rs in rss if rs is not None)


# -- annotations ------------------------------------------------------------------------------

def set_replicas_annotations(rs: dict, desired: int, maximum: int) -> bool:
    ann = annotations(rs)
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: dict, desired: int, maximum: int) -> bool:
    ann = rs["metadata"].get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(maximum)


def int_annotation(rs: dict, key: str) -> int | None:
    value = (rs["metadata"].get("annotations") or {}).get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def copy_deployment_annotations(d: dict, rs: dict) -> bool:
    """Copy the Deployment's own annotations (``kubernetes.io/change-cause``, ...) to a ReplicaSet;
    never the controller's bookkeeping ones."""
    changed = False
    ann = annotations(rs)
    for k, v in (d["metadata"].get("annotations") or {}).items():
        if k in _SKIP_COPY or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    return changed


def set_deployment_annotations_to(d: dict, rs: dict) -> None:
    """After a rollback: the Deployment's annotations become the ReplicaSet's (bookkeeping kept)."""
    kept = {k: v for k, v in (d["metadata"].get("annotations") or {}).items() if k in _SKIP_COPY}
    kept.update({k: v for k, v in (rs["metadata"].get("annotations") or {}).items() if k not in _SKIP_COPY})
    d["metadata"]["annotations"] = kept


def set_new_replicaset_annotations(d: dict, rs: dict, new_revision: str, exists: bool) -> bool:
    """Bring the new ReplicaSet's annotations up to date; True if any changed.

    A ReplicaSet that already had a revision and gets a higher one is an old template made
    current again (a rollback): its earlier revision goes to ``revision-history``, which is
    trimmed from the front to `MAX_REV_HISTORY_CHARS`.
    """
    changed = copy_deployment_annotations(d, rs)
    ann = annotations(rs)
    old = ann.get(REVISION, "")
    try:
        old_int = int(old) if old else 0
        new_int = int(new_revision)
    except ValueError:
        return False
    if old_int < new_int:
        ann[REVISION] = new_revision
        changed = True
        if old:
            history = ann.get(REVISION_HISTORY, "")
            revisions = [r for r in history.split(",") if r] if history else []
            revisions.append(old)
            while len(",".join(revisions)) > MAX_REV_HISTORY_CHARS and len(revisions) > 1:
                revisions.pop(0)
            ann[REVISION_HISTORY] = ",".join(revisions)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def set_deployment_revision(d: dict, value: str) -> bool:
    ann = annotations(d)
    if ann.get(REVISION) == value:
        return False
    ann[REVISION] = value
    return True


# -- scaling arithmetic -----------------------------------------------------------------------

def round_half_away(x: float) -> int:
    """Go's ``math.Round``."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def replicaset_fraction(rs: dict, d: dict) -> int:
    """How many replicas ``rs`` gains (or loses) if the Deployment's new size is spread in
    proportion to the size it had when ``rs`` was last scaled (its max-replicas annotation)."""
    if replicas(d) == 0:
        return -replicas(rs)
    deployment_replicas = replicas(d) + max_surge(d)
    annotated = int_annotation(rs, MAX_REPLICAS)
    if annotated is None:
        annotated = status_of(d, "replicas")
    if annotated == 0:
        return 0
    return round_half_away(replicas(rs) * deployment_replicas / annotated) - replicas(rs)


def proportion(rs: dict | None, d: dict, to_add: int, added: int) -> int:
    if rs is None or replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replicaset_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def new_rs_new_replicas(d: dict, all_rss: list[dict | None], new: dict) -> int:
    """The new ReplicaSet's next size: toward ``spec.replicas`` within the surge (Recreate: all)."""
    if not is_rolling_update(d):
        return replicas(d)
    ru = _rolling(d)
    surge = scaled_value(ru.get("maxSurge") if ru.get("maxSurge") is not None else 0, replicas(d), True)
    current = spec_replica_count(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new)
    return replicas(new) + min(max_total - current, replicas(d) - replicas(new))


def is_saturated(d: dict, rs: dict | None) -> bool:
    """The new ReplicaSet holds every replica, all available, and knows the Deployment's size."""
    if rs is None:
        return False
    desired = int_annotation(rs, DESIRED_REPLICAS)
    return (desired is not None and replicas(rs) == replicas(d) and desired == replicas(d)
            and status_of(rs, "availableReplicas") == replicas(d))


# -- conditions and progress ------------------------------------------------------------------

def get_condition(status: dict | None, type_: str) -> dict | None:
    for c in (status or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def new_condition(type_: str, status: str, reason: str, message: str, now: str) -> dict:
    return {"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def set_condition(status: dict, cond: dict) -> None:
    current = get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    status["conditions"] = [c for c in status.get("conditions") or () if c.get("type") != cond["type"]] + [cond]


def remove_condition(status: dict, type_: str) -> None:
    kept = [c for c in status.get("conditions") or () if c.get("type") != type_]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def deployment_complete(d: dict, status: dict) -> bool:
    want = replicas(d)
    return (int(status.get("updatedReplicas") or 0) == want and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0))


def deployment_progressing(d: dict, status: dict) -> bool:
    """Any sign of progress since the status the Deployment has now."""
    def get(s, f):
        return int((s or {}).get(f) or 0)
    old = d.get("status") or {}
    old_old = get(old, "replicas") - get(old, "updatedReplicas")
    new_old = get(status, "replicas") - get(status, "updatedReplicas")
    return (get(status, "updatedReplicas") > get(old, "updatedReplicas") or new_old < old_old
            or get(status, "readyReplicas") > get(old, "readyReplicas")
            or get(status, "availableReplicas") > get(old, "availableReplicas"))


def deployment_timed_out(d: dict, status: dict, now) -> bool:
    """The Progressing condition was last updated more than progressDeadlineSeconds ago."""
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    return (now - since).total_seconds() > int(d["spec"]["progressDeadlineSeconds"])


def compact_status(status: dict | None) -> dict:
    """A status as upstream serializes it: zero counts and empty lists omitted (``omitempty``),
    so that a computed status compares equal to the stored one."""
    out = {}
    for k, v in (status or {}).items():
        if v is None or (k != "collisionCount" and v in (0, [], {})):
            continue
        out[k] = v
    return out
