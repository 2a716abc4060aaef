"""Probe workers and the manager on a fake clock: thresholds, periods, initial delay, jitter,
startup gating, holds after a liveness failure, container restarts, deletion and removal."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.client.clock import FakeClock
from kubeling.kubelet.prober.manager import ProbeManager
from kubeling.kubelet.prober.results import Result, Update
from kubeling.kubelet.runtime import ContainerState, ContainerStatus

S, F = Result.SUCCESS, Result.FAILURE


class ScriptedProber:
    """Answers each probe type from a script (the last answer repeats) and notes when it ran."""

    def __init__(self, clock: FakeClock, **scripts: list) -> None:
        self.clock = clock
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.calls: list[tuple[str, float, str]] = []

    async def probe(self, probe_type, pod, container, container_id, pod_ip):
        self.calls.append((probe_type, self.clock.now() - START, container_id))
        script = self.scripts[probe_type]
        return script.pop(0) if len(script) > 1 else script[0]

    def times(self, probe_type: str) -> list[float]:
        return [t for p, t, _ in self.calls if p == probe_type]


START = 1000.0


def pod(uid="u1", restart="Always", **probes) -> dict:
    container = {"name": "app"}
    for kind, spec in probes.items():
        container[f"{kind}Probe"] = {"exec": {"command": ["true"]}, **spec}
    return {"metadata": {"uid": uid, "name": "p", "namespace": "ns"},
            "spec": {"restartPolicy": restart, "containers": [container]}}


def running(clock: FakeClock, cid="c1", state=ContainerState.RUNNING) -> ContainerStatus:
    return ContainerStatus(id=cid, sandbox_id="s", name="app", attempt=0, state=state,
                           started_at=clock.wall().timestamp())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float, step: float = 0.5) -> None:
    """Let new workers start at the current time, then move time in small steps."""
    await settle()
    for _ in range(round(seconds / step)):
        clock.step(step)
        await settle()


def harness(**scripts):
    clock = FakeClock(start=START)
    prober = ScriptedProber(clock, **scripts)
    manager = ProbeManager(None, None, pod_ip=lambda p: "10.0.0.1", clock=clock, prober=prober,
                           rand=lambda: 0.5)
    return clock, prober, manager


def drain(manager: ProbeManager) -> list[Update]:
    out = []
    while not manager._updates.empty():
        out.append(manager._updates.get_nowait())
    return out


def run(coro):
    return asyncio.run(coro)


def test_readiness_thresholds_and_period():
    async def main():
        clock, prober, m = harness(readiness=[S, S, F, F, F, S, S])
        await advance(clock, 20)                 # past the start-up jitter window
        m.add_pod(pod(readiness={"periodSeconds": 5, "successThreshold": 2, "failureThreshold": 3}))
        m.update_container("u1", running(clock))
        await settle()
        assert not m.ready("u1", "app")          # readiness starts as failure
        await advance(clock, 5)
        assert m.ready("u1", "app")              # two successes in a row
        await advance(clock, 10)
        assert m.ready("u1", "app")              # two failures: below the threshold of 3
        await advance(clock, 5)
        assert not m.ready("u1", "app")          # the third failure
        await advance(clock, 10)
        assert m.ready("u1", "app")
        updates = [(u.probe_type, u.result) for u in drain(m)]
        await m.close()
        return prober.times("readiness"), updates

    times, updates = run(main())
    assert times == [20, 25, 30, 35, 40, 45, 50]
    assert updates == [("readiness", F), ("readiness", S), ("readiness", F), ("readiness", S)]


def test_initial_delay_counts_from_container_start():
    async def main():
        clock, prober, m = harness(liveness=[S])
        await advance(clock, 20)
        m.add_pod(pod(liveness={"periodSeconds": 2, "initialDelaySeconds": 7}))
        await advance(clock, 3)                  # the container starts 3 s after the worker
        m.update_container("u1", running(clock))
        await advance(clock, 10)
        await m.close()
        return prober.times("liveness")

    # Started at 23: runs are allowed from 30 on, at the worker's 2 s cadence (20, 22, ...).
    assert run(main()) == [30, 32]


@pytest.mark.parametrize("created_after, first_run", [
    pytest.param(0, 5.0, id="right-after-start-jittered"),
    pytest.param(15, 15.0, id="long-after-start-immediate"),
])
def test_first_run_jitter_only_soon_after_manager_start(created_after, first_run):
    async def main():
        clock, prober, m = harness(readiness=[S])
        await advance(clock, created_after)
        m.add_pod(pod(readiness={"periodSeconds": 10}))
        status = running(clock)
        m._statuses[("u1", "app")] = status      # known before the worker's first run, no trigger
        await advance(clock, 6)
        await m.close()
        return prober.times("readiness")

    assert run(main())[0] == first_run


def test_startup_gates_liveness_and_readiness():
    async def main():
        clock, prober, m = harness(startup=[F, F, S], liveness=[S], readiness=[S])
        await advance(clock, 20)
        m.add_pod(pod(startup={"periodSeconds": 1, "failureThreshold": 5},
                      liveness={"periodSeconds": 1}, readiness={"periodSeconds": 1}))
        m.update_container("u1", running(clock))
        await settle()
        assert not m.started("u1", "app") and not m.ready("u1", "app")
        await advance(clock, 1.5)
        # Two startup failures (below the threshold): the others wait and nothing is started.
        assert prober.times("liveness") == [] and prober.times("readiness") == []
        assert not m.started("u1", "app") and m.startup.get("c1") is Result.UNKNOWN
        await advance(clock, 0.5)
        assert m.started("u1", "app")
        await advance(clock, 3)
        await m.close()
        return prober, m

    prober, _m = run(main())
    assert prober.times("startup") == [20, 21, 22]          # and never again once started
    assert prober.times("liveness")[0] == 23
    # The startup success triggered readiness at once rather than at its next tick.
    assert prober.times("readiness")[0] == 22


def test_liveness_failure_holds_until_new_container():
    async def main():
        clock, prober, m = harness(liveness=[F])
        await advance(clock, 20)
        m.add_pod(pod(liveness={"periodSeconds": 1, "failureThreshold": 2}))
        m.update_container("u1", running(clock, "c1"))
        await advance(clock, 5)
        held = list(prober.calls)
        first = drain(m)
        assert m.liveness.get("c1") is F
        # The kubelet restarts the container: a new id resets the worker.
        prober.scripts["liveness"] = [S]
        m.update_container("u1", running(clock, "c2"))
        await advance(clock, 2)
        second = drain(m)
        await m.close()
        return held, first, second, prober, m

    held, first, second, prober, m = run(main())
    assert [t for _, t, _ in held] == [20, 21]               # two failures, then on hold
    assert [(u.container_id, u.result) for u in first] == [("c1", S), ("c1", F)]
    assert [(u.container_id, u.result) for u in second] == [("c2", S)]
    assert {cid for _, _, cid in prober.calls[2:]} == {"c2"}
    assert m.liveness.get("c1") is None                      # the old id was forgotten


def test_not_running_is_failure_and_never_restart_ends_worker():
    async def main():
        clock, _prober, m = harness(readiness=[S])
        await advance(clock, 20)
        m.add_pod(pod(restart="Never", readiness={"periodSeconds": 1}))
        m.update_container("u1", running(clock))
        await advance(clock, 1)
        assert m.ready("u1", "app")
        m.update_container("u1", running(clock, state=ContainerState.EXITED))
        await advance(clock, 2)
        result = m.readiness_results.get("c1"), m.has_worker("u1", "app", "readiness")
        await m.close()
        return result

    # The worker ended (restartPolicy Never) and took its results with it.
    assert run(main()) == (None, False)


def test_deleted_pod_liveness_reports_success_and_stops():
    async def main():
        clock, prober, m = harness(liveness=[F])
        await advance(clock, 20)
        p = pod(liveness={"periodSeconds": 1, "failureThreshold": 3})
        m.add_pod(p)
        m.update_container("u1", running(clock))
        await advance(clock, 1)
        deleting = {**p, "metadata": {**p["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}}
        m.add_pod(deleting)                       # refreshes the worker's pod
        await advance(clock, 3)
        calls = len(prober.calls)
        alive = m.has_worker("u1", "app", "liveness")
        await m.close()
        return calls, alive, [(u.result) for u in drain(m)]

    calls, alive, updates = run(main())
    assert calls == 2 and not alive
    assert updates == [S]                        # never reached the failure threshold


def test_remove_pod_and_cleanup_stop_workers():
    async def main():
        clock, _prober, m = harness(readiness=[S], liveness=[S])
        await advance(clock, 20)
        m.add_pod(pod("u1", readiness={"periodSeconds": 1}, liveness={"periodSeconds": 1}))
        m.add_pod(pod("u2", readiness={"periodSeconds": 1}))
        m.add_pod(pod("u2", readiness={"periodSeconds": 1}))      # idempotent
        assert len(m._workers) == 3
        m.update_container("u1", running(clock))
        await advance(clock, 1)
        m.remove_pod("u1")
        await advance(clock, 1)
        after_remove = (len(m._workers), len(m.readiness_results), len(m.liveness))
        m.cleanup_pods({"u3"})
        await advance(clock, 1)
        left = len(m._workers)
        await m.close()
        return after_remove, left

    assert run(main()) == ((1, 0, 0), 0)


def test_no_probes_means_started_and_ready_when_running():
    async def main():
        clock, prober, m = harness()
        m.add_pod(pod())
        assert not m.started("u1", "app")
        m.update_container("u1", running(clock))
        started, ready = m.started("u1", "app"), m.ready("u1", "app")
        await m.close()
        return started, ready, prober.calls

    assert run(main()) == (True, True, [])


def test_next_update_delivers_changes():
    async def main():
        clock, _prober, m = harness(liveness=[F])
        await advance(clock, 20)
        m.add_pod(pod(liveness={"periodSeconds": 1, "failureThreshold": 1}))
        m.update_container("u1", running(clock))
        await settle()
        first = await asyncio.wait_for(m.next_update(), 1)
        second = await asyncio.wait_for(m.next_update(), 1)
        await m.close()
        return first, second

    first, second = run(main())
    assert first == Update("u1", "app", "liveness", "c1", S)
    assert second == Update("u1", "app", "liveness", "c1", F)
