"""The scheduler as `kubeling server` runs it (a child process), against fake Node objects
(``--disable-agent``: no kubelet, so the pods stay bound and Pending, which is all this needs)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from kubeling.api.errors import StatusError
from kubeling.client import kubeconfig
from kubeling.client.exceptions import TransportError
from kubeling.client.rest import RESTClient
from tests.support.ports import free_port


async def _ready(kc: str) -> bool:
    try:
        async with RESTClient.from_kubeconfig(kc, component="test") as c:
            await c.get("", "v1", "serviceaccounts", "default", namespace="default")
        return True
    except (TransportError, StatusError, kubeconfig.ConfigError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("sched-server")
    port = free_port()
    with open(data / "server.log", "wb") as log:
        yield from _serve(data, port, log)


def _serve(data, port, log):
    proc = subprocess.Popen([sys.executable, "-m", "kubeling.cli.main", "server", "--data-dir", str(data),
                             "--secure-port", str(port), "--bind-address", "127.0.0.1",
                             "--controllers", "serviceaccount,serviceaccount-token", "--disable-agent"],
                            stdout=log, stderr=subprocess.STDOUT)
    kc = data / "admin.kubeconfig"
    try:
        deadline = time.monotonic() + 60
        while not (kc.exists() and asyncio.run(_ready(str(kc)))):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server not ready:\n{(data / 'server.log').read_text()[-4000:]}")
            time.sleep(0.2)
        yield str(kc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def node(name: str, cpu: str = "2", taints: list | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"taints": taints or []},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                       "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, cpu: str = "100m", scheduler: str | None = None) -> dict:
    spec = {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def eventually(fn, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def events_for(c: RESTClient, ns: str, name: str) -> list[dict]:
    items = (await c.list("", "v1", "events", namespace=ns,
                          field_selector=f"involvedObject.name={name}"))["items"]
    return items


def test_scheduler_binds_reports_and_leaves_other_schedulers_pods(server):
    async def main():
        async with RESTClient.from_kubeconfig(server, component="test") as c:
            ns = f"s-{uuid.uuid4().hex[:6]}"
            await c.create("", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            await eventually(lambda: _exists(c, "serviceaccounts", "default", ns), what="the default ServiceAccount")
            names = [f"n-{ns}-{i}" for i in range(3)]
            taint = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
            await c.create("", "v1", "nodes", node(names[0], taints=[taint]))
            for n in names[1:]:
                await c.create("", "v1", "nodes", node(n))
            try:
                for i in range(4):
                    await c.create("", "v1", "pods", pod(f"small-{i}"), namespace=ns)
                await c.create("", "v1", "pods", pod("huge", cpu="100"), namespace=ns)
                await c.create("", "v1", "pods", pod("other", scheduler="other"), namespace=ns)

                async def bound():
                    items = (await c.list("", "v1", "pods", namespace=ns))["items"]
                    return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in items}
                placed = await eventually(lambda: _all_small_bound(bound), what="the small pods bound")
                assert set(placed.values()) <= set(names[1:]), "the tainted node got a pod"
                ev = await eventually(lambda: events_for(c, ns, "small-0"), what="the Scheduled event")
                assert ev[0]["reason"] == "Scheduled" and ev[0]["type"] == "Normal"
                assert ev[0]["message"] == f"Successfully assigned {ns}/small-0 to {placed['small-0']}"
                assert ev[0]["reportingComponent"] == "default-scheduler"

                huge = await eventually(lambda: _condition(c, ns, "huge"), what="huge's PodScheduled condition")
                assert huge["status"] == "False" and huge["reason"] == "Unschedulable"
                # our node count includes every node the server has (other tests' too): match the shape
                assert "nodes are available:" in huge["message"]
                assert "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }" in huge["message"]
                assert "Insufficient cpu" in huge["message"]
                ev = await eventually(lambda: events_for(c, ns, "huge"), what="huge's FailedScheduling event")
                assert ev[0]["reason"] == "FailedScheduling" and ev[0]["type"] == "Warning"
                assert ev[0]["message"] == huge["message"]

                other = await c.get("", "v1", "pods", "other", namespace=ns)
                assert not other["spec"].get("nodeName")
                assert not (other.get("status") or {}).get("conditions")
                assert await events_for(c, ns, "other") == []
            finally:
                for n in names:
                    await c.delete("", "v1", "nodes", n)

    asyncio.run(main())


async def _exists(c, resource, name, ns) -> bool:
    try:
        await c.get("", "v1", resource, name, namespace=ns)
        return True
    except StatusError:
        return False


async def _all_small_bound(bound):
    placed = await bound()
    small = {k: v for k, v in placed.items() if k.startswith("small-")}
    return small if small and all(small.values()) else None


async def _condition(c, ns, name):
    p = await c.get("", "v1", "pods", name, namespace=ns)
    return next((x for x in (p.get("status") or {}).get("conditions") or () if x["type"] == "PodScheduled"), None)
