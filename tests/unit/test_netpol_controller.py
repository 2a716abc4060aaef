"""`NetworkPolicyController` against `FakeClient`, with a stand-in ``nft`` that records each batch.

What is pinned here: one full sync per burst of changes (level-triggered, coalesced), no sync
for pod churn the rules do not depend on, a Warning Event on a policy that cannot be enforced as
written, a failed ``nft`` reported on the Node and retried without the controller dying, and
the table dropped when no pod of the node is isolated any more. The real kernel side is
tests/integration/test_netpol_dataplane.py."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from kubeling.client.events import EventRecorder
from kubeling.client.fake import FakeClient
from kubeling.kubelet.network.policy import DROP_TABLE, NetworkPolicyController

NODE = "node-a"


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(name, ip, labels=None, node=NODE):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def netpol(name, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


@pytest.fixture
def fake_nft(tmp_path: Path):
    """An ``nft`` that appends each batch it gets to ``batches`` (separated by a marker line) and
    fails while ``fail`` exists."""
    script = tmp_path / "nft"
    log, fail = tmp_path / "batches", tmp_path / "fail"
    script.write_text(f"#!/bin/sh\nif [ -e {fail} ]; then cat >/dev/null; echo 'Error: no' >&2; exit 1; fi\n"
                      f"cat >> {log}\necho '#--' >> {log}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)

    class Nft:
        path = str(script)

        @staticmethod
        def batches() -> list[str]:
            return [b for b in log.read_text().split("#--\n") if b] if log.exists() else []

        @staticmethod
        def failing(on: bool) -> None:
            fail.touch() if on else fail.unlink(missing_ok=True)
    return Nft


async def until(pred, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def quiet(seconds=0.3):
    await asyncio.sleep(seconds)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 30))


def test_syncs_are_coalesced_and_follow_the_objects(fake_nft):
    async def main():
        client = FakeClient(namespace("default"), pod("web", "10.42.0.2"), pod("db", "10.42.0.3"))
        recorder = EventRecorder(client, "network-policy-controller", host=NODE)
        ctrl = NetworkPolicyController(client, NODE, pod_cidr="10.42.0.0/24", cluster_cidr="10.42.0.0/16",
                                       nft=fake_nft.path, recorder=recorder)
        stop = asyncio.Event()
        task = asyncio.create_task(ctrl.run(stop))
        await until(lambda: ctrl.syncs == 1)
        assert fake_nft.batches() == [DROP_TABLE]            # nothing isolated: no table of ours

        await client.create("networking.k8s.io", "v1", "networkpolicies", netpol("deny", {"podSelector": {}}),
                            namespace="default")
        await until(lambda: ctrl.syncs == 2)
        table = fake_nft.batches()[-1]
        assert "10.42.0.2 : jump pod-ingress-" in table and "10.42.0.3 : jump pod-ingress-" in table

        # a burst of relevant changes: far fewer syncs than changes, and the last one has them all
        for i in range(30):
            p = await client.get("", "v1", "pods", "web", namespace="default")
            p["metadata"]["labels"]["gen"] = str(i)
            await client.update("", "v1", "pods", p, namespace="default")
        await client.create("", "v1", "pods", pod("cache", "10.42.0.4"), namespace="default")
        await until(lambda: "10.42.0.4 : jump" in fake_nft.batches()[-1])
        await quiet()
        assert ctrl.syncs - 2 < 10, ctrl.syncs

        # status churn the rules do not read: no sync
        before = ctrl.syncs
        p = await client.get("", "v1", "pods", "db", namespace="default")
        p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        await client.update_status("", "v1", "pods", p, namespace="default")
        await quiet()
        assert ctrl.syncs == before

        # a pod elsewhere that no policy of this node needs changes nothing in the ruleset
        await client.create("", "v1", "pods", pod("far", "10.42.1.9", node="node-b"), namespace="default")
        await quiet()
        assert ctrl.syncs == before

        await client.delete("networking.k8s.io", "v1", "networkpolicies", "deny", namespace="default")
        await until(lambda: fake_nft.batches()[-1] == DROP_TABLE)
        stop.set()
        await task
        await recorder.close()
    run(main())


def test_a_bad_policy_gets_an_event_and_the_rest_is_enforced(fake_nft):
    async def main():
        bad = netpol("bad", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/33"}}, {"podSelector": {"matchLabels": {"app": "db"}}}]}]})
        client = FakeClient(namespace("default"), pod("web", "10.42.0.2"), pod("db", "10.42.0.3"))
        client.seed(bad)
        recorder = EventRecorder(client, "network-policy-controller", host=NODE)
        ctrl = NetworkPolicyController(client, NODE, pod_cidr="10.42.0.0/24", cluster_cidr="10.42.0.0/16",
                                       nft=fake_nft.path, recorder=recorder)
        stop = asyncio.Event()
        task = asyncio.create_task(ctrl.run(stop))
        await until(lambda: ctrl.syncs == 1)
        assert 'ip saddr 10.42.0.3 accept comment "default/bad"' in fake_nft.batches()[-1]
        await recorder.flush()
        events = (await client.list("", "v1", "events", namespace="default"))["items"]
        assert [(e["involvedObject"]["name"], e["type"], e["reason"]) for e in events] == [
            ("bad", "Warning", "InvalidIPBlock")]
        assert "spec.ingress[0].from[0].ipBlock" in events[0]["message"]
        stop.set()
        await task
        await recorder.close()
    run(main())


def test_a_failing_nft_is_reported_retried_and_survived(fake_nft, monkeypatch):
    monkeypatch.setattr("kubeling.kubelet.network.policy.RETRY_INTERVAL", 0.05)

    async def main():
        client = FakeClient(namespace("default"), pod("web", "10.42.0.2"))
        client.seed(netpol("deny", {"podSelector": {}}))
        recorder = EventRecorder(client, "network-policy-controller", host=NODE)
        ctrl = NetworkPolicyController(client, NODE, pod_cidr="10.42.0.0/24", cluster_cidr="10.42.0.0/16",
                                       nft=fake_nft.path, recorder=recorder)
        fake_nft.failing(True)
        stop = asyncio.Event()
        task = asyncio.create_task(ctrl.run(stop))
        await recorder.flush()
        await until(lambda: client.filter_actions("create", "events"))
        await recorder.flush()
        events = (await client.list("", "v1", "events", namespace="default"))["items"]
        assert events[0]["involvedObject"]["kind"] == "Node" and events[0]["reason"] == "FailedToSyncNetworkPolicies"
        assert not task.done() and ctrl.syncs == 0
        fake_nft.failing(False)
        await until(lambda: ctrl.syncs == 1)
        assert "10.42.0.2 : jump" in fake_nft.batches()[-1]
        stop.set()
        await task
        await recorder.close()
    run(main())


LISTING = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "kubeling-netpol"}},'
           ' {"chain": {"name": "ingress"}}, {"chain": {"name": "pod-ingress-1"}}, {"map": {"name": "ingress-pods"}},'
           ' {"rule": {"chain": "ingress"}}, {"rule": {"chain": "ingress"}}, {"rule": {"chain": "pod-ingress-1"}}]}')


@pytest.mark.parametrize("script, expected", [
    pytest.param(f"echo '{LISTING}'", {"tables": 1, "chains": 2, "rules": 3, "maps": 1, "sets": 0}, id="a-table"),
    pytest.param("echo 'Error: No such file or directory' >&2; exit 1",
                 {"tables": 0, "chains": 0, "rules": 0, "maps": 0, "sets": 0}, id="none"),
])
def test_count_leaks_counts_what_nft_lists(tmp_path, script, expected):
    from kubeling.kubelet.network.policy import count_leaks
    lister = tmp_path / "nft-list"
    lister.write_text(f"#!/bin/sh\n{script}\n")
    lister.chmod(0o755)
    assert count_leaks(str(lister)) == expected
