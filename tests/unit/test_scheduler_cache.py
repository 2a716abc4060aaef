"""Scheduler cache (assume / confirm / forget / expire) and the incremental snapshot."""

from __future__ import annotations

from kubeling.client.clock import FakeClock
from kubeling.scheduler.cache import Cache, NodeTree
from kubeling.scheduler.snapshot import Snapshot


def node(name: str, cpu: str = "4", zone: str = "") -> dict:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": cpu, "pods": "110"}}}


def pod(name: str, node_name: str = "", cpu: str = "1", affinity: bool = False) -> dict:
    p = {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
         "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}
    if affinity:
        p["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {}, "topologyKey": "kubernetes.io/hostname"}]}}
    return p


def requested(cache: Cache, n: str) -> int:
    return cache.nodes[n].requested.milli_cpu


def test_assume_takes_room_at_once_and_confirm_keeps_it():
    cache = Cache(FakeClock())
    cache.add_node(node("n1"))
    cache.assume_pod(pod("a", "n1"))
    assert requested(cache, "n1") == 1000 and cache.is_assumed_pod(pod("a"))
    cache.finish_binding(pod("a", "n1"))
    cache.add_pod(pod("a", "n1"))       # the informer shows the binding
    assert not cache.is_assumed_pod(pod("a")) and requested(cache, "n1") == 1000
    assert cache.cleanup_assumed_pods() == []


def test_forget_undoes_an_assume():
    cache = Cache(FakeClock())
    cache.add_node(node("n1"))
    cache.assume_pod(pod("a", "n1"))
    cache.forget_pod(pod("a", "n1"))
    assert requested(cache, "n1") == 0 and cache.pod_count() == 0


def test_assumed_pod_expires_only_after_binding_finished_plus_ttl():
    clock = FakeClock()
    cache = Cache(clock, ttl=30)
    cache.add_node(node("n1"))
    cache.assume_pod(pod("a", "n1"))
    clock.step(100)
    assert cache.cleanup_assumed_pods() == []   # still binding: never expires mid-bind
    cache.finish_binding(pod("a", "n1"))
    clock.step(29)
    assert cache.cleanup_assumed_pods() == []
    clock.step(2)
    assert [p["metadata"]["name"] for p in cache.cleanup_assumed_pods()] == ["a"]
    assert requested(cache, "n1") == 0


def test_confirm_on_another_node_moves_the_pod():
    cache = Cache(FakeClock())
    cache.add_node(node("n1"))
    cache.add_node(node("n2"))
    cache.assume_pod(pod("a", "n1"))
    cache.add_pod(pod("a", "n2"))
    assert requested(cache, "n1") == 0 and requested(cache, "n2") == 1000


def test_assume_twice_is_refused():
    cache = Cache(FakeClock())
    cache.assume_pod(pod("a", "n1"))
    try:
        cache.assume_pod(pod("a", "n1"))
    except ValueError:
        pass
    else:
        raise AssertionError("assumed twice")


def test_pod_before_its_node_and_node_removal_with_pods():
    cache = Cache(FakeClock())
    cache.add_pod(pod("a", "n1"))
    assert cache.node_count() == 0 and requested(cache, "n1") == 1000
    cache.add_node(node("n1"))
    assert cache.node_count() == 1 and requested(cache, "n1") == 1000
    cache.remove_node(node("n1"))
    assert cache.node_count() == 0 and "n1" in cache.nodes   # kept for its pod
    cache.remove_pod(pod("a", "n1"))
    assert "n1" not in cache.nodes


def test_snapshot_copies_only_changed_nodes():
    cache = Cache(FakeClock())
    for n in ("n1", "n2", "n3"):
        cache.add_node(node(n))
    snap = Snapshot()
    cache.update_snapshot(snap)
    assert [n.name for n in snap.list()] == ["n1", "n2", "n3"]
    before = {n.name: n for n in snap.list()}
    cache.assume_pod(pod("a", "n2", affinity=True))
    cache.update_snapshot(snap)
    after = {n.name: n for n in snap.list()}
    assert after["n1"] is before["n1"] and after["n3"] is before["n3"]
    assert after["n2"] is not before["n2"] and after["n2"].requested.milli_cpu == 1000
    assert before["n2"].requested.milli_cpu == 0   # what the last cycle read did not move
    assert [n.name for n in snap.have_pods_with_required_anti_affinity_list()] == ["n2"]
    cache.remove_node(node("n3"))
    cache.update_snapshot(snap)
    assert [n.name for n in snap.list()] == ["n1", "n2"]
    assert snap.get("n1") is after["n1"]


def test_node_tree_interleaves_zones():
    tree = NodeTree()
    for name, zone in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")):
        tree.add(node(name, zone=zone))
    assert tree.list() == ["a1", "b1", "c1", "a2", "c2", "a3"]
    tree.remove("b1")
    assert tree.list() == ["a1", "c1", "a2", "c2", "a3"]
