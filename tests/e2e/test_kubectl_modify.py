"""kubectl edit (via EDITOR), patch (strategic, merge, json), label, annotate and scale."""

from __future__ import annotations

import json

import harness
import pytest

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, keep: "yes", drop: "yes"}
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
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
      - name: sidecar
        image: busybox:1.36
"""


@pytest.fixture
def web(kubectl, namespace):
    kubectl("create", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    return namespace


def get_web(kubectl, ns: str) -> dict:
    return kubectl.json("get", "deployment", "web", "-n", ns)


def containers(dep: dict) -> dict[str, dict]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def test_edit_with_editor_script(kubectl, namespace, tmp_path):
    ns = namespace
    kubectl("create", "configmap", "edited", "-n", ns, "--from-literal=color=blue")
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i -e "s/color: blue/color: green/" "$1"\n')
    editor.chmod(0o755)
    out = kubectl("edit", "configmap", "edited", "-n", ns, env={"EDITOR": str(editor)})
    assert out.stdout.strip() == "configmap/edited edited"
    cm = kubectl.json("get", "configmap", "edited", "-n", ns, "--show-managed-fields")
    assert cm["data"] == {"color": "green"}
    assert any(m["manager"] == "kubectl-edit" for m in cm["metadata"]["managedFields"])


def test_edit_without_change_is_cancelled(kubectl, namespace, tmp_path):
    kubectl("create", "configmap", "same", "-n", namespace, "--from-literal=k=v")
    rv = kubectl.json("get", "configmap", "same", "-n", namespace)["metadata"]["resourceVersion"]
    out = kubectl("edit", "configmap", "same", "-n", namespace, env={"EDITOR": "true"})
    assert "Edit cancelled, no changes made." in out.stdout + out.stderr
    after = kubectl.json("get", "configmap", "same", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == rv


def test_edit_invalid_change_is_refused(kubectl, namespace, tmp_path):
    """An edit the server refuses leaves the object unchanged and kubectl exits non-zero."""
    ns = namespace
    kubectl("create", "deployment", "ed", "-n", ns, "--image=nginx:1.25")
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i -e "s/replicas: 1/replicas: -3/" "$1"\n')
    editor.chmod(0o755)
    out = kubectl("edit", "deployment", "ed", "-n", ns, env={"EDITOR": str(editor)}, check=False)
    assert out.returncode != 0
    # kubectl puts the server's field errors into the re-opened file; stderr names the object.
    assert 'deployments.apps "ed" is invalid' in out.stderr
    assert "Edit cancelled, no valid changes were saved." in out.stderr
    assert kubectl.json("get", "deployment", "ed", "-n", ns)["spec"]["replicas"] == 1


def test_patch_strategic_merges_containers_by_name(kubectl, web):
    out = kubectl("patch", "deployment", "web", "-n", web, "-p",
                  '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27",'
                  '"env":[{"name":"B","value":"22"},{"name":"C","value":"3"}]}]}}}}')
    assert out.stdout.strip() == "deployment.apps/web patched"
    c = containers(get_web(kubectl, web))
    assert set(c) == {"nginx", "sidecar"}
    assert c["nginx"]["image"] == "nginx:1.27"
    assert c["sidecar"]["image"] == "busybox:1.36"
    # env merges by name: A kept, B changed, C added.
    assert {e["name"]: e["value"] for e in c["nginx"]["env"]} == {"A": "1", "B": "22", "C": "3"}


def test_patch_strategic_delete_directive(kubectl, web):
    kubectl("patch", "deployment", "web", "-n", web, "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}')
    assert set(containers(get_web(kubectl, web))) == {"nginx"}


def test_patch_merge_replaces_lists_and_nulls_delete(kubectl, web):
    out = kubectl("patch", "deployment", "web", "-n", web, "--type", "merge", "-p",
                  '{"metadata":{"labels":{"drop":null,"new":"1"}},'
                  '"spec":{"template":{"spec":{"containers":[{"name":"only","image":"nginx:1"}]}}}}')
    assert out.stdout.strip() == "deployment.apps/web patched"
    dep = get_web(kubectl, web)
    assert dep["metadata"]["labels"] == {"app": "web", "keep": "yes", "new": "1"}
    # A JSON merge patch replaces a list whole, unlike a strategic one.
    assert list(containers(dep)) == ["only"]
    # Server defaults apply to the new container.
    assert containers(dep)["only"]["imagePullPolicy"] == "IfNotPresent"
    assert containers(dep)["only"]["terminationMessagePath"] == "/dev/termination-log"


def test_patch_json(kubectl, web):
    kubectl("patch", "deployment", "web", "-n", web, "--type", "json", "-p",
            '[{"op":"replace","path":"/spec/replicas","value":4},'
            '{"op":"add","path":"/metadata/labels/added","value":"yes"},'
            '{"op":"remove","path":"/spec/template/spec/containers/0/env/0"},'
            '{"op":"test","path":"/spec/template/spec/containers/1/name","value":"sidecar"}]')
    dep = get_web(kubectl, web)
    assert dep["spec"]["replicas"] == 4
    assert dep["metadata"]["labels"]["added"] == "yes"
    assert containers(dep)["nginx"]["env"] == [{"name": "B", "value": "2"}]
    assert dep["metadata"]["generation"] == 2

    # A failing "test" op rejects the whole patch. (First let the deployment controller finish
    # the rollout's writes, stuck with no node to run pods: the status stops changing.)
    rv = harness.settled(lambda: get_web(kubectl, web))["metadata"]["resourceVersion"]
    out = kubectl("patch", "deployment", "web", "-n", web, "--type", "json", "-p",
                  '[{"op":"replace","path":"/spec/replicas","value":9},'
                  '{"op":"test","path":"/spec/replicas","value":1}]', check=False)
    assert out.returncode != 0
    after = get_web(kubectl, web)
    assert (after["spec"]["replicas"], after["metadata"]["resourceVersion"]) == (4, rv)


def test_patch_invalid_result_is_refused(kubectl, web):
    out = kubectl("patch", "deployment", "web", "-n", web, "--type", "merge", "-p",
                  '{"spec":{"selector":{"matchLabels":{"app":"other"}}}}', check=False)
    assert out.returncode != 0
    # kubectl renders a 422 Invalid Status as "The <Kind> "<name>" is invalid:" plus its causes.
    assert 'The Deployment "web" is invalid' in out.stderr
    assert "spec.selector: Invalid value" in out.stderr and "field is immutable" in out.stderr
    assert get_web(kubectl, web)["spec"]["selector"] == {"matchLabels": {"app": "web"}}


def test_label(kubectl, web):
    out = kubectl("label", "deployment", "web", "-n", web, "env=prod")
    assert out.stdout.strip() == "deployment.apps/web labeled"
    assert get_web(kubectl, web)["metadata"]["labels"]["env"] == "prod"

    out = kubectl("label", "deployment", "web", "-n", web, "env=dev", check=False)
    assert out.returncode != 0 and "already has a value (prod)" in out.stderr

    kubectl("label", "deployment", "web", "-n", web, "env=dev", "--overwrite")
    assert get_web(kubectl, web)["metadata"]["labels"]["env"] == "dev"

    kubectl("label", "deployment", "web", "-n", web, "env-", "drop-")
    assert get_web(kubectl, web)["metadata"]["labels"] == {"app": "web", "keep": "yes"}

    out = kubectl("label", "deployment", "web", "-n", web, "bad key=1", check=False)
    assert out.returncode != 0


def test_invalid_label_value_is_refused_by_server(kubectl, web):
    """`kubectl label` checks values itself, so send the bad label with a patch."""
    out = kubectl("patch", "deployment", "web", "-n", web, "--type=merge",
                  "-p", '{"metadata":{"labels":{"v":"%s"}}}' % ("x" * 64), check=False)
    assert out.returncode != 0
    assert "metadata.labels: Invalid value" in out.stderr
    assert "must be no more than 63 characters" in out.stderr
    assert "v" not in get_web(kubectl, web)["metadata"]["labels"]


def test_annotate(kubectl, web):
    out = kubectl("annotate", "deployment", "web", "-n", web, "note=hello world")
    assert out.stdout.strip() == "deployment.apps/web annotated"
    assert get_web(kubectl, web)["metadata"]["annotations"]["note"] == "hello world"
    kubectl("annotate", "deployment", "web", "-n", web, "note=bye", "--overwrite")
    assert get_web(kubectl, web)["metadata"]["annotations"]["note"] == "bye"
    kubectl("annotate", "deployment", "web", "-n", web, "note-")
    assert "note" not in get_web(kubectl, web)["metadata"].get("annotations", {})


def test_scale(kubectl, web):
    out = kubectl("scale", "deployment", "web", "-n", web, "--replicas=5")
    assert out.stdout.strip() == "deployment.apps/web scaled"
    dep = get_web(kubectl, web)
    assert dep["spec"]["replicas"] == 5
    assert dep["metadata"]["generation"] == 2

    # --current-replicas is a precondition: a mismatch changes nothing.
    out = kubectl("scale", "deployment", "web", "-n", web, "--current-replicas=3",
                  "--replicas=1", check=False)
    assert out.returncode != 0
    assert get_web(kubectl, web)["spec"]["replicas"] == 5

    kubectl("scale", "deployment", "web", "-n", web, "--current-replicas=5", "--replicas=0")
    assert get_web(kubectl, web)["spec"]["replicas"] == 0


def test_scale_through_subresource_is_visible(kubectl, cluster, web):
    """The scale subresource reports spec and selector the way the HPA and kubectl read it."""
    status, body = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{web}/deployments/web/scale")
    assert status == 200, body
    scale = json.loads(body)
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=web"
