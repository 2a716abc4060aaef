"""Probes and hooks against real runc containers (issue 6, acceptance 1 and 8 at the node level).

The seed's liveness pod, shortened: the container removes /tmp/healthy after 2 s, its exec
liveness probe (``cat /tmp/healthy``) starts failing, the manager publishes FAILURE with the
upstream ``Unhealthy`` event, and the replacement container is probed afresh. Also: an exec
probe timing out inside runc, and postStart / preStop exec hooks with a deadline.

The kubelet's part (kill, restart, events) is played here by the test, as the sync loop will.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from test_runc_runtime import World, busybox_layer, pod, run

from kubeling.kubelet.lifecycle import run_handler
from kubeling.kubelet.prober.manager import ProbeManager
from kubeling.kubelet.prober.prober import kill_message
from kubeling.kubelet.prober.results import Result
from kubeling.kubelet.runtime import Image
from kubeling.kubelet.runtime.cleanup import cleanup_all, leaks


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("probes")
    w = World(root=base / "agent", cgroup_root=f"kl-probes{os.getpid()}",
              image=Image(id="sha256:busybox", repo_tags=["busybox:test"],
                          config={"Env": ["PATH=/bin"]}, layers=[busybox_layer(base / "layer")]),
              logs=base / "logs")
    try:
        yield w
    finally:
        cleanup_all(w.root, w.cgroup_root)
    assert leaks(w.root, w.cgroup_root) == {"netns": 0, "runc": 0, "mounts": 0, "cgroups": 0, "shims": 0}


LIVENESS_POD = {
    "metadata": {"name": "liveness-exec", "namespace": "default", "uid": "probe-uid-1"},
    "spec": {"restartPolicy": "Always", "containers": [{
        "name": "liveness",
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "initialDelaySeconds": 1,
                          "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 1},
        "readinessProbe": {"exec": {"command": ["sleep", "5"]}, "periodSeconds": 1,
                           "timeoutSeconds": 1},
    }]},
}
COMMAND = ["sh", "-c", "touch /tmp/healthy; sleep 2; rm -f /tmp/healthy; sleep 600"]


async def next_update(manager: ProbeManager, probe_type: str, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        update = await asyncio.wait_for(manager.next_update(), deadline - time.monotonic())
        if update.probe_type == probe_type:
            return update


def test_liveness_failure_restart_and_timeouts_in_runc(world):
    events: list[tuple[str, str, str]] = []

    async def main():
        rt = world.runtime()
        manager = ProbeManager(rt, lambda p, t, r, m: events.append((t, r, m)), pod_ip=lambda p: "")
        try:
            async with pod(rt) as (sid, config):
                cid = await run(rt, world, sid, config, COMMAND, name="liveness")
                manager.add_pod(LIVENESS_POD)
                manager.update_container("probe-uid-1", await rt.container_status(cid))
                first = await next_update(manager, "liveness")
                failed = await next_update(manager, "liveness")
                wall_failed = time.time() - (await rt.container_status(cid)).started_at
                ready = manager.ready("probe-uid-1", "liveness")

                # The kubelet's reaction: kill, then a new container (restartCount 1).
                events.append(("Normal", "Killing", kill_message("liveness", "liveness")))
                await rt.stop_container(cid, 1)
                await rt.remove_container(cid)
                cid2 = await run(rt, world, sid, config, COMMAND, name="liveness")
                manager.update_container("probe-uid-1", await rt.container_status(cid2))
                fresh = await next_update(manager, "liveness")
                still_live = manager.liveness.get(cid2)
                return cid, cid2, first, failed, wall_failed, ready, fresh, still_live
        finally:
            await manager.close()
            await rt.close()

    cid, cid2, first, failed, wall_failed, ready, fresh, still_live = asyncio.run(main())
    assert (first.container_id, first.result) == (cid, Result.SUCCESS)
    assert (failed.container_id, failed.result) == (cid, Result.FAILURE)
    assert 2 <= wall_failed < 6                       # the file goes after 2 s, probes every 1 s
    assert (fresh.container_id, fresh.result, still_live) == (cid2, Result.SUCCESS, Result.SUCCESS)
    assert not ready                                  # readiness never passed: it times out
    reasons = list(events)
    assert ("Warning", "Unhealthy", ("Liveness probe failed: cat: can't open '/tmp/healthy': "
            "No such file or directory\n")) in reasons
    assert ("Warning", "Unhealthy", 'Readiness probe failed: command "sleep 5" timed out') in reasons
    assert ("Normal", "Killing", "Container liveness failed liveness probe, will be restarted") in reasons


def test_post_start_and_pre_stop_exec_hooks_in_runc(world):
    hook_pod = {"metadata": {"name": "hooks", "namespace": "default", "uid": "probe-uid-2"}}
    container = {"name": "app"}

    async def main():
        rt = world.runtime()
        try:
            async with pod(rt) as (sid, config):
                cid = await run(rt, world, sid, config, ["sleep", "600"], name="app")
                ok = await run_handler(rt, hook_pod, container, cid, {"exec": {"command": [
                    "sh", "-c", "echo started > /tmp/poststart"]}}, "")
                code, out, _ = await rt.exec_sync(cid, ["cat", "/tmp/poststart"], 5)
                failed = await run_handler(rt, hook_pod, container, cid,
                                           {"exec": {"command": ["sh", "-c", "exit 2"]}}, "")
                started = time.monotonic()
                cut = await run_handler(rt, hook_pod, container, cid,
                                        {"exec": {"command": ["sleep", "30"]}}, "", timeout=1)
                elapsed = time.monotonic() - started
                return ok, (code, out), failed, cut, elapsed
        finally:
            await rt.close()

    ok, (code, out), failed, cut, elapsed = asyncio.run(main())
    assert ok is None and (code, out) == (0, b"started\n")
    where = 'for Container "app" in Pod "hooks_default(probe-uid-2)"'
    assert failed == (f"Exec lifecycle hook ([sh -c exit 2]) {where} failed - error: "
                      "command 'sh -c exit 2' exited with 2: , message: \"\"")
    assert cut.startswith(f"Exec lifecycle hook ([sleep 30]) {where} failed - error: ")
    assert 0.9 < elapsed < 10   # cut at its 1 s timeout, not after the 30 s sleep
