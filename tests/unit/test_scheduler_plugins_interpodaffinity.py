"""InterPodAffinity on NodeInfos: required affinity (with the self-affinity first-pod case),
anti-affinity both ways, namespaces and namespaceSelector, preferred-term scoring with weights
in both directions, and the PreFilterExtensions preemption uses."""

import pytest

from kubeling.scheduler.framework.interface import Code, CycleState, NodeScore
from kubeling.scheduler.framework.types import NodeInfo, PodInfo
from kubeling.scheduler.plugins.interpodaffinity import InterPodAffinity
from kubeling.scheduler.snapshot import Snapshot

HOST, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"
AFF = (Code.UNSCHEDULABLE_AND_UNRESOLVABLE.name, "node(s) didn't match pod affinity rules")
ANTI = (Code.UNSCHEDULABLE.name, "node(s) didn't match pod anti-affinity rules")
EXISTING = (Code.UNSCHEDULABLE.name, "node(s) didn't satisfy existing pods anti-affinity rules")


def node(name, zone=None):
    labels = {HOST: name}
    if zone:
        labels[ZONE] = zone
    return {"metadata": {"name": name, "labels": labels}}


def term(key, sel, **extra):
    return {"topologyKey": key, "labelSelector": {"matchLabels": sel}, **extra}


def pod(name, labels=None, node_name="", ns="default", aff=None, anti=None, pref_aff=None, pref_anti=None):
    affinity = {}
    if aff or pref_aff:
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": aff or [],
                                   "preferredDuringSchedulingIgnoredDuringExecution": pref_aff or []}
    if anti or pref_anti:
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": anti or [],
                                       "preferredDuringSchedulingIgnoredDuringExecution": pref_anti or []}
    return {"metadata": {"name": name, "namespace": ns, "uid": f"{ns}-{name}", "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": node_name,
                     **({"affinity": affinity} if affinity else {})}}


def cluster(nodes, pods):
    infos = {n["metadata"]["name"]: NodeInfo(n) for n in nodes}
    for p in pods:
        infos[p["spec"]["nodeName"]].add_pod(p)
    return list(infos.values())


class Namespaces:
    def __init__(self, **labels):
        self.labels = labels

    def get(self, name):
        return {"metadata": {"name": name, "labels": self.labels[name]}} if name in self.labels else None


class Handle:
    def __init__(self, infos, namespaces=None):
        self.snapshot = Snapshot(infos)
        self.namespaces = namespaces

    def snapshot_shared_lister(self):
        return self.snapshot

    def namespace_lister(self):
        return self.namespaces


def run_filter(infos, incoming, namespaces=None):
    pl = InterPodAffinity(None, Handle(infos, namespaces))
    state = CycleState()
    _, st = pl.pre_filter(state, incoming, infos)
    if st is not None and st.is_skip():
        return "skip"
    return {ni.name: ("ok" if (s := pl.filter(state, incoming, ni)) is None else (s.code.name, s.message()))
            for ni in infos}


DB, WEB = {"app": "db"}, {"app": "web"}
THREE = [node("a", "z1"), node("b", "z1"), node("c", "z2")]

FILTER_CASES = [
    pytest.param(THREE, [pod("db", DB, "a")], pod("new", aff=[term(ZONE, DB)]),
                 {"a": "ok", "b": "ok", "c": AFF}, id="affinity-same-zone"),
    pytest.param(THREE + [node("d")], [pod("db", DB, "a")], pod("new", aff=[term(ZONE, DB)]),
                 {"a": "ok", "b": "ok", "c": AFF, "d": AFF}, id="affinity-node-without-key"),
    pytest.param(THREE, [], pod("new", DB, aff=[term(ZONE, DB)]),
                 {"a": "ok", "b": "ok", "c": "ok"}, id="self-affine-first-pod-goes-anywhere"),
    pytest.param(THREE, [], pod("new", WEB, aff=[term(ZONE, DB)]),
                 {"a": AFF, "b": AFF, "c": AFF}, id="affinity-nothing-matches"),
    pytest.param(THREE, [pod("db", DB, "a"), pod("cache", {"app": "cache"}, "c")],
                 pod("new", aff=[term(ZONE, DB), term(ZONE, {"app": "cache"})]),
                 {"a": AFF, "b": AFF, "c": AFF}, id="affinity-all-terms-by-one-pod"),
    pytest.param(THREE, [pod("web1", WEB, "a")], pod("new", WEB, anti=[term(HOST, WEB)]),
                 {"a": ANTI, "b": "ok", "c": "ok"}, id="anti-affinity-per-host"),
    pytest.param(THREE, [pod("web1", WEB, "a")], pod("new", WEB, anti=[term(ZONE, WEB)]),
                 {"a": ANTI, "b": ANTI, "c": "ok"}, id="anti-affinity-per-zone"),
    pytest.param(THREE, [pod("lonely", {"app": "lonely"}, "a", anti=[term(ZONE, WEB)])], pod("new", WEB),
                 {"a": EXISTING, "b": EXISTING, "c": "ok"}, id="existing-pods-anti-affinity"),
    pytest.param(THREE, [pod("db", DB, "a", ns="other")], pod("new", aff=[term(ZONE, DB)]),
                 {"a": AFF, "b": AFF, "c": AFF}, id="affinity-default-namespace-only"),
    pytest.param(THREE, [pod("db", DB, "a", ns="other")], pod("new", aff=[term(ZONE, DB, namespaces=["other"])]),
                 {"a": "ok", "b": "ok", "c": AFF}, id="affinity-named-namespace"),
    pytest.param(THREE, [pod("db", DB, "c", ns="team-a")],
                 pod("new", aff=[term(ZONE, DB, namespaceSelector={"matchLabels": {"team": "a"}})]),
                 {"a": AFF, "b": AFF, "c": "ok"}, id="affinity-namespace-selector"),
    pytest.param(THREE, [pod("db", DB, "c", ns="team-b")],
                 pod("new", aff=[term(ZONE, DB, namespaceSelector={"matchLabels": {"team": "a"}})]),
                 {"a": AFF, "b": AFF, "c": AFF}, id="affinity-namespace-selector-no-match"),
    pytest.param(THREE, [pod("db", DB, "b", ns="team-b")],
                 pod("new", aff=[term(ZONE, DB, namespaceSelector={})]),
                 {"a": "ok", "b": "ok", "c": AFF}, id="affinity-empty-namespace-selector-is-all"),
    pytest.param(THREE, [pod("web1", WEB, "c", ns="team-a", anti=[term(HOST, WEB, namespaceSelector={})])],
                 pod("new", WEB),
                 {"a": "ok", "b": "ok", "c": EXISTING}, id="existing-anti-affinity-namespace-selector"),
    pytest.param(THREE, [pod("web1", WEB, "a")], pod("new", WEB), "skip", id="nothing-to-check-skips"),
]


@pytest.mark.parametrize("nodes,pods,incoming,want", FILTER_CASES)
def test_filter(nodes, pods, incoming, want):
    ns = Namespaces(**{"team-a": {"team": "a"}, "team-b": {"team": "b"}, "default": {}, "other": {}})
    assert run_filter(cluster(nodes, pods), incoming, ns) == want


def test_pre_filter_extensions_remove_and_add():
    infos = cluster(THREE, [pod("web1", WEB, "a"), pod("guard", {"app": "g"}, "c", anti=[term(HOST, WEB)])])
    incoming = pod("new", WEB, anti=[term(HOST, WEB)])
    pl = InterPodAffinity(None, Handle(infos))
    state = CycleState()
    pl.pre_filter(state, incoming, infos)
    a, b, c = infos
    assert pl.filter(state, incoming, a).message() == ANTI[1]
    assert pl.filter(state, incoming, c).message() == EXISTING[1]
    what_if = state.clone()
    pl.remove_pod(what_if, incoming, a.pods[0], a)
    pl.remove_pod(what_if, incoming, c.pods[0], c)
    assert pl.filter(what_if, incoming, a) is None
    assert pl.filter(what_if, incoming, c) is None
    assert pl.filter(state, incoming, a) is not None       # the original is untouched
    pl.add_pod(what_if, incoming, PodInfo.of(pod("web2", WEB, "b")), b)
    assert pl.filter(what_if, incoming, b).message() == ANTI[1]


def test_self_affinity_case_ends_when_a_match_is_added():
    infos = cluster(THREE, [])
    incoming = pod("new", DB, aff=[term(ZONE, DB)])
    pl = InterPodAffinity(None, Handle(infos))
    state = CycleState()
    pl.pre_filter(state, incoming, infos)
    pl.add_pod(state, incoming, PodInfo.of(pod("db", DB, "c")), infos[2])
    assert [pl.filter(state, incoming, ni) is None for ni in infos] == [False, False, True]


def run_score(infos, incoming, args=None):
    pl = InterPodAffinity(args, Handle(infos))
    state = CycleState()
    st = pl.pre_score(state, incoming, infos)
    if st is not None:
        return st.code.name
    scores = [NodeScore(ni.name, pl.score(state, incoming, ni)[0]) for ni in infos]
    raw = {x.name: x.score for x in scores}
    pl.normalize_score(state, incoming, scores)
    return raw, {x.name: x.score for x in scores}


def weighted(w, key, sel):
    return {"weight": w, "podAffinityTerm": term(key, sel)}


SCORE_CASES = [
    pytest.param([pod("db", DB, "a")], pod("new", pref_aff=[weighted(10, ZONE, DB)]), None,
                 ({"a": 10, "b": 10, "c": 0}, {"a": 100, "b": 100, "c": 0}), id="preferred-affinity"),
    pytest.param([pod("db", DB, "a")], pod("new", pref_anti=[weighted(10, ZONE, DB)]), None,
                 ({"a": -10, "b": -10, "c": 0}, {"a": 0, "b": 0, "c": 100}), id="preferred-anti-affinity"),
    pytest.param([pod("db", DB, "a"), pod("web", WEB, "c")],
                 pod("new", pref_aff=[weighted(10, ZONE, DB), weighted(30, HOST, WEB)]), None,
                 ({"a": 10, "b": 10, "c": 30}, {"a": 0, "b": 0, "c": 100}), id="weights-add-up"),
    pytest.param([pod("sidecar", {"app": "s"}, "c", aff=[term(HOST, WEB)])], pod("new", WEB), None,
                 ({"a": 0, "b": 0, "c": 1}, {"a": 0, "b": 0, "c": 100}), id="existing-required-affinity-hard-weight"),
    pytest.param([pod("sidecar", {"app": "s"}, "c", aff=[term(HOST, WEB)])], pod("new", WEB),
                 {"hardPodAffinityWeight": 0}, "SKIP", id="hard-weight-zero"),
    pytest.param([pod("x", {"app": "x"}, "b", pref_anti=[weighted(5, ZONE, WEB)])], pod("new", WEB), None,
                 ({"a": -5, "b": -5, "c": 0}, {"a": 0, "b": 0, "c": 100}), id="existing-preferred-anti-affinity"),
    pytest.param([pod("x", {"app": "x"}, "b", pref_anti=[weighted(5, ZONE, WEB)])], pod("new", WEB),
                 {"ignorePreferredTermsOfExistingPods": True}, "SKIP", id="ignore-existing-preferred"),
    pytest.param([pod("db", DB, "a")], pod("new"), None, "SKIP", id="no-terms-anywhere"),
]


@pytest.mark.parametrize("pods,incoming,args,want", SCORE_CASES)
def test_score(pods, incoming, args, want):
    assert run_score(cluster(THREE, pods), incoming, args) == want


def test_hard_pod_affinity_weight_range():
    with pytest.raises(ValueError, match="hardPodAffinityWeight"):
        InterPodAffinity({"hardPodAffinityWeight": 101}, Handle([]))


def test_hints():
    pl = InterPodAffinity(None, Handle([]))
    wants_db = pod("new", aff=[term(ZONE, DB)])
    assert pl._hint_pod_change(wants_db, None, pod("db", DB)).name == "QUEUE"
    assert pl._hint_pod_change(wants_db, None, pod("web", WEB)).name == "QUEUE_SKIP"
    avoids_web = pod("new", WEB, anti=[term(ZONE, WEB)])
    assert pl._hint_pod_change(avoids_web, pod("web", WEB), None).name == "QUEUE"
    assert pl._hint_pod_change(avoids_web, pod("db", DB, anti=[term(HOST, WEB)]), None).name == "QUEUE"
    assert pl._hint_pod_change(avoids_web, pod("db", DB), None).name == "QUEUE_SKIP"
