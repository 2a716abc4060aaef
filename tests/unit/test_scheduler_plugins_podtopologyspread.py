"""PodTopologySpread on NodeInfos: the DoNotSchedule filter (skew, minDomains, inclusion policies,
matchLabelKeys, what counts), the ScheduleAnyway scores, the system default constraints built
from owners' selectors, and the PreFilterExtensions preemption uses."""

import pytest

from kubeling.scheduler.framework.interface import Code, CycleState, NodeScore
from kubeling.scheduler.framework.types import NodeInfo, PodInfo
from kubeling.scheduler.plugins.podtopologyspread import PodTopologySpread
from kubeling.scheduler.plugins.podtopologyspread_common import DefaultSelector
from kubeling.scheduler.snapshot import Snapshot

HOST, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"
NOT_MATCH = "node(s) didn't match pod topology spread constraints"
MISSING = "node(s) didn't match pod topology spread constraints (missing required label)"


def node(name, zone=None, taints=None, **labels):
    lab = {HOST: name, **labels}
    if zone:
        lab[ZONE] = zone
    return {"metadata": {"name": name, "labels": lab}, "spec": {"taints": taints or []}}


def pod(name, ns="default", labels=None, constraints=None, node_name="", owner=None, terminating=False,
        **spec):
    meta = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2],
                                    "uid": "owner", "controller": True}]
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    s = {"containers": [{"name": "c", "image": "i"}], "nodeName": node_name, **spec}
    if constraints:
        s["topologySpreadConstraints"] = constraints
    return {"metadata": meta, "spec": s}


def tsc(key, skew=1, when="DoNotSchedule", sel=None, **extra):
    return {"topologyKey": key, "maxSkew": skew, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": sel if sel is not None else {"app": "web"}}, **extra}


def cluster(nodes, pods):
    infos = {n["metadata"]["name"]: NodeInfo(n) for n in nodes}
    for p in pods:
        infos[p["spec"]["nodeName"]].add_pod(p)
    return list(infos.values())


class FakeInformer:
    def __init__(self, objs):
        self.objs = objs

    def list(self):
        return list(self.objs)

    def get(self, key):
        return next((o for o in self.objs
                     if f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" == key), None)


class FakeFactory:
    def __init__(self, **by_resource):
        self.by_resource = by_resource

    def informer_for(self, group, version, resource):
        return FakeInformer(self.by_resource.get(resource, []))


class Handle:
    def __init__(self, infos, informers=None):
        self.snapshot = Snapshot(infos)
        if informers is not None:
            self.informers = informers

    def snapshot_shared_lister(self):
        return self.snapshot


def run_filter(infos, incoming, args=None, handle=None):
    pl = PodTopologySpread(args, handle or Handle(infos))
    state = CycleState()
    _, st = pl.pre_filter(state, incoming, infos)
    if st is not None and st.is_skip():
        return "skip"
    return {ni.name: pl.filter(state, incoming, ni) for ni in infos}


def verdicts(result):
    if result == "skip":
        return result
    return {n: "ok" if s is None else (s.code.name, s.message()) for n, s in result.items()}


WEB = {"app": "web"}
UNSCH = (Code.UNSCHEDULABLE.name, NOT_MATCH)

FILTER_CASES = [
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="a"), pod("p3", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE)]),
        {"a": UNSCH, "b": "ok"}, id="zone-skew"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels={"app": "other"}, constraints=[tsc(ZONE)]),
        {"a": "ok", "b": "ok"}, id="incoming-pod-does-not-match-itself"),
    pytest.param(
        [node("a", "z1"), node("b")],
        [],
        pod("new", labels=WEB, constraints=[tsc(ZONE)]),
        {"a": "ok", "b": (Code.UNSCHEDULABLE_AND_UNRESOLVABLE.name, MISSING)}, id="missing-label"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, minDomains=3)]),
        {"a": UNSCH, "b": UNSCH}, id="min-domains-not-reached-makes-min-zero"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, minDomains=2)]),
        {"a": "ok", "b": "ok"}, id="min-domains-reached"),
    pytest.param(
        [node("a", "z1", disk="ssd"), node("b", "z2", disk="ssd"), node("c", "z3")],
        [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE)], nodeSelector={"disk": "ssd"}),
        {"a": UNSCH, "b": "ok", "c": "ok"}, id="node-affinity-policy-honor-excludes-domains"),
    pytest.param(
        [node("a", "z1", disk="ssd"), node("b", "z2", disk="ssd"), node("c", "z3")],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, nodeAffinityPolicy="Ignore")], nodeSelector={"disk": "ssd"}),
        {"a": UNSCH, "b": UNSCH, "c": "ok"}, id="node-affinity-policy-ignore-counts-every-domain"),
    pytest.param(
        [node("a", "z1"), node("b", "z2"), node("c", "z3", taints=[{"key": "k", "effect": "NoSchedule"}])],
        [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE)]),
        {"a": UNSCH, "b": "ok", "c": "ok"}, id="node-taints-policy-ignore-counts-tainted-domain"),
    pytest.param(
        [node("a", "z1"), node("b", "z2"), node("c", "z3", taints=[{"key": "k", "effect": "NoSchedule"}])],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, nodeTaintsPolicy="Honor")]),
        {"a": "ok", "b": "ok", "c": "ok"}, id="node-taints-policy-honor-drops-tainted-domain"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels={**WEB, "rev": "1"}, node_name="a"), pod("p2", labels={**WEB, "rev": "1"}, node_name="a"),
         pod("p3", labels={**WEB, "rev": "2"}, node_name="b")],
        pod("new", labels={**WEB, "rev": "2"}, constraints=[tsc(ZONE, matchLabelKeys=["rev"])]),
        {"a": "ok", "b": UNSCH}, id="match-label-keys-count-only-same-revision"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a", terminating=True), pod("p2", ns="other", labels=WEB, node_name="a"),
         pod("p3", labels=WEB, node_name="b")],
        pod("new", labels=WEB, constraints=[tsc(ZONE)]),
        {"a": "ok", "b": UNSCH}, id="terminating-and-other-namespace-pods-do-not-count"),
    pytest.param(
        [node("a", "z1"), node("b", "z2")],
        [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, when="ScheduleAnyway")]),
        "skip", id="only-soft-constraints-skip-filter"),
    pytest.param(
        [node("a", "z1"), node("b", "z1"), node("c", "z2")],
        [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE), tsc(HOST)]),
        # a: its host already has one (1 + 1 - 0); b: its zone does; c: neither
        {"a": UNSCH, "b": UNSCH, "c": "ok"}, id="two-constraints-both-must-hold"),
]


@pytest.mark.parametrize("nodes,pods,incoming,want", FILTER_CASES)
def test_filter(nodes, pods, incoming, want):
    assert verdicts(run_filter(cluster(nodes, pods), incoming)) == want


def test_pre_filter_extensions_track_removed_and_added_pods():
    infos = cluster([node("a", "z1"), node("b", "z2")],
                    [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="a")])
    incoming = pod("new", labels=WEB, constraints=[tsc(ZONE)])
    pl = PodTopologySpread(None, Handle(infos))
    state = CycleState()
    pl.pre_filter(state, incoming, infos)
    a = infos[0]
    assert pl.filter(state, incoming, a).code == Code.UNSCHEDULABLE
    what_if = state.clone()
    for victim in list(a.pods):
        pl.remove_pod(what_if, incoming, victim, a)
    assert pl.filter(what_if, incoming, a) is None
    # the clone is independent: the real state still sees both pods
    assert pl.filter(state, incoming, a).code == Code.UNSCHEDULABLE
    pl.add_pod(what_if, incoming, PodInfo.of(pod("p9", labels=WEB, node_name="b")), infos[1])
    assert pl.filter(what_if, incoming, a) is None
    assert pl.filter(what_if, incoming, infos[1]).code == Code.UNSCHEDULABLE


def run_score(infos, incoming, handle=None, args=None):
    pl = PodTopologySpread(args, handle or Handle(infos))
    state = CycleState()
    st = pl.pre_score(state, incoming, infos)
    if st is not None:
        return st.code.name
    scores = []
    for ni in infos:
        s, err = pl.score(state, incoming, ni)
        assert err is None
        scores.append(NodeScore(ni.name, s))
    raw = {x.name: x.score for x in scores}
    assert pl.normalize_score(state, incoming, scores) is None
    return raw, {x.name: x.score for x in scores}


RS = ("apps/v1", "ReplicaSet", "web-123")
RS_OBJ = {"metadata": {"name": "web-123", "namespace": "default"},
          "spec": {"selector": {"matchLabels": {"app": "web"}}}}
SVC = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}}}

SCORE_CASES = [
    pytest.param(
        [node("a"), node("b")], [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(HOST, when="ScheduleAnyway")]), None,
        # raw: 2 pods * ln(4) + 0 = 2.77 -> 3; 0 -> 0; inverted over [0, 3]
        ({"a": 3, "b": 0}, {"a": 0, "b": 100}), id="hostname-fewer-pods-scores-higher"),
    pytest.param(
        [node("a", "z1"), node("b", "z1"), node("c", "z2")],
        [pod("p1", labels=WEB, node_name="a"), pod("p2", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, skew=2, when="ScheduleAnyway")]), None,
        # ln(2 zones + 2) = 1.386: z1 = 2 * 1.386 + 1 = 3.77 -> 4; z2 = 0 + 1 = 1
        ({"a": 4, "b": 4, "c": 1}, {"a": 25, "b": 25, "c": 100}), id="zone-counts-whole-domain"),
    pytest.param(
        [node("a", "z1"), node("b")], [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(ZONE, when="ScheduleAnyway")]), None,
        ({"a": 1, "b": 0}, {"a": 100, "b": 0}), id="node-without-key-is-ignored"),
    pytest.param(
        [node("a"), node("b")], [pod("p1", labels=WEB, node_name="a", owner=RS)],
        pod("new", labels=WEB, owner=RS), FakeFactory(replicasets=[RS_OBJ]),
        # system defaults: hostname maxSkew 3 -> a = 1 * ln(4) + 2 = 3.39 -> 3, b = 2; zone is
        # absent on both nodes but system defaults do not require it
        ({"a": 3, "b": 2}, {"a": 66, "b": 100}), id="system-default-spreads-replicaset-over-hosts"),
    pytest.param(
        [node("a"), node("b")], [pod("p1", labels=WEB, node_name="b")],
        pod("new", labels=WEB), FakeFactory(services=[SVC]),
        ({"a": 2, "b": 3}, {"a": 100, "b": 66}), id="system-default-from-service-selector"),
    pytest.param(
        [node("a"), node("b")], [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB), FakeFactory(services=[{**SVC, "metadata": {"name": "web", "namespace": "x"}}]),
        "SKIP", id="no-owner-no-default"),
    pytest.param(
        [node("a"), node("b")], [pod("p1", labels=WEB, node_name="a")],
        pod("new", labels=WEB, constraints=[tsc(HOST)]), None,
        "SKIP", id="hard-constraints-only-skip-scoring"),
]


@pytest.mark.parametrize("nodes,pods,incoming,informers,want", SCORE_CASES)
def test_score(nodes, pods, incoming, informers, want):
    infos = cluster(nodes, pods)
    assert run_score(infos, incoming, Handle(infos, informers)) == want


def test_default_constraints_from_list_args():
    infos = cluster([node("a", "z1"), node("b", "z2")], [pod("p1", labels=WEB, node_name="a", owner=RS)])
    args = {"defaultingType": "List",
            "defaultConstraints": [{"topologyKey": ZONE, "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}
    h = Handle(infos, FakeFactory(replicasets=[RS_OBJ]))
    incoming = pod("new", labels=WEB, owner=RS)
    assert verdicts(run_filter(infos, incoming, args, h)) == {"a": UNSCH, "b": "ok"}
    # "List" without constraints: no defaults at all
    assert run_filter(infos, incoming, {"defaultingType": "List"}, h) == "skip"


def test_hints():
    infos = cluster([node("a", "z1")], [])
    pl = PodTopologySpread(None, Handle(infos))
    incoming = pod("new", labels=WEB, constraints=[tsc(ZONE)])
    assert pl._hint_pod_change(incoming, None, pod("x", labels=WEB)).name == "QUEUE"
    assert pl._hint_pod_change(incoming, None, pod("x", labels={"app": "db"})).name == "QUEUE_SKIP"
    assert pl._hint_node_change(incoming, None, node("n", "z9")).name == "QUEUE"
    assert pl._hint_node_change(incoming, None, node("n")).name == "QUEUE_SKIP"
    assert pl._hint_node_change(incoming, node("n", "z1"), node("n", "z2")).name == "QUEUE"
    assert pl._hint_node_change(incoming, node("n", "z1"), node("n", "z1", extra="x")).name == "QUEUE_SKIP"


SS_OBJ = {"metadata": {"name": "db", "namespace": "default"},
          "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}}}
RC_OBJ = {"metadata": {"name": "legacy", "namespace": "default"}, "spec": {"selector": {"app": "legacy"}}}


@pytest.mark.parametrize("incoming,informers,matches,not_matches", [
    pytest.param(pod("p", labels=WEB, owner=RS), FakeFactory(replicasets=[RS_OBJ]),
                 [WEB], [{"app": "db"}, {}], id="replicaset"),
    pytest.param(pod("p", labels={"app": "db"}, owner=("apps/v1", "StatefulSet", "db")),
                 FakeFactory(statefulsets=[SS_OBJ]), [{"app": "db"}], [WEB], id="statefulset-expressions"),
    pytest.param(pod("p", labels={"app": "legacy"}, owner=("v1", "ReplicationController", "legacy")),
                 FakeFactory(replicationcontrollers=[RC_OBJ]), [{"app": "legacy"}], [WEB], id="replicationcontroller"),
    pytest.param(pod("p", labels={**WEB, "tier": "fe"}, owner=RS),
                 FakeFactory(replicasets=[RS_OBJ],
                             services=[{"metadata": {"name": "fe", "namespace": "default"},
                                        "spec": {"selector": {"tier": "fe"}}}]),
                 [{**WEB, "tier": "fe"}], [WEB, {"tier": "fe"}], id="service-and-owner-are-anded"),
    # an empty selector: no default constraints for this pod
    pytest.param(pod("p", labels=WEB, owner=RS), FakeFactory(), [], [], id="owner-not-in-cache"),
    pytest.param(pod("p", labels=WEB), FakeFactory(services=[{"metadata": {"name": "headless", "namespace": "default"},
                                                               "spec": {}}]), [], [], id="service-without-selector"),
])
def test_default_selector(incoming, informers, matches, not_matches):
    sel = DefaultSelector(Handle([], informers))(incoming)
    assert all(sel.matches(m) for m in matches) and not any(sel.matches(m) for m in not_matches)
    assert sel.empty == (not matches)


def test_per_node_counts_are_remembered_until_the_node_changes(monkeypatch):
    import kubeling.scheduler.plugins.podtopologyspread_scoring as scoring
    infos = cluster([node("a"), node("b")], [pod("p1", labels=WEB, node_name="a")])
    pl = PodTopologySpread(None, Handle(infos))
    incoming = pod("new", labels=WEB, constraints=[tsc(HOST, when="ScheduleAnyway")])
    counted = []
    real = scoring.count_pods_match_selector
    monkeypatch.setattr(scoring, "count_pods_match_selector",
                        lambda pis, sel, ns: counted.append(len(pis)) or real(pis, sel, ns))

    def raw():
        state = CycleState()
        assert pl.pre_score(state, incoming, infos) is None
        return [pl.score(state, incoming, ni)[0] for ni in infos]

    first = raw()
    assert len(counted) == 2
    assert raw() == first and len(counted) == 2           # nothing changed: no recount
    infos[1].add_pod(pod("p2", labels=WEB, node_name="b"))
    assert raw() == [first[0], first[0]] and len(counted) == 3   # only b recounted
