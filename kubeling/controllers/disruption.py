"""Disruption controller: the status of PodDisruptionBudgets, which the eviction API charges.

Upstream's ``pkg/controller/disruption``. The key is a PDB's ``namespace/name``; Pod events
enqueue the PDBs whose selector matches the pod (old and new labels), PDB events enqueue the
PDB itself (and every PDB is looked at again every `PDB_RESYNC` seconds, as upstream's 30 s
resync). ``sync`` computes, from the caches:

- the pods: the PDB's namespace, its selector (``{}`` selects every pod, an absent one none);
  none found records ``NoPods`` "No matching pods found" (Normal);
- ``expectedPods`` and ``desiredHealthy``:
  * ``minAvailable`` an integer: expected = the number of pods, desired = minAvailable;
  * ``minAvailable`` a percentage, or ``maxUnavailable`` (integer or percentage): expected = the
    sum of the ``scale`` of the pods' controllers (each counted once), desired = the percentage
    of it rounded up, or expected minus maxUnavailable (rounded up) and never below 0. A
    controller's scale is ``spec.replicas`` of its ReplicationController, ReplicaSet (or the
    Deployment owning that ReplicaSet) or StatefulSet, from the caches; any other kind is read
    from its ``scale`` subresource, found through discovery. A pod without a controller is
    *unmanaged*: ``UnmanagedPods`` is recorded and it counts for nothing. A controller that
    cannot be found records ``NoControllers`` "found no controllers for pod \"p\""; any failure
    here records ``CalculateExpectedPodCountFailed``;
- ``disruptedPods``: the entries the API server's eviction wrote (pod name → time) for pods that
  still exist and are not being deleted, dropped once they are older than `DELETION_TIMEOUT`
  (with a ``NotDeleted`` Warning on the pod); the PDB is looked at again when the next one
  expires;
- ``currentHealthy``: pods Ready, not being deleted, not in ``disruptedPods``;
- ``disruptionsAllowed`` = currentHealthy − desiredHealthy, but 0 when that is negative or when
  expectedPods is 0 (a PDB whose pods are still coming is safe);
- ``observedGeneration`` and the ``DisruptionAllowed`` condition: True/``SufficientPods`` when
  disruptions are allowed, else False/``InsufficientPods`` (its lastTransitionTime moves only
  when the status does).

The status is written (``pdbs/status``, with the resourceVersion read) only when it changed. A
failed sync other than a write conflict sets ``disruptionsAllowed`` to 0 and the condition to
False/``SyncFailed`` with the error as its message (upstream's fail-safe) and is not retried
until the next event or resync; a conflict is retried with backoff. One broken PDB never stops
the others: each is its own key.

Stale ``DisruptionTarget`` conditions: a pod that is not being deleted and not finished, whose
``DisruptionTarget=True`` condition (not the kubelet's ``TerminationByKubelet``) is older than
`STALE_POD_DISRUPTION_TIMEOUT`, gets it reset to False (keys ``("stale-pod", "ns/name")``) — an
eviction that marked the pod but never deleted it must not leave it marked forever.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math

from kubeling.api.labels import SelectorError, from_label_selector
from kubeling.client import is_conflict, is_not_found, object_of
from kubeling.client.discovery import RESTMapper, discover
from kubeling.client.events import NORMAL, WARNING
from kubeling.client.store import meta_namespace_key, split_meta_namespace_key
from kubeling.controllers.base import Controller, ControllerContext
from kubeling.controllers.controller_utils import (
    get_controller_of,
    is_pod_ready,
    parse_time,
)

log = logging.getLogger(__name__)

COMPONENT = "controllermanager"  # upstream's event source for this controller
DELETION_TIMEOUT = 120.0
STALE_POD_DISRUPTION_TIMEOUT = 120.0
PDB_RESYNC = 30.0
CONDITION = "DisruptionAllowed"
SUFFICIENT, INSUFFICIENT, SYNC_FAILED = "SufficientPods", "InsufficientPods", "SyncFailed"
DISRUPTION_TARGET = "DisruptionTarget"
TERMINATION_BY_KUBELET = "TerminationByKubelet"


class ExpectedCountError(Exception):
    """The expected pod count cannot be computed (no controller, a bad percentage, ...)."""


def scaled_value(value, total: int, round_up: bool) -> int:
    """Upstream's ``intstr.GetScaledValueFromIntOrPercent``."""
    if isinstance(value, bool) or value is None:
        raise ExpectedCountError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError as e:
            raise ExpectedCountError(f"invalid value for IntOrString: invalid value {value!r}: {e}") from e
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    raise ExpectedCountError("invalid value for IntOrString: invalid type: string is not a percentage")


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(obj: dict, api_version: str, kind: str) -> dict:
    m = obj["metadata"]
    return {"apiVersion": api_version, "kind": kind, "namespace": m.get("namespace"), "name": m["name"],
            "uid": m.get("uid", "")}


class DisruptionController(Controller):
    NAME = "disruption"
    WORKERS = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.mapper: RESTMapper | None = None
        inf = ctx.informers.informer_for
        self.pods = inf("", "v1", "pods")
        self.pdbs = inf("policy", "v1", "poddisruptionbudgets")
        self.rcs = inf("", "v1", "replicationcontrollers")
        self.rss = inf("apps", "v1", "replicasets")
        self.deployments = inf("apps", "v1", "deployments")
        self.statefulsets = inf("apps", "v1", "statefulsets")
        self.handle(self.pods, on_add=self._pod_added, on_update=self._pod_updated,
                    on_delete=lambda p: self._enqueue_pdbs_of(object_of(p)))
        self.handle(self.pdbs, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
                    on_delete=lambda p: self._enqueue(object_of(p)), resync_period=PDB_RESYNC)
        for lister in (self.rcs, self.rss, self.deployments, self.statefulsets):
            self.handle(lister)

    # -- handlers: enqueue only ------------------------------------------------------------------

    def _enqueue(self, pdb: dict) -> None:
        self.queue.add(meta_namespace_key(pdb))

    def _pod_added(self, pod: dict) -> None:
        self._enqueue_pdbs_of(pod)
        self._check_stale_disruption(pod)

    def _pod_updated(self, old: dict, new: dict) -> None:
        self._enqueue_pdbs_of(new)
        if (old["metadata"].get("labels") or {}) != (new["metadata"].get("labels") or {}):
            self._enqueue_pdbs_of(old)
        self._check_stale_disruption(new)

    def _enqueue_pdbs_of(self, pod: dict) -> None:
        for pdb in self.pdbs_for_pod(pod):
            self._enqueue(pdb)

    def pdbs_for_pod(self, pod: dict) -> list[dict]:
        """The PDBs selecting ``pod`` (upstream's ``getPdbsForPod``: an unlabelled pod has none)."""
        labels = pod["metadata"].get("labels") or {}
        if not labels:
            return []
        ns = pod["metadata"].get("namespace")
        out = []
        for pdb in self.pdbs.list():
            if pdb["metadata"].get("namespace") != ns:
                continue
            try:
                if from_label_selector((pdb.get("spec") or {}).get("selector")).matches(labels):
                    out.append(pdb)
            except SelectorError:
                continue  # the PDB's own sync reports its bad selector
        return sorted(out, key=lambda p: p["metadata"]["name"])

    def _check_stale_disruption(self, pod: dict) -> None:
        has, wait = self._stale_disruption(pod)
        if has:
            self.queue.add_after(("stale-pod", meta_namespace_key(pod)), wait)

    # -- running ---------------------------------------------------------------------------------

    async def run(self, workers: int, stop) -> None:
        try:
            await super().run(workers, stop)
        finally:
            await self.recorder.close()

    async def sync(self, key) -> None:
        if isinstance(key, tuple):
            await self._sync_stale_pod(key[1])
            return
        pdb = self.pdbs.get(key)
        if pdb is None:
            return
        try:
            await self.try_sync(pdb)
        except Exception as e:
            if is_conflict(e):
                raise  # someone else wrote it (the eviction API): retry with fresh caches
            log.warning("%s: PDB %s: %s", self.NAME, key, e)
            await self.fail_safe(pdb, e)

    async def try_sync(self, pdb: dict) -> None:
        pods = self.pods_for_pdb(pdb)
        if not pods:
            self._event(pdb, NORMAL, "NoPods", "No matching pods found")
        try:
            expected, desired, unmanaged = await self.expected_pod_count(pdb, pods)
        except Exception as e:
            self._event(pdb, WARNING, "CalculateExpectedPodCountFailed",
                        f"Failed to calculate the number of expected pods: {_message(e)}")
            raise
        if unmanaged:
            self._event(pdb, WARNING, "UnmanagedPods",
                        f"Pods selected by this PodDisruptionBudget (selector: {_selector_text(pdb)}) were found to "
                        "be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may "
                        "result in undefined behavior. To account for these pods please set \".spec.minAvailable\" "
                        "field of the PDB to an integer value.")
        now = self.clock.wall()
        disrupted, recheck = self.build_disrupted_pod_map(pods, pdb, now)
        healthy = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted and is_pod_ready(p))
        await self.update_status(pdb, healthy, desired, expected, disrupted)
        if recheck is not None:
            self.queue.add_after(meta_namespace_key(pdb), max((recheck - now).total_seconds(), 0.0))

    def pods_for_pdb(self, pdb: dict) -> list[dict]:
        sel = from_label_selector((pdb.get("spec") or {}).get("selector"))  # a SelectorError fails the sync
        ns = pdb["metadata"].get("namespace")
        return [p for p in self.pods.list()
                if p["metadata"].get("namespace") == ns and sel.matches(p["metadata"].get("labels") or {})]

    # -- expected pods -----------------------------------------------------------------------------

    async def expected_pod_count(self, pdb: dict, pods: list[dict]) -> tuple[int, int, list[str]]:
        """(expectedPods, desiredHealthy, unmanaged pod names): upstream's ``getExpectedPodCount``."""
        spec = pdb.get("spec") or {}
        if spec.get("maxUnavailable") is not None:
            expected, unmanaged = await self.expected_scale(pdb, pods)
            desired = max(expected - scaled_value(spec["maxUnavailable"], expected, True), 0)
            return expected, desired, unmanaged
        min_available = spec.get("minAvailable")
        if isinstance(min_available, int) and not isinstance(min_available, bool):
            return len(pods), min_available, []
        if min_available is not None:
            expected, unmanaged = await self.expected_scale(pdb, pods)
            return expected, scaled_value(min_available, expected, True), unmanaged
        return 0, 0, []

    async def expected_scale(self, pdb: dict, pods: list[dict]) -> tuple[int, list[str]]:
        scales: dict[str, int] = {}
        unmanaged: list[str] = []
        for pod in pods:
            ref = get_controller_of(pod)
            if ref is None:
                unmanaged.append(pod["metadata"]["name"])
                continue
            if ref.get("uid") in scales:
                continue
            found = await self.find_scale(ref, pod["metadata"]["namespace"])
            if found is None:
                msg = f'found no controllers for pod "{pod["metadata"]["name"]}"'
                self._event(pdb, WARNING, "NoControllers", msg)
                raise ExpectedCountError(msg)
            uid, scale = found
            scales[uid] = scale
        return sum(scales.values()), unmanaged

    async def find_scale(self, ref: dict, namespace: str) -> tuple[str, int] | None:
        """(controller uid, desired replicas) of the controller ``ref`` names, or None if there is none."""
        group = ref.get("apiVersion", "").rpartition("/")[0] if "/" in ref.get("apiVersion", "") else ""
        kind, uid = ref.get("kind"), ref.get("uid")
        listers = {("", "ReplicationController"): self.rcs, ("apps", "StatefulSet"): self.statefulsets,
                   ("apps", "ReplicaSet"): self.rss}
        lister = listers.get((group, kind))
        if lister is not None:
            owner = lister.get(f"{namespace}/{ref.get('name')}")
            if owner is None or owner["metadata"].get("uid") != uid:
                return None
            if kind == "ReplicaSet":
                dref = get_controller_of(owner)
                if dref is not None and dref.get("kind") == "Deployment" and dref.get("apiVersion", "").startswith("apps/"):
                    dep = self.deployments.get(f"{namespace}/{dref.get('name')}")
                    if dep is not None and dep["metadata"].get("uid") == dref.get("uid"):
                        return dep["metadata"]["uid"], _replicas(dep)
            return uid, _replicas(owner)
        return await self._scale_subresource(ref, namespace)

    async def _scale_subresource(self, ref: dict, namespace: str) -> tuple[str, int] | None:
        res = await self._resource_for(ref)
        if res is None:
            return None
        ns = namespace if res.namespaced else None
        try:
            scale = await self.client.get(res.group, res.version, res.resource, ref.get("name", ""), namespace=ns,
                                          subresource="scale")
        except Exception as e:
            if not is_not_found(e):
                raise
            try:  # a 404 is either no such object or no scale subresource: tell which
                await self.client.get(res.group, res.version, res.resource, ref.get("name", ""), namespace=ns)
            except Exception as e2:
                if is_not_found(e2):
                    return None
                raise
            name = f"{res.resource}.{res.group}" if res.group else res.resource
            raise ExpectedCountError(f"{name} does not implement the scale subresource") from e
        if scale.get("metadata", {}).get("uid") != ref.get("uid"):
            return None
        return ref["uid"], int((scale.get("spec") or {}).get("replicas") or 0)

    async def _resource_for(self, ref: dict):
        for fresh in (False, True):
            if self.mapper is None or fresh:
                self.mapper = RESTMapper(await discover(self.client))
            res = self.mapper.for_api_version_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            if res is not None:
                return res
        return None

    # -- disrupted pods and status -----------------------------------------------------------------

    def build_disrupted_pod_map(self, pods: list[dict], pdb: dict, now: dt.datetime) -> tuple[dict, dt.datetime | None]:
        recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
        result, recheck = {}, None
        for pod in pods:
            name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp") or name not in recorded:
                continue
            when = parse_time(recorded[name])
            if when is None:
                continue
            expires = when + dt.timedelta(seconds=DELETION_TIMEOUT)
            if expires < now:
                m = pdb["metadata"]
                self.recorder.event(_ref(pod, "v1", "Pod"), WARNING, "NotDeleted",
                                    f"Pod was expected by PDB {m['namespace']}/{m['name']} to be deleted but it wasn't")
                continue
            if recheck is None or expires < recheck:
                recheck = expires
            result[name] = recorded[name]
        return result, recheck

    async def update_status(self, pdb: dict, healthy: int, desired: int, expected: int, disrupted: dict) -> None:
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        generation = pdb["metadata"].get("generation", 0)
        status = copy.deepcopy(pdb.get("status") or {})
        new = {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
               "disruptionsAllowed": allowed, "observedGeneration": generation,
               "conditions": status.get("conditions") or []}
        if disrupted:
            new["disruptedPods"] = disrupted
        ok, reason = (True, SUFFICIENT) if allowed > 0 else (False, INSUFFICIENT)
        new["conditions"] = self._set_condition(new["conditions"], "True" if ok else "False", reason, "", generation)
        if _same_status(status, new):
            return
        await self.client.update_status("policy", "v1", "poddisruptionbudgets", {**pdb, "status": new},
                                         namespace=pdb["metadata"]["namespace"])

    async def fail_safe(self, pdb: dict, err: Exception) -> None:
        """Upstream's ``failSafe``: no disruptions allowed while we cannot tell."""
        status = copy.deepcopy(pdb.get("status") or {})
        status["disruptionsAllowed"] = 0
        status["conditions"] = self._set_condition(status.get("conditions") or [], "False", SYNC_FAILED,
                                                   _message(err), status.get("observedGeneration", 0))
        await self.client.update_status("policy", "v1", "poddisruptionbudgets", {**pdb, "status": status},
                                        namespace=pdb["metadata"]["namespace"])

    def _set_condition(self, conditions: list, status: str, reason: str, message: str, generation: int) -> list:
        """``meta.SetStatusCondition``: lastTransitionTime moves only when the status does."""
        out = [dict(c) for c in conditions if c.get("type") != CONDITION]
        old = next((c for c in conditions if c.get("type") == CONDITION), None)
        since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") \
            else _rfc3339(self.clock.wall())
        out.append({"type": CONDITION, "status": status, "observedGeneration": generation,
                    "lastTransitionTime": since, "reason": reason, "message": message})
        return out

    # -- stale DisruptionTarget conditions ---------------------------------------------------------

    def _stale_disruption(self, pod: dict) -> tuple[bool, float]:
        if pod["metadata"].get("deletionTimestamp"):
            return False, 0.0
        cond = next((c for c in (pod.get("status") or {}).get("conditions") or ()
                     if c.get("type") == DISRUPTION_TARGET), None)
        phase = (pod.get("status") or {}).get("phase")
        if cond is None or cond.get("status") != "True" or cond.get("reason") == TERMINATION_BY_KUBELET \
                or phase in ("Succeeded", "Failed"):
            return False, 0.0
        since = parse_time(cond.get("lastTransitionTime"))
        age = (self.clock.wall() - since).total_seconds() if since else STALE_POD_DISRUPTION_TIMEOUT
        return True, max(STALE_POD_DISRUPTION_TIMEOUT - age, 0.0)

    async def _sync_stale_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        has, wait = self._stale_disruption(pod)
        if not has:
            return
        if wait > 0:
            self.queue.add_after(("stale-pod", key), wait)
            return
        ns, name = split_meta_namespace_key(key)
        patch = {"metadata": {"resourceVersion": pod["metadata"]["resourceVersion"]},
                 "status": {"conditions": [{"type": DISRUPTION_TARGET, "status": "False",
                                            "lastTransitionTime": _rfc3339(self.clock.wall())}]}}
        try:
            await self.client.patch("", "v1", "pods", name, patch, namespace=ns, subresource="status",
                                    patch_type="strategic")
        except Exception as e:
            if not is_not_found(e):
                raise
        log.info("%s: reset the stale DisruptionTarget condition of pod %s", self.NAME, key)

    def _event(self, pdb: dict, type_: str, reason: str, message: str) -> None:
        self.recorder.event(_ref(pdb, "policy/v1", "PodDisruptionBudget"), type_, reason, message)


def _replicas(obj: dict) -> int:
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def _same_status(old: dict, new: dict) -> bool:
    keys = ("currentHealthy", "desiredHealthy", "expectedPods", "disruptionsAllowed", "observedGeneration")
    if any(old.get(k, 0) != new.get(k, 0) for k in keys):
        return False
    if (old.get("disruptedPods") or {}) != (new.get("disruptedPods") or {}):
        return False
    return (old.get("conditions") or []) == new["conditions"]


def _selector_text(pdb: dict) -> str:
    sel = (pdb.get("spec") or {}).get("selector") or {}
    return str(sel)


def _message(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)
