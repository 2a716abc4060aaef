"""Hollow nodes (kubeling.kubelet.hollow): the in-memory image service, the mount-free volume
plugins, and many agents in one process against the fake API server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kubeling.client.fake import FakeClient
from kubeling.kubelet.hollow import (
    HollowImageService,
    HollowNodes,
    HollowOptions,
    hollow_plugins,
)
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import REGISTRY, VolumeError, VolumeHost
from kubeling.kubelet.volumes.manager import VolumeManager


def _ns(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _pod(name: str, node: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}], **spec}}


async def _until(fn, timeout: float = 10.0, what: str = ""):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what}; last {got!r}")
        await asyncio.sleep(0.05)


# -- the image service ------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, same", [
    pytest.param("busybox", "docker.io/library/busybox:latest", True, id="short-name-is-canonical"),
    pytest.param("busybox:1.36", "busybox:1.37", False, id="tags-differ"),
    pytest.param("k8s.gcr.io/pause:3.9", "k8s.gcr.io/pause:3.9", True, id="same-reference"),
])
def test_image_ids_are_stable_per_reference(a, b, same):
    async def main():
        one, two = HollowImageService(), HollowImageService()   # two nodes agree on an image's id
        x, y = await one.pull_image(a), await two.pull_image(b)
        assert (x.id == y.id) is same
        assert x.id.startswith("sha256:") and x.repo_digests[0].endswith("@" + x.id)
        assert 2 << 20 <= x.size <= 66 << 20
        assert x.config["Cmd"]   # a container that names no command can still be created
    asyncio.run(main())


def test_image_status_list_and_remove():
    async def main():
        images = HollowImageService()
        assert await images.image_status("busybox") is None
        pulled = await images.pull_image("busybox")
        assert (await images.image_status("docker.io/library/busybox:latest")).id == pulled.id
        assert await images.image_status("Not A Reference!") is None
        await images.pull_image("docker.io/library/busybox")   # the same image under another spelling
        assert [i.id for i in await images.list_images()] == [pulled.id]
        info = await images.fs_info()
        assert info["used_bytes"] == pulled.size and info["available_bytes"] == info["capacity_bytes"] - pulled.size
        await images.remove_image(pulled.id)
        assert await images.list_images() == []
    asyncio.run(main())


@pytest.mark.parametrize("capacity, in_use, removed", [
    pytest.param(1 << 40, set(), 0, id="below-the-high-threshold-nothing-goes"),
    pytest.param(1, set(), 2, id="above-it-unused-images-go"),
    pytest.param(1, {"used"}, 1, id="images-in-use-stay"),
])
def test_image_gc_follows_upstream_thresholds(capacity, in_use, removed):
    async def main():
        now = [1000.0]
        images = HollowImageService(capacity=capacity, clock=lambda: now[0])
        a = await images.pull_image("busybox")
        await images.pull_image("redis")
        now[0] += 600   # older than the minimum age
        got = await images.gc({a.id} if in_use else set())
        assert len(got) == removed
    asyncio.run(main())


# -- volumes ----------------------------------------------------------------------------------------

def test_one_hollow_plugin_per_real_one():
    plugins = hollow_plugins()
    assert [(p.NAME, p.SOURCE, p.needs_refresh, p.read_only) for p in plugins] == \
        [(c.NAME, c.SOURCE, c.needs_refresh, c.read_only) for c in REGISTRY.values()]


@pytest.mark.parametrize("volume, error", [
    pytest.param({"name": "v", "emptyDir": {"medium": "Memory"}}, None, id="memory-emptydir-no-tmpfs"),
    pytest.param({"name": "v", "hostPath": {"path": "/kl-hollow-must-not-exist", "type": "DirectoryOrCreate"}},
                 None, id="hostpath-not-created-on-the-host"),
    pytest.param({"name": "v", "secret": {"secretName": "s"}}, None, id="secret-present"),
    pytest.param({"name": "v", "configMap": {"name": "missing"}},
                 'MountVolume.SetUp failed for volume "v" : configmap "missing" not found', id="configmap-missing"),
    pytest.param({"name": "v", "configMap": {"name": "missing", "optional": True}}, None, id="optional-missing"),
    pytest.param({"name": "v", "secret": {"secretName": "nope"}},
                 'MountVolume.SetUp failed for volume "v" : secret "nope" not found', id="secret-missing"),
])
def test_hollow_volumes_make_directories_and_no_mounts(tmp_path, volume, error):
    async def main():
        client = FakeClient(_ns("default"), {"apiVersion": "v1", "kind": "Secret",
                                             "metadata": {"name": "s", "namespace": "default"}})
        cms, secrets = ObjectCache(client, "configmaps"), ObjectCache(client, "secrets")
        manager = VolumeManager(VolumeHost(root=tmp_path, configmaps=cms, secrets=secrets), plugins=hollow_plugins())
        pod = {**_pod("p", "n", volumes=[volume]), "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
        mounts_before = Path("/proc/self/mountinfo").read_text()
        try:
            if error:
                with pytest.raises(VolumeError) as e:
                    await manager.mount_pod(pod)
                assert e.value.message == error
            else:
                paths = await manager.mount_pod(pod)
                assert Path(paths["v"]).is_dir() and Path(paths["v"]).is_relative_to(tmp_path / "pods" / "u1")
            assert Path("/proc/self/mountinfo").read_text() == mounts_before
            assert not os.path.exists("/kl-hollow-must-not-exist")
            await manager.unmount_pod("u1")
            assert not (tmp_path / "pods" / "u1").exists()
        finally:
            await cms.close()
            await secrets.close()
    asyncio.run(main())


# -- many agents in one process ---------------------------------------------------------------------

def test_names():
    assert HollowOptions(kubeconfig="", root=Path("."), count=3, name_prefix="h-", first_index=5).names() == \
        ["h-5", "h-6", "h-7"]


def test_hollow_nodes_register_renew_and_run_pods(tmp_path):
    """Three agents in one loop with one client: Nodes with distinct podCIDRs (an IPAM stand-in
    patches them), Ready, a Lease each, and a bound pod Running with an IP of its node's CIDR."""
    async def main():
        client = FakeClient(_ns("default"), _ns("kube-node-lease"))
        hollow = HollowNodes(HollowOptions(kubeconfig="", root=tmp_path, count=3, start_interval=0,
                                           address="10.9.9.9"), client=client)
        stop = asyncio.Event()
        task = asyncio.create_task(hollow.run(stop))

        async def ipam():   # the nodeipam controller's part: a /24 per node, in registration order
            given: dict[str, str] = {}
            while not stop.is_set():
                for node in (await client.list("", "v1", "nodes"))["items"]:
                    name = node["metadata"]["name"]
                    if name not in given:
                        given[name] = f"10.42.{len(given)}.0/24"
                        await client.patch("", "v1", "nodes", name, {"spec": {"podCIDR": given[name]}},
                                           patch_type="merge")
                await asyncio.sleep(0.05)
        ipam_task = asyncio.create_task(ipam())
        try:
            async def all_ready():
                nodes = (await client.list("", "v1", "nodes"))["items"]
                ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                                 for c in n["status"]["conditions"])]
                return len(ready) == 3 and nodes
            nodes = await _until(all_ready, what="3 Ready nodes")
            assert sorted(n["metadata"]["name"] for n in nodes) == ["hollow-node-0", "hollow-node-1", "hollow-node-2"]
            for n in nodes:
                assert n["status"]["nodeInfo"]["containerRuntimeVersion"] == "hollow://0.1.0"
                assert n["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.9.9.9"}
                assert n["status"]["capacity"]["cpu"] == "4" and n["metadata"]["labels"]["kubemark"] == "true"
            leases = (await client.list("coordination.k8s.io", "v1", "leases", namespace="kube-node-lease"))["items"]
            assert sorted(lease["spec"]["holderIdentity"] for lease in leases) == [n["metadata"]["name"] for n in
                                                                                     sorted(nodes, key=lambda n: n["metadata"]["name"])]
            cidr = next(n["spec"]["podCIDR"] for n in nodes if n["metadata"]["name"] == "hollow-node-1")
            await client.create("", "v1", "pods", _pod("p", "hollow-node-1"), namespace="default")

            async def running():
                pod = await client.get("", "v1", "pods", "p", namespace="default")
                status = pod.get("status") or {}
                ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
                return pod if status.get("phase") == "Running" and ready == "True" else None
            pod = await _until(running, what="pod Running and Ready")
            assert pod["status"]["podIP"].startswith(cidr.rsplit(".", 1)[0] + ".")
            state = pod["status"]["containerStatuses"][0]
            assert "running" in state["state"] and state["imageID"].startswith("docker.io/library/busybox@sha256:")
            # every agent shares the one client; none of them closed it
            assert len({id(a.client) for a in hollow.agents}) == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            ipam_task.cancel()
            await asyncio.gather(ipam_task, return_exceptions=True)
    asyncio.run(main())
