"""The Pod row: READY, the aggregate STATUS reason, RESTARTS with the last restart's age.

STATUS is computed like upstream's ``printPod``:

1. start from ``status.reason`` or ``status.phase`` (``SchedulingGated`` when the
   PodScheduled condition says so);
2. walk init containers in order: a successful or a started sidecar
   (``restartPolicy: Always``) one is passed over; the first other one decides
   ``Init:<reason>``, ``Init:ExitCode:N``, ``Init:Signal:N`` or ``Init:i/n``;
3. if initialization is over, walk app containers from last to first: a waiting
   or terminated reason (``CrashLoopBackOff``, ``Completed``, ``ExitCode:1``...)
   wins; ready running containers count towards READY, and a ``Completed`` pod
   with a container still running shows ``Running``/``NotReady``;
4. a pod being deleted shows ``Terminating`` (``Unknown`` if its node is lost).

RESTARTS counts app containers (plus sidecars, or every init container while
initializing) and appends ``(5m ago)`` from the newest ``lastState.terminated.finishedAt``.
"""

from __future__ import annotations

from datetime import datetime

from kubeling.api import duration
from kubeling.api.printers.common import AGE, NAME, Column, Printer, g

_POD_STATUS = "io.k8s.api.core.v1.PodStatus"
_POD_SPEC = "io.k8s.api.core.v1.PodSpec"

COLUMNS = (
    NAME,
    Column("Ready", doc="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", doc="The aggregate status of the containers in this pod."),
    Column("Restarts", doc="The number of times the containers in this pod have been restarted and when the "
                           "last container in this pod has restarted."),
    AGE,
    Column("IP", priority=1, doc=(_POD_STATUS, "podIP")),
    Column("Node", priority=1, doc=(_POD_SPEC, "nodeName")),
    Column("Nominated Node", priority=1, doc=(_POD_STATUS, "nominatedNodeName")),
    Column("Readiness Gates", priority=1, doc=(_POD_SPEC, "readinessGates")),
)

NODE_LOST = "NodeLost"


def _restartable(c: dict | None) -> bool:
    return bool(c) and c.get("restartPolicy") == "Always"


def _later(a: datetime | None, ts: str | None) -> datetime | None:
    t = duration.parse_time(ts)
    if t is None:
        return a
    return t if a is None or t > a else a


def _condition_true(status: dict, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in status.get("conditions") or [])


def _terminated_reason(term: dict, prefix: str = "") -> str:
    if term.get("reason"):
        return prefix + term["reason"]
    if term.get("signal"):
        return f"{prefix}Signal:{term['signal']}"
    return f"{prefix}ExitCode:{term.get('exitCode', 0)}"


def status_reason(pod: dict) -> tuple[str, int, int, int, datetime | None]:
    """``(reason, ready, total, restarts, last_restart)`` for a pod, as ``kubectl get pods`` shows it."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(spec.get("containers") or []) + sum(1 for c in init_specs.values() if _restartable(c))
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = None

    initializing = False
    n_init = len(spec.get("initContainers") or [])
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        count = cs.get("restartCount", 0)
        finished = g(cs, "lastState", "terminated", "finishedAt")
        restarts += count
        last_restart = _later(last_restart, finished)
        sidecar = _restartable(init_specs.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += count
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last_restart = _later(last_restart, g(cs, "lastState", "terminated", "finishedAt"))
            state = cs.get("state") or {}
            term, waiting = state.get("terminated"), state.get("waiting")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if g(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == NODE_LOST:
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason, ready, total, restarts, last_restart


def _readiness_gates(spec: dict, status: dict) -> str:
    gates = spec.get("readinessGates") or []
    if not gates:
        return "<none>"
    conds = {}
    for c in status.get("conditions") or []:
        conds.setdefault(c.get("type"), c.get("status"))
    true = sum(1 for gate in gates if conds.get(gate.get("conditionType")) == "True")
    return f"{true}/{len(gates)}"


def row(pod: dict, now: datetime) -> list:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason, ready, total, restarts, last_restart = status_reason(pod)
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({duration.human(now - last_restart)} ago)"
    ips = status.get("podIPs") or []
    ip = (ips[0].get("ip") if ips else status.get("podIP")) or "<none>"
    return [
        g(pod, "metadata", "name", default=""), f"{ready}/{total}", reason, restarts_cell,
        duration.since(g(pod, "metadata", "creationTimestamp"), now),
        ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
        _readiness_gates(spec, status),
    ]


def conditions(pod: dict) -> list:
    """A ``Completed`` row condition for finished pods (kubectl can filter on it)."""
    phase = g(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


PRINTER = Printer(COLUMNS, row, conditions)
