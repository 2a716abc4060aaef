"""kubectl apply (client-side and server-side) and diff, with default flags.

Client-side apply is a three-way strategic merge computed by kubectl from the last-applied
annotation, the live object and the file; it needs the server's OpenAPI for patch strategies and
for validation. These tests take the seed's own YAML (extensions/v1beta1 Deployment, NodePort
Service, liveness Pod) through create, update and removal of list items.
"""

from __future__ import annotations

import json

import pytest
from harness import eventually


def get(kubectl, kind: str, name: str, ns: str) -> dict:
    return kubectl.json("get", kind, name, "-n", ns)


def container(obj: dict) -> dict:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    assert len(spec["containers"]) == 1, spec["containers"]
    return spec["containers"][0]


def test_apply_seed_deployment_create_update_remove_port(kubectl, namespace, fixtures_dir):
    ns = namespace
    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "seed/gitea-deployment.yaml")
    assert out.stdout.strip() == "deployment.extensions/gitea-deployment created"

    d = get(kubectl, "deployment", "gitea-deployment", ns)
    assert d["apiVersion"] == "apps/v1"
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["selector"] == {"matchLabels": {"app": "gitea"}}
    assert container(d)["image"] == "gitea/gitea:1.4"
    assert "ports" not in container(d)
    # extensions/v1beta1 defaulted the rolling update to 1/1 (apps/v1 says 25%/25%).
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    assert "kubectl.kubernetes.io/last-applied-configuration" in d["metadata"]["annotations"]
    gen1 = d["metadata"]["generation"]

    # The seed's own next step: open the container ports.
    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "seed/gitea-deployment-ports.yaml")
    assert out.stdout.strip() == "deployment.extensions/gitea-deployment configured"
    d = get(kubectl, "deployment", "gitea-deployment", ns)
    assert container(d)["ports"] == [
        {"containerPort": 3000, "name": "http", "protocol": "TCP"},
        {"containerPort": 22, "name": "ssh", "protocol": "TCP"},
    ]
    assert d["metadata"]["generation"] == gen1 + 1

    # A changed field (image, replicas) and a removed list item (the ssh port).
    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "gitea-deployment-update.yaml")
    assert out.stdout.strip() == "deployment.extensions/gitea-deployment configured"
    d = get(kubectl, "deployment", "gitea-deployment", ns)
    assert d["spec"]["replicas"] == 2
    assert container(d)["image"] == "gitea/gitea:1.5"
    assert container(d)["ports"] == [{"containerPort": 3000, "name": "http", "protocol": "TCP"}]
    assert d["metadata"]["generation"] == gen1 + 2

    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "gitea-deployment-update.yaml")
    assert out.stdout.strip() == "deployment.extensions/gitea-deployment unchanged"


def test_apply_legacy_deployment_without_selector(kubectl, namespace, fixtures_dir):
    """extensions/v1beta1 defaulted a missing selector from the template's labels."""
    ns = namespace
    kubectl("apply", "-n", ns, "-f", fixtures_dir / "nginx-deployment.yaml")
    d = get(kubectl, "deployment", "nginx-deployment", ns)
    assert d["spec"]["selector"] == {"matchLabels": {"app": "nginx"}}
    assert d["spec"]["replicas"] == 2
    assert [p["containerPort"] for p in container(d)["ports"]] == [80, 443]

    kubectl("apply", "-n", ns, "-f", fixtures_dir / "nginx-deployment-update.yaml")
    d = get(kubectl, "deployment", "nginx-deployment", ns)
    assert d["spec"]["replicas"] == 3
    assert container(d)["image"] == "nginx:1.25"
    assert container(d)["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_apply_seed_service_keeps_node_port_and_removes_port(kubectl, namespace, fixtures_dir):
    ns = namespace
    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "seed/service.yml")
    assert out.stdout.strip() == "service/my-service created"
    svc = get(kubectl, "service", "my-service", ns)
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["clusterIP"] and svc["spec"]["clusterIP"] != "None"
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (80, 8080, "TCP")
    node_port = port["nodePort"]
    assert 30000 <= node_port <= 32767

    kubectl("apply", "-n", ns, "-f", fixtures_dir / "service-update.yml")
    svc = get(kubectl, "service", "my-service", ns)
    assert svc["spec"]["selector"] == {"app": "gitea"}
    http, ssh = svc["spec"]["ports"]
    assert (http["name"], http["targetPort"]) == ("http", 3000)
    # Strategic merge keys ports by `port`, so the allocated nodePort survives the update.
    assert http["nodePort"] == node_port
    assert (ssh["name"], ssh["port"], ssh["targetPort"]) == ("ssh", 22, 22)
    assert 30000 <= ssh["nodePort"] <= 32767 and ssh["nodePort"] != node_port

    kubectl("apply", "-n", ns, "-f", fixtures_dir / "service-update-2.yml")
    svc = get(kubectl, "service", "my-service", ns)
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http"]
    assert svc["spec"]["ports"][0]["nodePort"] == node_port


def test_apply_seed_liveness_pod(kubectl, namespace, fixtures_dir):
    ns = namespace
    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "seed/liveness-probe.yml")
    assert out.stdout.strip() == "pod/liveness-exec created"
    pod = get(kubectl, "pod", "liveness-exec", ns)
    c = container(pod)
    assert c["args"][2] == "touch /tmp/healthy; sleep 30; rm -rf /tmp/healthy; sleep 600"
    probe = c["livenessProbe"]
    assert probe["exec"] == {"command": ["cat", "/tmp/healthy"]}
    # Upstream probe defaults fill in what the file left out.
    assert (probe["initialDelaySeconds"], probe["periodSeconds"]) == (5, 5)
    assert (probe["timeoutSeconds"], probe["successThreshold"], probe["failureThreshold"]) == (1, 1, 3)
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["metadata"]["labels"] == {"test": "liveness"}

    out = kubectl("apply", "-n", ns, "-f", fixtures_dir / "liveness-probe-update.yml")
    assert out.stdout.strip() == "pod/liveness-exec configured"
    pod = get(kubectl, "pod", "liveness-exec", ns)
    assert container(pod)["image"] == "busybox:1.36"
    assert pod["metadata"]["labels"] == {"tier": "probe"}


def test_apply_refuses_immutable_pod_change(kubectl, namespace, fixtures_dir):
    """A Pod's args are immutable: apply fails with the server's Invalid error, nothing changes."""
    ns = namespace
    kubectl("apply", "-n", ns, "-f", fixtures_dir / "seed/liveness-probe.yml")
    changed = (fixtures_dir / "seed/liveness-probe.yml").read_text().replace("sleep 600", "sleep 6")
    out = kubectl("apply", "-n", ns, "-f", "-", input=changed, check=False)
    assert out.returncode != 0
    assert "is invalid" in out.stderr and "spec: Forbidden: pod updates may not change" in out.stderr
    pod = get(kubectl, "pod", "liveness-exec", ns)
    assert container(pod)["args"][2].endswith("sleep 600")


CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: ssa
data:
  a: "1"
  b: "2"
"""


def managed(kubectl, name: str, ns: str) -> tuple[dict, dict[str, tuple[str, dict]]]:
    """The ConfigMap and its managers: ``{manager: (operation, fieldsV1)}``.

    kubectl hides managedFields unless asked, so this asks."""
    cm = kubectl.json("get", "configmap", name, "-n", ns, "--show-managed-fields")
    return cm, {m["manager"]: (m["operation"], m.get("fieldsV1", {}))
                for m in cm["metadata"].get("managedFields", [])}


def test_apply_server_side_conflict_with_patch_then_force(kubectl, namespace):
    ns = namespace
    out = kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=CONFIGMAP)
    assert out.stdout.strip() == "configmap/ssa serverside-applied"
    cm, managers = managed(kubectl, "ssa", ns)
    op, fields = managers["kubectl"]
    assert op == "Apply"
    assert {"f:a", "f:b"} <= set(fields["f:data"])
    assert "kubectl.kubernetes.io/last-applied-configuration" not in cm["metadata"].get(
        "annotations", {})

    # Another manager takes .data.a with an ordinary update.
    kubectl("patch", "-n", ns, "configmap", "ssa", "--type=merge", "-p", '{"data":{"a":"x"}}')
    _, managers = managed(kubectl, "ssa", ns)
    assert managers["kubectl-patch"][0] == "Update"
    assert "f:a" in managers["kubectl-patch"][1]["f:data"]

    # Re-applying a different value for .data.a now conflicts; nothing is written.
    out = kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=CONFIGMAP, check=False)
    assert out.returncode != 0
    assert "Apply failed with 1 conflict" in out.stderr
    assert 'conflict with "kubectl-patch"' in out.stderr and ".data.a" in out.stderr
    assert get(kubectl, "configmap", "ssa", ns)["data"] == {"a": "x", "b": "2"}

    out = kubectl("apply", "--server-side", "--force-conflicts", "-n", ns, "-f", "-",
                  input=CONFIGMAP)
    assert out.stdout.strip() == "configmap/ssa serverside-applied"
    cm, managers = managed(kubectl, "ssa", ns)
    assert cm["data"] == {"a": "1", "b": "2"}
    # Forcing moves ownership of .data.a back to the applier.
    patch_fields = managers.get("kubectl-patch", ("", {}))[1]
    assert "f:a" not in patch_fields.get("f:data", {})


def test_apply_server_side_two_appliers(kubectl, namespace):
    ns = namespace
    kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=CONFIGMAP)
    other = CONFIGMAP.replace('a: "1"', 'a: "9"').replace('  b: "2"\n', '  c: "3"\n')
    out = kubectl("apply", "--server-side", "--field-manager=other", "-n", ns, "-f", "-",
                  input=other, check=False)
    assert out.returncode != 0
    assert 'conflict with "kubectl"' in out.stderr and ".data.a" in out.stderr

    kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-n", ns,
            "-f", "-", input=other)
    cm, m = managed(kubectl, "ssa", ns)
    assert cm["data"] == {"a": "9", "b": "2", "c": "3"}
    assert set(m["other"][1]["f:data"]) >= {"f:a", "f:c"}
    assert set(m["kubectl"][1]["f:data"]) >= {"f:b"} and "f:a" not in m["kubectl"][1]["f:data"]

    # The first applier drops b from its config: b is removed since nobody else owns it.
    kubectl("apply", "--server-side", "-n", ns, "-f", "-",
            input=CONFIGMAP.replace('  a: "1"\n', "").replace('  b: "2"\n', '  d: "4"\n'))
    assert get(kubectl, "configmap", "ssa", ns)["data"] == {"a": "9", "c": "3", "d": "4"}


def test_diff_shows_change_without_writing(kubectl, namespace, fixtures_dir):
    ns = namespace
    kubectl("apply", "-n", ns, "-f", fixtures_dir / "nginx-deployment.yaml")
    # let the Deployment controller finish writing its status, so the diffs show only the files'
    before = eventually(lambda: (lambda d: d if (d.get("status") or {}).get("updatedReplicas") == 2 and
                                 d["status"].get("observedGeneration") == d["metadata"]["generation"] else None)(
        get(kubectl, "deployment", "nginx-deployment", ns)), what="the Deployment controller settles")

    same = kubectl("diff", "-n", ns, "-f", fixtures_dir / "nginx-deployment.yaml", check=False)
    assert same.returncode == 0, same.stderr
    assert same.stdout == ""

    out = kubectl("diff", "-n", ns, "-f", fixtures_dir / "nginx-deployment-update.yaml",
                  check=False)
    assert out.returncode == 1, out.stderr  # 1 = differences found, >1 = error
    lines = out.stdout.splitlines()
    assert "-  replicas: 2" in lines and "+  replicas: 3" in lines
    assert any(line.startswith("-") and "image: nginx:1.7.9" in line for line in lines)
    assert any(line.startswith("+") and "image: nginx:1.25" in line for line in lines)
    assert any(line.startswith("-") and "containerPort: 443" in line for line in lines)

    after = get(kubectl, "deployment", "nginx-deployment", ns)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"] and after["spec"]["replicas"] == 2


@pytest.mark.parametrize("bad, message", [
    pytest.param("spec:\n  replicas: 1\n  bogusField: 1\n", 'unknown field "spec.bogusField"',
                 id="unknown-field"),
    pytest.param("spec:\n  replicas: two\n", "spec.replicas", id="wrong-type"),
])
def test_apply_rejects_bad_input(kubectl, namespace, bad, message):
    """Default kubectl validation (strict, done by the server) refuses the object; nothing is written."""
    doc = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n" + bad
           + "  selector:\n    matchLabels: {app: bad}\n  template:\n    metadata:\n"
           "      labels: {app: bad}\n    spec:\n      containers:\n      - {name: c, image: x}\n")
    out = kubectl("apply", "-n", namespace, "-f", "-", input=doc, check=False)
    assert out.returncode != 0
    assert message in out.stderr
    gone = kubectl("get", "deployment", "bad", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_apply_prints_json_of_result(kubectl, namespace, fixtures_dir):
    """`apply -o json` returns the server's object: defaults and server fields filled in."""
    out = kubectl("apply", "-n", namespace, "-f", fixtures_dir / "nginx-service.yaml", "-o", "json")
    svc = json.loads(out.stdout)
    assert svc["kind"] == "Service" and svc["metadata"]["namespace"] == namespace
    assert svc["metadata"]["uid"] and svc["metadata"]["resourceVersion"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["sessionAffinity"] == "None"
    assert svc["spec"]["ports"][0]["protocol"] == "TCP"
