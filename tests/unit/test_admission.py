"""The admission chain on the in-memory store: order, and each plugin's rules."""

from __future__ import annotations

import asyncio

import pytest

from kubeling.api import errors
from kubeling.apiserver import registry
from kubeling.apiserver.admission import Chain

from inprocess import api_server, ctx


def run(coro):
    return asyncio.run(coro)


def pod(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_mutating_plugins_run_before_validating_ones_in_list_order():
    seen = []

    class P:
        def __init__(self, name, mutate=False, validate=False):
            self.NAME = name
            if mutate:
                self.admit = self._admit
            if validate:
                self.validate = self._validate

        def handles(self, attrs):
            return True

        async def _admit(self, attrs):
            seen.append(("admit", self.NAME))

        async def _validate(self, attrs):
            seen.append(("validate", self.NAME))

    chain = Chain([P("a", validate=True), P("b", mutate=True), P("c", mutate=True, validate=True)])

    async def main():
        await chain.admit("CREATE", None, {}, None, ctx())
        await chain.validate("CREATE", None, {}, None, ctx())
    run(main())
    assert seen == [("admit", "b"), ("admit", "c"), ("validate", "a"), ("validate", "c")]


def test_pod_gets_service_account_priority_and_tolerations():
    async def main():
        api = await api_server()
        obj = await api.registry.create(api.lookup("", "v1", "pods"), pod("p", priorityClassName="system-node-critical"),
                                        ctx("default"))
        spec = obj["spec"]
        assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
        assert spec["priority"] == 2000001000 and spec["preemptionPolicy"] == "PreemptLowerPriority"
        keys = {t["key"]: t["tolerationSeconds"] for t in spec["tolerations"]}
        assert keys == {"node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 300}
    run(main())


def test_a_pod_naming_a_missing_priority_class_is_forbidden():
    async def main():
        api = await api_server()
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(api.lookup("", "v1", "pods"), pod("p", priorityClassName="nope"), ctx("default"))
        assert e.value.code == 403 and "no PriorityClass with name nope was found" in e.value.message
    run(main())


def test_namespace_lifecycle():
    async def main():
        api = await api_server()
        cms = api.lookup("", "v1", "configmaps")
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(cms, {"metadata": {"name": "x", "namespace": "missing"}, "data": {}},
                                      ctx("missing"))
        assert e.value.code == 404 and 'namespaces "missing" not found' in e.value.message
        ns = api.lookup("", "v1", "namespaces")
        await api.registry.create(ns, {"metadata": {"name": "going"}}, ctx())
        await api.registry.delete(ns, None, "going", {}, ctx())  # Terminating: the kubernetes finalizer holds it
        with pytest.raises(errors.StatusError) as e:
            await api.registry.create(cms, {"metadata": {"name": "x", "namespace": "going"}, "data": {}},
                                      ctx("going"))
        assert e.value.code == 403 and "because it is being terminated" in e.value.message
        events = api.lookup("", "v1", "events")
        ev = {"metadata": {"name": "e", "namespace": "going"}, "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "going"},
              "reason": "Deleting", "message": "m", "type": "Normal"}
        await api.registry.create(events, ev, ctx("going"))  # events may still be written
        with pytest.raises(errors.StatusError) as e:
            await api.registry.delete(ns, None, "kube-system", {}, ctx())
        assert e.value.code == 403 and "this namespace may not be deleted" in e.value.message
    run(main())



@pytest.mark.parametrize("tolerations, want", [
    pytest.param([], {"node.kubernetes.io/not-ready": 7, "node.kubernetes.io/unreachable": 11}, id="flags"),
    pytest.param([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                   "tolerationSeconds": 2}],
                 {"node.kubernetes.io/unreachable": 2, "node.kubernetes.io/not-ready": 7}, id="own-kept"),
    pytest.param([{"operator": "Exists"}], {None: None}, id="tolerates-everything"),
    pytest.param([{"operator": "Exists", "effect": "NoSchedule"}],
                 {None: None, "node.kubernetes.io/not-ready": 7, "node.kubernetes.io/unreachable": 11},
                 id="empty-key-other-effect-still-defaulted"),
])
def test_default_toleration_seconds_come_from_the_server_config(tolerations, want):
    async def main():
        api = await api_server(config=registry.Config(default_not_ready_toleration_seconds=7,
                                                      default_unreachable_toleration_seconds=11))
        obj = await api.registry.create(api.lookup("", "v1", "pods"), pod("p", tolerations=tolerations),
                                        ctx("default"))
        return {t.get("key"): t.get("tolerationSeconds") for t in obj["spec"]["tolerations"]}
    assert run(main()) == want
