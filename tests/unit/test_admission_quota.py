"""ResourceQuota and LimitRanger admission on the in-memory API server: refusals with upstream's
messages, charges to status.used, defaults and bounds."""

from __future__ import annotations

import asyncio

import pytest
from inprocess import api_server, ctx

from kubeling.api import errors
from kubeling.quota import resources as rl
from kubeling.quota.evaluators import (
    PodEvaluator,
    ServiceEvaluator,
    evaluator_for,
    group_resource_of,
)


def run(coro):
    return asyncio.run(coro)


def pod(name: str, *containers: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": list(containers) or [{"name": "c", "image": "busybox"}], **spec}}


def container(name="c", requests=None, limits=None) -> dict:
    res = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "busybox", **({"resources": res} if res else {})}


def quota(name: str, hard: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hard": hard, **spec}}


async def create(api, resource, obj, **kw):
    return await api.registry.create(api.lookup("", "v1", resource), obj, ctx("default", **kw))


async def get(api, resource, name):
    return await api.registry.get(api.lookup("", "v1", resource), "default", name)


def test_pod_count_quota_charges_and_then_refuses_with_upstreams_message():
    async def main():
        api = await api_server()
        await create(api, "resourcequotas", quota("q", {"pods": "2"}))
        await create(api, "pods", pod("a"))
        await create(api, "pods", pod("b"))
        used = (await get(api, "resourcequotas", "q"))["status"]["used"]
        assert used == {"pods": "2"}
        with pytest.raises(errors.StatusError) as e:
            await create(api, "pods", pod("c"))
        assert e.value.code == 403
        assert e.value.message == ('pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, '
                                   'limited: pods=2')
        # nothing was stored, nothing more charged
        with pytest.raises(errors.StatusError):
            await get(api, "pods", "c")
        assert (await get(api, "resourcequotas", "q"))["status"]["used"] == {"pods": "2"}
    run(main())


def test_compute_quota_requires_requests_and_sums_them():
    async def main():
        api = await api_server()
        await create(api, "resourcequotas", quota("compute", {"requests.cpu": "1", "requests.memory": "1Gi"}))
        with pytest.raises(errors.StatusError) as e:
            await create(api, "pods", pod("bare", container("app")))
        assert e.value.message == ('pods "bare" is forbidden: failed quota: compute: must specify '
                                   'requests.cpu for: app; requests.memory for: app')
        await create(api, "pods", pod("a", container(requests={"cpu": "600m", "memory": "512Mi"})))
        used = (await get(api, "resourcequotas", "compute"))["status"]["used"]
        assert used == {"requests.cpu": "600m", "requests.memory": "512Mi"}
        with pytest.raises(errors.StatusError) as e:
            await create(api, "pods", pod("b", container(requests={"cpu": "500m", "memory": "1Mi"})))
        assert "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, " \
               "limited: requests.cpu=1" in e.value.message
    run(main())


def test_dry_run_is_checked_but_not_charged():
    async def main():
        api = await api_server()
        await create(api, "resourcequotas", quota("q", {"pods": "1"}))
        await create(api, "pods", pod("a"), dry_run=True)
        assert "used" not in ((await get(api, "resourcequotas", "q")).get("status") or {}) or \
            (await get(api, "resourcequotas", "q"))["status"]["used"] == {}
    run(main())


def test_scoped_quota_counts_only_matching_pods():
    async def main():
        api = await api_server()
        await create(api, "resourcequotas", quota("be", {"pods": "1"}, scopes=["BestEffort"]))
        await create(api, "pods", pod("be1"))
        await create(api, "pods", pod("burst", container(requests={"cpu": "10m"})))   # not BestEffort: free
        with pytest.raises(errors.StatusError) as e:
            await create(api, "pods", pod("be2"))
        assert "exceeded quota: be" in e.value.message
    run(main())


def test_concurrent_creates_cannot_both_take_the_last_unit():
    async def main():
        api = await api_server()
        await create(api, "resourcequotas", quota("q", {"configmaps": "1"}))
        cm = lambda n: {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": "default"}}
        results = await asyncio.gather(*(create(api, "configmaps", cm(f"c{i}")) for i in range(5)),
                                       return_exceptions=True)
        assert sum(not isinstance(r, Exception) for r in results) == 1
        assert all(r.code == 403 for r in results if isinstance(r, Exception))
    run(main())


def test_limit_range_defaults_and_bounds():
    async def main():
        api = await api_server()
        lr = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr", "namespace": "default"},
              "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "200m"},
                                   "min": {"cpu": "100m"}, "max": {"cpu": "1"}}]}}
        await create(api, "limitranges", lr)
        p = await create(api, "pods", pod("d"))
        assert p["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m"}, "requests": {"cpu": "200m"}}
        with pytest.raises(errors.StatusError) as e:
            await create(api, "pods", pod("small", container(requests={"cpu": "50m"}, limits={"cpu": "2"})))
        assert e.value.code == 403
        assert e.value.message == ('pods "small" is forbidden: [minimum cpu usage per Container is 100m, but request '
                                   'is 50m, maximum cpu usage per Container is 1, but limit is 2]')
    run(main())


@pytest.mark.parametrize("obj,expected", [
    pytest.param(pod("p", container(requests={"cpu": "1", "nvidia.com/gpu": "1"}, limits={"memory": "1Gi"})),
                 {"count/pods": "1", "pods": "1", "cpu": "1", "requests.cpu": "1", "requests.nvidia.com/gpu": "1",
                  "limits.memory": "1Gi"}, id="pod"),
    pytest.param({**pod("done"), "status": {"phase": "Succeeded"}}, {"count/pods": "1"}, id="finished-pod"),
])
def test_pod_usage(obj, expected):
    assert rl.format_list(PodEvaluator().usage(obj)) == expected


def test_service_and_object_count_usage():
    svc = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}
    assert rl.format_list(ServiceEvaluator().usage(svc)) == {"count/services": "1", "services": "1",
                                                              "services.nodeports": "2"}
    assert rl.format_list(evaluator_for("apps", "deployments").usage({})) == {"count/deployments.apps": "1"}
    assert group_resource_of("count/deployments.apps") == ("apps", "deployments")
    assert group_resource_of("requests.cpu") == ("", "pods")


def test_pod_without_class_gets_the_global_default_priority_class():
    async def main():
        api = await api_server()
        pc = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "normal"},
              "value": 1000, "globalDefault": True}
        await api.registry.create(api.lookup("scheduling.k8s.io", "v1", "priorityclasses"), pc, ctx())
        p = await create(api, "pods", pod("p"))
        assert (p["spec"]["priorityClassName"], p["spec"]["priority"]) == ("normal", 1000)
        named = await create(api, "pods", pod("q", priorityClassName="system-node-critical"))
        assert named["spec"]["priority"] == 2000001000
    run(main())
