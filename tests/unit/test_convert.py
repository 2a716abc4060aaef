"""Legacy Deployment versions: each version's own defaults, then conversion to apps/v1."""

import copy

import pytest
import yaml

from kubeling.api import convert
from kubeling.api.defaults import apply_defaults

SEED = """
apiVersion: extensions/v1beta1
kind: Deployment
metadata: {name: nginx}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers: [{name: nginx, image: nginx:1.7.9, ports: [{containerPort: 80}]}]
"""

SEED_TEMPLATE = {
    "metadata": {"labels": {"app": "nginx"}},
    "spec": {
        "containers": [{
            "name": "nginx", "image": "nginx:1.7.9", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        }],
        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
        "securityContext": {}, "terminationGracePeriodSeconds": 30,
    },
}


def seed(api_version="extensions/v1beta1"):
    obj = yaml.safe_load(SEED)
    obj["apiVersion"] = api_version
    return obj


def test_seed_extensions_v1beta1_becomes_apps_v1_with_its_own_defaults():
    assert convert.to_storage(seed()) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}},
            "revisionHistoryLimit": 2147483647,
            "progressDeadlineSeconds": 2147483647,
            "template": SEED_TEMPLATE,
        },
    }


def test_apps_v1beta1():
    spec = convert.to_storage(seed("apps/v1beta1"))["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "nginx"}}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 2
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"] == SEED_TEMPLATE


def test_apps_v1beta2_defaults_like_apps_v1_and_does_not_invent_a_selector():
    out = convert.to_storage(seed("apps/v1beta2"))
    assert "selector" not in out["spec"]  # required in v1beta2: validation reports it
    assert "labels" not in out["metadata"]
    assert out["spec"]["revisionHistoryLimit"] == 10
    assert out["spec"]["progressDeadlineSeconds"] == 600
    assert out["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}


@pytest.mark.parametrize("strategy,expected", [
    pytest.param({"type": "Recreate", "rollingUpdate": {}},
                 {"type": "Recreate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}},
                 id="extensions-fills-a-given-block-even-for-recreate"),
    pytest.param({"type": "Recreate"}, {"type": "Recreate"}, id="recreate"),
    pytest.param({"rollingUpdate": {"maxSurge": "50%"}},
                 {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}},
                 id="partial"),
])
def test_extensions_strategy(strategy, expected):
    obj = seed()
    obj["spec"]["strategy"] = strategy
    assert convert.to_storage(obj)["spec"]["strategy"] == expected


def test_explicit_values_survive_and_rollback_to_becomes_the_annotation():
    obj = seed()
    obj["metadata"]["labels"] = {"team": "web"}
    obj["spec"].update(selector={"matchLabels": {"app": "nginx"}, "matchExpressions": []},
                       revisionHistoryLimit=5, progressDeadlineSeconds=120, rollbackTo={"revision": 3})
    out = convert.to_storage(obj)
    assert out["metadata"]["labels"] == {"team": "web"}
    assert out["spec"]["selector"] == {"matchLabels": {"app": "nginx"}, "matchExpressions": []}
    assert out["spec"]["revisionHistoryLimit"] == 5
    assert out["spec"]["progressDeadlineSeconds"] == 120
    assert "rollbackTo" not in out["spec"]
    assert out["metadata"]["annotations"]["deprecated.deployment.rollback.to"] == "3"


def test_to_storage_does_not_mutate_and_passes_other_objects_through():
    obj = seed()
    before = copy.deepcopy(obj)
    convert.to_storage(obj)
    assert obj == before
    current = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {}}
    assert convert.to_storage(current) is current
    rs = {"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet"}
    assert convert.to_storage(rs) is rs


def test_result_is_a_fixed_point_of_apps_v1_defaulting():
    out = convert.to_storage(seed())
    again = copy.deepcopy(out)
    apply_defaults(again)
    assert again == out


@pytest.mark.parametrize("version", list(convert.LEGACY_DEPLOYMENT_VERSIONS))
def test_round_trip(version):
    stored = convert.to_storage(seed(version))
    back = convert.from_storage(stored, version)
    assert back["apiVersion"] == version
    assert {k: v for k, v in back.items() if k != "apiVersion"} == {k: v for k, v in stored.items() if k != "apiVersion"}
    assert stored["apiVersion"] == "apps/v1"  # from_storage copied, did not relabel in place
    assert convert.to_storage(back) == stored  # already defaulted: converting again changes nothing


def test_from_storage_lists_and_no_ops():
    stored = convert.to_storage(seed())
    lst = {"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "7"},
           "items": [stored]}
    out = convert.from_storage(lst, "apps/v1beta1")
    assert out["apiVersion"] == "apps/v1beta1"
    assert out["items"][0]["apiVersion"] == "apps/v1beta1"
    assert convert.from_storage(stored, "apps/v1") is stored
    status = {"apiVersion": "v1", "kind": "Status"}
    assert convert.from_storage(status, "extensions/v1beta1") is status


def test_to_storage_list():
    lst = {"apiVersion": "extensions/v1beta1", "kind": "DeploymentList", "items": [seed()]}
    out = convert.to_storage(lst)
    assert out["apiVersion"] == "apps/v1"
    assert out["items"][0]["apiVersion"] == "apps/v1"
    assert out["items"][0]["spec"]["revisionHistoryLimit"] == 2147483647


@pytest.mark.parametrize("api_version,kind,expected", [
    pytest.param("extensions/v1beta1", "Deployment", True, id="extensions"),
    pytest.param("apps/v1beta1", "Deployment", True, id="apps-v1beta1"),
    pytest.param("apps/v1beta2", "DeploymentList", True, id="list"),
    pytest.param("apps/v1", "Deployment", False, id="current"),
    pytest.param("extensions/v1beta1", "Ingress", False, id="other-kind"),
])
def test_is_legacy(api_version, kind, expected):
    assert convert.is_legacy(api_version, kind) is expected
