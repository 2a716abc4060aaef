"""spec.healthCheckNodePort (what kube-proxy's health check node ports serve): the API server
allocates it from the node port range for a LoadBalancer with externalTrafficPolicy Local, keeps
it on update, honours a requested one, and gives it back when the policy or type changes or
the Service goes; kube-proxy reads it into ServicePort.health_check_node_port."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from inprocess import api_server, ctx  # noqa: E402

from kubeling.api import errors  # noqa: E402
from kubeling.apiserver.registry.core.service import PORTS_KEY  # noqa: E402
from kubeling.proxy.servicechangetracker import service_ports  # noqa: E402


def lb(name: str, policy: str = "Local", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "selector": {"app": name},
                     "ports": [{"port": 80, "protocol": "TCP"}], **spec}}


async def _ports_taken(api) -> int:
    value, _ = await api.registry.read_key(PORTS_KEY)
    return sum(bin(b).count("1") for b in base64.b64decode(orjson.loads(value)["data"]))


def test_health_check_node_port_lifecycle():
    async def main():
        api = await api_server()
        served = api.lookup("", "v1", "services")
        obj = await api.registry.create(served, lb("web"), ctx("default"))
        hc = obj["spec"]["healthCheckNodePort"]
        assert 30000 <= hc <= 32767 and hc != obj["spec"]["ports"][0]["nodePort"]
        assert await _ports_taken(api) == 2
        (port,) = service_ports(obj).values()
        assert port.health_check_node_port == hc and port.external_policy_local
        # an update that leaves it out keeps it
        kept, _ = await api.registry.update(served, "default", "web", lb("web"), ctx("default"))
        assert kept["spec"]["healthCheckNodePort"] == hc
        # Cluster policy: released and cleared
        cluster, _ = await api.registry.update(served, "default", "web", lb("web", "Cluster"), ctx("default"))
        assert "healthCheckNodePort" not in cluster["spec"] and await _ports_taken(api) == 1
        # a requested one is honoured, and a taken one refused
        want = 31999
        mine = await api.registry.create(served, lb("mine", healthCheckNodePort=want), ctx("default"))
        assert mine["spec"]["healthCheckNodePort"] == want
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(served, lb("clash", healthCheckNodePort=want), ctx("default"))
        assert e.value.code == 422 and "already allocated" in e.value.message
        await api.registry.delete(served, "default", "mine", {}, ctx("default"))
        await api.registry.delete(served, "default", "web", {}, ctx("default"))
        assert await _ports_taken(api) == 0
        # repair counts it as held
        await api.registry.create(served, lb("r"), ctx("default"))
        await api.registry.store.delete(PORTS_KEY)
        await api.strategies[("", "services")].repair(api.registry, served)
        assert await _ports_taken(api) == 2
    asyncio.run(main())
