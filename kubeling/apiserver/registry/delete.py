"""Deciding what a DELETE does (upstream's ``rest.BeforeDelete`` and the generic store's
deletion logic): delete at once, or mark the object for deletion — a ``deletionTimestamp``, the
garbage collector's ``orphan`` / ``foregroundDeletion`` finalizers from the propagation policy,
a grace period from the strategy (pods), and a namespace's ``Terminating`` phase while its spec
finalizers remain."""

from __future__ import annotations

import copy
import datetime as dt

from kubeling.apiserver.resources import Served


def plan_delete(served: Served, obj: dict, options: dict) -> tuple[dict, bool]:
    """Decide between deleting now and marking for deletion (finalizers, grace, namespaces)."""
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    fins = list(meta.get("finalizers") or [])
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy is None:
        policy = "Orphan" if served.res.storage_version else served.strategy.default_gc_policy
        if "orphan" in fins or "foregroundDeletion" in fins:
            policy = None  # keep what an earlier delete asked for
    if policy == "Orphan" and "orphan" not in fins:
        fins = [f for f in fins if f != "foregroundDeletion"] + ["orphan"]
    elif policy == "Foreground" and "foregroundDeletion" not in fins:
        fins = [f for f in fins if f != "orphan"] + ["foregroundDeletion"]
    elif policy == "Background":
        fins = [f for f in fins if f not in ("orphan", "foregroundDeletion")] if not meta.get(
            "deletionTimestamp") else fins
    grace = served.strategy.grace_period(obj, options.get("gracePeriodSeconds"))
    ns_pending = ns_spec_finalizers(served, new)
    if ns_pending:
        new.setdefault("status", {})["phase"] = "Terminating"
    if not fins and not ns_pending and grace == 0:
        return obj, True
    if fins:
        meta["finalizers"] = fins
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = _after(grace)
        meta["deletionGracePeriodSeconds"] = grace
    elif grace < (meta.get("deletionGracePeriodSeconds") or 0):
        meta["deletionTimestamp"] = _after(grace)
        meta["deletionGracePeriodSeconds"] = grace
    if grace == 0 and not fins and not ns_pending:
        return new, True
    return new, False


def _after(seconds: int) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ns_spec_finalizers(served: Served, obj: dict) -> bool:
    return served.res.group == "" and served.res.resource == "namespaces" and bool(
        (obj.get("spec") or {}).get("finalizers"))
