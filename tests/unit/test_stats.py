"""/stats/summary and /metrics/resource from a (hollow) runtime, fixed and real host readings."""

import asyncio
import os

import pytest

from kubeling.kubelet.runtime import ContainerConfig, Image, NotFound, SandboxConfig
from kubeling.kubelet.runtime.hollow import HollowRuntime
from kubeling.kubelet.stats import FixedHost, Host, StatsProvider, go_float

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
IMAGE = Image(id="sha256:" + "cd" * 32)


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


async def start_pod(rt, name, containers, uid=None):
    sb = SandboxConfig(uid=uid or f"uid-{name}", name=name, namespace="default")
    sid = await rt.run_pod_sandbox(sb)
    for c in containers:
        await rt.start_container(await rt.create_container(sid, ContainerConfig(name=c, image=IMAGE), sb))
    return sid


def provider(tmp_path, clock, rt, host=None):
    host = host or FixedHost(cpus=2, memory=8 << 30, memory_working_set=2 << 30)
    host.machine.boot_time = T0 - 3600
    return StatsProvider("node-a", rt, root=tmp_path, host=host, clock=clock)


@pytest.mark.parametrize("value,text", [
    pytest.param(0, "0", id="zero"),
    pytest.param(0.25, "0.25", id="fraction"),
    pytest.param(999999, "999999", id="below-exponent"),
    pytest.param(1048576, "1.048576e+06", id="exponent"),
    pytest.param(T0, "1.7145648e+09", id="timestamp"),
    pytest.param(0.00001, "1e-05", id="tiny"),
])
def test_go_float_matches_prometheus_text(value, text):
    assert go_float(value) == text


def test_summary_document(tmp_path):
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.0.0/24", clock=clock)
        await start_pod(rt, "web", ["app", "sidecar"])
        logs = tmp_path / "logs/pods/default_web_uid-web/app"
        logs.mkdir(parents=True)
        (logs / "0.log").write_bytes(b"x" * 1234)
        stats = provider(tmp_path, clock, rt)
        clock.t += 10
        doc = await stats.summary()
        node = doc["node"]
        assert node["nodeName"] == "node-a"
        assert node["startTime"] == "2024-05-01T11:00:00Z"
        assert node["memory"]["workingSetBytes"] == 2 << 30
        assert node["memory"]["availableBytes"] == 6 << 30
        assert node["fs"]["capacityBytes"] == 100 << 30 and node["fs"]["inodesUsed"] == 1_000_000
        assert node["rlimit"] == {"time": "2024-05-01T12:00:10Z", "maxpid": 4_194_304, "curproc": 300}
        assert node["runtime"]["imageFs"]["availableBytes"] == 80 << 30
        assert "usageNanoCores" not in node["cpu"]  # a rate needs two readings

        (pod,) = doc["pods"]
        assert pod["podRef"] == {"name": "web", "namespace": "default", "uid": "uid-web"}
        assert pod["startTime"] == "2024-05-01T12:00:00Z"
        app, sidecar = pod["containers"]
        assert (app["name"], sidecar["name"]) == ("app", "sidecar")
        assert app["cpu"]["usageCoreNanoSeconds"] == 10_000_000
        assert app["logs"]["usedBytes"] == 1234 and sidecar["logs"]["usedBytes"] == 0
        assert app["rootfs"]["usedBytes"] == 4096
        assert pod["cpu"]["usageCoreNanoSeconds"] == 20_000_000
        assert pod["memory"]["workingSetBytes"] == app["memory"]["workingSetBytes"] + sidecar["memory"]["workingSetBytes"]
        assert pod["ephemeral-storage"]["usedBytes"] == 4096 * 2 + 1234
        pods_container = node["systemContainers"][0]
        assert pods_container["name"] == "pods"
        assert pods_container["memory"]["workingSetBytes"] == pod["memory"]["workingSetBytes"]

        stats.host.cpu_ns = 5_000_000_000
        clock.t += 10
        again = await stats.summary()
        assert again["node"]["cpu"]["usageNanoCores"] == 500_000_000  # 5 s of cpu in 10 s: half a core
        assert again["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == 1_000_000  # the hollow millicore
    asyncio.run(go())


def test_only_cpu_and_memory_and_stopped_pods_left_out(tmp_path):
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.0.0/24", clock=clock)
        await start_pod(rt, "a", ["c"])
        gone = await start_pod(rt, "b", ["c"])
        await rt.stop_pod_sandbox(gone)
        doc = await provider(tmp_path, clock, rt).summary(only_cpu_and_memory=True)
        assert [p["podRef"]["name"] for p in doc["pods"]] == ["a"]
        assert not {"fs", "runtime", "rlimit", "network"} & set(doc["node"])
        assert set(doc["pods"][0]["containers"][0]) == {"name", "startTime", "cpu", "memory"}
    asyncio.run(go())


EXPECTED_METRICS = """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 0.03 1714564830000
container_cpu_usage_seconds_total{container="db",namespace="default",pod="web"} 0.03 1714564830000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web"} APP 1714564830000
container_memory_working_set_bytes{container="db",namespace="default",pod="web"} DB 1714564830000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="web"} 1.7145648e+09
container_start_time_seconds{container="db",namespace="default",pod="web"} 1.7145648e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 12.5 1714564830000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.147483648e+09 1714564830000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 0.06 1714564830000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} POD 1714564830000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"""


def test_metrics_resource_text(tmp_path):
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.0.0/24", clock=clock)
        await start_pod(rt, "web", ["db", "app"])
        stats = provider(tmp_path, clock, rt)
        stats.host.cpu_ns = 12_500_000_000
        clock.t += 30
        text = await stats.metrics_resource()
        mem = {c.name: (await rt.container_stats(c.id)).memory_working_set_bytes for c in await rt.list_containers()}
        want = (EXPECTED_METRICS.replace("APP", go_float(mem["app"])).replace("DB", go_float(mem["db"]))
                .replace("POD", go_float(mem["app"] + mem["db"])))
        assert text == want
    asyncio.run(go())


def test_a_failing_container_is_left_out_and_flags_the_scrape(tmp_path):
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.0.0/24", clock=clock)
        await start_pod(rt, "web", ["app", "broken"])
        broken = next(c.id for c in await rt.list_containers() if c.name == "broken")
        real = rt.container_stats

        async def flaky(cid):
            if cid == broken:
                raise NotFound("gone while listing")
            return await real(cid)

        rt.container_stats = flaky
        stats = provider(tmp_path, clock, rt)
        text = await stats.metrics_resource()
        assert 'container="app"' in text and 'container="broken"' not in text
        assert text.endswith("resource_scrape_error 1\n")
        rt.container_stats = real
        assert (await stats.metrics_resource()).endswith("resource_scrape_error 0\n")
    asyncio.run(go())


def test_rate_samples_of_removed_containers_are_forgotten(tmp_path):
    async def go():
        clock = Clock()
        rt = HollowRuntime(lambda: "10.42.0.0/24", clock=clock)
        sid = await start_pod(rt, "web", ["app"])
        stats = provider(tmp_path, clock, rt)
        await stats.summary()
        assert len(stats._samples) == 4  # node, pods, the pod, its container
        await rt.remove_pod_sandbox(sid)
        await stats.summary()
        assert set(stats._samples) == {"node", "system:pods"}
    asyncio.run(go())


def test_real_host_readings(tmp_path):
    host = Host()
    m = host.machine_info()
    assert m.num_cores == os.cpu_count()
    assert m.memory_capacity > 0 and len(m.boot_id) == 36 and m.kernel_version == os.uname().release
    mem = host.memory()
    assert 0 < mem.working_set_bytes <= mem.usage_bytes and 0 < mem.available_bytes < m.memory_capacity
    first = host.cpu_usage_ns()
    sum(range(200_000))
    assert host.cpu_usage_ns() >= first > 0
    fs = host.fs(tmp_path)
    assert 0 < fs.available_bytes < fs.capacity_bytes
    pid_max, procs = host.pids()
    assert pid_max > procs > 0
    own = host.network(os.getpid())
    assert "lo" not in own


def test_real_host_summary(tmp_path):
    async def go():
        rt = HollowRuntime(lambda: "10.42.0.0/24")
        stats = StatsProvider("real", rt, root=tmp_path)
        doc = await stats.summary()
        assert doc["node"]["memory"]["workingSetBytes"] > 0
        assert doc["node"]["fs"]["capacityBytes"] > 0 and doc["pods"] == []
        text = await stats.metrics_resource()
        assert "node_memory_working_set_bytes " in text and text.endswith("resource_scrape_error 0\n")
    asyncio.run(go())
