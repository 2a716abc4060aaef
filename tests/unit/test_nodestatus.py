"""Node registration and status: created or adopted, patched only when changed or due, pressure
conditions from readings, Ready from the runtime and health checks."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubeling.api.errors import StatusError
from kubeling.client.clock import FakeClock
from kubeling.client.fake import FakeClient
from kubeling.kubelet.nodestatus import KUBELET_VERSION, NodeStatus
from kubeling.kubelet.runtime import Image
from kubeling.kubelet.runtime.hollow import HollowRuntime
from kubeling.kubelet.stats import FixedHost, Host

GI, MI = 1 << 30, 1 << 20
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class Images:
    def __init__(self, images=(), capacity=100 * GI, available=80 * GI):
        self.images = list(images)
        self.info = {"capacity_bytes": capacity, "available_bytes": available, "used_bytes": capacity - available,
                     "inodes_free": 5_000_000}

    async def list_images(self):
        return self.images

    async def fs_info(self):
        return self.info


class DownRuntime(HollowRuntime):
    async def version(self):
        raise ConnectionRefusedError("runc state dir unreadable")


def status_of(client, name="n1"):
    return client.object("", "v1", "nodes", name)["status"]


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def make(client, clock, host=None, runtime=None, images=None, **kwargs):
    return NodeStatus(client, "n1", root="/", runtime=runtime or HollowRuntime(lambda: ""), images=images,
                      address="10.0.0.5", kubelet_port=10250, host=host or FixedHost(), clock=clock, **kwargs)


def test_register_and_adopt_against_the_api_server():
    """The Node passes the API server's validation; a restarted agent adopts it (same uid)."""
    from inprocess import api_server, http

    from kubeling.client.rest import RESTClient
    from kubeling.client.transport import AiohttpTransport

    async def go():
        api = await api_server()
        async with http(api) as server:
            client = RESTClient(AiohttpTransport(str(server.make_url("/"))))
            try:
                host = FixedHost(cpus=2, memory=8 * GI)
                first = make(client, FakeClock(wall=T0), host=host, labels={"node-role.kubernetes.io/worker": ""},
                             images=Images([Image(id="sha256:1", repo_tags=["busybox:latest"], size=1234)]))
                node = await first.register()
                uid = node["metadata"]["uid"]
                assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
                assert node["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
                assert node["status"]["capacity"]["cpu"] == "2"
                assert conditions(node["status"])["Ready"]["reason"] == "KubeletReady"
                assert await first.update() is True

                # Someone assigns a podCIDR and a label; an operator relabels the hostname wrongly.
                await client.patch("", "v1", "nodes", "n1", {"spec": {"podCIDR": "10.42.7.0/24"},
                                                             "metadata": {"labels": {"team": "a",
                                                                                     "kubernetes.io/hostname": "x"}}})
                again = make(client, FakeClock(wall=T0), host=host)
                adopted = await again.register()
                assert adopted["metadata"]["uid"] == uid
                assert adopted["spec"]["podCIDR"] == "10.42.7.0/24" and again.get_pod_cidr() == "10.42.7.0/24"
                labels = adopted["metadata"]["labels"]
                assert labels["team"] == "a" and labels["kubernetes.io/hostname"] == "n1"

                # Addresses change (new IP): the list is replaced, not merged by type.
                again.address = "10.0.0.9"
                assert await again.update() is True
                got = await client.get("", "v1", "nodes", "n1")
                assert got["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.9"},
                                                      {"type": "Hostname", "address": "n1"}]
                # the images reported by the first agent are gone: this one has no image store
                assert got["status"].get("images", []) == []
                assert got["status"]["nodeInfo"]["kubeletVersion"] == KUBELET_VERSION
            finally:
                await client.close()
    asyncio.run(go())


def test_patched_only_when_changed_or_after_the_report_interval():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        host = FixedHost(memory=8 * GI, memory_working_set=GI)
        ns = make(client, clock, host=host)
        await ns.register()
        assert await ns.update() is True  # the first round always reports
        for _ in range(5):
            clock.step(10)
            assert await ns.update() is False  # only heartbeats moved
        host.memory_working_set = 8 * GI - 50 * MI  # under 100Mi available
        clock.step(10)
        assert await ns.update() is True
        assert conditions(status_of(client))["MemoryPressure"]["status"] == "True"
        clock.step(10)
        assert await ns.update() is False
        clock.step(300)
        assert await ns.update() is True  # nodeStatusReportFrequency
        patches = client.filter_actions("patch", "nodes")
        assert [a.subresource for a in patches] == ["status"] * 3
        assert all(a.options["patch_type"] == "strategic" for a in patches)
    asyncio.run(go())


def test_minimal_patch_keeps_other_conditions():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        ns = make(client, clock)
        await ns.register()
        await client.patch("", "v1", "nodes", "n1", {"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}},
            subresource="status", patch_type="strategic")
        client.clear_actions()
        clock.step(10)
        assert await ns.update() is True
        (patch,) = client.filter_actions("patch", "nodes")
        assert set(patch.obj["status"]) == {"conditions"}  # nothing else changed
        assert set(conditions(status_of(client))) == {"NetworkUnavailable", "MemoryPressure", "DiskPressure",
                                                      "PIDPressure", "Ready"}
    asyncio.run(go())


@pytest.mark.parametrize("change,ctype,reason", [
    pytest.param({"memory_working_set": 16 * GI - 99 * MI}, "MemoryPressure", "KubeletHasInsufficientMemory",
                 id="memory.available<100Mi"),
    pytest.param({"fs_available": 9 * GI}, "DiskPressure", "KubeletHasDiskPressure", id="nodefs.available<10%"),
    pytest.param({"inodes_free": 250_000}, "DiskPressure", "KubeletHasDiskPressure", id="nodefs.inodesFree<5%"),
    pytest.param({"processes": 4_194_304 - 1000}, "PIDPressure", "KubeletHasInsufficientPID",
                 id="pid.available-when-configured"),
])
def test_pressure_conditions_flip_and_hold_for_the_transition_period(change, ctype, reason):
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        host = FixedHost(memory=16 * GI, memory_working_set=GI, fs_capacity=100 * GI, fs_available=50 * GI)
        thresholds = {"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
                      "pid.available": "1%"}
        ns = make(client, clock, host=host, eviction_hard=thresholds)
        await ns.register()
        await ns.update()
        assert all(c["status"] == "False" for t, c in conditions(status_of(client)).items() if t != "Ready")

        saved = {k: getattr(host, k) for k in change}
        for k, v in change.items():
            setattr(host, k, v)
        clock.step(10)
        await ns.update()
        cond = conditions(status_of(client))[ctype]
        assert (cond["status"], cond["reason"]) == ("True", reason)
        flipped_at = cond["lastTransitionTime"]
        assert flipped_at == "2024-05-01T12:00:10Z"
        others = [c for t, c in conditions(status_of(client)).items() if t not in (ctype, "Ready")]
        assert all(c["status"] == "False" for c in others)

        for k, v in saved.items():
            setattr(host, k, v)  # the pressure is gone...
        clock.step(290)
        await ns.update()
        assert conditions(status_of(client))[ctype]["status"] == "True"  # ...but held for 5 min
        clock.step(20)
        await ns.update()
        cond = conditions(status_of(client))[ctype]
        assert (cond["status"], cond["lastTransitionTime"]) == ("False", "2024-05-01T12:05:20Z")
    asyncio.run(go())


def test_imagefs_pressure_from_the_image_store():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        images = Images(capacity=100 * GI, available=20 * GI)
        ns = make(client, clock, images=images)
        await ns.register()
        assert conditions(status_of(client))["DiskPressure"]["status"] == "False"
        images.info["available_bytes"] = 14 * GI  # imagefs.available<15%
        clock.step(10)
        await ns.update()
        assert conditions(status_of(client))["DiskPressure"]["status"] == "True"
    asyncio.run(go())


@pytest.mark.parametrize("runtime,checks,message", [
    pytest.param(DownRuntime(lambda: ""), [], "container runtime is down: runc state dir unreadable",
                 id="runtime-down"),
    pytest.param(None, [lambda: "container runtime network not ready: NetworkReady=false"],
                 "container runtime network not ready: NetworkReady=false", id="network-not-ready"),
    pytest.param(DownRuntime(lambda: ""), [lambda: None, lambda: "PLEG is not healthy"],
                 "[container runtime is down: runc state dir unreadable, PLEG is not healthy]", id="aggregated"),
])
def test_ready_false_with_reasons(runtime, checks, message):
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        ns = make(client, clock, runtime=runtime, health_checks=checks)
        await ns.register()
        ready = conditions(status_of(client))["Ready"]
        assert (ready["status"], ready["reason"], ready["message"]) == ("False", "KubeletNotReady", message)
    asyncio.run(go())


def test_ready_recovers_and_an_async_check_counts():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        state = {"err": "network plugin not ready"}

        async def check():
            return state["err"]

        ns = make(client, clock, health_checks=[check])
        await ns.register()
        assert conditions(status_of(client))["Ready"]["status"] == "False"
        state["err"] = None
        clock.step(10)
        assert await ns.update() is True
        ready = conditions(status_of(client))["Ready"]
        assert (ready["status"], ready["message"], ready["lastTransitionTime"]) == (
            "True", "kubelet is posting ready status", "2024-05-01T12:00:10Z")
    asyncio.run(go())


def test_capacity_allocatable_node_info_and_images():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        host = FixedHost(cpus=8, memory=32 * GI, fs_capacity=100 * GI)
        host.machine.hugepages = {"hugepages-1Gi": 0, "hugepages-2Mi": 64 * 2 * MI}
        images = [Image(id=f"sha256:{i}", repo_tags=[f"img{i}:latest"], repo_digests=[f"img{i}@sha256:{i}"],
                        size=i * 1000) for i in range(1, 61)]
        images.append(Image(id="sha256:many", repo_tags=[f"t{i}" for i in range(6)], repo_digests=["d@sha256:x"],
                            size=10**9))
        ns = make(client, clock, host=host, images=Images(images))
        node = await ns.register()
        st = node["status"]
        assert st["capacity"] == {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi",
                                  "hugepages-1Gi": "0", "hugepages-2Mi": "128Mi"}
        # memory: capacity - hugepages - 100Mi; storage: capacity - 10% (as float32, like upstream)
        assert st["allocatable"] == {"cpu": "8", "memory": f"{32 * 1024 - 128 - 100}Mi", "pods": "110",
                                     "ephemeral-storage": "96636764000", "hugepages-1Gi": "0",
                                     "hugepages-2Mi": "128Mi"}
        assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
        info = st["nodeInfo"]
        assert (info["containerRuntimeVersion"], info["operatingSystem"], info["kubeletVersion"]) == (
            "hollow://0.1.0", "linux", KUBELET_VERSION)
        assert len(st["images"]) == 50
        assert st["images"][0] == {"names": ["d@sha256:x", "t0", "t1", "t2", "t3"], "sizeBytes": 10**9}
        assert st["images"][1] == {"names": ["img60@sha256:60", "img60:latest"], "sizeBytes": 60_000}
        assert st["images"][-1]["sizeBytes"] == 12_000
    asyncio.run(go())


def test_kubelet_version_matches_the_api_server():
    from kubeling.apiserver.discovery import version_info
    assert KUBELET_VERSION == version_info()["gitVersion"]


def test_real_host_node():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        ns = NodeStatus(client, "n1", root="/", runtime=HollowRuntime(lambda: ""), images=None,
                        address="127.0.0.1", kubelet_port=10250, clock=clock, host=Host())
        st = (await ns.register())["status"]
        assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["memory"].endswith("Ki")
        info = st["nodeInfo"]
        assert info["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert info["machineID"] and info["osImage"] and info["architecture"]
    asyncio.run(go())


async def parked(clock):
    """Wait (in real time: host readings run in a thread) until the loop sleeps on the clock."""
    for _ in range(1000):
        if clock.has_waiters():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the loop never went to sleep")


def test_run_loop_reports_every_ten_seconds_and_patches_when_due():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        ns = make(client, clock)
        await ns.register()
        client.clear_actions()
        stop = asyncio.Event()
        task = asyncio.create_task(ns.run(stop))
        try:
            for _ in range(31):  # 0 s, then ~10 s apart, past 300 s
                await parked(clock)
                clock.set(clock.next_deadline())
            await parked(clock)
            gets = client.filter_actions("get", "nodes")
            patches = client.filter_actions("patch", "nodes")
            assert len(gets) == 32
            assert len(patches) == 2  # the first round, and once nodeStatusReportFrequency passed
        finally:
            stop.set()
            await asyncio.wait_for(task, 1)
    asyncio.run(go())


def test_run_survives_api_errors():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        ns = make(client, clock)
        await ns.register()
        fails = {"n": 3}

        def flaky(action):
            if fails["n"]:
                fails["n"] -= 1
                raise StatusError(503, "ServiceUnavailable", "later")

        client.prepend_reactor("get", "nodes", flaky)
        client.clear_actions()
        stop = asyncio.Event()
        task = asyncio.create_task(ns.run(stop))
        await parked(clock)
        stop.set()
        await asyncio.wait_for(task, 1)
        assert len(client.filter_actions("get", "nodes")) == 4  # three failures retried at once
        assert len(client.filter_actions("patch", "nodes")) == 1
    asyncio.run(go())


def test_registration_retries_with_backoff_until_stopped():
    async def go():
        clock = FakeClock(wall=T0)
        client = FakeClient(clock=clock)
        client.prepend_reactor("create", "nodes", lambda a: (_ for _ in ()).throw(
            StatusError(500, "InternalError", "storage is down")))
        stop = asyncio.Event()
        task = asyncio.create_task(make(client, clock).register(stop))
        waits = []
        for _ in range(6):
            await parked(clock)
            waits.append(round(clock.next_deadline() - clock.now(), 3))
            clock.set(clock.next_deadline())
        await parked(clock)
        stop.set()
        assert await asyncio.wait_for(task, 1) is None
        assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
        assert len(client.filter_actions("create", "nodes")) == 7
    asyncio.run(go())
