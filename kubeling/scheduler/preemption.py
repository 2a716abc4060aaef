"""The preemption evaluator: which pods to evict, on which node, so that a pod that fits nowhere
fits somewhere (upstream's ``framework/preemption``). `plugins.defaultpreemption` drives it from
PostFilter.

``Evaluator.preempt(state, pod, statuses)`` runs, synchronously within the scheduling cycle:

1. **Potential nodes**: those whose Filter status is not ``UnschedulableAndUnresolvable``
   (removing pods cannot fix a node selector); a node absent from ``statuses`` counts as
   unresolvable.
2. **Dry run** per node, on a copy of its NodeInfo and a clone of the CycleState
   (`select_victims_on_node`): remove every pod of lower priority (PreFilterExtensions keep
   plugin state right), check the pod fits with ``run_filter_plugins_with_nominated_pods``, then
   reprieve as many as possible, most important first — first those whose eviction would violate
   a PodDisruptionBudget (each not reprieved counts a violation), then the others.
   The nodes are visited from a random offset; the dry run stops once it has at least one
   candidate without PDB violations and ``max(minCandidateNodesAbsolute,
   minCandidateNodesPercentage% of nodes)`` candidates in all.
3. **Pick** (`pick_one_node_for_preemption`), in upstream's order: fewest PDB violations, lowest
   highest-victim priority, smallest sum of victim priorities, fewest victims, latest start of
   the highest-priority victims, then the first.
4. **Prepare** (asynchronously, on the running loop; the cycle does not wait): set the
   preemptor's ``status.nominatedNodeName``; for each victim add the ``DisruptionTarget``
   condition (reason ``PreemptionByScheduler``), delete it, and record a ``Preempted`` event on
   it; clear the nomination of lower-priority pods nominated to that node. While this runs the
   preemptor is "preempting" (`is_preempting`) and does not preempt again.

Without candidates the answer is ``Unschedulable`` with a FitError-style message over the nodes'
dry-run reasons (``0/N nodes are available: ...``); nodes that were not tried say
``Preemption is not helpful for scheduling``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from dataclasses import dataclass

from kubeling.api.labels import SelectorError, from_label_selector
from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    PostFilterResult,
    Status,
)
from kubeling.scheduler.framework.types import NodeInfo, PodInfo

log = logging.getLogger(__name__)

MAX_INT32 = 2**31 - 1
NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
DISRUPTION_TARGET, PREEMPTION_BY_SCHEDULER = "DisruptionTarget", "PreemptionByScheduler"
_FAR_FUTURE = "9999-12-31T23:59:59Z"


def pod_priority(pod: dict) -> int:
    p = (pod.get("spec") or {}).get("priority")
    return int(p) if p is not None else 0


def pod_start_time(pod: dict) -> str:
    """``status.startTime`` (RFC 3339 strings compare in time order); a pod that has not started
    counts as starting now, i.e. later than any that has."""
    return (pod.get("status") or {}).get("startTime") or _FAR_FUTURE


def more_important_pod(a: dict, b: dict) -> bool:
    """Higher priority first; at equal priority the one that started earlier."""
    pa, pb = pod_priority(a), pod_priority(b)
    if pa != pb:
        return pa > pb
    return pod_start_time(a) < pod_start_time(b)


def _importance_key(pi: PodInfo) -> tuple:
    return (-pod_priority(pi.pod), pod_start_time(pi.pod))


def filter_pods_with_pdb_violation(pod_infos: list[PodInfo], pdbs: list[dict]) -> tuple[list[PodInfo], list[PodInfo]]:
    """Split ``pod_infos`` (in order) into those whose eviction would exceed a PDB's
    ``disruptionsAllowed`` — counting the earlier ones in the list — and the others."""
    allowed = [int((p.get("status") or {}).get("disruptionsAllowed") or 0) for p in pdbs]
    selectors = []
    for p in pdbs:
        try:
            selectors.append(from_label_selector((p.get("spec") or {}).get("selector")))
        except SelectorError:
            selectors.append(None)
    violating, non_violating = [], []
    for pi in pod_infos:
        meta = pi.pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        violated = False
        # a pod without labels matches no PDB
        for i, pdb in enumerate(pdbs if labels else ()):
            sel = selectors[i]
            if (pdb.get("metadata") or {}).get("namespace") != meta.get("namespace") or sel is None:
                continue
            # a nil or empty selector matches nothing here
            if sel.empty or sel.nothing or not sel.matches(labels):
                continue
            # already counted by the API server's eviction: not a new disruption
            if meta.get("name") in ((pdb.get("status") or {}).get("disruptedPods") or {}):
                continue
            allowed[i] -= 1
            if allowed[i] < 0:
                violated = True
        (violating if violated else non_violating).append(pi)
    return violating, non_violating


@dataclass
class Candidate:
    name: str
    victims: list[PodInfo]          # most important first
    num_pdb_violations: int


def pick_one_node_for_preemption(candidates: list[Candidate]) -> Candidate | None:
    """Upstream's ``pickOneNodeForPreemption`` criteria, each applied to the ties of the previous."""
    if not candidates:
        return None

    def earliest_start_of_highest(c: Candidate) -> str:
        top = pod_priority(c.victims[0].pod)
        return min(pod_start_time(v.pod) for v in c.victims if pod_priority(v.pod) == top)

    criteria = [
        lambda c: c.num_pdb_violations,
        lambda c: pod_priority(c.victims[0].pod),
        # each priority shifted to be positive, so the sum also grows with the number of victims
        lambda c: sum(pod_priority(v.pod) + MAX_INT32 + 1 for v in c.victims),
        lambda c: len(c.victims),
    ]
    remaining = candidates
    for key in criteria:
        best = min(key(c) for c in remaining)
        remaining = [c for c in remaining if key(c) == best]
        if len(remaining) == 1:
            return remaining[0]
    latest = max(earliest_start_of_highest(c) for c in remaining)
    return next(c for c in remaining if earliest_start_of_highest(c) == latest)


def fit_error_message(num_nodes: int, statuses: dict[str, Status]) -> str:
    """``0/N nodes are available: <count reason, ...>.`` (upstream's FitError wording)."""
    counts: dict[str, int] = {}
    for s in statuses.values():
        for r in s.reasons:
            counts[r] = counts.get(r, 0) + 1
    hist = sorted(f"{n} {r}" for r, n in counts.items())
    return f"0/{num_nodes} nodes are available: {', '.join(hist)}."


class Evaluator:
    """See the module docstring. ``pdb_lister()`` returns the PodDisruptionBudgets to respect."""

    def __init__(self, handle, plugin_name: str, *, pdb_lister=None, min_candidate_nodes_percentage: int = 10,
                 min_candidate_nodes_absolute: int = 100, rng: random.Random | None = None,
                 eligible=None) -> None:
        self.handle = handle
        self.plugin_name = plugin_name
        self.pdb_lister = pdb_lister or list
        self.min_pct = min_candidate_nodes_percentage
        self.min_abs = min_candidate_nodes_absolute
        self.rng = rng or random.Random()
        self.eligible = eligible          # (pod, nominated node status) -> (bool, reason)
        self._preempting: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def is_preempting(self, uid: str) -> bool:
        return uid in self._preempting

    async def wait_idle(self) -> None:
        """Wait for every preparation started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- 1-3: decide (synchronous) ----------------------------------------------------------

    def preempt(self, state: CycleState, pod: dict, statuses: dict[str, Status]) -> tuple[PostFilterResult | None, Status]:
        pod = self._latest(pod)
        nominated = (pod.get("status") or {}).get("nominatedNodeName") or ""
        ok, reason = self.eligible(pod, statuses.get(nominated)) if self.eligible else (True, "")
        if not ok:
            return None, Status.unschedulable(reason)
        all_nodes = self.handle.snapshot_shared_lister().list()
        if not all_nodes:
            return None, Status.as_error("no nodes available")
        potential = [ni for ni in all_nodes if (s := statuses.get(ni.name)) is not None
                     and s.code != Code.UNSCHEDULABLE_AND_UNRESOLVABLE]
        clear = None
        if not potential and nominated:
            clear = PostFilterResult(nominated_node_name="")   # preemption will not help anywhere
            self._spawn(self._set_nominated(pod, ""), pod, preempting=False)
        candidates, node_statuses = self.dry_run_preemption(state, pod, potential)
        if not candidates:
            for ni in all_nodes:
                node_statuses.setdefault(ni.name, Status.unresolvable(NOT_HELPFUL))
            return clear, Status.unschedulable(fit_error_message(len(all_nodes), node_statuses))
        best = pick_one_node_for_preemption(candidates)
        if best is None or not best.name:
            return None, Status.unschedulable("no candidate node for preemption")
        self._prepare_candidate(best, pod)
        return PostFilterResult(nominated_node_name=best.name), Status(Code.SUCCESS)

    def _latest(self, pod: dict) -> dict:
        lister_fn = getattr(self.handle, "pod_lister", None)
        lister = lister_fn() if callable(lister_fn) else None
        meta = pod.get("metadata") or {}
        cur = lister.get(f"{meta.get('namespace')}/{meta.get('name')}") if lister is not None else None
        return cur if cur is not None and (cur.get("metadata") or {}).get("uid") == meta.get("uid") else pod

    def num_candidates(self, num_nodes: int) -> int:
        n = max(num_nodes * self.min_pct // 100, self.min_abs)
        return min(n, num_nodes)

    def dry_run_preemption(self, state: CycleState, pod: dict,
                           potential: list[NodeInfo]) -> tuple[list[Candidate], dict[str, Status]]:
        statuses: dict[str, Status] = {}
        if not potential:
            return [], statuses
        pdbs = self.pdb_lister()
        offset = self.rng.randrange(len(potential))
        want = self.num_candidates(len(potential))
        non_violating: list[Candidate] = []
        violating: list[Candidate] = []
        for i in range(len(potential)):
            ni = potential[(offset + i) % len(potential)]
            victims, violations, status = self.select_victims_on_node(state.clone(), pod, ni.snapshot(), pdbs)
            if (status is None or status.is_success()) and victims:
                (non_violating if violations == 0 else violating).append(Candidate(ni.name, victims, violations))
                if non_violating and len(non_violating) + len(violating) >= want:
                    break
                continue
            if status is None or status.is_success():
                status = Status.as_error(f"expected at least one victim pod on node {ni.name!r}")
            statuses[ni.name] = status
        return non_violating + violating, statuses

    def select_victims_on_node(self, state: CycleState, pod: dict, node_info: NodeInfo,
                               pdbs: list[dict]) -> tuple[list[PodInfo], int, Status | None]:
        """Victims on this node (most important first) and how many violate a PDB; a rejection
        if the pod does not fit even with every lower-priority pod gone. ``state`` and
        ``node_info`` are the caller's copies: this changes them."""
        h = self.handle

        def remove(pi: PodInfo) -> Status | None:
            node_info.remove_pod(pi.pod)
            return h.run_pre_filter_extension_remove_pod(state, pod, pi, node_info)

        def add(pi: PodInfo) -> Status | None:
            node_info.add_pod_info(pi)
            return h.run_pre_filter_extension_add_pod(state, pod, pi, node_info)

        prio = pod_priority(pod)
        potential = [pi for pi in node_info.pods if pod_priority(pi.pod) < prio]
        for pi in potential:
            s = remove(pi)
            if s is not None and not s.is_success():
                return [], 0, s
        if not potential:
            return [], 0, Status.unresolvable(NO_VICTIMS)
        s = h.run_filter_plugins_with_nominated_pods(state, pod, node_info)
        if s is not None and not s.is_success():
            return [], 0, s
        potential.sort(key=_importance_key)
        violating, non_violating = filter_pods_with_pdb_violation(potential, pdbs)
        victims: list[PodInfo] = []
        num_violating = 0

        def reprieve(pi: PodInfo) -> bool:
            st = add(pi)
            if st is not None and not st.is_success():
                raise _Abort(st)
            st = h.run_filter_plugins_with_nominated_pods(state, pod, node_info)
            fits = st is None or st.is_success()
            if not fits:
                st = remove(pi)
                if st is not None and not st.is_success():
                    raise _Abort(st)
                victims.append(pi)
            return fits

        try:
            for pi in violating:
                if not reprieve(pi):
                    num_violating += 1
            for pi in non_violating:
                reprieve(pi)
        except _Abort as a:
            return [], 0, a.status
        if violating and non_violating:
            victims.sort(key=_importance_key)
        return victims, num_violating, None

    # -- 4: act (asynchronous) ---------------------------------------------------------------

    def _prepare_candidate(self, c: Candidate, pod: dict) -> None:
        prio = pod_priority(pod)
        lower = [pi.pod for pi in self.handle.nominated_pods_for_node(c.name)
                 if pod_priority(pi.pod) < prio and (pi.pod.get("metadata") or {}).get("uid") != _uid(pod)]
        self._spawn(self._prepare(c, pod, lower), pod, preempting=True)

    def _spawn(self, coro, pod: dict, *, preempting: bool) -> None:
        uid = _uid(pod)
        if preempting:
            self._preempting.add(uid)
        task = asyncio.get_running_loop().create_task(coro, name=f"preemption-{uid}")
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if preempting:
                self._preempting.discard(uid)
            if not t.cancelled() and t.exception() is not None:
                log.error("preemption for pod %s failed", uid, exc_info=t.exception())

        task.add_done_callback(done)

    async def _prepare(self, c: Candidate, pod: dict, lower_nominated: list[dict]) -> None:
        await self._set_nominated(pod, c.name)
        scheduler = (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"
        await asyncio.gather(*(self._preempt_victim(v.pod, pod, c.name, scheduler) for v in c.victims))
        # lower-priority pods nominated here may no longer fit: let them look elsewhere
        await asyncio.gather(*(self._set_nominated(p, "") for p in lower_nominated))

    async def _set_nominated(self, pod: dict, node: str) -> None:
        meta = pod.get("metadata") or {}
        try:
            await self.handle.client.patch("", "v1", "pods", meta.get("name"),
                                           {"status": {"nominatedNodeName": node or None}},
                                           namespace=meta.get("namespace"), subresource="status",
                                           patch_type="strategic")
        except Exception as e:  # noqa: BLE001 - the pod may be gone; the next cycle corrects it
            log.info("could not set nominatedNodeName=%r on %s/%s: %s", node, meta.get("namespace"),
                     meta.get("name"), e)

    async def _preempt_victim(self, victim: dict, preemptor: dict, node: str, scheduler: str) -> None:
        meta = victim.get("metadata") or {}
        name, ns = meta.get("name"), meta.get("namespace")
        client = self.handle.client
        cond = {"type": DISRUPTION_TARGET, "status": "True", "reason": PREEMPTION_BY_SCHEDULER,
                "message": f"{scheduler}: preempting to accommodate a higher priority pod",
                "lastTransitionTime": _now()}
        try:
            await client.patch("", "v1", "pods", name, {"status": {"conditions": [cond]}}, namespace=ns,
                               subresource="status", patch_type="strategic")
            await client.delete("", "v1", "pods", name, namespace=ns)
        except Exception as e:  # noqa: BLE001 - gone already is fine; anything else: the next cycle retries
            if getattr(e, "code", None) != 404:
                log.warning("preempting %s/%s failed: %s", ns, name, e)
                return
        recorder = getattr(self.handle, "recorder", None)
        if recorder is not None:
            recorder.event(victim, "Normal", "Preempted",
                           f"Preempted by pod {_uid(preemptor)} on node {node}")


class _Abort(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.message())
        self.status = status


def _uid(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("uid") or ""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
