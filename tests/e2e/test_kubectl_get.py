"""kubectl get: server-side Table columns, every output format, selectors, -A and -w."""

from __future__ import annotations

import json
import re
import uuid

import harness
import pytest
import yaml

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
      - name: sidecar
        image: busybox:1.36
"""

POD = """apiVersion: v1
kind: Pod
metadata:
  name: lonely
  labels: {run: lonely}
spec:
  containers:
  - name: main
    image: busybox:1.36
"""


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """Split kubectl's table output into header and rows (columns are 2+ spaces apart)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], split[1:]


@pytest.fixture
def web(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    return namespace


def test_get_deployment_table(kubectl, web):
    def settled():
        header, rows = table(kubectl("get", "deployments", "-n", web).stdout)
        # the Deployment controller makes 2 up-to-date replicas; with no node none is ready
        return (header, rows) if rows and rows[0][2] == "2" else None
    header, rows = harness.eventually(settled, what="the Deployment controller's status")
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert len(rows) == 1
    name, ready, up_to_date, available, age = rows[0]
    assert (name, ready, up_to_date, available) == ("web", "0/2", "2", "0")
    assert re.fullmatch(r"\d+s", age), age


def test_get_deployment_wide(kubectl, web):
    header, rows = table(kubectl("get", "deployments", "-n", web, "-o", "wide").stdout)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE",
                      "CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows[0][5:] == ["nginx,sidecar", "nginx:1.25,busybox:1.36", "app=web"]


def test_get_pod_table_and_wide(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=POD)
    header, rows = table(kubectl("get", "pods", "-n", namespace).stdout)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[0][:4] == ["lonely", "0/1", "Pending", "0"]
    header, rows = table(kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                      "NOMINATED NODE", "READINESS GATES"]
    assert rows[0][5:] == ["<none>", "<none>", "<none>", "<none>"]


def test_get_yaml_and_json(kubectl, web):
    doc = yaml.safe_load(kubectl("get", "deployment", "web", "-n", web, "-o", "yaml").stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("apps/v1", "Deployment")
    assert doc["metadata"]["namespace"] == web
    assert doc["spec"]["template"]["spec"]["containers"][1]["image"] == "busybox:1.36"

    lst = json.loads(kubectl("get", "deployments", "-n", web, "-o", "json").stdout)
    assert (lst["apiVersion"], lst["kind"]) == ("v1", "List")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["web"]
    assert lst["items"][0]["kind"] == "Deployment"
    assert lst["items"][0]["metadata"]["uid"] == doc["metadata"]["uid"]


def test_get_jsonpath(kubectl, web):
    out = kubectl("get", "deployment", "web", "-n", web, "-o", "jsonpath={.spec.replicas}")
    assert out.stdout == "2"
    out = kubectl("get", "deployments", "-n", web, "-o",
                  'jsonpath={range .items[*]}{.metadata.name}:'
                  '{.spec.template.spec.containers[*].name}{"\\n"}{end}')
    assert out.stdout == "web:nginx sidecar\n"


def test_get_custom_columns(kubectl, web):
    out = kubectl("get", "deployments", "-n", web, "-o",
                  "custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,"
                  "IMAGE:.spec.template.spec.containers[0].image,MISSING:.status.nothing")
    header, rows = table(out.stdout)
    assert header == ["NAME", "REPLICAS", "IMAGE", "MISSING"]
    assert rows == [["web", "2", "nginx:1.25", "<none>"]]


def test_get_name(kubectl, web):
    kubectl("create", "configmap", "named", "-n", web, "--from-literal=k=v")
    out = kubectl("get", "deployments,configmaps", "-n", web, "-o", "name")
    got = out.stdout.split()
    assert "deployment.apps/web" in got and "configmap/named" in got
    assert all(n.startswith(("deployment.apps/", "configmap/")) for n in got), got


@pytest.fixture
def labelled(kubectl, namespace):
    for name, labels in [("cm-a", "tier=a"), ("cm-b", "tier=b"), ("cm-c", "tier=a,skip=yes"),
                         ("cm-d", "other=1")]:
        kubectl("create", "configmap", name, "-n", namespace, "--from-literal=k=v")
        kubectl("label", "configmap", name, "-n", namespace, *labels.split(","))
    return namespace


def names(kubectl, *args) -> list[str]:
    """Sorted ``kind/name``s; configmaps other than the test's own (kube-root-ca.crt) are left out."""
    got = kubectl("get", *args, "-o", "name").stdout.split()
    return sorted(n for n in got if not n.startswith("configmap/") or n.startswith("configmap/cm-"))


def test_get_label_selectors(kubectl, labelled):
    ns = labelled
    assert names(kubectl, "cm", "-n", ns, "-l", "tier=a") == ["configmap/cm-a", "configmap/cm-c"]
    assert names(kubectl, "cm", "-n", ns, "-l", "tier!=a,tier") == ["configmap/cm-b"]
    assert names(kubectl, "cm", "-n", ns, "-l", "tier in (a,b),!skip") == [
        "configmap/cm-a", "configmap/cm-b"]
    assert names(kubectl, "cm", "-n", ns, "-l", "tier notin (a)") == [
        "configmap/cm-b", "configmap/cm-d"]
    bad = kubectl("get", "cm", "-n", ns, "-l", "tier in (a", check=False)
    assert bad.returncode != 0


def test_get_field_selectors(kubectl, labelled):
    ns = labelled
    assert names(kubectl, "cm", "-n", ns, "--field-selector", "metadata.name=cm-b") == [
        "configmap/cm-b"]
    assert "configmap/cm-b" not in names(
        kubectl, "cm", "-n", ns, "--field-selector", "metadata.name!=cm-b")
    # Label and field selectors combine.
    assert names(kubectl, "cm", "-n", ns, "-l", "tier=a",
                 "--field-selector", "metadata.name!=cm-a") == ["configmap/cm-c"]
    bad = kubectl("get", "cm", "-n", ns, "--field-selector", "data.k=v", check=False)
    assert bad.returncode != 0
    # ConfigMaps only select on metadata fields (upstream's default field label conversion).
    assert "(BadRequest)" in bad.stderr and '"data.k" is not a known field selector' in bad.stderr


def test_get_pods_by_phase_field_selector(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=POD)
    assert names(kubectl, "pods", "-n", namespace, "--field-selector",
                 "status.phase=Pending") == ["pod/lonely"]
    assert names(kubectl, "pods", "-n", namespace, "--field-selector",
                 "status.phase=Running") == []
    assert names(kubectl, "pods", "-n", namespace, "--field-selector",
                 "spec.nodeName=") == ["pod/lonely"]


def test_get_all_namespaces(kubectl, cluster, namespace):
    marker = f"m{uuid.uuid4().hex[:8]}"
    other = f"{namespace[:50]}-other"
    cluster.kubectl("create", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {other}\n")
    try:
        for ns in (namespace, other):
            kubectl("create", "configmap", "shared-name", "-n", ns, "--from-literal=k=v")
            kubectl("label", "configmap", "shared-name", "-n", ns, f"marker={marker}")
        header, rows = table(kubectl("get", "configmaps", "-A", "-l", f"marker={marker}").stdout)
        assert header == ["NAMESPACE", "NAME", "DATA", "AGE"]
        assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
            [(namespace, "shared-name", "1"), (other, "shared-name", "1")])
        # Cluster-scoped kinds list the same with or without -A.
        header, rows = table(kubectl("get", "namespaces", "-A").stdout)
        assert header == ["NAME", "STATUS", "AGE"]
        assert [namespace, "Active"] == next(r[:2] for r in rows if r[0] == namespace)
        assert {"default", "kube-system", "kube-public"} <= {r[0] for r in rows}
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_get_watch_sees_change_from_another_process(kubectl, cluster, namespace):
    kubectl("create", "configmap", "watched", "-n", namespace, "--from-literal=a=1")
    with kubectl.stream("get", "configmap", "watched", "-n", namespace, "-w") as watch:
        watch.wait_for(r"^NAME\s+DATA\s+AGE$")
        watch.wait_for(r"^watched\s+1\s+\S+$")
        # The change comes from a separate kubectl process.
        cluster.kubectl("patch", "configmap", "watched", "-n", namespace, "--type=merge",
                        "-p", '{"data":{"b":"2"}}')
        watch.wait_for(r"^watched\s+2\s+\S+$")
        cluster.kubectl("delete", "configmap", "watched", "-n", namespace)
        # A delete shows the final state once more; the stream must stay open and healthy.
        watch.wait_for(r"^watched\s+2\s+\S+$")
        assert watch.proc.poll() is None, watch.stderr()


def test_get_watch_output_watch_events_json(kubectl, cluster, namespace):
    with kubectl.stream("get", "configmaps", "-n", namespace, "-w", "--output-watch-events",
                        "-o", "json") as watch:
        cluster.kubectl("create", "configmap", "ev", "-n", namespace, "--from-literal=a=1")
        watch.wait_for(r'"type":\s*"ADDED".*"name":\s*"ev"')
        cluster.kubectl("label", "configmap", "ev", "-n", namespace, "x=y")
        watch.wait_for(r'"type":\s*"MODIFIED".*"x":\s*"y"')
        cluster.kubectl("delete", "configmap", "ev", "-n", namespace)
        watch.wait_for(r'"type":\s*"DELETED".*"name":\s*"ev"')
