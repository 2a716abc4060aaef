"""What the workload controllers share: upstream's ``pkg/controller/controller_utils.go``.

- `ControllerExpectations`: how many creates/deletes a controller has issued and not yet seen
  in its informer. A ``sync`` that finds its expectations unmet does not act on the (stale)
  cache again, so a burst of events never makes it create twice. Expectations expire after
  `EXPECTATIONS_TTL` (5 min, as upstream) in case an event is lost.
- `PodControl`: creates pods from a template with the controller's ``ownerReference`` and
  deletes them, recording upstream's Events (``SuccessfulCreate``/``FailedCreate``,
  ``SuccessfulDelete``/``FailedDelete``).
- `controller_ref`, `get_controller_of`: the ownerReference with ``controller: true``.
- `claim_objects`: upstream's ControllerRefManager — adopt matching orphans (patch with the
  owner's UID as a precondition), release owned objects that no longer match, ignore objects
  another controller owns. Never adopt while the owner is being deleted.
- Pod predicates: `is_pod_active`, `is_pod_ready`, `is_pod_available`, and `active_pods_key`,
  upstream's ``ActivePods`` order (the pods a scale-down deletes first sort first).
- `compute_hash`: the ``pod-template-hash`` / ControllerRevision hash, an FNV-1a 32 of the
  template's canonical JSON (plus the collision count), encoded with upstream's
  ``SafeEncodeString`` alphabet (no vowels, so no words). Values differ from upstream's Go hash,
  whose input is Go's struct printing; only stability and uniqueness matter to clients.
- `update_status`: write a computed status merged over the object's (unchanged: no write), with
  one fresh read and retry on a conflict, as the DaemonSet and StatefulSet controllers need.
- `slow_start_batch`: create in batches of 1, 2, 4, … and stop at the first batch with an error,
  so a quota or admission failure costs one request, not hundreds.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import orjson

from kubeling.api.labels import from_label_selector
from kubeling.client import is_conflict, is_forbidden, is_not_found
from kubeling.client.clock import REAL_CLOCK, Clock
from kubeling.client.events import NORMAL, WARNING, EventRecorder

log = logging.getLogger(__name__)

EXPECTATIONS_TTL = 300.0
SLOW_START_INITIAL_BATCH_SIZE = 1
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# -- expectations -----------------------------------------------------------------------------

@dataclass
class _Expectation:
    add: int = 0
    delete: int = 0
    timestamp: float = 0.0
    uids: set = field(default_factory=set)  # deletions expected by pod UID (UIDTrackingControllerExpectations)


class ControllerExpectations:
    """Per controller key: outstanding creates and deletes (see the module docstring)."""

    def __init__(self, clock: Clock | None = None, ttl: float = EXPECTATIONS_TTL) -> None:
        self.clock = clock or REAL_CLOCK
        self.ttl = ttl
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        """True when nothing is outstanding, the record expired, or there is none (first sync)."""
        e = self._by_key.get(key)
        if e is None:
            return True
        if e.add <= 0 and e.delete <= 0:
            return True
        return self.clock.now() - e.timestamp > self.ttl

    def set(self, key: str, add: int = 0, delete: int = 0, uids: Iterable[str] = ()) -> None:
        self._by_key[key] = _Expectation(add, delete, self.clock.now(), set(uids))

    def expect_creations(self, key: str, n: int) -> None:
        self.set(key, add=n)

    def expect_deletions(self, key: str, uids: Iterable[str]) -> None:
        uids = set(uids)
        self.set(key, delete=len(uids), uids=uids)

    def creation_observed(self, key: str) -> None:
        e = self._by_key.get(key)
        if e is not None and e.add > 0:
            e.add -= 1

    def deletion_observed(self, key: str, uid: str | None = None) -> None:
        e = self._by_key.get(key)
        if e is None:
            return
        if uid is not None and e.uids:
            if uid not in e.uids:
                return
            e.uids.discard(uid)
        if e.delete > 0:
            e.delete -= 1

    def lower(self, key: str, add: int = 0, delete: int = 0) -> None:
        """A create/delete that failed will never be observed: stop waiting for it."""
        e = self._by_key.get(key)
        if e is not None:
            e.add = max(e.add - add, 0)
            e.delete = max(e.delete - delete, 0)

    def delete(self, key: str) -> None:
        self._by_key.pop(key, None)


# -- owner references -------------------------------------------------------------------------

def controller_ref(owner: dict, api_version: str | None = None, kind: str | None = None) -> dict:
    """The ownerReference a controller puts on what it makes."""
    meta = owner["metadata"]
    return {"apiVersion": api_version or owner["apiVersion"], "kind": kind or owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def get_controller_of(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: dict, owner: dict) -> bool:
    ref = get_controller_of(obj)
    return ref is not None and ref.get("uid") == owner["metadata"].get("uid")


async def claim_objects(client, owner: dict, objects: Iterable[dict], selector: dict | None, *,
                        group: str, version: str, resource: str, api_version: str | None = None,
                        kind: str | None = None, can_adopt: Callable[[], Awaitable[bool]] | None = None,
                        extra_filter: Callable[[dict], bool] | None = None) -> list[dict]:
    """Upstream's ``ClaimPods``/``ClaimReplicaSets``: the objects ``owner`` controls after adopting
    matching orphans and releasing owned objects that stopped matching. ``can_adopt`` is
    awaited once, before the first adoption (upstream re-reads the owner uncached there, so a
    deleted owner adopts nothing)."""
    sel = from_label_selector(selector)
    uid = owner["metadata"]["uid"]
    ref = controller_ref(owner, api_version, kind)
    mine: list[dict] = []
    adopt_checked: bool | None = None
    for obj in objects:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        matches = sel.matches(labels) and (extra_filter is None or extra_filter(obj))
        cref = get_controller_of(obj)
        if cref is not None:
            if cref.get("uid") != uid:
                continue
            if matches:
                mine.append(obj)
            elif not owner["metadata"].get("deletionTimestamp"):
                await _release(client, obj, uid, group, version, resource)
            continue
        if not matches or meta.get("deletionTimestamp") or owner["metadata"].get("deletionTimestamp"):
            continue
        if adopt_checked is None:
            adopt_checked = True if can_adopt is None else await can_adopt()
        if not adopt_checked:
            continue
        adopted = await _adopt(client, obj, ref, group, version, resource)
        if adopted is not None:
            mine.append(adopted)
    return mine


async def _adopt(client, obj: dict, ref: dict, group: str, version: str, resource: str) -> dict | None:
    meta = obj["metadata"]
    patch = {"metadata": {"ownerReferences": [ref], "uid": meta["uid"]}}
    try:
        return await client.patch(group, version, resource, meta["name"], patch, namespace=meta.get("namespace"),
                                  patch_type="strategic")
    except Exception as e:  # noqa: BLE001 - an object gone or changed is simply not adopted
        if not is_not_found(e):
            log.info("adopting %s/%s failed: %s", meta.get("namespace"), meta["name"], e)
        return None


async def _release(client, obj: dict, owner_uid: str, group: str, version: str, resource: str) -> None:
    meta = obj["metadata"]
    patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": meta["uid"]}}
    try:
        await client.patch(group, version, resource, meta["name"], patch, namespace=meta.get("namespace"),
                           patch_type="strategic")
    except Exception as e:
        if not is_not_found(e):
            raise


# -- pods -------------------------------------------------------------------------------------

def pod_from_template(template: dict, owner: dict, ref: dict | None, *, generate_name: str | None = None) -> dict:
    """A Pod object from a PodTemplateSpec, owned by ``owner`` (upstream's ``GetPodFromTemplate``)."""
    tmeta = template.get("metadata") or {}
    meta: dict = {"labels": dict(tmeta.get("labels") or {})}
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    meta["generateName"] = generate_name if generate_name is not None else f"{owner['metadata']['name']}-"
    if ref is not None:
        meta["ownerReferences"] = [ref]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}


class PodControl:
    """Creates and deletes pods for a controller, with upstream's Events on the controller."""

    def __init__(self, client, recorder: EventRecorder) -> None:
        self.client = client
        self.recorder = recorder

    async def create_pod(self, namespace: str, pod: dict, owner: dict) -> dict:
        """POST ``pod`` (from `pod_from_template`); records SuccessfulCreate or FailedCreate and re-raises."""
        if not (pod["metadata"].get("labels") or {}):
            raise ValueError("unable to create pods, no labels")
        try:
            created = await self.client.create("", "v1", "pods", pod, namespace=namespace)
        except Exception as e:
            self.recorder.event(owner, WARNING, "FailedCreate", f"Error creating: {_message(e)}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return created

    async def create_pods(self, namespace: str, template: dict, owner: dict, ref: dict | None = None) -> dict:
        return await self.create_pod(namespace, pod_from_template(template, owner, ref), owner)

    async def delete_pod(self, namespace: str, name: str, owner: dict, uid: str | None = None) -> bool:
        """DELETE a pod; False if it was already gone. SuccessfulDelete or FailedDelete on ``owner``."""
        try:
            await self.client.delete("", "v1", "pods", name, namespace=namespace,
                                     preconditions={"uid": uid} if uid else None)
        except Exception as e:
            if is_not_found(e):
                return False
            self.recorder.event(owner, WARNING, "FailedDelete", f"Error deleting: {_message(e)}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")
        return True


def _message(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)


def is_pod_active(pod: dict) -> bool:
    """Not finished and not being deleted (upstream's ``IsPodActive``)."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def is_pod_terminating(pod: dict) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and bool(pod["metadata"].get("deletionTimestamp"))


def filter_active_pods(pods: Iterable[dict]) -> list[dict]:
    return [p for p in pods if is_pod_active(p)]


def pod_condition(pod: dict, type_: str) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return None


def namespace_terminating(e: Exception) -> bool:
    """A create refused because its namespace is being deleted (NamespaceLifecycle's
    ``NamespaceTerminating`` cause): controllers skip those quietly, as upstream's do."""
    causes = ((getattr(e, "details", None) or {}).get("causes")) or ()
    return is_forbidden(e) and any(c.get("reason") == "NamespaceTerminating" for c in causes)


def is_pod_ready(pod: dict) -> bool:
    c = pod_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_pod_available(pod: dict, min_ready_seconds: int, now: dt.datetime) -> bool:
    """Ready for at least ``min_ready_seconds`` (upstream's ``IsPodAvailable``)."""
    c = pod_condition(pod, "Ready")
    if c is None or c.get("status") != "True":
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and since + dt.timedelta(seconds=min_ready_seconds) <= now


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def active_pods_key(pod: dict) -> tuple:
    """Sort key: the pod a scale-down should delete first sorts first (upstream's ``ActivePods``).

    Unassigned < assigned; Pending < Unknown < Running; not ready < ready; lower deletion cost
    first; ready for less time < longer; more restarts < fewer; newer < older.
    """
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    ready = is_pod_ready(pod)
    ready_since = parse_time((pod_condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else None
    try:
        cost = int((pod["metadata"].get("annotations") or {}).get(POD_DELETION_COST, "0"))
    except ValueError:
        cost = 0
    restarts = max((c.get("restartCount", 0) for c in status.get("containerStatuses") or ()), default=0)
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    # later (bigger) times must sort first: negate via timestamp
    return (1 if spec.get("nodeName") else 0,
            _PHASE_RANK.get(status.get("phase", "Pending"), 0),
            1 if ready else 0,
            cost,
            -(ready_since.timestamp()) if ready_since else 0.0,
            -restarts,
            -(created.timestamp()) if created else 0.0)


# -- hashing and batching ---------------------------------------------------------------------

def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in s)


def compute_hash(template: dict, collision_count: int | None = None) -> str:
    """Stable short hash of a template (see the module docstring)."""
    data = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


async def slow_start_batch(count: int, initial_batch_size: int, fn: Callable[[], Awaitable[object]]) -> tuple[int, Exception | None]:
    """Call ``fn`` ``count`` times in doubling concurrent batches; stop after a batch with an error.

    Returns (successes, the first error or None).
    """
    remaining, batch, successes = count, min(count, initial_batch_size), 0
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


async def update_status(client, group: str, resource: str, obj: dict, status: dict,
                        merge: Callable[[dict, dict], dict]) -> bool:
    """PUT ``merge(obj.status, status)`` to ``obj``'s status subresource; False (nothing sent) when
    that equals the current status. A conflict re-reads the object and tries once more."""
    have = obj.get("status") or {}
    merged = merge(have, status)
    if merged == have:
        return False
    new = {**obj, "status": merged}
    ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
    for attempt in range(2):
        try:
            await client.update_status(group, "v1", resource, new, namespace=ns)
            return True
        except Exception as e:
            if not is_conflict(e) or attempt:
                raise
        fresh = await client.get(group, "v1", resource, name, namespace=ns)
        new = {**fresh, "status": merge(fresh.get("status") or {}, status)}
    return True
