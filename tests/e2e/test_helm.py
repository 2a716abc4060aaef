"""Helm 4 with default flags (server-side apply) on the chart that `helm create` makes.

One release goes through install, upgrade (a changed value), history, rollback, list,
get manifest and uninstall; after each step the cluster's objects are checked with kubectl.
No pods need to run: Helm 4 does not wait for readiness unless asked to.
"""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture
def chart(helm, tmp_path):
    out = helm("create", "demo", cwd=tmp_path)
    assert "Creating demo" in out.stdout
    return tmp_path / "demo"


def deployment(cluster, ns: str) -> dict:
    return json.loads(cluster.kubectl("get", "deployment", "demo", "-n", ns, "-o", "json",
                                      "--show-managed-fields").stdout)


def release_secrets(cluster, ns: str) -> list[str]:
    out = cluster.kubectl("get", "secrets", "-n", ns, "-l", "owner=helm,name=demo", "-o", "name")
    return sorted(out.stdout.split())


def test_helm_release_lifecycle(helm, cluster, namespace, chart):
    ns = namespace
    out = helm("install", "demo", str(chart), "-n", ns)
    assert "STATUS: deployed" in out.stdout and "REVISION: 1" in out.stdout

    dep = deployment(cluster, ns)
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert dep["metadata"]["annotations"]["meta.helm.sh/release-name"] == "demo"
    # Helm 4 applies server-side: its field manager owns the fields it set.
    assert any(m["operation"] == "Apply" and m["manager"] == "helm"
               for m in dep["metadata"]["managedFields"]), dep["metadata"]["managedFields"]
    svc = json.loads(cluster.kubectl("get", "service", "demo", "-n", ns, "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["port"] == 80
    cluster.kubectl("get", "serviceaccount", "demo", "-n", ns)
    assert release_secrets(cluster, ns) == ["secret/sh.helm.release.v1.demo.v1"]

    out = helm("upgrade", "demo", str(chart), "-n", ns, "--set", "replicaCount=3")
    assert "REVISION: 2" in out.stdout
    assert deployment(cluster, ns)["spec"]["replicas"] == 3

    history = json.loads(helm("history", "demo", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    out = helm("rollback", "demo", "1", "-n", ns)
    assert "Rollback was a success" in out.stdout
    assert deployment(cluster, ns)["spec"]["replicas"] == 1
    history = json.loads(helm("history", "demo", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
    assert "Rollback to 1" in history[-1]["description"]

    releases = json.loads(helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in releases] == [("demo", "3", "deployed")]

    manifest = helm("get", "manifest", "demo", "-n", ns).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(manifest) if d)
    assert kinds == ["Deployment", "Service", "ServiceAccount"]
    assert "replicas: 1" in manifest

    out = helm("uninstall", "demo", "-n", ns)
    assert 'release "demo" uninstalled' in out.stdout
    for kind in ("deployment", "service", "serviceaccount"):
        got = cluster.kubectl("get", kind, "demo", "-n", ns, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr, (kind, got.stdout)
    assert release_secrets(cluster, ns) == []
    assert json.loads(helm("list", "-n", ns, "-o", "json").stdout) == []


def test_helm_template_dry_run_writes_nothing(helm, cluster, namespace, chart):
    out = helm("install", "demo", str(chart), "-n", namespace, "--dry-run=server")
    assert "kind: Deployment" in out.stdout
    got = cluster.kubectl("get", "deployment", "demo", "-n", namespace, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr
    assert release_secrets(cluster, namespace) == []


def test_helm_install_twice_fails(helm, namespace, chart):
    helm("install", "demo", str(chart), "-n", namespace)
    out = helm("install", "demo", str(chart), "-n", namespace, check=False)
    assert out.returncode != 0
    assert "cannot reuse a name that is still in use" in out.stderr
