"""container_mounts: readOnly, subPath (created, bound, pinned), subPathExpr, propagation, the
termination-log file, and the errors upstream gives."""

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from kubeling.client.fake import FakeClient
from kubeling.kubelet.envvars import CreateContainerConfigError
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.runtime import Mount
from kubeling.kubelet.volumes import VolumeHost, mountutil
from kubeling.kubelet.volumes.manager import VolumeManager
from kubeling.kubelet.volumes.mounts import container_mounts

OBJECTS = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
           {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
            "data": {"k": "v1"}}]


def run(tmp_path, volumes, body):
    async def main():
        client = FakeClient(*OBJECTS)
        host = VolumeHost(root=tmp_path / "agent", configmaps=ObjectCache(client, "configmaps"),
                          secrets=ObjectCache(client, "secrets"), node_allocatable={"memory": "1Gi"})
        mgr = VolumeManager(host)
        pod = {"metadata": {"name": "p", "namespace": "default", "uid": "test-mnt-" + uuid.uuid4().hex[:8]},
               "spec": {"volumes": volumes, "containers": [{"name": "c"}]}}
        try:
            paths = await mgr.mount_pod(pod)
            return await body(pod, paths, host.pod_dir(pod["metadata"]["uid"]), client)
        finally:
            await mgr.unmount_pod(pod["metadata"]["uid"])
            await host.configmaps.close()
            await host.secrets.close()
            assert mountutil.mounts_under(tmp_path) == []
    return asyncio.run(main())


def test_read_only_propagation_and_termination_log(tmp_path):
    async def body(pod, paths, pod_dir, client):
        c = {"name": "c", "terminationMessagePath": "/dev/termination-log", "securityContext": {"privileged": True},
             "volumeMounts": [
                 {"name": "data", "mountPath": "/data"},
                 {"name": "data", "mountPath": "/ro", "readOnly": True, "mountPropagation": "HostToContainer"},
                 {"name": "cfg", "mountPath": "/etc/cfg", "mountPropagation": "Bidirectional"}]}
        mounts = await container_mounts(pod, c, paths, pod_dir, attempt=2)
        log = pod_dir / "containers" / "c" / "2-termination-log"
        assert mounts == [Mount("/data", paths["data"], False, "private"),
                          Mount("/ro", paths["data"], True, "rslave"),
                          Mount("/etc/cfg", paths["cfg"], True, "rshared"),   # configMaps are always read-only
                          Mount("/dev/termination-log", str(log), False, "private")]
        assert log.is_file() and os.stat(log).st_mode & 0o777 == 0o666
        no_log = await container_mounts(pod, {"name": "c", "terminationMessagePath": ""}, paths, pod_dir)
        assert no_log == []
    run(tmp_path, [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}], body)


@pytest.mark.parametrize("mount,message", [
    pytest.param({"name": "nope", "mountPath": "/x"}, 'cannot find volume "nope" to mount into container "c"',
                 id="missing-volume"),
    pytest.param({"name": "data", "mountPath": "/x", "subPath": "/abs"}, "error SubPath `/abs` must not be an "
                 "absolute path", id="absolute-subpath"),
    pytest.param({"name": "data", "mountPath": "/x", "subPath": "a/../../b"},
                 "unable to provision SubPath `a/../../b`: must not contain '..'", id="backstep"),
    pytest.param({"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"},
                 "Bidirectional mount propagation is available only to privileged containers", id="bidirectional"),
    pytest.param({"name": "data", "mountPath": "/x", "subPath": "escape/etc"},
                 'failed to prepare subPath for volumeMount "data" of container "c"', id="symlink-escape"),
])
def test_errors(tmp_path, mount, message):
    async def body(pod, paths, pod_dir, client):
        os.symlink("/", os.path.join(paths["data"], "escape"))   # what a hostile container could leave
        with pytest.raises(CreateContainerConfigError) as err:
            await container_mounts(pod, {"name": "c", "volumeMounts": [mount]}, paths, pod_dir)
        assert err.value.message == message and err.value.reason == "CreateContainerConfigError"
    run(tmp_path, [{"name": "data", "emptyDir": {}}], body)


def test_subpath_created_bound_and_reused(tmp_path):
    async def body(pod, paths, pod_dir, client):
        c = {"name": "c", "env": [], "volumeMounts": [{"name": "data", "mountPath": "/redis", "subPath": "redis/db"},
                                                      {"name": "data", "mountPath": "/ns",
                                                       "subPathExpr": "logs/$(POD_NAME)"}]}
        mounts = await container_mounts(pod, c, paths, pod_dir, env=[("POD_NAME", "p")])
        first, second = (m.host_path for m in mounts[:2])
        assert first == str(pod_dir / "volume-subpaths" / "data" / "c" / "0")
        assert mountutil.is_mount_point(first) and mountutil.is_mount_point(second)
        assert os.path.isdir(os.path.join(paths["data"], "redis", "db"))
        assert os.path.isdir(os.path.join(paths["data"], "logs", "p"))
        # The bind shows the volume's directory: a write through it lands in the volume.
        Path(first, "dump.rdb").write_text("x")
        assert Path(paths["data"], "redis", "db", "dump.rdb").read_text() == "x"
        # A restart of the container reuses the bind instead of stacking another.
        again = await container_mounts(pod, c, paths, pod_dir, env=[("POD_NAME", "p")], attempt=1)
        assert [m.host_path for m in again[:2]] == [first, second]
        assert len(mountutil.mounts_under(pod_dir / "volume-subpaths")) == 2
    run(tmp_path, [{"name": "data", "emptyDir": {}}], body)


def test_configmap_subpath_does_not_see_updates(tmp_path):
    async def body(pod, paths, pod_dir, client):
        c = {"name": "c", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/k", "subPath": "k"}]}
        (m, _log) = await container_mounts(pod, c, paths, pod_dir)
        assert m.readonly and Path(m.host_path).read_text() == "v1"
        from kubeling.kubelet.volumes.atomic_writer import AtomicWriter, FileProjection
        AtomicWriter(paths["cfg"]).write({"k": FileProjection(b"v2")})   # what a refresh does
        assert Path(paths["cfg"], "k").read_text() == "v2"
        assert Path(m.host_path).read_text() == "v1"                        # pinned, as upstream
    run(tmp_path, [{"name": "cfg", "configMap": {"name": "cfg"}}], body)
