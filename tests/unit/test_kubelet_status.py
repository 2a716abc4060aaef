"""Pod status generation (phase, conditions, container states) and the pod workers' guarantees."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.kubelet import status
from kubeling.kubelet.backoff import Backoff
from kubeling.kubelet.podworkers import PodState, PodWorkers
from kubeling.kubelet.runtime import ContainerState, ContainerStatus, PodSandboxStatus, SandboxState

NOW = 1_700_000_000.0


def pod(policy="Always", containers=("app",), init=(), **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"restartPolicy": policy, "containers": [{"name": n, "image": "busybox"} for n in containers],
                     "initContainers": [{"name": n, "image": "busybox"} for n in init], **spec},
            "status": {}}


def sb(ready=True):
    return PodSandboxStatus(id="s", uid="u1", name="p", namespace="ns", attempt=0,
                            state=SandboxState.READY if ready else SandboxState.NOTREADY, created_at=NOW, ip="10.42.0.9")


def c(name, state, code=0, attempt=0, reason=""):
    return ContainerStatus(id=f"{name}{attempt}", sandbox_id="s", name=name, attempt=attempt,
                           state=ContainerState(state), exit_code=code, reason=reason,
                           started_at=NOW - 10, finished_at=NOW - 1 if state == "exited" else 0.0)


def view(p, containers=(), **kw):
    by = {}
    for x in containers:
        by.setdefault(x.name, []).append(x)
    return status.PodView(pod=p, sandbox=kw.pop("sandbox", sb()), containers=by, host_ip="10.201.0.2", **kw)


def conditions(st):
    return {x["type"]: x["status"] for x in st["conditions"]}


@pytest.mark.parametrize("p, containers, waiting, phase", [
    pytest.param(pod(), [], {}, "Pending", id="nothing-started"),
    pytest.param(pod(), [c("app", "running")], {}, "Running", id="running"),
    pytest.param(pod(), [c("app", "exited", 1)], {"app": status.Waiting("CrashLoopBackOff")}, "Running",
                 id="crashloop-is-running"),
    pytest.param(pod("Never"), [c("app", "exited", 0)], {}, "Succeeded", id="never-success"),
    pytest.param(pod("Never"), [c("app", "exited", 2)], {}, "Failed", id="never-failure"),
    pytest.param(pod("OnFailure"), [c("app", "exited", 0)], {}, "Succeeded", id="onfailure-success"),
    pytest.param(pod(init=("i",)), [c("i", "running")], {}, "Pending", id="initializing"),
    pytest.param(pod("Never", init=("i",)), [c("i", "exited", 1)], {}, "Failed", id="init-failed-never"),
    pytest.param(pod(init=("i",)), [c("i", "exited", 0), c("app", "running")], {}, "Running", id="initialized"),
])
def test_phase(p, containers, waiting, phase):
    assert status.generate(view(p, containers, waiting=waiting), NOW)["phase"] == phase


def test_running_pod_status_as_upstream():
    st = status.generate(view(pod(), [c("app", "running")]), NOW)
    assert conditions(st) == {"PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
                              "ContainersReady": "True", "PodScheduled": "True"}
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "running" in cs["state"] and cs["restartCount"] == 0
    assert cs["containerID"] == "runc://app0"
    assert st["podIP"] == "10.42.0.9" and st["hostIP"] == "10.201.0.2" and st["qosClass"] == "BestEffort"


def test_crashloop_shows_waiting_with_the_last_exit():
    st = status.generate(view(pod(), [c("app", "exited", 1, attempt=0), c("app", "exited", 1, attempt=1)],
                              waiting={"app": status.Waiting("CrashLoopBackOff", "back-off 20s")}), NOW)
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["restartCount"] == 1
    assert conditions(st)["Ready"] == "False"
    ready = next(x for x in st["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady" and ready["message"] == "containers with unready status: [app]"


def test_oomkilled_reason_is_kept():
    st = status.generate(view(pod("Never"), [c("app", "exited", 137, reason="OOMKilled")]), NOW)
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"


def test_readiness_probe_not_passed_means_not_ready():
    p = pod()
    p["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}}
    st = status.generate(view(p, [c("app", "running")], ready={"app": False}), NOW)
    assert st["containerStatuses"][0]["ready"] is False and conditions(st)["ContainersReady"] == "False"


def test_transition_time_kept_while_status_stays():
    p = pod()
    first = status.generate(view(p, [c("app", "running")]), NOW)
    p["status"] = first
    second = status.generate(view(p, [c("app", "running")]), NOW + 50)
    assert [x["lastTransitionTime"] for x in first["conditions"]] == \
        [x["lastTransitionTime"] for x in second["conditions"]]


def test_terminal_phase_never_goes_back():
    p = pod()
    p["status"] = {"phase": "Failed"}
    assert status.generate(view(p, [c("app", "running")]), NOW)["phase"] == "Failed"


def test_backoff_doubles_caps_and_resets():
    now = [0.0]
    b = Backoff(clock=lambda: now[0])
    assert [b.next("k") for _ in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert b.remaining("k") == 300
    now[0] += 1000
    assert b.next("k") == 10                       # quiet for longer than reset_after
    assert b.next("k", ran_for=700) == 10          # a long run resets too


def test_pod_workers_coalesce_and_never_restart_a_terminating_pod():
    async def main():
        calls: list[tuple[str, str]] = []
        gate = asyncio.Event()

        async def sync(p):
            calls.append(("sync", p["v"]))
            await gate.wait()

        async def terminating(p, removed):
            calls.append(("terminating", p["v"]))

        async def terminated(p):
            calls.append(("terminated", p["v"]))

        async def removed(p):
            calls.append(("removed", p["v"]))

        w = PodWorkers(sync, terminating, terminated, removed)
        base = {"metadata": {"uid": "u", "name": "p", "namespace": "n"}}
        w.update({**base, "v": 1})
        await asyncio.sleep(0.01)
        for v in (2, 3, 4):                       # arrive while sync(1) runs: coalesced
            w.update({**base, "v": v})
        gate.set()
        await asyncio.sleep(0.05)
        assert calls == [("sync", 1), ("sync", 4)]
        w.update({**base, "v": 5, "metadata": {**base["metadata"], "deletionTimestamp": "x"}})
        await asyncio.sleep(0.05)
        assert w.state("u") == PodState.TERMINATED
        w.update({**base, "v": 6})               # an update after termination: no sync
        await asyncio.sleep(0.05)
        assert ("sync", 6) not in calls
        w.update({**base, "v": 7}, removed=True)
        await asyncio.sleep(0.05)
        assert calls[-1][0] == "removed" and w.state("u") is None
        await w.close()

    asyncio.run(main())


def test_pod_worker_survives_a_failing_sync():
    async def main():
        seen = []

        async def sync(p):
            seen.append(p["v"])
            if p["v"] == 1:
                raise RuntimeError("boom")

        async def noop(*_):
            return None

        w = PodWorkers(sync, noop, noop, noop)
        w.update({"metadata": {"uid": "u"}, "v": 1})
        await asyncio.sleep(0.01)
        w.update({"metadata": {"uid": "u"}, "v": 2})
        await asyncio.sleep(0.05)
        assert seen[:2] == [1, 2]
        await w.close()

    asyncio.run(main())
