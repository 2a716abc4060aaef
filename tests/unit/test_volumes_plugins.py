"""Volume plugins through VolumeManager.mount_pod: content, modes, optional, tmpfs, errors."""

import asyncio
import base64
import os
import socket
import stat
import time
import uuid
from pathlib import Path

import pytest

from kubeling.client.fake import FakeClient
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import VolumeError, VolumeHost, mountutil
from kubeling.kubelet.volumes.hostpath import HostPathTypeError, check_type
from kubeling.kubelet.volumes.manager import VolumeManager


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
     "data": {"app.conf": "port=80\n", "other": "o"}, "binaryData": {"blob": b64(b"\x00\x01")}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
     "data": {"password": b64("hunter2"), "user": b64("admin")}},
    {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "claim", "namespace": "default",
                                                                       "uid": "pvc-uid"},
     "spec": {"volumeName": "pv-host"}, "status": {"phase": "Bound"}},
    {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "pending", "namespace": "default"},
     "spec": {}, "status": {"phase": "Pending"}},
    {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "nfs", "namespace": "default"},
     "spec": {"volumeName": "pv-nfs"}, "status": {"phase": "Bound"}},
    {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-nfs"},
     "spec": {"nfs": {"server": "x", "path": "/"}, "claimRef": {"name": "nfs", "namespace": "default"}}},
]


def run_with_manager(tmp_path, body, *, token=None, allocatable=None, extra=()):
    """Run ``body(manager, host, client)`` with FakeClient-fed caches; unmount every pod after."""
    async def main():
        client = FakeClient(*OBJECTS, *extra)
        host = VolumeHost(root=tmp_path / "agent", configmaps=ObjectCache(client, "configmaps"),
                          secrets=ObjectCache(client, "secrets"), token=token,
                          node_allocatable=allocatable or {"cpu": "2", "memory": "4Gi",
                                                           "ephemeral-storage": "10Gi"},
                          client=client)
        mgr = VolumeManager(host)
        try:
            return await body(mgr, host, client)
        finally:
            pods = host.root / "pods"
            for uid in os.listdir(pods) if pods.exists() else ():
                await mgr.unmount_pod(uid)
            await host.configmaps.close()
            await host.secrets.close()
    return asyncio.run(main())


def make_pod(volumes, containers=None, **spec):
    return {"metadata": {"name": "p", "namespace": "default", "uid": "test-vol-" + uuid.uuid4().hex[:8],
                         "labels": {"app": "web", "tier": "a\"b"}, "annotations": {"note": "x"}},
            "spec": {"volumes": volumes, "containers": containers or [{"name": "c"}], **spec}}


def read(path):
    return Path(path).read_bytes()


def mode(path):
    return os.stat(path).st_mode & 0o7777


@pytest.mark.parametrize("source,want", [
    pytest.param({"name": "cfg"}, {"app.conf": (b"port=80\n", 0o644), "other": (b"o", 0o644),
                                   "blob": (b"\x00\x01", 0o644)}, id="all-keys"),
    pytest.param({"name": "cfg", "defaultMode": 0o400, "items": [{"key": "app.conf", "path": "etc/app.conf"},
                                                                 {"key": "other", "path": "o", "mode": 0o600}]},
                 {"etc/app.conf": (b"port=80\n", 0o400), "o": (b"o", 0o600)}, id="items-modes"),
    pytest.param({"name": "nope", "optional": True}, {}, id="optional-missing"),
    pytest.param({"name": "cfg", "optional": True, "items": [{"key": "absent", "path": "a"}]}, {},
                 id="optional-missing-key"),
])
def test_configmap(tmp_path, source, want):
    async def body(mgr, host, client):
        pod = make_pod([{"name": "cfg", "configMap": source}])
        paths = await mgr.mount_pod(pod)
        d = paths["cfg"]
        assert d == str(host.root / "pods" / pod["metadata"]["uid"] / "volumes" / "kubernetes.io~configmap" / "cfg")
        got = {k: (read(os.path.join(d, k)), mode(os.path.join(d, k))) for k in want}
        assert got == want
        assert sorted(x for x in os.listdir(d) if not x.startswith("..")) == sorted({k.split("/")[0] for k in want})
        assert not mountutil.is_mount_point(d)   # configMaps live on disk
    run_with_manager(tmp_path, body)


@pytest.mark.parametrize("volume,message", [
    pytest.param({"configMap": {"name": "x"}}, 'configmap "x" not found', id="configmap-missing"),
    pytest.param({"configMap": {"name": "cfg", "items": [{"key": "k", "path": "k"}]}},
                 "configmap references non-existent config key: k", id="configmap-key"),
    pytest.param({"secret": {"secretName": "x"}}, 'secret "x" not found', id="secret-missing"),
    pytest.param({"secret": {"secretName": "sec", "items": [{"key": "k", "path": "k"}]}},
                 "references non-existent secret key: k", id="secret-key"),
    pytest.param({"hostPath": {"path": "/proc/version", "type": "Directory"}},
                 "hostPath type check failed: /proc/version is not a directory", id="hostpath-type"),
    pytest.param({"persistentVolumeClaim": {"claimName": "pending"}},
                 "error processing PVC default/pending: PVC is not bound", id="pvc-unbound"),
    pytest.param({"persistentVolumeClaim": {"claimName": "gone"}},
                 'error processing PVC default/gone: failed to fetch PVC from API server: '
                 'persistentvolumeclaims "gone" not found', id="pvc-missing"),
    pytest.param({"persistentVolumeClaim": {"claimName": "nfs"}},
                 'persistentvolume "pv-nfs": volume type nfs is not supported yet', id="pvc-unsupported"),
    pytest.param({"nfs": {"server": "s", "path": "/"}}, "volume type nfs is not supported yet", id="inline-nfs"),
    pytest.param({"emptyDir": {"medium": "HugePages"}},
                 "hugepages are not supported on this node (medium 'HugePages')", id="hugepages"),
])
def test_failed_mount_messages(tmp_path, volume, message):
    async def body(mgr, host, client):
        pod = make_pod([{"name": "v", **volume}, {"name": "ok", "emptyDir": {}}])
        with pytest.raises(VolumeError) as err:
            await mgr.mount_pod(pod)
        assert err.value.reason == "FailedMount"
        assert err.value.message == f'MountVolume.SetUp failed for volume "v" : {message}'
        # The other volumes were still set up.
        assert (host.pod_dir(pod["metadata"]["uid"]) / "volumes/kubernetes.io~empty-dir/ok").is_dir()
    run_with_manager(tmp_path, body)


def test_secret_on_tmpfs(tmp_path):
    async def body(mgr, host, client):
        pod = make_pod([{"name": "s", "secret": {"secretName": "sec", "defaultMode": 0o440,
                                                 "items": [{"key": "password", "path": "pw"}]}}],
                       securityContext={"fsGroup": 2000})
        d = (await mgr.mount_pod(pod))["s"]
        assert mountutil.is_mount_point(d)
        assert read(os.path.join(d, "pw")) == b"hunter2"
        st = os.stat(os.path.join(d, "pw"))
        assert (st.st_mode & 0o777, st.st_gid) == (0o440, 2000)
        await mgr.unmount_pod(pod["metadata"]["uid"])
        assert not mountutil.mounts_under(host.root)
        assert not os.path.exists(d)
    run_with_manager(tmp_path, body)


def test_downward_api(tmp_path):
    async def body(mgr, host, client):
        items = [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o600},
            {"path": "cpu_limit", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu",
                                                       "divisor": "1m"}},
            {"path": "cpu_request", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu"}},
            {"path": "mem_limit", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory",
                                                       "divisor": "1Mi"}},
        ]
        pod = make_pod([{"name": "d", "downwardAPI": {"items": items}}],
                       containers=[{"name": "c", "resources": {"requests": {"cpu": "250m"}}}])
        d = (await mgr.mount_pod(pod))["d"]
        got = {i["path"]: read(os.path.join(d, i["path"])).decode() for i in items}
        assert got == {"name": "p", "ns": "default", "labels": 'app="web"\ntier="a\\"b"', "app": "web",
                       "annotations": 'note="x"', "cpu_limit": "2000", "cpu_request": "1",
                       "mem_limit": "4096"}   # no limits: the node's allocatable; cpu rounds up
        assert mode(os.path.join(d, "annotations")) == 0o600
        # A label change reaches the files on refresh.
        pod["metadata"]["labels"] = {"app": "db"}
        await mgr.refresh(pod)
        assert read(os.path.join(d, "app")) == b"db"
    run_with_manager(tmp_path, body)


def test_projected_with_token(tmp_path):
    calls = []

    async def token(pod, sa, audience, expiration):
        calls.append((pod["metadata"]["name"], sa, audience, expiration))
        return f"tok-{len(calls)}", time.time() + expiration

    async def body(mgr, host, client):
        pod = make_pod([{"name": "kube-api-access", "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607, "audience": "api"}},
            {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "ca.crt"}]}},
            {"secret": {"name": "sec", "items": [{"key": "user", "path": "user"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}}], serviceAccountName="builder")
        d = (await mgr.mount_pod(pod))["kube-api-access"]
        assert mountutil.is_mount_point(d)
        assert {f: read(os.path.join(d, f)) for f in ("token", "ca.crt", "user", "namespace")} == {
            "token": b"tok-1", "ca.crt": b"o", "user": b"admin", "namespace": b"default"}
        assert calls == [("p", "builder", "api", 3607)]
        plugin = mgr.plugin_for(pod["spec"]["volumes"][0])
        at = plugin.next_refresh(Path(d))
        assert abs(at - (time.time() + 0.8 * 3607)) < 5
    run_with_manager(tmp_path, body, token=token)


def test_projected_errors_aggregate(tmp_path):
    async def body(mgr, host, client):
        pod = make_pod([{"name": "v", "projected": {"sources": [{"configMap": {"name": "a"}},
                                                               {"secret": {"name": "b"}}]}}])
        with pytest.raises(VolumeError) as err:
            await mgr.mount_pod(pod)
        assert err.value.message == \
            'MountVolume.SetUp failed for volume "v" : [configmap "a" not found, secret "b" not found]'
    run_with_manager(tmp_path, body)


def _tmpfs_size(path):
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == os.path.realpath(path):
            opts = line.split(" - ")[1].split()[2].split(",")
            return next((o for o in opts if o.startswith("size=")), None)
    return None


@pytest.mark.parametrize("source,limits,want", [
    pytest.param({"medium": "Memory", "sizeLimit": "64Mi"}, None, "size=65536k", id="sizeLimit"),
    pytest.param({"medium": "Memory"}, {"memory": "32Mi"}, "size=32768k", id="pod-limit"),
    pytest.param({"medium": "Memory", "sizeLimit": "1Gi"}, {"memory": "16Mi"}, "size=16384k", id="smallest-wins"),
])
def test_emptydir_memory(tmp_path, source, limits, want):
    async def body(mgr, host, client):
        c = {"name": "c", "resources": {"limits": limits}} if limits else {"name": "c"}
        pod = make_pod([{"name": "m", "emptyDir": source}], containers=[c])
        d = (await mgr.mount_pod(pod))["m"]
        assert _tmpfs_size(d) == want
        await mgr.mount_pod(pod)                       # idempotent: not mounted twice
        assert len(mountutil.mounts_under(d)) == 1
        await mgr.unmount_pod(pod["metadata"]["uid"])
        assert mountutil.mounts_under(host.root) == []
    run_with_manager(tmp_path, body)


def test_emptydir_disk(tmp_path):
    async def body(mgr, host, client):
        pod = make_pod([{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}])
        d = (await mgr.mount_pod(pod))["data"]
        assert mode(d) == 0o777 and not mountutil.is_mount_point(d)
        Path(d, "kept").write_text("x")
        await mgr.mount_pod(pod)                       # a re-sync keeps the data
        assert read(os.path.join(d, "kept")) == b"x"
        assert mgr.plugin_for({"emptyDir": {}}).size_limits[d] == 1 << 30
    run_with_manager(tmp_path, body)


@pytest.mark.parametrize("kind,typ,error", [
    pytest.param("dir", "Directory", None, id="dir-ok"),
    pytest.param("file", "Directory", "is not a directory", id="file-not-dir"),
    pytest.param("missing", "Directory", "is not a directory", id="missing-dir"),
    pytest.param("missing", "DirectoryOrCreate", None, id="dir-created"),
    pytest.param("file", "File", None, id="file-ok"),
    pytest.param("dir", "File", "is not a file", id="dir-not-file"),
    pytest.param("missing", "FileOrCreate", None, id="file-created"),
    pytest.param("socket", "Socket", None, id="socket-ok"),
    pytest.param("file", "Socket", "is not a socket file", id="not-socket"),
    pytest.param("chardev", "CharDevice", None, id="chardev-ok"),
    pytest.param("file", "CharDevice", "is not a character device", id="not-chardev"),
    pytest.param("file", "BlockDevice", "is not a block device", id="not-blockdev"),
    pytest.param("missing", "", None, id="no-type-no-check"),
    pytest.param("file", "Weird", "Weird is an invalid volume type", id="invalid-type"),
])
def test_hostpath_types(tmp_path, kind, typ, error):
    path = str(tmp_path / "target")
    sock = None
    if kind == "dir":
        os.mkdir(path)
    elif kind == "file":
        open(path, "w").close()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
    elif kind == "chardev":
        path = "/dev/null"
    try:
        if error:
            with pytest.raises(HostPathTypeError) as err:
                check_type(path, typ)
            assert error in str(err.value)
            if typ != "Weird":
                assert str(err.value) == f"hostPath type check failed: {path} {error}"
        else:
            check_type(path, typ)
            if typ == "DirectoryOrCreate":
                assert stat.S_ISDIR(os.stat(path).st_mode) and mode(path) == 0o755
            if typ == "FileOrCreate":
                assert stat.S_ISREG(os.stat(path).st_mode) and mode(path) == 0o644
    finally:
        if sock:
            sock.close()


def test_hostpath_and_pvc_paths(tmp_path):
    data = tmp_path / "pvdata"
    data.mkdir()
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-host"},
          "spec": {"hostPath": {"path": str(data), "type": "Directory"},
                   "claimRef": {"name": "claim", "namespace": "default", "uid": "pvc-uid"}}}

    async def body(mgr, host, client):
        pod = make_pod([{"name": "h", "hostPath": {"path": str(tmp_path / "made"), "type": "DirectoryOrCreate"}},
                        {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}}])
        paths = await mgr.mount_pod(pod)
        assert paths == {"h": str(tmp_path / "made"), "c": str(data)}
        (data / "keep").write_text("x")
        await mgr.unmount_pod(pod["metadata"]["uid"])
        assert (data / "keep").exists() and (tmp_path / "made").is_dir()   # host data never removed
    run_with_manager(tmp_path, body, extra=[pv])
