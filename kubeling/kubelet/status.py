"""Pod status: what the kubelet reports (upstream's ``generateAPIPodStatus`` and status manager).

`generate` turns what the runtime says (sandboxes, containers with their attempts) plus what the
kubelet knows but the runtime does not (why a container waits: a pull back-off, a config error;
probe results) into the API's ``PodStatus``. It is a pure function of its inputs, so it is tested
without a runtime.

`StatusManager` keeps the last status it computed per pod and writes it to the API's ``status``
subresource when it differs from what was last written, in a background task, so that a pod
worker never waits on the API server. A write that fails is retried on the next change or after
a short delay; the newest status always wins (a queued older one is dropped).

Rules, as upstream:
- ``restartCount`` is the attempt number of the newest container; ``lastState`` is the one
  before it (the kubelet keeps one dead container per name for this and for ``logs --previous``).
- A container that has exited and is waiting to be restarted shows ``waiting`` with the reason
  (``CrashLoopBackOff``...) and its exit in ``lastState``.
- phase: see `pod_phase`; conditions PodReadyToStartContainers, Initialized, Ready,
  ContainersReady and PodScheduled keep their ``lastTransitionTime`` while their status stays.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

from kubeling.kubelet.runtime import ContainerState, ContainerStatus, PodSandboxStatus, SandboxState

log = logging.getLogger(__name__)

RUNTIME_SCHEME = "runc://"   # the default; a view carries its runtime's (``hollow://``)


def rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Waiting:
    """Why a container is not running now, as the kubelet knows it (not the runtime)."""

    reason: str
    message: str = ""


@dataclass
class PodView:
    """Everything `generate` reads. ``containers`` maps a container name to its runtime
    containers, newest attempt last."""

    pod: dict
    sandbox: PodSandboxStatus | None
    containers: dict[str, list[ContainerStatus]] = field(default_factory=dict)
    waiting: dict[str, Waiting] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)       # readiness probe results
    started: dict[str, bool] = field(default_factory=dict)     # startup probe results
    host_ip: str = ""
    qos_class: str = "BestEffort"
    termination_messages: dict[str, str] = field(default_factory=dict)  # container id -> message
    image_ids: dict[str, str] = field(default_factory=dict)    # container id -> imageID
    terminal: tuple[str, str, str] | None = None   # (phase, reason, message) forced by the kubelet
    scheme: str = RUNTIME_SCHEME                    # containerID prefix: "<runtime name>://"


def _terminated(c: ContainerStatus, message: str = "", scheme: str = RUNTIME_SCHEME) -> dict:
    out: dict[str, Any] = {"exitCode": c.exit_code,
                           "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
                           "startedAt": rfc3339(c.started_at) if c.started_at else None,
                           "finishedAt": rfc3339(c.finished_at) if c.finished_at else None,
                           "containerID": scheme + c.id}
    if message or c.message:
        out["message"] = message or c.message
    return out


def _terminated_of(c: ContainerStatus, view: "PodView") -> dict:
    return _terminated(c, view.termination_messages.get(c.id, ""), view.scheme)


def container_status(spec: dict, history: list[ContainerStatus], view: PodView, *, init: bool = False,
                     default_waiting: str = "ContainerCreating") -> dict:
    name = spec["name"]
    newest = history[-1] if history else None
    waiting = view.waiting.get(name)
    status: dict[str, Any] = {"name": name, "image": spec.get("image", ""), "imageID": "",
                              "restartCount": newest.attempt if newest else 0,
                              "ready": False, "started": False, "state": {}, "lastState": {}}
    if newest is not None:
        status["containerID"] = view.scheme + newest.id
        status["imageID"] = view.image_ids.get(newest.id, "")
    previous = history[-2] if len(history) > 1 else None
    if newest is None:
        w = waiting or Waiting(default_waiting)
        status["state"] = {"waiting": _waiting(w)}
    elif newest.state == ContainerState.RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(newest.started_at)}}
        started = view.started.get(name, True)
        status["started"] = started
        status["ready"] = bool(started and view.ready.get(name, not _has_probe(spec, "readinessProbe")))
        if previous is not None and previous.state == ContainerState.EXITED:
            status["lastState"] = {"terminated": _terminated_of(previous, view)}
    elif newest.state == ContainerState.EXITED:
        term = _terminated_of(newest, view)
        if waiting is not None:
            status["state"] = {"waiting": _waiting(waiting)}
            status["lastState"] = {"terminated": term}
        else:
            status["state"] = {"terminated": term}
            if previous is not None and previous.state == ContainerState.EXITED:
                status["lastState"] = {"terminated": _terminated_of(previous, view)}
    else:  # CREATED / UNKNOWN: between create and start
        status["state"] = {"waiting": _waiting(waiting or Waiting(default_waiting))}
        # the last run stays visible while the next one is being started
        if previous is not None and previous.state == ContainerState.EXITED:
            status["lastState"] = {"terminated": _terminated_of(previous, view)}
    if init and spec.get("restartPolicy") != "Always":   # (a sidecar is ready as an app container is)
        # a plain init container is "ready" once it has completed successfully
        status["ready"] = bool(newest and newest.state == ContainerState.EXITED and newest.exit_code == 0)
    return status


def _waiting(w: Waiting) -> dict:
    out = {"reason": w.reason}
    if w.message:
        out["message"] = w.message
    return out


def _has_probe(spec: dict, kind: str) -> bool:
    return bool(spec.get(kind))


def pod_phase(spec: dict, init_statuses: list[dict], statuses: list[dict]) -> str:
    """Upstream's getPhase for one pod's container statuses."""
    policy = spec.get("restartPolicy", "Always")
    for s, c in zip(init_statuses, spec.get("initContainers") or []):
        if c.get("restartPolicy") == "Always":
            continue  # sidecars do not gate the phase once started
        term = s["state"].get("terminated")
        if term and term["exitCode"] == 0:
            continue
        last = s["lastState"].get("terminated")
        if policy == "Never" and ((term and term["exitCode"] != 0) or (last and last["exitCode"] != 0)):
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"]["exitCode"] == 0:
                succeeded += 1
        elif s["lastState"].get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "OnFailure":
            return "Running"
        return "Failed"
    return "Pending"


def _condition(old: dict, ctype: str, ok: bool, now: str, reason: str = "", message: str = "") -> dict:
    status = "True" if ok else "False"
    prev = next((c for c in old.get("conditions") or [] if c.get("type") == ctype), None)
    when = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get("lastTransitionTime") else now
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": when}
    if not ok and reason:
        c["reason"] = reason
        if message:
            c["message"] = message
    return c


def generate(view: PodView, now: float) -> dict:
    """The pod's ``status`` (a new dict; the pod is not modified)."""
    pod, spec = view.pod, view.pod.get("spec") or {}
    old = pod.get("status") or {}
    stamp = rfc3339(now)
    init_specs = spec.get("initContainers") or []
    init_statuses = [container_status(c, view.containers.get(c["name"], []), view, init=True)
                     for c in init_specs]
    initialized = all(
        (s["state"].get("terminated", {}).get("exitCode") == 0) or
        (c.get("restartPolicy") == "Always" and s["started"])
        for c, s in zip(init_specs, init_statuses))
    statuses = [container_status(c, view.containers.get(c["name"], []), view,
                                 default_waiting="ContainerCreating" if initialized else "PodInitializing")
                for c in spec.get("containers") or []]
    phase = pod_phase(spec, init_statuses, statuses)
    reason = message = ""
    if view.terminal:
        phase, reason, message = view.terminal
    elif old.get("phase") in ("Succeeded", "Failed"):
        phase = old["phase"]  # a terminal phase never goes back
    sandbox_ready = view.sandbox is not None and view.sandbox.state == SandboxState.READY
    not_ready = [s["name"] for s in statuses if not s["ready"]]
    not_ready += [s["name"] for c, s in zip(init_specs, init_statuses)
                  if c.get("restartPolicy") == "Always" and not s["ready"]]
    incomplete = [s["name"] for c, s in zip(init_specs, init_statuses)
                  if c.get("restartPolicy") != "Always" and not s["ready"]]
    completed = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    ready_msg = "" if completed else f"containers with unready status: [{' '.join(not_ready)}]"
    gates_ok = all(any(c.get("type") == g.get("conditionType") and c.get("status") == "True"
                       for c in old.get("conditions") or []) for g in spec.get("readinessGates") or [])
    conditions = [
        _condition(old, "PodReadyToStartContainers", sandbox_ready, stamp),
        # a Failed pod whose init container failed is still not initialized (upstream says
        # PodCompleted only of a Succeeded pod, where every init container has succeeded)
        _condition(old, "Initialized", initialized, stamp, "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(incomplete)}]"),
        _condition(old, "Ready", not not_ready and not completed and gates_ok, stamp, ready_reason
                   if not_ready or completed else "ReadinessGatesNotReady", ready_msg),
        _condition(old, "ContainersReady", not not_ready and not completed, stamp, ready_reason, ready_msg),
    ]
    scheduled = next((c for c in old.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    conditions.append(scheduled or _condition(old, "PodScheduled", True, stamp))
    # conditions others own (readiness gates, DisruptionTarget) are kept as they are
    ours = {c["type"] for c in conditions}
    conditions += [c for c in old.get("conditions") or [] if c.get("type") not in ours]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "hostIP": view.host_ip,
                              "hostIPs": [{"ip": view.host_ip}] if view.host_ip else [],
                              "startTime": old.get("startTime") or stamp, "qosClass": view.qos_class,
                              "containerStatuses": statuses}
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    ip = view.host_ip if spec.get("hostNetwork") else (view.sandbox.ip if view.sandbox else "")
    if not ip and not completed:
        ip = old.get("podIP", "")
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    if reason:
        status["reason"] = reason
        status["message"] = message
    if old.get("ephemeralContainerStatuses") or spec.get("ephemeralContainers"):
        status["ephemeralContainerStatuses"] = [
            container_status(c, view.containers.get(c["name"], []), view)
            for c in spec.get("ephemeralContainers") or []]
    if old.get("nominatedNodeName"):
        status["nominatedNodeName"] = old["nominatedNodeName"]
    return status


class StatusManager:
    """Writes computed pod statuses to the API (see the module docstring)."""

    def __init__(self, client: Any, *, retry_delay: float = 1.0) -> None:
        self.client = client
        self.retry_delay = retry_delay
        self._wanted: dict[str, tuple[str, str, dict]] = {}   # uid -> (namespace, name, status)
        self._written: dict[str, dict] = {}
        self._dirty: asyncio.Event | None = None

    def set_status(self, pod: dict, status: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if self._written.get(uid) == status and uid not in self._wanted:
            return
        self._wanted[uid] = (meta.get("namespace", "default"), meta["name"], status)
        if self._dirty is not None:
            self._dirty.set()

    def last(self, uid: str) -> dict | None:
        wanted = self._wanted.get(uid)
        return wanted[2] if wanted else self._written.get(uid)

    def forget(self, uid: str) -> None:
        self._wanted.pop(uid, None)
        self._written.pop(uid, None)

    def pending(self) -> int:
        return len(self._wanted)

    async def flush(self) -> None:
        """Write every wanted status now (used at shutdown and in tests)."""
        for uid in list(self._wanted):
            await self._write(uid)

    async def run(self, stop: asyncio.Event) -> None:
        self._dirty = asyncio.Event()
        if self._wanted:
            self._dirty.set()
        while not stop.is_set():
            waiter = asyncio.ensure_future(stop.wait())
            dirty = asyncio.ensure_future(self._dirty.wait())
            try:
                await asyncio.wait([waiter, dirty], timeout=self.retry_delay * 5,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                dirty.cancel()
            self._dirty.clear()
            failed = False
            for uid in list(self._wanted):
                failed |= not await self._write(uid)
            if failed:
                await asyncio.sleep(self.retry_delay)

    async def _write(self, uid: str) -> bool:
        wanted = self._wanted.get(uid)
        if wanted is None:
            return True
        namespace, name, status = wanted
        # Conditions merge by type in a strategic merge patch: a reason or message the new
        # condition lacks must be sent as null, or the old one (ContainersNotReady) would stay
        # on a condition that turned True (upstream's two-way merge patch sends the nulls too).
        body = {"status": {**status, "conditions": [{"reason": None, "message": None, **c}
                                                    for c in status.get("conditions") or []]}}
        try:
            await self.client.patch("", "v1", "pods", name, body, namespace=namespace, subresource="status",
                                    patch_type="strategic")
        except Exception as e:  # noqa: BLE001 - kept and retried; a gone pod is forgotten
            if getattr(e, "code", None) == 404:
                if self._wanted.get(uid) is wanted:
                    self._wanted.pop(uid, None)
                return True
            log.warning("status of pod %s/%s not written: %s", namespace, name, e)
            return False
        if self._wanted.get(uid) is wanted:
            self._wanted.pop(uid, None)
        self._written[uid] = status
        return True
