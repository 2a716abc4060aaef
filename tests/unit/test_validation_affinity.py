"""Affinity and topology spread validation: upstream's field paths and messages."""

import pytest

from kubeling.api.validation.affinity import validate_affinity, validate_topology_spread_constraints


def req_terms(*exprs, fields=()):
    term = {}
    if exprs:
        term["matchExpressions"] = list(exprs)
    if fields:
        term["matchFields"] = list(fields)
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


T = "a.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"


@pytest.mark.parametrize("aff, expected", [
    pytest.param(req_terms({"key": "k", "operator": "In", "values": ["a"]}), [], id="valid-in"),
    pytest.param(req_terms({"key": "k", "operator": "In"}),
                 [f"{T}.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or "
                  "'NotIn'"], id="in-without-values"),
    pytest.param(req_terms({"key": "k", "operator": "Gt", "values": ["1", "2"]}),
                 [f"{T}.matchExpressions[0].values: Required value: must be specified single value when `operator` "
                  "is 'Lt' or 'Gt'"], id="gt-two-values"),
    pytest.param(req_terms({"key": "k", "operator": "Exists", "values": ["x"]}),
                 [f"{T}.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or "
                  "'DoesNotExist'"], id="exists-with-values"),
    pytest.param(req_terms(fields=[{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]),
                 [f"{T}.matchFields[0].values: Required value: must be only one value when `operator` is 'In' or "
                  "'NotIn' for node field selector"], id="match-fields-two-values"),
    pytest.param(req_terms(fields=[{"key": "metadata.labels", "operator": "In", "values": ["n1"]}]),
                 [f'{T}.matchFields[0].key: Invalid value: "metadata.labels": not a valid field selector key'],
                 id="match-fields-key"),
    pytest.param({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
                 ["a.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: "
                  "must have at least one node selector term"], id="no-terms"),
    pytest.param({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 101, "preference": {}}]}},
        ["a.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 101: must be in "
         "the range 1-100"], id="preferred-weight"),
    pytest.param({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchExpressions": [
            {"key": "app", "operator": "Equals", "values": ["x"]}]}}]}},
        ['a.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0]'
         '.operator: Invalid value: "Equals": not a valid selector operator'], id="pod-affinity-selector"),
])
def test_affinity(aff, expected):
    assert [str(e) for e in validate_affinity(aff, "a")] == expected


@pytest.mark.parametrize("constraints, expected", [
    pytest.param([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}], [],
                 id="valid"),
    pytest.param([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}],
                 ["c[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, "
                  "not ScheduleAnyway"], id="min-domains-schedule-anyway"),
    pytest.param([{"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "Maybe"}],
                 ["c[0].topologyKey: Required value: can not be empty",
                  'c[0].whenUnsatisfiable: Unsupported value: "Maybe": supported values: "DoNotSchedule", '
                  '"ScheduleAnyway"'], id="key-and-action"),
    pytest.param([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}] * 2,
                 ['c[1].{topologyKey, whenUnsatisfiable}: Duplicate value: "{zone, DoNotSchedule}"'], id="duplicate"),
])
def test_topology_spread_constraints(constraints, expected):
    assert [str(e) for e in validate_topology_spread_constraints(constraints, "c")] == expected
