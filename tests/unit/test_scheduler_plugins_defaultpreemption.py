"""DefaultPreemption over a real `Framework` (NodeResourcesFit, InterPodAffinity,
PodTopologySpread, DefaultPreemption) built on NodeInfos, with a FakeClient for its API calls:
eligibility, victim selection with reprieve and PDBs, upstream's node-picking order, the
messages, and what it writes (nominatedNodeName, DisruptionTarget, delete, Preempted event)."""

import asyncio

import pytest
from scheduler_plugins_testing import container, make_node

from kubeling.client.fake import FakeClient
from kubeling.scheduler.framework.interface import Code, CycleState, PluginSet, Status
from kubeling.scheduler.framework.runtime import Framework
from kubeling.scheduler.framework.types import NodeInfo, PodInfo
from kubeling.scheduler.plugins.defaultbinder import DefaultBinder
from kubeling.scheduler.plugins.defaultpreemption import (
    DefaultPreemption,
    pod_terminating_by_preemption,
)
from kubeling.scheduler.plugins.interpodaffinity import InterPodAffinity
from kubeling.scheduler.plugins.noderesources import Fit
from kubeling.scheduler.plugins.podtopologyspread import PodTopologySpread
from kubeling.scheduler.preemption import (
    Candidate,
    filter_pods_with_pdb_violation,
    pick_one_node_for_preemption,
)
from kubeling.scheduler.snapshot import Snapshot

REGISTRY = {c.NAME: c for c in (Fit, InterPodAffinity, PodTopologySpread, DefaultPreemption, DefaultBinder)}
PLUGINS = {
    "pre_filter": PluginSet(["NodeResourcesFit", "InterPodAffinity", "PodTopologySpread"]),
    "filter": PluginSet(["NodeResourcesFit", "InterPodAffinity", "PodTopologySpread"]),
    "post_filter": PluginSet(["DefaultPreemption"]),
    "bind": PluginSet(["DefaultBinder"]),
}


def pod(name, prio=0, cpu="500m", node="", labels=None, start=None, uid=None, **spec):
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "labels": labels or {}},
         "spec": {"containers": [container(requests={"cpu": cpu})], "priority": prio, **spec},
         "status": {}}
    if node:
        p["spec"]["nodeName"] = node
    if start:
        p["status"]["startTime"] = start
    return p


class Recorder:
    def __init__(self):
        self.events = []

    def event(self, obj, type, reason, message):
        self.events.append((obj["metadata"]["name"], type, reason, message))


class PodLister:
    def __init__(self, pods):
        self.pods = {f"default/{p['metadata']['name']}": p for p in pods}

    def get(self, key):
        return self.pods.get(key)


class Nominator:
    def __init__(self, nominated):
        self.nominated = nominated      # node name -> [pods]

    def nominated_pods_for_node(self, node_name):
        return [PodInfo.of(p) for p in self.nominated.get(node_name, [])]

    def has_nominated_pods(self):
        return bool(self.nominated)


class Informer:
    def __init__(self, objs):
        self.objs = objs

    def list(self):
        return self.objs

    def get(self, key):
        return None


class Informers:
    """PDBs for DefaultPreemption; nothing else (PodTopologySpread's owner listers stay empty)."""

    def __init__(self, pdbs):
        self.pdbs = pdbs

    def informer_for(self, group, version, resource):
        return Informer(self.pdbs if (group, resource) == ("policy", "poddisruptionbudgets") else [])


def setup(nodes, pods, pdbs=(), nominated=None, incoming=None):
    infos = {n["metadata"]["name"]: NodeInfo(n) for n in nodes}
    for p in pods:
        infos[p["spec"]["nodeName"]].add_pod(p)
    client = FakeClient({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    client.seed(*pods, *([incoming] if incoming else []), *[p for ps in (nominated or {}).values() for p in ps])
    fwk = Framework(REGISTRY, PLUGINS, client=client, recorder=Recorder(), snapshot=Snapshot(list(infos.values())),
                        pod_lister=PodLister(pods), nominator=Nominator(nominated or {}),
                        informers=Informers(list(pdbs)), plugin_config={})
    return fwk, client


def attempt(fwk, incoming):
    """One failed cycle's Filter statuses, then PostFilter; returns (result, status, plugin)."""
    state = CycleState()
    nodes = fwk.snapshot.list()
    _, st, _ = fwk.run_pre_filter_plugins(state, incoming, nodes)
    assert st is None
    statuses = {}
    for ni in nodes:
        s = fwk.run_filter_plugins(state, incoming, ni)
        assert s is not None, f"{incoming['metadata']['name']} fits {ni.name}: nothing to preempt for"
        statuses[ni.name] = s
    pl = fwk.plugins["DefaultPreemption"]

    async def go():
        r, s = fwk.run_post_filter_plugins(state, incoming, statuses)
        await pl.evaluator.wait_idle()
        return r, s

    return asyncio.run(go())


N1 = make_node("n1", cpu="2")
N2 = make_node("n2", cpu="2")


def test_preempts_the_low_priority_pod_and_writes_what_upstream_writes():
    low = pod("low", prio=1, cpu="1500m", node="n1")
    high = pod("high", prio=100, cpu="1500m", schedulerName="default-scheduler")
    fwk, client = setup([N1], [low], incoming=high)
    r, s = attempt(fwk, high)
    assert s.code == Code.SUCCESS and r.nominated_node_name == "n1"
    assert client.object("", "v1", "pods", "low", "default") is None
    assert client.object("", "v1", "pods", "high", "default")["status"]["nominatedNodeName"] == "n1"
    cond = [a.obj["status"]["conditions"][0] for a in client.filter_actions("patch", "pods")
            if a.name == "low"]
    assert cond and {k: cond[0][k] for k in ("type", "status", "reason", "message")} == {
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": "default-scheduler: preempting to accommodate a higher priority pod"}
    # the condition is written before the delete
    verbs = [(a.verb, a.name) for a in client.actions if a.name == "low"]
    assert verbs == [("patch", "low"), ("delete", "low")]
    assert fwk.recorder.events == [("low", "Normal", "Preempted", "Preempted by pod uid-high on node n1")]


@pytest.mark.parametrize("existing,incoming,want_victims", [
    pytest.param([pod("a", 1, "500m", "n1"), pod("b", 2, "500m", "n1"), pod("c", 3, "500m", "n1")],
                 pod("high", 10, "1000m"), ["a"], id="reprieve-most-important-first"),
    pytest.param([pod("a", 1, "500m", "n1", start="2024-01-01T00:00:02Z"),
                  pod("b", 1, "500m", "n1", start="2024-01-01T00:00:01Z"), pod("c", 1, "1000m", "n1")],
                 pod("high", 10, "1000m"), ["c"], id="reprieve-keeps-what-still-fits"),
    pytest.param([pod("a", 1, "1000m", "n1", start="2024-01-01T00:00:02Z"),
                  pod("b", 1, "1000m", "n1", start="2024-01-01T00:00:01Z")],
                 pod("high", 10, "1000m"), ["a"], id="equal-priority-later-start-goes"),
    pytest.param([pod("a", 50, "1000m", "n1"), pod("b", 1, "1000m", "n1")],
                 pod("high", 10, "1000m"), ["b"], id="higher-priority-pods-are-not-victims"),
])
def test_select_victims(existing, incoming, want_victims):
    fwk, _ = setup([N1], existing, incoming=incoming)
    ev = fwk.plugins["DefaultPreemption"].evaluator
    state = CycleState()
    fwk.run_pre_filter_plugins(state, incoming, fwk.snapshot.list())
    victims, violations, status = ev.select_victims_on_node(state, incoming, fwk.snapshot.get("n1").snapshot(), [])
    assert status is None and violations == 0
    assert [v.pod["metadata"]["name"] for v in victims] == want_victims


def test_pdb_violating_victims_are_reprieved_first():
    foo = {"app": "foo"}
    existing = [pod("guarded", 1, "1000m", "n1", labels=foo), pod("free", 1, "1000m", "n1")]
    pdb = {"metadata": {"name": "pdb", "namespace": "default"},
           "spec": {"selector": {"matchLabels": foo}}, "status": {"disruptionsAllowed": 0}}
    incoming = pod("high", 10, "1000m")
    fwk, _ = setup([N1], existing, pdbs=[pdb], incoming=incoming)
    state = CycleState()
    fwk.run_pre_filter_plugins(state, incoming, fwk.snapshot.list())
    victims, violations, status = fwk.plugins["DefaultPreemption"].evaluator.select_victims_on_node(
        state, incoming, fwk.snapshot.get("n1").snapshot(), [pdb])
    assert ([v.pod["metadata"]["name"] for v in victims], violations, status) == (["free"], 0, None)


def test_filter_pods_with_pdb_violation():
    foo = {"app": "foo"}
    pods = [PodInfo.of(pod(n, labels=foo)) for n in ("a", "b", "c")] + [PodInfo.of(pod("d"))]
    pdbs = [{"metadata": {"namespace": "default"}, "spec": {"selector": {"matchLabels": foo}},
             "status": {"disruptionsAllowed": 1, "disruptedPods": {"c": "2024-01-01T00:00:00Z"}}},
            {"metadata": {"namespace": "default"}, "spec": {"selector": {}}, "status": {"disruptionsAllowed": 0}},
            {"metadata": {"namespace": "other"}, "spec": {"selector": {"matchLabels": foo}},
             "status": {"disruptionsAllowed": 0}}]
    violating, ok = filter_pods_with_pdb_violation(pods, pdbs)
    # a uses the one allowed disruption, b exceeds it, c is already disrupted, d has no labels;
    # the empty selector and the other namespace's PDB match nothing here
    assert [p.pod["metadata"]["name"] for p in violating] == ["b"]
    assert [p.pod["metadata"]["name"] for p in ok] == ["a", "c", "d"]


def cand(name, prios, violations=0, starts=None):
    victims = [PodInfo.of(pod(f"{name}-{i}", p, start=(starts or {}).get(i))) for i, p in enumerate(prios)]
    return Candidate(name, victims, violations)


@pytest.mark.parametrize("candidates,want", [
    pytest.param([cand("a", [1], 1), cand("b", [5, 5])], "b", id="fewest-pdb-violations"),
    pytest.param([cand("a", [5]), cand("b", [3, 3])], "b", id="lowest-highest-priority"),
    pytest.param([cand("a", [5, 4]), cand("b", [5, 1])], "b", id="smallest-priority-sum"),
    pytest.param([cand("a", [5, -10, -10]), cand("b", [5, -3])], "b", id="sum-counts-victims-as-positive"),
    pytest.param([cand("a", [5, 1, 1]), cand("b", [5, 1, 1])], "a", id="all-equal-first"),
    pytest.param([cand("a", [5], starts={0: "2024-01-01T00:00:05Z"}),
                  cand("b", [5], starts={0: "2024-01-01T00:00:09Z"})], "b", id="latest-start-time"),
])
def test_pick_one_node(candidates, want):
    assert pick_one_node_for_preemption(candidates).name == want


@pytest.mark.parametrize("nodes,existing,incoming,want_msg", [
    pytest.param([N1], [pod("low", 1, "1500m", "n1")], pod("high", 100, "1500m", preemptionPolicy="Never"),
                 "preemption: not eligible due to preemptionPolicy=Never.", id="never"),
    pytest.param([N1], [pod("peer", 100, "1500m", "n1")], pod("high", 100, "1500m"),
                 "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
                 id="no-lower-priority-pods"),
    pytest.param([N1, N2], [pod("low", 1, "500m", "n1"), pod("peer", 100, "1500m", "n2")], pod("high", 100, "3"),
                 "preemption: 0/2 nodes are available: 1 Insufficient cpu, "
                 "1 No preemption victims found for incoming pod.", id="too-big-even-when-empty"),
    pytest.param([N1], [pod("low", 1, "500m", "n1")],
                 pod("high", 100, "100m", affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                     {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "db"}}}]}}),
                 "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                 id="unresolvable-nodes-not-tried"),
])
def test_no_preemption_messages(nodes, existing, incoming, want_msg):
    fwk, client = setup(nodes, existing, incoming=incoming)
    r, s = attempt(fwk, incoming)
    assert (s.code, s.message()) == (Code.UNSCHEDULABLE, want_msg)
    assert r is None or not r.nominated_node_name
    assert not client.filter_actions("delete")


def test_terminating_victim_on_nominated_node_blocks_a_second_preemption():
    victim = pod("low", 1, "1500m", "n1")
    victim["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    victim["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                       "reason": "PreemptionByScheduler"}]
    assert pod_terminating_by_preemption(victim)
    high = pod("high", 100, "1500m")
    high["status"]["nominatedNodeName"] = "n1"
    fwk, client = setup([N1], [victim], incoming=high)
    r, s = attempt(fwk, high)
    assert not client.filter_actions("delete")
    assert (r, s.message()) == (None, "preemption: not eligible due to a terminating pod on the nominated node.")
    pl = fwk.plugins["DefaultPreemption"]
    # ...unless the nominated node itself became unresolvable
    ok, _ = pl.pod_eligible_to_preempt_others(high, Status.unresolvable("node(s) didn't match Pod's node affinity"))
    assert ok


def test_anti_affinity_victim_through_pre_filter_extensions():
    low = pod("low", 1, "100m", "n1", labels={"app": "noisy"})
    high = pod("high", 100, "100m", affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "noisy"}}}]}})
    node = make_node("n1", cpu="2", labels={"kubernetes.io/hostname": "n1"})
    fwk, client = setup([node], [low, pod("bystander", 1, "100m", "n1")], incoming=high)
    r, s = attempt(fwk, high)
    assert (s.code, r.nominated_node_name) == (Code.SUCCESS, "n1")
    assert [a.name for a in client.filter_actions("delete")] == ["low"]


def test_lower_priority_nominated_pods_lose_their_nomination():
    low = pod("low", 1, "1500m", "n1")
    waiting = pod("waiting", 5, "100m")
    waiting["status"]["nominatedNodeName"] = "n1"
    high = pod("high", 100, "1500m")
    fwk, client = setup([N1], [low], nominated={"n1": [waiting]}, incoming=high)
    r, s = attempt(fwk, high)
    assert (s.code, r.nominated_node_name) == (Code.SUCCESS, "n1")
    assert client.object("", "v1", "pods", "waiting", "default")["status"].get("nominatedNodeName") is None


def test_a_running_preemption_is_not_repeated():
    low = pod("low", 1, "1500m", "n1")
    high = pod("high", 100, "1500m")
    fwk, client = setup([N1], [low], incoming=high)
    pl = fwk.plugins["DefaultPreemption"]
    state = CycleState()
    fwk.run_pre_filter_plugins(state, high, fwk.snapshot.list())
    statuses = {"n1": fwk.run_filter_plugins(state, high, fwk.snapshot.get("n1"))}

    async def go():
        first = pl.post_filter(state, high, statuses)
        second = pl.post_filter(state, high, statuses)      # before the first one's API calls ran
        await pl.evaluator.wait_idle()
        return first, second

    (r1, s1), (r2, s2) = asyncio.run(go())
    assert (s1.code, r1.nominated_node_name) == (Code.SUCCESS, "n1")
    assert (r2, s2.message()) == (None, "preemption: waiting for the preemption for this pod to be finished")
    assert len(client.filter_actions("delete")) == 1


@pytest.mark.parametrize("args,err", [
    pytest.param({"minCandidateNodesPercentage": 101}, "minCandidateNodesPercentage", id="pct"),
    pytest.param({"minCandidateNodesAbsolute": -1}, "minCandidateNodesAbsolute", id="abs"),
    pytest.param({"minCandidateNodesPercentage": 0, "minCandidateNodesAbsolute": 0}, "both be zero", id="zero"),
])
def test_args_validation(args, err):
    with pytest.raises(ValueError, match=err):
        DefaultPreemption(args, None)


def test_num_candidates():
    pl = DefaultPreemption({"minCandidateNodesPercentage": 10, "minCandidateNodesAbsolute": 100}, None)
    assert [pl.evaluator.num_candidates(n) for n in (3, 100, 1000, 5000)] == [3, 100, 100, 500]


def test_nomination_is_cleared_when_preemption_cannot_help_anywhere():
    high = pod("high", 100, "100m", nodeSelector={"disk": "ssd"})
    high["status"]["nominatedNodeName"] = "n1"
    fwk, client = setup([N1], [pod("low", 1, "1500m", "n1")], incoming=high)
    pl = fwk.plugins["DefaultPreemption"]
    statuses = {"n1": Status.unresolvable("node(s) didn't match Pod's node affinity/selector")}

    async def go():
        out = pl.post_filter(CycleState(), high, statuses)
        await pl.evaluator.wait_idle()
        return out

    r, s = asyncio.run(go())
    assert (r.nominated_node_name, s.code) == ("", Code.UNSCHEDULABLE)
    assert s.message() == "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    assert client.object("", "v1", "pods", "high", "default")["status"].get("nominatedNodeName") is None
    assert not client.filter_actions("delete")


def test_pdbs_come_from_the_informer_and_steer_the_node_choice():
    foo = {"app": "foo"}
    pdb = {"metadata": {"name": "pdb", "namespace": "default"},
           "spec": {"selector": {"matchLabels": foo}}, "status": {"disruptionsAllowed": 0}}
    # n1's victim is guarded and has the lower priority: without the PDB n1 would win
    existing = [pod("guarded", 1, "1500m", "n1", labels=foo), pod("free", 2, "1500m", "n2")]
    high = pod("high", 100, "1500m")
    fwk, client = setup([N1, N2], existing, pdbs=[pdb], incoming=high)
    r, s = attempt(fwk, high)
    assert (s.code, r.nominated_node_name) == (Code.SUCCESS, "n2")
    assert [a.name for a in client.filter_actions("delete")] == ["free"]
    fwk, client = setup([N1, N2], existing, incoming=high)
    r, _ = attempt(fwk, high)
    assert r.nominated_node_name == "n1"
