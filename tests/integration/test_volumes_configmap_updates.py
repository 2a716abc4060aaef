"""ConfigMaps and Secrets consumed as env and as volumes against a real API server (in-process,
over HTTP), through the agent's RESTClient: an update reaches the mounted file within 2 s (measured,
issue 6 acceptance 4), a subPath mount keeps the old content, and a missing ConfigMap gives
CreateContainerConfigError with upstream's message (acceptance 13)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from inprocess import api_server, http

from kubeling.client.rest import RESTClient
from kubeling.client.transport import AiohttpTransport
from kubeling.kubelet.envvars import CreateContainerConfigError, make_environment
from kubeling.kubelet.objectcache import ObjectCache
from kubeling.kubelet.volumes import VolumeHost, mountutil
from kubeling.kubelet.volumes.manager import VolumeManager
from kubeling.kubelet.volumes.mounts import container_mounts


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def read(path) -> str | None:
    try:
        return open(path).read()
    except FileNotFoundError:
        return None


async def wait_for(cond, timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def test_configmap_and_secret_as_env_and_volumes(tmp_path):
    async def main():
        api = await api_server()
        async with http(api) as server:
            client = RESTClient(AiohttpTransport(f"http://127.0.0.1:{server.port}"))
            await client.create("", "v1", "configmaps", {"metadata": {"name": "app-config", "namespace": "default"},
                                                         "data": {"greeting": "hello", "app.conf": "v=1\n"}})
            await client.create("", "v1", "secrets", {"metadata": {"name": "app-secret", "namespace": "default"},
                                                      "data": {"password": b64("s3cret")}})
            host = VolumeHost(root=tmp_path, configmaps=ObjectCache(client, "configmaps"),
                              secrets=ObjectCache(client, "secrets"), node_allocatable={"memory": "1Gi"},
                              client=client)
            mgr = VolumeManager(host)
            stop = asyncio.Event()
            runner = asyncio.create_task(mgr.run(stop))
            container = {"name": "app", "terminationMessagePath": "/dev/termination-log",
                         "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config",
                                                                                      "key": "greeting"}}},
                                 {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret",
                                                                                    "key": "password"}}}],
                         "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"},
                                          {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
                                          {"name": "sec", "mountPath": "/etc/secret"}]}
            pod = {"metadata": {"name": "consumer", "namespace": "default",
                                "uid": "test-volint-" + uuid.uuid4().hex[:8]},
                   "spec": {"containers": [container],
                            "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}},
                                        {"name": "sec", "secret": {"secretName": "app-secret"}}]}}
            uid = pod["metadata"]["uid"]
            try:
                env = dict(await make_environment(pod, container, host, []))
                assert env["GREETING"] == "hello" and env["PASSWORD"] == "s3cret"
                paths = await mgr.mount_pod(pod)
                mounts = await container_mounts(pod, container, paths, host.pod_dir(uid))
                sub = next(m.host_path for m in mounts if m.container_path == "/etc/app.conf")
                assert read(os.path.join(paths["cfg"], "greeting")) == "hello"
                assert read(sub) == "v=1\n"

                await client.update("", "v1", "configmaps", {"metadata": {"name": "app-config",
                                                                          "namespace": "default"},
                                                             "data": {"greeting": "bonjour", "app.conf": "v=2\n"}})
                took = await wait_for(lambda: read(os.path.join(paths["cfg"], "greeting")) == "bonjour", 2.0)
                print(f"configMap update reached the volume in {took * 1000:.0f} ms")
                assert took < 2.0
                assert read(os.path.join(paths["cfg"], "app.conf")) == "v=2\n"
                assert read(sub) == "v=1\n"              # a subPath mount does not change, as upstream

                await client.patch("", "v1", "secrets", "app-secret", {"data": {"password": b64("rotated")}},
                                   namespace="default")
                took = await wait_for(lambda: read(os.path.join(paths["sec"], "password")) == "rotated", 2.0)
                assert took < 2.0

                # A pod naming a ConfigMap that does not exist cannot get its environment.
                bad = {**container, "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing",
                                                                                          "key": "k"}}}]}
                bad_pod = {"metadata": {**pod["metadata"], "uid": uid + "-bad"},
                           "spec": {**pod["spec"], "containers": [bad]}}
                with pytest.raises(CreateContainerConfigError) as err:
                    await make_environment(bad_pod, bad, host, [])
                assert (err.value.reason, err.value.message) == ("CreateContainerConfigError",
                                                                 'configmap "missing" not found')
                host.configmaps.unregister_pod(bad_pod)
            finally:
                stop.set()
                await runner
                await mgr.unmount_pod(uid)
                await host.configmaps.close()
                await host.secrets.close()
                await client.close()
            assert mountutil.mounts_under(tmp_path) == []
            assert not host.pod_dir(uid).exists()
    asyncio.run(main())
