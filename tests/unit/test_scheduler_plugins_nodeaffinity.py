import pytest
from scheduler_plugins_testing import (
    make_node,
    make_pod,
    node_info,
    reasons,
    run_filter,
)

from kubeling.scheduler.framework.interface import (
    Code,
    CycleState,
    NodeScore,
    QueueingHint,
)
from kubeling.scheduler.plugins.nodeaffinity import NodeAffinity

ERR = ["node(s) didn't match Pod's node affinity/selector"]


def req(*terms):
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key, op, *values):
    return {"matchExpressions": [{"key": key, "operator": op, **({"values": list(values)} if values else {})}]}


def names(*values, op="In"):
    return {"matchFields": [{"key": "metadata.name", "operator": op, "values": list(values)}]}


@pytest.mark.parametrize("spec,labels,want", [
    pytest.param({"nodeSelector": {"disk": "ssd"}}, {"disk": "ssd"}, [], id="selector-match"),
    pytest.param({"nodeSelector": {"disk": "ssd"}}, {"disk": "hdd"}, ERR, id="selector-mismatch"),
    pytest.param({"affinity": req(expr("zone", "In", "a", "b"))}, {"zone": "b"}, [], id="in"),
    pytest.param({"affinity": req(expr("zone", "NotIn", "a"))}, {}, [], id="notin-missing-label"),
    pytest.param({"affinity": req(expr("zone", "Exists"))}, {}, ERR, id="exists"),
    pytest.param({"affinity": req(expr("zone", "DoesNotExist"))}, {}, [], id="does-not-exist"),
    pytest.param({"affinity": req(expr("cores", "Gt", "4"))}, {"cores": "8"}, [], id="gt"),
    pytest.param({"affinity": req(expr("cores", "Lt", "4"))}, {"cores": "8"}, ERR, id="lt"),
    pytest.param({"affinity": req(expr("cores", "Gt", "4"))}, {"cores": "many"}, ERR, id="gt-not-a-number"),
    pytest.param({"affinity": req(expr("zone", "In", "a"), expr("disk", "In", "ssd"))}, {"disk": "ssd"}, [],
                 id="terms-ored"),
    pytest.param({"affinity": req({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                                         {"key": "disk", "operator": "In", "values": ["ssd"]}]})},
                 {"disk": "ssd"}, ERR, id="expressions-anded"),
    pytest.param({"affinity": req({})}, {}, ERR, id="empty-term-matches-nothing"),
    pytest.param({"affinity": req(names("n1"))}, {}, [], id="match-fields-name"),
    pytest.param({"affinity": req(names("n2", op="NotIn"))}, {}, [], id="match-fields-notin"),
    pytest.param({"nodeSelector": {"disk": "ssd"}, "affinity": req(expr("zone", "In", "a"))},
                 {"zone": "a"}, ERR, id="selector-and-affinity-both-needed"),
])
def test_filter(spec, labels, want):
    st = run_filter(NodeAffinity(), make_pod(**spec), node_info(make_node("n1", labels=labels)))
    assert reasons(st) == want
    if want:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize("spec,want_names,want_status", [
    pytest.param({}, None, "skip", id="no-constraints-skip"),
    pytest.param({"nodeSelector": {"a": "b"}}, None, None, id="selector-only-all-nodes"),
    pytest.param({"affinity": req(names("n1"))}, {"n1"}, None, id="daemonset-pod-one-node"),
    pytest.param({"affinity": req(names("n1", "n2"), names("n3"))}, {"n1", "n2", "n3"}, None, id="union-of-terms"),
    pytest.param({"affinity": req({"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]},
        {"key": "metadata.name", "operator": "In", "values": ["n2", "n3"]}]})}, {"n2"}, None,
        id="intersection-within-term"),
    pytest.param({"affinity": req(names("n1"), expr("zone", "In", "a"))}, None, None,
                 id="a-term-without-names-means-all"),
    pytest.param({"affinity": req({"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["n1"]},
        {"key": "metadata.name", "operator": "In", "values": ["n2"]}]})}, None, "pod affinity terms conflict",
        id="conflict"),
])
def test_pre_filter_narrowing(spec, want_names, want_status):
    result, st = NodeAffinity().pre_filter(CycleState(), make_pod(**spec), [])
    if want_status == "skip":
        assert st.is_skip()
    elif want_status:
        assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and st.reasons == [want_status]
    else:
        assert st is None
        assert (result.node_names if result else None) == want_names


def test_added_affinity():
    pl = NodeAffinity({"addedAffinity": req(expr("pool", "In", "batch"))["nodeAffinity"]})
    assert reasons(run_filter(pl, make_pod(), node_info(make_node(labels={"pool": "web"})))) == [
        "node(s) didn't match scheduler-enforced node affinity"]
    assert run_filter(pl, make_pod(), node_info(make_node(labels={"pool": "batch"}))) is None
    # narrowing by names still applies: Filter checks the enforced terms on the nodes left
    result, st = pl.pre_filter(CycleState(), make_pod(affinity=req(names("n1"))), [])
    assert result.node_names == {"n1"} and st is None


def preferred(*terms):
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": w, "preference": t} for w, t in terms]}}


def test_score_and_normalize():
    pl = NodeAffinity()
    pod = make_pod(affinity=preferred((5, expr("zone", "In", "a")), (3, expr("disk", "In", "ssd")),
                                      (0, expr("any", "Exists"))))
    nodes = [node_info(make_node("both", labels={"zone": "a", "disk": "ssd", "any": "1"})),
             node_info(make_node("zone", labels={"zone": "a"})),
             node_info(make_node("none"))]
    state = CycleState()
    assert pl.pre_score(state, pod, nodes) is None
    scores = [NodeScore(n.name, pl.score(state, pod, n)[0]) for n in nodes]
    assert [s.score for s in scores] == [8, 5, 0]
    pl.score_extensions().normalize_score(state, pod, scores)
    assert [s.score for s in scores] == [100, 62, 0]


def test_pre_score_skips_without_preferred_terms():
    assert NodeAffinity().pre_score(CycleState(), make_pod(), [node_info(make_node())]).is_skip()


@pytest.mark.parametrize("old,new,want", [
    pytest.param(None, make_node(labels={"zone": "a"}), QueueingHint.QUEUE, id="matching-node-added"),
    pytest.param(None, make_node(labels={"zone": "b"}), QueueingHint.QUEUE_SKIP, id="other-node-added"),
    pytest.param(make_node(), make_node(labels={"zone": "a"}), QueueingHint.QUEUE, id="label-now-matches"),
    pytest.param(make_node(labels={"zone": "a"}), make_node(labels={"zone": "a", "x": "1"}),
                 QueueingHint.QUEUE_SKIP, id="already-matched"),
])
def test_node_hint(old, new, want):
    (ev,) = NodeAffinity().events_to_register()
    assert ev.hint(make_pod(affinity=req(expr("zone", "In", "a"))), old, new) is want
