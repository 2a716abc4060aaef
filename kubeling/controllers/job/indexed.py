"""Indexed completion mode: upstream's ``pkg/controller/job/indexed_job_utils.go``.

A Job with ``completionMode: Indexed`` runs one successful pod per index ``0 .. completions-1``.
Each pod carries its index in the annotation and the label
``batch.kubernetes.io/job-completion-index``, the env var ``JOB_COMPLETION_INDEX`` (from the
annotation through the downward API), the hostname ``<job>-<index>`` and the generateName
``<job>-<index>-``.

``status.completedIndexes`` is a compressed list of intervals ("1,3-5,7"); `OrderedIntervals`
parses and prints it. Indexes a Job has counted stay counted: the index itself prevents
double counting, so a succeeded pod of an index already completed adds nothing.
"""

from __future__ import annotations

import copy

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"


class OrderedIntervals:
    """Sorted, disjoint, non-adjacent closed intervals of indexes."""

    def __init__(self, intervals: list[tuple[int, int]] | None = None) -> None:
        self.intervals = intervals or []

    @classmethod
    def parse(cls, text: str | None, completions: int) -> OrderedIntervals:
        """Intervals from ``completedIndexes``; out-of-range or malformed parts are dropped."""
        out: list[int] = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            first, _, last = part.partition("-")
            try:
                lo, hi = int(first), int(last or first)
            except ValueError:
                continue
            out.extend(range(max(lo, 0), min(hi, completions - 1) + 1))
        return cls().with_ordered_indexes(out)

    def with_ordered_indexes(self, indexes) -> OrderedIntervals:
        """A new set: these intervals plus ``indexes``."""
        allx = sorted(set(self.indexes()) | set(indexes))
        merged: list[tuple[int, int]] = []
        for ix in allx:
            if merged and merged[-1][1] + 1 == ix:
                merged[-1] = (merged[-1][0], ix)
            else:
                merged.append((ix, ix))
        return OrderedIntervals(merged)

    def indexes(self) -> list[int]:
        return [i for lo, hi in self.intervals for i in range(lo, hi + 1)]

    def has(self, ix: int) -> bool:
        return any(lo <= ix <= hi for lo, hi in self.intervals)

    def total(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.intervals)

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.intervals)


def is_indexed(job: dict) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def completion_index(pod: dict) -> int | None:
    """The pod's index from the annotation (the label as a fallback); None if absent or bad."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(COMPLETION_INDEX)
    if value is None:
        value = (meta.get("labels") or {}).get(COMPLETION_INDEX)
    try:
        ix = int(value)
    except (TypeError, ValueError):
        return None
    return ix if ix >= 0 else None


def valid_index(pod: dict, completions: int) -> int | None:
    ix = completion_index(pod)
    return ix if ix is not None and ix < completions else None


def succeeded_indexes(job: dict, pods: list[dict]) -> tuple[OrderedIntervals, OrderedIntervals]:
    """(indexes the status already counts, those plus every succeeded pod's index)."""
    completions = job["spec"].get("completions") or 0
    prev = OrderedIntervals.parse((job.get("status") or {}).get("completedIndexes"), completions)
    new = [ix for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"
           and (ix := valid_index(p, completions)) is not None]
    return prev, prev.with_ordered_indexes(new)


def first_pending_indexes(active: list[dict], succeeded: OrderedIntervals, count: int, completions: int,
                          failed: OrderedIntervals | None = None) -> list[int]:
    """The ``count`` lowest indexes neither succeeded, failed, nor held by an active pod."""
    taken = {ix for p in active if (ix := valid_index(p, completions)) is not None}
    out = []
    for ix in range(completions):
        if len(out) >= count:
            break
        if ix not in taken and not succeeded.has(ix) and not (failed is not None and failed.has(ix)):
            out.append(ix)
    return out


def duplicated_or_invalid(active: list[dict], completions: int, order) -> tuple[list[dict], list[dict]]:
    """(active pods that must go: no valid index or a second pod of one index; the rest).

    Of the pods sharing an index the one a scale-down would delete last (``order``, the
    ActivePods key) is kept.
    """
    seen: set[int] = set()
    remove, keep = [], []
    for p in sorted(active, key=order, reverse=True):
        ix = valid_index(p, completions)
        if ix is None or ix in seen:
            remove.append(p)
        else:
            seen.add(ix)
            keep.append(p)
    return remove, keep


def add_index_env(template: dict) -> dict:
    """A template copy whose containers get ``JOB_COMPLETION_INDEX`` from the index annotation."""
    t = copy.deepcopy(template)
    spec = t.setdefault("spec", {})
    source = {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or ():
            env = c.setdefault("env", [])
            if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": copy.deepcopy(source)})
    return t


def set_index(template: dict, job_name: str, ix: int) -> str:
    """Stamp index ``ix`` on a template copy in place; returns the pod's generateName."""
    meta = template.setdefault("metadata", {})
    meta.setdefault("annotations", {})[COMPLETION_INDEX] = str(ix)
    meta.setdefault("labels", {})[COMPLETION_INDEX] = str(ix)
    template.setdefault("spec", {})["hostname"] = f"{job_name}-{ix}"
    return f"{job_name}-{ix}-"


# -- backoffLimitPerIndex ------------------------------------------------------------------------
# Each pod carries how often its index failed before it (the annotations below); a replacement
# copies them from its index's last failed pod plus that pod's own failure, so the count
# survives the failed pods being deleted. The last failed pod of an index keeps its tracking
# finalizer until the replacement exists (see `delayed_pods`), so the count is never lost.

FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
IGNORED_FAILURE_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"


def has_backoff_limit_per_index(job: dict) -> bool:
    return is_indexed(job) and (job.get("spec") or {}).get("backoffLimitPerIndex") is not None


def _count(pod: dict, key: str) -> int:
    try:
        return max(int(((pod.get("metadata") or {}).get("annotations") or {}).get(key, 0)), 0)
    except (TypeError, ValueError):
        return 0


def failure_counts(pod: dict) -> tuple[int, int]:
    """(counted, ignored) failures of the pod's index before this pod."""
    return _count(pod, FAILURE_COUNT), _count(pod, IGNORED_FAILURE_COUNT)


def failed_indexes(job: dict, failed_pods: list[dict], match) -> OrderedIntervals:
    """``status.failedIndexes`` plus the indexes whose failed pod used up the per-index limit
    or matched a ``FailIndex`` rule. ``match(pod)`` is the pod failure policy's verdict."""
    completions = job["spec"].get("completions") or 0
    limit = job["spec"]["backoffLimitPerIndex"]
    prev = OrderedIntervals.parse((job.get("status") or {}).get("failedIndexes"), completions)
    new = []
    for pod in failed_pods:
        ix = valid_index(pod, completions)
        if ix is None or prev.has(ix):
            continue
        _, counts, action = match(pod)
        if action == "FailIndex" or (counts and failure_counts(pod)[0] + 1 > limit):
            new.append(ix)
    return prev.with_ordered_indexes(new)


def delayed_pods(job: dict, failed_pods: list[dict], active: list[dict], done: OrderedIntervals,
                 failed: OrderedIntervals, finish_time) -> dict[int, dict]:
    """Per index still to be retried and with no active pod: its last failed pod (the one whose
    counts the replacement inherits, and whose finalizer waits for it)."""
    completions = job["spec"].get("completions") or 0
    busy = {ix for p in active if (ix := valid_index(p, completions)) is not None}
    out: dict[int, dict] = {}
    for pod in failed_pods:
        ix = valid_index(pod, completions)
        if ix is None or ix in busy or done.has(ix) or failed.has(ix):
            continue
        have = out.get(ix)
        if have is None or (sum(failure_counts(have)) <= sum(failure_counts(pod))
                            and finish_time(pod) >= finish_time(have)):
            out[ix] = pod
    return out


def inherit_counts(template: dict, last_failed: dict | None, counted: bool) -> None:
    """Stamp the failure-count annotations on a replacement's template (in place)."""
    fails, ignored = failure_counts(last_failed) if last_failed is not None else (0, 0)
    if last_failed is not None:
        fails, ignored = (fails + 1, ignored) if counted else (fails, ignored + 1)
    ann = template.setdefault("metadata", {}).setdefault("annotations", {})
    ann[FAILURE_COUNT] = str(fails)
    if ignored:
        ann[IGNORED_FAILURE_COUNT] = str(ignored)


def match_success_policy(policy: dict | None, completions: int, succeeded: OrderedIntervals) -> str | None:
    """``spec.successPolicy``: the message of the first rule the succeeded indexes satisfy, or None.

    A rule with ``succeededIndexes`` needs all of them (or ``succeededCount`` of them) to have
    succeeded; a rule with only ``succeededCount`` needs that many indexes in all.
    """
    for i, rule in enumerate((policy or {}).get("rules") or ()):
        want = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            wanted = OrderedIntervals.parse(rule["succeededIndexes"], completions)
            have = sum(1 for ix in wanted.indexes() if succeeded.has(ix))
            met = have >= want if want is not None else have == wanted.total()
        else:
            met = want is not None and succeeded.total() >= want
        if met:
            return f"Matched rules at index {i}"
    return None
