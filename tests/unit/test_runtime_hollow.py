"""The hollow runtime walks the RuntimeService state diagram with no processes."""

import asyncio
import tracemalloc

import pytest

from kubeling.kubelet.runtime import (
    ContainerConfig,
    ContainerState,
    CreateContainerError,
    Image,
    NotFound,
    RunContainerError,
    SandboxConfig,
    SandboxError,
    SandboxState,
)
from kubeling.kubelet.runtime.hollow import HollowRuntime, StreamingNotSupported

IMAGE = Image(id="sha256:" + "ab" * 32, repo_tags=["docker.io/library/busybox:latest"], size=1 << 20)


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def sandbox(uid="u1", name="p", host_network=False):
    return SandboxConfig(uid=uid, name=name, namespace="ns", host_network=host_network)


def container(name="c", attempt=0):
    return ContainerConfig(name=name, image=IMAGE, image_ref="busybox", attempt=attempt,
                           log_path=f"/logs/{name}/{attempt}.log")


def run(coro):
    return asyncio.run(coro)


def test_container_state_diagram_and_timestamps():
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.3.0/24", clock=clock)
        sb = sandbox()
        sid = await rt.run_pod_sandbox(sb)
        st = await rt.pod_sandbox_status(sid)
        assert (st.state, st.ip, st.uid, st.created_at) == (SandboxState.READY, "10.42.3.2", "u1", clock.t)
        assert len(sid) == 64

        clock.t += 1
        cid = await rt.create_container(sid, container(), sb)
        c = await rt.container_status(cid)
        assert (c.state, c.created_at, c.started_at, c.image, c.image_ref) == (
            ContainerState.CREATED, clock.t, 0.0, IMAGE.id, "busybox")

        clock.t += 2
        await rt.start_container(cid)
        c = await rt.container_status(cid)
        assert (c.state, c.started_at) == (ContainerState.RUNNING, clock.t) and c.pid > 0
        with pytest.raises(RunContainerError):
            await rt.start_container(cid)
        assert await rt.exec_sync(cid, ["cat", "/tmp/healthy"], 1) == (0, b"", b"")

        clock.t += 30  # stays running: nothing ever exits on its own
        assert (await rt.container_status(cid)).state is ContainerState.RUNNING

        await rt.stop_container(cid, 30)
        c = await rt.container_status(cid)
        assert (c.state, c.exit_code, c.reason, c.finished_at) == (ContainerState.EXITED, 0, "Completed", clock.t)
        await rt.stop_container(cid, 30)  # idempotent
        with pytest.raises(RunContainerError):
            await rt.exec_sync(cid, ["true"], 1)

        await rt.remove_container(cid)
        await rt.remove_container(cid)  # idempotent
        with pytest.raises(NotFound):
            await rt.container_status(cid)
        assert await rt.list_containers(sid) == []
    run(go())


@pytest.mark.parametrize("timeout,code,reason", [
    pytest.param(0, 137, "Error", id="no-grace-sigkill"),
    pytest.param(10, 0, "Completed", id="graceful-sigterm"),
])
def test_stop_exit_codes(timeout, code, reason):
    async def go():
        rt = HollowRuntime(lambda: "10.0.0.0/24")
        sb = sandbox()
        sid = await rt.run_pod_sandbox(sb)
        cid = await rt.create_container(sid, container(), sb)
        await rt.start_container(cid)
        await rt.stop_container(cid, timeout)
        c = await rt.container_status(cid)
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, code, reason)
    run(go())


def test_sandbox_lifecycle_ips_and_cascade():
    async def go():
        cidr = {"value": ""}
        rt = HollowRuntime(lambda: cidr["value"])
        with pytest.raises(SandboxError, match="podCIDR"):
            await rt.run_pod_sandbox(sandbox())
        host = await rt.run_pod_sandbox(sandbox("h", host_network=True))
        assert (await rt.pod_sandbox_status(host)).ip == ""

        cidr["value"] = "10.42.0.0/30"  # room for exactly one pod: .2 (.0 network, .1 gateway, .3 broadcast)
        sb = sandbox("a")
        a = await rt.run_pod_sandbox(sb)
        assert (await rt.pod_sandbox_status(a)).ip == "10.42.0.2"
        with pytest.raises(SandboxError, match="exhausted"):
            await rt.run_pod_sandbox(sandbox("b"))

        c1 = await rt.create_container(a, container("one"), sb)
        c2 = await rt.create_container(a, container("two"), sb)
        await rt.start_container(c1)
        assert {c.name for c in await rt.list_containers(a)} == {"one", "two"}
        assert len(await rt.list_containers()) == 2

        await rt.stop_pod_sandbox(a)
        assert (await rt.pod_sandbox_status(a)).state is SandboxState.NOTREADY
        states = {c.name: (c.state, c.started_at > 0) for c in await rt.list_containers(a)}
        assert states == {"one": (ContainerState.EXITED, True), "two": (ContainerState.EXITED, False)}
        with pytest.raises(CreateContainerError):
            await rt.create_container(a, container("three"), sb)
        await rt.stop_pod_sandbox(a)  # idempotent

        b = await rt.run_pod_sandbox(sandbox("b"))  # the stopped sandbox gave its IP back
        assert (await rt.pod_sandbox_status(b)).ip == "10.42.0.2"

        await rt.remove_pod_sandbox(a)
        await rt.remove_pod_sandbox(a)
        with pytest.raises(NotFound):
            await rt.pod_sandbox_status(a)
        assert await rt.list_containers(a) == []
        with pytest.raises(NotFound):
            await rt.container_status(c2)
        assert {s.id for s in await rt.list_pod_sandboxes()} == {host, b}
    run(go())


def test_statuses_are_copies():
    async def go():
        rt = HollowRuntime(lambda: "10.0.0.0/24")
        sb = sandbox()
        sid = await rt.run_pod_sandbox(sb)
        cid = await rt.create_container(sid, container(), sb)
        (await rt.container_status(cid)).state = ContainerState.UNKNOWN
        (await rt.pod_sandbox_status(sid)).state = SandboxState.NOTREADY
        assert (await rt.container_status(cid)).state is ContainerState.CREATED
        assert (await rt.pod_sandbox_status(sid)).state is SandboxState.READY
    run(go())


def test_stats_grow_with_time_and_sum_per_sandbox():
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.0.0.0/24", clock=clock)
        sb = sandbox()
        sid = await rt.run_pod_sandbox(sb)
        ids = [await rt.create_container(sid, container(n), sb) for n in ("a", "b")]
        for cid in ids:
            await rt.start_container(cid)
        clock.t += 10
        first = await rt.container_stats(ids[0])
        assert first.cpu_usage_core_nanoseconds == 10_000_000
        assert 4 << 20 <= first.memory_working_set_bytes < 12 << 20
        assert first.memory_usage_bytes >= first.memory_working_set_bytes
        clock.t += 10
        again = await rt.container_stats(ids[0])
        assert again.cpu_usage_core_nanoseconds > first.cpu_usage_core_nanoseconds
        assert again.memory_working_set_bytes == first.memory_working_set_bytes
        pod = await rt.sandbox_stats(sid)
        second = await rt.container_stats(ids[1])
        assert pod.id == sid
        assert pod.cpu_usage_core_nanoseconds == again.cpu_usage_core_nanoseconds + second.cpu_usage_core_nanoseconds
        assert pod.memory_working_set_bytes == again.memory_working_set_bytes + second.memory_working_set_bytes
    run(go())


@pytest.mark.parametrize("call", [
    pytest.param(lambda rt, cid, sid: rt.exec(cid, ["sh"], tty=False, stdin=False), id="exec"),
    pytest.param(lambda rt, cid, sid: rt.attach(cid, tty=False, stdin=False), id="attach"),
    pytest.param(lambda rt, cid, sid: rt.port_forward(sid, 80), id="port-forward"),
])
def test_streaming_is_refused_clearly(call):
    async def go():
        rt = HollowRuntime(lambda: "10.0.0.0/24")
        sb = sandbox()
        sid = await rt.run_pod_sandbox(sb)
        cid = await rt.create_container(sid, container(), sb)
        with pytest.raises(StreamingNotSupported, match="hollow runtime runs no processes"):
            await call(rt, cid, sid)
    run(go())


def test_version_names_the_runtime():
    v = run(HollowRuntime(lambda: "").version())
    assert (v["runtime_name"], v["runtime_api_version"]) == ("hollow", "v1") and v["runtime_version"]


def test_two_hundred_nodes_of_full_pods_are_cheap():
    """200 hollow nodes x 110 pods with one container each fit in a few tens of MiB."""
    async def go():
        tracemalloc.start()
        try:
            runtimes = [HollowRuntime(lambda i=i: f"10.{i // 256}.{i % 256}.0/24") for i in range(200)]
            for rt in runtimes:
                for p in range(110):
                    sb = sandbox(f"u{p}", f"p{p}")
                    sid = await rt.run_pod_sandbox(sb)
                    await rt.start_container(await rt.create_container(sid, container(), sb))
            current, _peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        counts = [len(await rt.list_pod_sandboxes()) for rt in runtimes]
        assert sum(counts) == 22_000
        print(f"200 hollow nodes, 22000 pods: {current / 2 ** 20:.1f} MiB")
        assert current < 80 << 20
    run(go())
