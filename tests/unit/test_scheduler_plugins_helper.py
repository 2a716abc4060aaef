import pytest

from kubeling.scheduler.framework.interface import NodeScore
from kubeling.scheduler.plugins.helper import (
    default_normalize_score,
    find_matching_untolerated_taint,
    match_node_selector_terms,
    pod_matches_node_selector_and_affinity_terms,
    tolerations_tolerate_taint,
)

NODE = {"metadata": {"name": "n1", "labels": {"zone": "a"}}}


@pytest.mark.parametrize("tolerations,taint,want", [
    pytest.param([], {"key": "k", "effect": "NoSchedule"}, False, id="none"),
    pytest.param([{"key": "k", "operator": "Exists"}], {"key": "k", "value": "v", "effect": "NoExecute"}, True,
                 id="exists-any-effect"),
    pytest.param([{"key": "k", "value": "v"}], {"key": "k", "value": "v", "effect": "NoSchedule"}, True,
                 id="default-operator-equal"),
    pytest.param([{"key": "k", "operator": "Bogus"}], {"key": "k", "effect": "NoSchedule"}, False,
                 id="unknown-operator"),
    pytest.param([{"operator": "Exists", "effect": "NoSchedule"}], {"key": "k", "effect": "NoExecute"}, False,
                 id="effect-must-match"),
])
def test_tolerations_tolerate_taint(tolerations, taint, want):
    assert tolerations_tolerate_taint(tolerations, taint) is want


def test_find_matching_untolerated_taint_respects_filter():
    taints = [{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "NoSchedule"}]
    assert find_matching_untolerated_taint(taints, [])["key"] == "a"
    assert find_matching_untolerated_taint(taints, [], lambda t: t["effect"] == "NoSchedule")["key"] == "b"
    assert find_matching_untolerated_taint(taints, [{"operator": "Exists"}]) is None


@pytest.mark.parametrize("terms,want", [
    pytest.param([], False, id="no-terms"),
    pytest.param([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}], True, id="label"),
    pytest.param([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}], True,
                 id="field"),
    pytest.param([{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}], False,
                 id="unsupported-field-key"),
    pytest.param([{"matchExpressions": [{"key": "zone", "operator": "Bogus"}]},
                  {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}], True,
                 id="broken-term-skipped-others-count"),
])
def test_match_node_selector_terms(terms, want):
    assert match_node_selector_terms(NODE, terms) is want


def test_pod_matches_node_selector_and_affinity_terms():
    assert pod_matches_node_selector_and_affinity_terms({"spec": {"nodeSelector": {"zone": "a"}}}, NODE)
    assert not pod_matches_node_selector_and_affinity_terms({"spec": {"nodeSelector": {"zone": "b"}}}, NODE)


@pytest.mark.parametrize("raw,reverse,want", [
    pytest.param([0, 5, 10], False, [0, 50, 100], id="scaled"),
    pytest.param([0, 5, 10], True, [100, 50, 0], id="reversed"),
    pytest.param([0, 0], False, [0, 0], id="all-zero"),
    pytest.param([0, 0], True, [100, 100], id="all-zero-reversed"),
    pytest.param([1, 3], False, [33, 100], id="integer-division"),
])
def test_default_normalize_score(raw, reverse, want):
    scores = [NodeScore(str(i), s) for i, s in enumerate(raw)]
    default_normalize_score(100, reverse, scores)
    assert [s.score for s in scores] == want
