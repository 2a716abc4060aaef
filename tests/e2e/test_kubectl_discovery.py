"""kubectl's discovery- and OpenAPI-driven commands: api-resources, api-versions, explain,
auth can-i, version."""

from __future__ import annotations

import json
import re

import pytest


def rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = lines[0].split()
    # SHORTNAMES may be empty, so split on the header's column starts rather than whitespace.
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    out = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        out.append(cells)
    return header, out


@pytest.mark.parametrize("name, shortnames, apiversion, namespaced, kind", [
    pytest.param("pods", "po", "v1", "true", "Pod", id="pods"),
    pytest.param("namespaces", "ns", "v1", "false", "Namespace", id="namespaces"),
    pytest.param("services", "svc", "v1", "true", "Service", id="services"),
    pytest.param("configmaps", "cm", "v1", "true", "ConfigMap", id="configmaps"),
    pytest.param("events", "ev", "v1", "true", "Event", id="events"),
    pytest.param("deployments", "deploy", "apps/v1", "true", "Deployment", id="deployments"),
    pytest.param("cronjobs", "cj", "batch/v1", "true", "CronJob", id="cronjobs"),
    pytest.param("horizontalpodautoscalers", "hpa", "autoscaling/v2", "true",
                 "HorizontalPodAutoscaler", id="hpa"),
    pytest.param("customresourcedefinitions", "crd,crds", "apiextensions.k8s.io/v1", "false",
                 "CustomResourceDefinition", id="crds"),
    pytest.param("clusterroles", "", "rbac.authorization.k8s.io/v1", "false", "ClusterRole",
                 id="clusterroles"),
    pytest.param("selfsubjectaccessreviews", "", "authorization.k8s.io/v1", "false",
                 "SelfSubjectAccessReview", id="ssar"),
])
def test_api_resources(kubectl, name, shortnames, apiversion, namespaced, kind):
    header, table = rows(kubectl("api-resources").stdout)
    assert header == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    matches = [r for r in table if r[0] == name and r[2] == apiversion]
    assert matches == [[name, shortnames, apiversion, namespaced, kind]]


def test_api_resources_filters(kubectl):
    apps = kubectl("api-resources", "--api-group=apps", "-o", "name").stdout.split()
    assert sorted(apps) == ["controllerrevisions.apps", "daemonsets.apps", "deployments.apps",
                            "replicasets.apps", "statefulsets.apps"]
    cluster_scoped = kubectl("api-resources", "--namespaced=false", "-o", "name").stdout.split()
    assert {"namespaces", "nodes", "persistentvolumes", "storageclasses.storage.k8s.io",
            "clusterroles.rbac.authorization.k8s.io"} <= set(cluster_scoped)
    assert "pods" not in cluster_scoped
    wide = kubectl("api-resources", "--api-group=apps", "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[-2:] == ["VERBS", "CATEGORIES"]
    dep = next(line for line in wide.splitlines() if line.startswith("deployments"))
    # kubectl 1.32 prints Go-style lists, 1.33 comma-separated ones.
    assert re.search(r"\[?create[ ,]delete[ ,]deletecollection[ ,]get[ ,]list[ ,]patch[ ,]"
                     r"update[ ,]watch\]?\s+\[?all\]?$", dep), dep


def test_api_versions(kubectl):
    versions = kubectl("api-versions").stdout.split()
    expected = {"v1", "apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2",
                "networking.k8s.io/v1", "storage.k8s.io/v1", "policy/v1",
                "rbac.authorization.k8s.io/v1", "coordination.k8s.io/v1", "discovery.k8s.io/v1",
                "events.k8s.io/v1", "scheduling.k8s.io/v1", "authorization.k8s.io/v1",
                "apiextensions.k8s.io/v1"}
    assert expected <= set(versions), sorted(expected - set(versions))
    assert versions == sorted(versions)


def test_explain_deployment_spec_strategy(kubectl):
    out = kubectl("explain", "deployment.spec.strategy").stdout
    assert re.search(r"^GROUP:\s+apps$", out, re.M), out
    assert re.search(r"^KIND:\s+Deployment$", out, re.M)
    assert re.search(r"^VERSION:\s+v1$", out, re.M)
    assert re.search(r"^FIELD:\s+strategy <DeploymentStrategy>$", out, re.M)
    assert "The deployment strategy to use to replace existing pods with new ones." in out
    assert re.search(r"^\s+rollingUpdate\s+<RollingUpdateDeployment>$", out, re.M)
    assert re.search(r"^\s+type\s+<string>$", out, re.M)
    assert '"Recreate"' in out and '"RollingUpdate"' in out


def test_explain_recursive_and_unknown_field(kubectl):
    out = kubectl("explain", "pods.spec.containers.livenessProbe", "--recursive").stdout
    assert re.search(r"^\s+initialDelaySeconds\s+<integer>$", out, re.M)
    assert re.search(r"^\s+exec\s+<ExecAction>$", out, re.M)
    bad = kubectl("explain", "deployment.spec.nope", check=False)
    assert bad.returncode != 0
    assert 'field "nope" does not exist' in bad.stderr


def test_auth_can_i(kubectl):
    out = kubectl("auth", "can-i", "create", "pods")
    assert out.stdout.strip() == "yes"
    out = kubectl("auth", "can-i", "delete", "deployments.apps", "-n", "kube-system")
    assert out.stdout.strip() == "yes"
    out = kubectl("auth", "can-i", "*", "*")
    assert out.stdout.strip() == "yes"


def test_version_talks_to_server(kubectl):
    info = json.loads(kubectl("version", "-o", "json").stdout)
    server = info["serverVersion"]
    assert server["major"] == "1"
    assert re.fullmatch(r"v1\.\d+\.\d+.*", server["gitVersion"])
    assert server["platform"] == "linux/amd64"


def test_cluster_info(kubectl, cluster):
    out = kubectl("cluster-info").stdout
    assert f"Kubernetes control plane is running at {cluster.url}" in out
