"""The DaemonSet RollingUpdate plan (pure) and its bounds: which old pods go, where a surge pod goes."""

import datetime as dt

import pytest

from kubeling.controllers.daemonset import update, util

NOW = dt.datetime(2024, 1, 1, 0, 10, tzinfo=dt.UTC)
NEW, OLD = "new", "old"


def ds(surge=0, unavailable=1, min_ready=0):
    return {"metadata": {"name": "d", "namespace": "default"},
            "spec": {"minReadySeconds": min_ready,
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}


def pod(name, hash_, ready=True, since="2024-01-01T00:09:50Z", deleting=False):
    meta = {"name": name, "labels": {"controller-revision-hash": hash_},
            "creationTimestamp": "2024-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:09:00Z"
    return {"metadata": meta, "status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}]}}


@pytest.mark.parametrize("value, total, expected", [
    pytest.param(1, 10, 1, id="int"),
    pytest.param("25%", 10, 3, id="percent-rounds-up"),
    pytest.param("10%", 1, 1, id="small-percent-of-one"),
    pytest.param("0%", 5, 0, id="zero-percent"),
    pytest.param(None, 5, 0, id="unset"),
])
def test_scaled_value(value, total, expected):
    assert util.scaled_value(value, total) == expected


def test_both_bounds_zero_means_one_unavailable():
    assert util.rolling_update_bounds(ds(surge=0, unavailable=0), 3) == (0, 1)
    assert util.rolling_update_bounds(ds(surge="50%", unavailable=0), 3) == (2, 0)


@pytest.mark.parametrize("d, node_pods, delete, surge", [
    pytest.param(ds(unavailable=1), {"a": [pod("a1", OLD)], "b": [pod("b1", OLD)], "c": [pod("c1", OLD)]},
                 ["a1"], [], id="one-at-a-time"),
    pytest.param(ds(unavailable=2), {"a": [pod("a1", OLD)], "b": [pod("b1", OLD)], "c": [pod("c1", OLD)]},
                 ["a1", "b1"], [], id="two-at-a-time"),
    pytest.param(ds(unavailable=1), {"a": [pod("a2", NEW, ready=False)], "b": [pod("b1", OLD)]},
                 [], [], id="waits-for-the-new-pod"),
    pytest.param(ds(unavailable=1), {"a": [pod("a2", NEW, ready=False)], "b": [pod("b1", OLD, ready=False)]},
                 ["b1"], [], id="an-unavailable-old-pod-goes-at-once"),
    pytest.param(ds(unavailable=1), {"a": [], "b": [pod("b1", OLD)]}, [], [],
                 id="a-node-without-its-pod-counts-as-unavailable"),
    pytest.param(ds(unavailable=1, min_ready=30), {"a": [pod("a2", NEW)],
                                                   "b": [pod("b1", OLD, since="2024-01-01T00:00:00Z")]}, [], [],
                 id="ready-but-not-yet-available"),
    pytest.param(ds(surge=1, unavailable=0), {"a": [pod("a1", OLD)], "b": [pod("b1", OLD)]}, [], ["a"],
                 id="surge-one-node"),
    pytest.param(ds(surge=1, unavailable=0), {"a": [pod("a1", OLD), pod("a2", NEW, ready=False)],
                                              "b": [pod("b1", OLD)]}, [], [], id="surge-waits-for-availability"),
    pytest.param(ds(surge=1, unavailable=0), {"a": [pod("a1", OLD), pod("a2", NEW)], "b": [pod("b1", OLD)]},
                 ["a1"], ["b"], id="surge-pod-available-old-goes-next-node-surges"),
    pytest.param(ds(surge=1, unavailable=0), {"a": [pod("a1", OLD, ready=False)], "b": [pod("b1", OLD)]},
                 [], ["a", "b"], id="unavailable-old-pods-surge-beyond-the-bound"),
    pytest.param(ds(unavailable=1), {"a": [pod("a1", OLD, deleting=True)], "b": [pod("b1", OLD)]},
                 [], [], id="terminating-pods-are-not-counted-as-present"),
])
def test_rolling_update_plan(d, node_pods, delete, surge):
    out_delete, out_surge = update.rolling_update_plan(d, node_pods, NEW, len(node_pods), NOW)
    assert [p["metadata"]["name"] for p in out_delete] == delete
    assert out_surge == surge


@pytest.mark.parametrize("pods, ok", [
    pytest.param([pod("x", NEW), pod("y", OLD)], True, id="one-of-each"),
    pytest.param([pod("x", NEW), pod("y", NEW)], False, id="two-new"),
    pytest.param([pod("x", OLD), pod("y", OLD)], False, id="two-old"),
    pytest.param([pod("x", OLD), pod("y", OLD, deleting=True)], True, id="terminating-ignored"),
])
def test_find_updated_pods_on_node(pods, ok):
    assert update.find_updated_pods_on_node(ds(), pods, NEW)[2] is ok
