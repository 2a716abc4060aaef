"""kubectl's pod STATUS / READY / RESTARTS strings, as upstream's printPod computes them."""

from datetime import datetime, timedelta, timezone

import pytest

from kubeling.api import kinds, printers

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
POD = kinds.by_gvk()[("", "v1", "Pod")]


def ago(seconds: int) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(containers=1, init=(), phase="Running", statuses=(), init_statuses=(), conditions=(), meta=None,
        status_extra=None, spec_extra=None):
    spec = {"containers": [{"name": f"c{i}", "image": "img"} for i in range(containers)], **(spec_extra or {})}
    if init:
        spec["initContainers"] = [dict(c) for c in init]
    status = {"phase": phase, "conditions": list(conditions), **(status_extra or {})}
    if statuses:
        status["containerStatuses"] = list(statuses)
    if init_statuses:
        status["initContainerStatuses"] = list(init_statuses)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(600), **(meta or {})},
            "spec": spec, "status": status}


def cs(name="c0", state=None, ready=False, restarts=0, last=None, started=None):
    s = {"name": name, "state": state or {}, "ready": ready, "restartCount": restarts, "image": "img"}
    if last:
        s["lastState"] = {"terminated": last}
    if started is not None:
        s["started"] = started
    return s


RUNNING = {"running": {"startedAt": ago(300)}}
READY_COND = {"type": "Ready", "status": "True"}


@pytest.mark.parametrize("obj, ready, status, restarts", [
    pytest.param(pod(phase="Pending"), "0/1", "Pending", "0", id="pending-unscheduled"),
    pytest.param(pod(phase="Pending", statuses=[cs(state={"waiting": {"reason": "ContainerCreating"}})]),
                 "0/1", "ContainerCreating", "0", id="container-creating"),
    pytest.param(pod(statuses=[cs(state=RUNNING, ready=True)], conditions=[READY_COND]),
                 "1/1", "Running", "0", id="running"),
    pytest.param(pod(containers=2, statuses=[cs("c0", RUNNING, True), cs("c1", RUNNING, False)]),
                 "1/2", "Running", "0", id="one-of-two-ready"),
    pytest.param(pod(statuses=[cs(state={"waiting": {"reason": "CrashLoopBackOff"}}, restarts=3,
                                  last={"exitCode": 1, "reason": "Error", "finishedAt": ago(300)})]),
                 "0/1", "CrashLoopBackOff", "3 (5m ago)", id="crashloop-with-last-restart"),
    pytest.param(pod(statuses=[cs(state={"waiting": {"reason": "ImagePullBackOff"}})], phase="Pending"),
                 "0/1", "ImagePullBackOff", "0", id="image-pull-backoff"),
    pytest.param(pod(phase="Succeeded", statuses=[cs(state={"terminated": {"exitCode": 0, "reason": "Completed"}})]),
                 "0/1", "Completed", "0", id="completed"),
    pytest.param(pod(phase="Failed", statuses=[cs(state={"terminated": {"exitCode": 1, "reason": "Error"}})]),
                 "0/1", "Error", "0", id="error"),
    pytest.param(pod(statuses=[cs(state={"terminated": {"exitCode": 137}})]), "0/1", "ExitCode:137", "0",
                 id="exit-code-without-reason"),
    pytest.param(pod(statuses=[cs(state={"terminated": {"exitCode": 0, "signal": 9}})]), "0/1", "Signal:9", "0",
                 id="signal-without-reason"),
    pytest.param(pod(phase="Failed", status_extra={"reason": "Evicted"}), "0/1", "Evicted", "0", id="evicted"),
    pytest.param(pod(containers=2, statuses=[cs("c0", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
                                             cs("c1", RUNNING, True)], conditions=[READY_COND]),
                 "1/2", "Running", "0", id="completed-but-one-running-ready"),
    pytest.param(pod(containers=2, statuses=[cs("c0", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
                                             cs("c1", RUNNING, True)]),
                 "1/2", "NotReady", "0", id="completed-but-one-running-not-ready"),
    pytest.param(pod(meta={"deletionTimestamp": ago(5)}, statuses=[cs(state=RUNNING, ready=True)]),
                 "1/1", "Terminating", "0", id="terminating"),
    pytest.param(pod(phase="Succeeded", meta={"deletionTimestamp": ago(5)},
                     statuses=[cs(state={"terminated": {"exitCode": 0, "reason": "Completed"}})]),
                 "0/1", "Completed", "0", id="terminal-phase-not-terminating"),
    pytest.param(pod(meta={"deletionTimestamp": ago(5)}, status_extra={"reason": "NodeLost"}), "0/1", "Unknown", "0",
                 id="node-lost"),
    pytest.param(pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                                   "reason": "SchedulingGated"}]),
                 "0/1", "SchedulingGated", "0", id="scheduling-gated"),
    pytest.param(pod(phase="Pending", init=[{"name": "i0"}, {"name": "i1"}],
                     init_statuses=[cs("i0", RUNNING), cs("i1", {"waiting": {"reason": "PodInitializing"}})]),
                 "0/1", "Init:0/2", "0", id="init-0-of-2"),
    pytest.param(pod(phase="Pending", init=[{"name": "i0"}, {"name": "i1"}],
                     init_statuses=[cs("i0", {"terminated": {"exitCode": 0, "reason": "Completed"}}),
                                    cs("i1", RUNNING)]),
                 "0/1", "Init:1/2", "0", id="init-1-of-2"),
    pytest.param(pod(phase="Pending", init=[{"name": "i0"}],
                     init_statuses=[cs("i0", {"waiting": {"reason": "CrashLoopBackOff"}}, restarts=2,
                                       last={"exitCode": 1, "finishedAt": ago(65)})]),
                 "0/1", "Init:CrashLoopBackOff", "2 (65s ago)", id="init-crashloop"),
    pytest.param(pod(phase="Pending", init=[{"name": "i0"}],
                     init_statuses=[cs("i0", {"terminated": {"exitCode": 1, "reason": "Error"}})]),
                 "0/1", "Init:Error", "0", id="init-error"),
    pytest.param(pod(phase="Pending", init=[{"name": "i0"}],
                     init_statuses=[cs("i0", {"terminated": {"exitCode": 2}})]),
                 "0/1", "Init:ExitCode:2", "0", id="init-exit-code"),
    pytest.param(pod(init=[{"name": "proxy", "restartPolicy": "Always"}],
                     init_statuses=[cs("proxy", RUNNING, ready=True, started=True, restarts=1,
                                       last={"exitCode": 1, "finishedAt": ago(7200)})],
                     statuses=[cs("c0", RUNNING, True, restarts=2, last={"exitCode": 1, "finishedAt": ago(600)})],
                     conditions=[READY_COND, {"type": "Initialized", "status": "True"}]),
                 "2/2", "Running", "3 (10m ago)", id="sidecar-counts-in-ready-and-restarts"),
])
def test_pod_status_columns(obj, ready, status, restarts):
    cells = printers.cells(POD, obj, NOW)
    assert cells[1:4] == [ready, status, restarts]
    assert cells[0] == "p" and cells[4] == "10m"


def test_pod_wide_columns():
    obj = pod(statuses=[cs(state=RUNNING, ready=True)],
              spec_extra={"nodeName": "node-1", "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
              status_extra={"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                            "nominatedNodeName": "node-2"},
              conditions=[{"type": "a", "status": "True"}, {"type": "b", "status": "False"}])
    assert printers.cells(POD, obj, NOW)[5:] == ["10.0.0.5", "node-1", "node-2", "1/2"]


def test_pod_wide_columns_unset():
    assert printers.cells(POD, pod(phase="Pending"), NOW)[5:] == ["<none>", "<none>", "<none>", "<none>"]


def test_pod_columns_match_upstream():
    cols = printers.columns(POD)
    assert [(c["name"], c["priority"]) for c in cols] == [
        ("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0),
        ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    assert cols[0]["format"] == "name" and all(c["type"] == "string" for c in cols)
    assert cols[4]["description"].startswith("CreationTimestamp is a timestamp")


@pytest.mark.parametrize("phase, reason", [
    pytest.param("Succeeded", "Succeeded", id="succeeded"),
    pytest.param("Failed", "Failed", id="failed"),
])
def test_finished_pods_carry_completed_row_condition(phase, reason):
    conds = printers.row_conditions(POD, pod(phase=phase))
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [("Completed", "True", reason)]
    assert printers.row_conditions(POD, pod(phase="Running")) == []
