"""VolumeManager: updates reach mounted files through run() within 2 s, token refresh at 80 % of the
TTL, and unmount from the directories alone after an agent restart."""

import asyncio
import base64
import os
import time
import uuid

from kubeling.client.fake import FakeClient
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import VolumeHost, mountutil
from kubeling.kubelet.volumes.manager import VolumeManager
from kubeling.kubelet.volumes.mounts import container_mounts


def objects():
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
             "data": {"k": "v1"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
             "data": {"k": base64.b64encode(b"s1").decode()}}]


def new_host(root, client, token=None):
    return VolumeHost(root=root, configmaps=ObjectCache(client, "configmaps"), secrets=ObjectCache(client, "secrets"),
                      token=token, node_allocatable={"cpu": "1", "memory": "1Gi"}, client=client)


def make_pod(volumes):
    return {"metadata": {"name": "p", "namespace": "default", "uid": "test-mgr-" + uuid.uuid4().hex[:8]},
            "spec": {"volumes": volumes, "containers": [{"name": "c"}]}}


async def wait_for(cond, timeout):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("not in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def read(path):
    try:
        return open(path, "rb").read()
    except FileNotFoundError:
        return None


def test_updates_reach_files_within_2s(tmp_path):
    async def main():
        client = FakeClient(*objects())
        host = new_host(tmp_path, client)
        mgr = VolumeManager(host)
        stop = asyncio.Event()
        runner = asyncio.create_task(mgr.run(stop))
        pod = make_pod([{"name": "c", "configMap": {"name": "cfg"}}, {"name": "s", "secret": {"secretName": "sec"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}}])
        uid = pod["metadata"]["uid"]
        try:
            paths = await mgr.mount_pod(pod)
            assert read(os.path.join(paths["c"], "k")) == b"v1"
            await client.update("", "v1", "configmaps", {**objects()[1], "data": {"k": "v2"}})
            took = await wait_for(lambda: read(os.path.join(paths["c"], "k")) == b"v2" and
                                  read(os.path.join(paths["p"], "k")) == b"v2", 2.0)
            assert took < 2.0
            await client.update("", "v1", "secrets", {**objects()[2], "data": {"k": base64.b64encode(b"s2").decode()}})
            await wait_for(lambda: read(os.path.join(paths["s"], "k")) == b"s2", 2.0)
            # The object disappears: the non-optional volume keeps its last content (as upstream).
            await client.delete("", "v1", "configmaps", "cfg", namespace="default")
            await asyncio.sleep(0.2)
            assert read(os.path.join(paths["c"], "k")) == b"v2"
        finally:
            stop.set()
            await runner
            await mgr.unmount_pod(uid)
            await host.configmaps.close()
            await host.secrets.close()
        assert mountutil.mounts_under(tmp_path) == []
        assert host.configmaps.registered() == set()
    asyncio.run(main())


def test_token_refreshed_at_80_percent(tmp_path):
    issued = []

    async def token(pod, sa, audience, expiration):
        issued.append(time.time())
        # A 1.5 s token: the manager must rewrite it 1.2 s later.
        return f"token-{len(issued)}", time.time() + 1.5

    async def main():
        client = FakeClient(*objects())
        host = new_host(tmp_path, client, token)
        mgr = VolumeManager(host)
        stop = asyncio.Event()
        runner = asyncio.create_task(mgr.run(stop))
        pod = make_pod([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token",
                                                                                         "expirationSeconds": 600}}]}}])
        try:
            d = (await mgr.mount_pod(pod))["t"]
            assert read(os.path.join(d, "token")) == b"token-1"
            await wait_for(lambda: read(os.path.join(d, "token")) == b"token-2", 3.0)
            gap = issued[1] - issued[0]
            assert 1.1 <= gap <= 1.6, gap
        finally:
            stop.set()
            await runner
            await mgr.unmount_pod(pod["metadata"]["uid"])
            await host.configmaps.close()
            await host.secrets.close()
    asyncio.run(main())


def test_unmount_after_restart(tmp_path):
    """A fresh manager, knowing no pods, removes tmpfs mounts, subPath binds and directories."""
    async def main():
        client = FakeClient(*objects())
        host = new_host(tmp_path, client)
        pod = make_pod([{"name": "mem", "emptyDir": {"medium": "Memory"}}, {"name": "disk", "emptyDir": {}},
                        {"name": "s", "secret": {"secretName": "sec"}}, {"name": "c", "configMap": {"name": "cfg"}}])
        pod["spec"]["containers"] = [{"name": "c", "volumeMounts": [
            {"name": "disk", "mountPath": "/data", "subPath": "a/b"},
            {"name": "c", "mountPath": "/etc/k", "subPath": "k"}]}]
        uid = pod["metadata"]["uid"]
        first = VolumeManager(host)
        paths = await first.mount_pod(pod)
        await container_mounts(pod, pod["spec"]["containers"][0], paths, host.pod_dir(uid))
        assert len(mountutil.mounts_under(host.pod_dir(uid))) == 4   # 2 tmpfs + 2 subPath binds
        await host.configmaps.close()
        await host.secrets.close()

        host2 = new_host(tmp_path, client)
        second = VolumeManager(host2)          # "after a restart": no state but the directories
        try:
            await second.unmount_pod(uid)
            assert mountutil.mounts_under(tmp_path) == []
            assert not host2.pod_dir(uid).exists()
            await second.unmount_pod(uid)      # idempotent
        finally:
            mountutil.unmount_all(tmp_path)
            await host2.configmaps.close()
            await host2.secrets.close()
    asyncio.run(main())


def test_unmount_never_deletes_through_a_mount(tmp_path):
    """A hostPath bind left under the pod dir must make removal fail, not delete host data."""
    precious = tmp_path / "host-data"
    precious.mkdir()
    (precious / "keep").write_text("x")
    pod_dir = tmp_path / "pods" / "test-mgr-guard"
    inner = pod_dir / "volumes" / "kubernetes.io~empty-dir" / "v"
    inner.mkdir(parents=True)
    mountutil.bind(precious, inner)
    try:
        # remove_tree unmounts first, so the data survives and the tree goes.
        mountutil.remove_tree(pod_dir)
        assert (precious / "keep").read_text() == "x"
        assert not pod_dir.exists()
    finally:
        mountutil.unmount_all(tmp_path)
