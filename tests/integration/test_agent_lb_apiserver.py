"""The agent's load balancer (`kubeling.kubelet.loadbalancer`) in front of a real ``kubeling
server``: TLS passes through it and verifies (the serving certificate names 127.0.0.1), a dead
server listed first is skipped, ``kubectl`` and the Python REST client work through it, the
``/readyz`` check sees the server healthy, and the server list follows the real
``default/kubernetes`` Endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import harness  # noqa: E402

from kubeling.client import kubeconfig as kc  # noqa: E402
from kubeling.client.rest import RESTClient  # noqa: E402
from kubeling.kubelet.loadbalancer import (  # noqa: E402
    LoadBalancer,
    addresses_from_endpoints,
    follow_endpoints,
    readyz_check,
)


def test_the_balancer_in_front_of_a_real_api_server(tmp_path):
    c = harness.started_cluster(tmp_path / "server")
    try:
        asyncio.run(_main(c))
    finally:
        c.stop()


async def _main(c: harness.Cluster) -> None:
    cfg = kc.load(str(c.kubeconfig))
    real, dead = f"127.0.0.1:{c.port}", f"127.0.0.1:{harness.free_port()}"
    stop = asyncio.Event()
    admin = RESTClient.from_config(cfg)
    async with LoadBalancer([dead, real], port=0, check_interval=3600,
                            health_check=readyz_check(cfg.certificate_authority_data)) as lb:
        through = RESTClient.from_config(dataclasses.replace(cfg, server=lb.url))
        follower = asyncio.create_task(follow_endpoints(lb, admin, stop))
        try:
            # the Python client through the balancer: the dead server is tried, failed, skipped
            version = await through.request("GET", "/version")
            assert version["gitVersion"]
            assert lb.active == real and dead in lb.failed
            # kubectl through it, with the admin kubeconfig's CA and credentials
            proc = await asyncio.create_subprocess_exec(
                harness.kubectl_binary("1.33"), f"--kubeconfig={c.kubeconfig}", f"--server={lb.url}",
                "get", "--raw", "/readyz", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0 and out.decode().strip() == "ok", err.decode()
            # a watch through it sees a write
            listed_cms = await through.list("", "v1", "configmaps", namespace="default")
            async with through.watch("", "v1", "configmaps", namespace="default", name="lb-probe",
                                     resource_version=listed_cms["metadata"]["resourceVersion"],
                                     allow_watch_bookmarks=False) as watch:
                await admin.create("", "v1", "configmaps", {"metadata": {"name": "lb-probe",
                                                                         "namespace": "default"}})
                typ, obj = await asyncio.wait_for(watch.__anext__(), 30)
                assert typ == "ADDED" and obj["metadata"]["name"] == "lb-probe"
            # the /readyz check with the cluster CA: the real server is healthy, the dead one not
            await lb.check_now()
            await lb.check_now()
            assert lb.failed == {dead} and lb.active == real
            # the list follows the kubernetes Endpoints (their addresses first, the defaults after)
            endpoints = await admin.get("", "v1", "endpoints", "kubernetes", namespace="default")
            listed = addresses_from_endpoints(endpoints)
            assert listed and all(a.endswith(f":{c.port}") for a in listed), endpoints
            want = listed + [s for s in (dead, real) if s not in listed]
            for _ in range(300):
                if lb.servers == want:
                    break
                await asyncio.sleep(0.1)
            assert lb.servers == want
            assert await through.request("GET", "/version")
        finally:
            stop.set()
            await asyncio.wait_for(follower, 30)
            await through.close()
            await admin.close()
