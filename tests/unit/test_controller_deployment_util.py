"""The Deployment controller's pure helpers: fenceposts, proportions, revisions, conditions."""

import datetime as dt

import pytest

from kubeling.controllers.deployment import util


def deployment(replicas=10, surge="25%", unavailable="25%", strategy="RollingUpdate", **spec):
    strat = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"metadata": {"name": "web", "namespace": "default", "generation": 1, "uid": "d1"},
            "spec": {"replicas": replicas, "strategy": strat, "template": tpl("v1"), **spec}, "status": {}}


def tpl(image, hash_=None):
    labels = {"app": "web"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}}


def rs(name, replicas, created="2024-01-01T00:00:00Z", revision=None, available=0, max_replicas=None,
       image="v1", **status):
    ann = {}
    if revision is not None:
        ann["deployment.kubernetes.io/revision"] = str(revision)
    if max_replicas is not None:
        ann["deployment.kubernetes.io/max-replicas"] = str(max_replicas)
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": created, "annotations": ann},
            "spec": {"replicas": replicas, "template": tpl(image, "h-" + name)},
            "status": {"availableReplicas": available, **status}}


@pytest.mark.parametrize("surge, unavailable, replicas, want", [
    pytest.param("25%", "25%", 10, (3, 2), id="percent-surge-up-unavailable-down"),
    pytest.param("25%", "25%", 1, (1, 0), id="one-replica"),
    pytest.param(1, 0, 3, (1, 0), id="ints"),
    pytest.param("0%", "10%", 5, (0, 1), id="both-round-to-zero-unavailable-becomes-one"),
    pytest.param(2, 5, 3, (2, 3), id="unavailable-capped-at-replicas"),
])
def test_fenceposts(surge, unavailable, replicas, want):
    d = deployment(replicas, surge, unavailable)
    assert (util.max_surge(d), util.max_unavailable(d)) == want


def test_recreate_has_no_fenceposts():
    d = deployment(strategy="Recreate")
    assert (util.max_surge(d), util.max_unavailable(d)) == (0, 0)


@pytest.mark.parametrize("d, olds, new_size, want", [
    pytest.param(deployment(10, "25%"), [10], 0, 3, id="surge-room"),
    pytest.param(deployment(10, "25%"), [10], 3, 3, id="at-max-total"),
    pytest.param(deployment(10, "25%"), [2], 3, 10, id="capped-at-replicas"),
    pytest.param(deployment(10, strategy="Recreate"), [10], 0, 10, id="recreate-all-at-once"),
])
def test_new_rs_new_replicas(d, olds, new_size, want):
    new = rs("new", new_size)
    assert util.new_rs_new_replicas(d, [*(rs(f"r{i}", n) for i, n in enumerate(olds)), new], new) == want


@pytest.mark.parametrize("rs_size, d_replicas, to_add, added, want", [
    # 15 replicas + 4 surge = 19; 6 of 13 -> 8.77 -> 9: +3, within the 5 to add
    pytest.param(6, 15, 5, 0, 3, id="grows-by-its-share"),
    # 4 of 13 -> 5.85 -> 6: +2, and exactly 2 are left
    pytest.param(4, 15, 5, 3, 2, id="capped-by-what-is-left"),
    # 5 replicas + 2 surge = 7; 6 of 13 -> 3.23 -> 3: -3
    pytest.param(6, 5, -7, 0, -3, id="shrinks-by-its-share"),
    pytest.param(0, 15, 5, 0, 0, id="empty-replicaset-gets-nothing"),
])
def test_proportion(rs_size, d_replicas, to_add, added, want):
    assert util.proportion(rs("a", rs_size, max_replicas=13), deployment(d_replicas), to_add, added) == want


def test_round_half_away_from_zero_as_go():
    assert [util.round_half_away(x) for x in (2.5, 3.5, -2.5, 0.49)] == [3, 4, -3, 0]


def test_find_new_and_old_replicasets_ignore_the_hash_label():
    d = deployment()
    d["spec"]["template"] = tpl("v2")
    old, new = rs("old", 3, image="v1"), rs("new", 0, image="v2", created="2024-01-02T00:00:00Z")
    assert util.find_new_replicaset(d, [old, new]) is new
    required, every = util.find_old_replicasets(d, [old, new])
    assert required == [old] and every == [old]


@pytest.mark.parametrize("sizes, want", [
    pytest.param([0, 0], "newest-old", id="none-active-newest-old"),
    pytest.param([2, 0], "a", id="one-active"),
    pytest.param([2, 1], None, id="rollout-under-way"),
])
def test_find_active_or_latest(sizes, want):
    a = rs("a", sizes[0], created="2024-01-01T00:00:00Z")
    b = rs("newest-old", sizes[1], created="2024-01-02T00:00:00Z")
    got = util.find_active_or_latest(None, [a, b])
    assert (got["metadata"]["name"] if got else None) == want


def test_a_rolled_back_replicaset_keeps_its_earlier_revision_in_history():
    d = deployment()
    d["metadata"]["annotations"] = {"kubernetes.io/change-cause": "undo", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    r = rs("a", 0, revision=1)
    assert util.set_new_replicaset_annotations(d, r, "3", exists=True)
    ann = r["metadata"]["annotations"]
    assert ann["deployment.kubernetes.io/revision"] == "3"
    assert ann["deployment.kubernetes.io/revision-history"] == "1"
    assert ann["kubernetes.io/change-cause"] == "undo"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in ann
    assert "deployment.kubernetes.io/desired-replicas" not in ann  # only a new ReplicaSet gets them here
    fresh = rs("b", 0)
    util.set_new_replicaset_annotations(d, fresh, "4", exists=False)
    assert fresh["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "10"
    assert fresh["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "13"


def test_last_revision_is_the_second_highest():
    assert util.last_revision([rs("a", 0, revision=1), rs("b", 0, revision=4), rs("c", 0, revision=2)]) == 2


def test_set_condition_keeps_transition_time_while_status_holds():
    status = {}
    util.set_condition(status, util.new_condition("Progressing", "True", "NewReplicaSetCreated", "m1", "T1"))
    util.set_condition(status, util.new_condition("Progressing", "True", "ReplicaSetUpdated", "m2", "T2"))
    (c,) = status["conditions"]
    assert (c["reason"], c["lastTransitionTime"], c["lastUpdateTime"]) == ("ReplicaSetUpdated", "T1", "T2")
    util.set_condition(status, util.new_condition("Progressing", "True", "ReplicaSetUpdated", "m3", "T3"))
    assert status["conditions"][0]["message"] == "m2"  # same status and reason: untouched
    util.set_condition(status, util.new_condition("Progressing", "False", "ProgressDeadlineExceeded", "m4", "T4"))
    assert status["conditions"][0]["lastTransitionTime"] == "T4"


@pytest.mark.parametrize("reason, updated_ago, want", [
    pytest.param("ReplicaSetUpdated", 11, True, id="past-the-deadline"),
    pytest.param("ReplicaSetUpdated", 9, False, id="within-the-deadline"),
    pytest.param("NewReplicaSetAvailable", 100, False, id="complete-never-times-out"),
    pytest.param("ProgressDeadlineExceeded", 0, True, id="timed-out-stays"),
])
def test_deployment_timed_out(reason, updated_ago, want):
    now = dt.datetime(2024, 1, 1, 0, 1, 0, tzinfo=dt.UTC)
    then = (now - dt.timedelta(seconds=updated_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    d = deployment(progressDeadlineSeconds=10)
    status = {"conditions": [util.new_condition("Progressing", "True", reason, "", then)]}
    assert util.deployment_timed_out(d, status, now) is want


def test_sort_orders():
    a = rs("a", 3, created="2024-01-01T00:00:00Z", revision=2)
    b = rs("b", 3, created="2024-01-02T00:00:00Z", revision=1)
    c = rs("c", 5, created="2024-01-03T00:00:00Z", revision=3)
    names = lambda rss: [r["metadata"]["name"] for r in rss]
    assert names(util.by_size_older([a, b, c])) == ["c", "a", "b"]
    assert names(util.by_size_newer([a, b, c])) == ["c", "b", "a"]
    assert names(util.by_revision([a, b, c])) == ["b", "a", "c"]
    assert names(util.by_creation([c, b, a])) == ["a", "b", "c"]
