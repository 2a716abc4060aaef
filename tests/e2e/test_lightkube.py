"""Acceptance 4: lightkube, unchanged, against kubeling.

lightkube is typed (models generated from upstream's OpenAPI) and talks through httpx: CRUD of a
ConfigMap and a Deployment, a watch (which lightkube resumes from the last resourceVersion itself),
server-side apply with and without ``force``, and a custom resource through its generic resources.
"""

from __future__ import annotations

import threading

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap

from harness import eventually, settled

GROUP = "lightkube.e2e.kubeling.dev"


@pytest.fixture
def lk(cluster, namespace):
    c = Client(KubeConfig.from_file(str(cluster.kubeconfig)), namespace=namespace, field_manager="lightkube-e2e")
    yield c
    c.close()


def deployment(name: str, image: str = "nginx:1.25", replicas: int = 1) -> Deployment:
    labels = {"app": name}
    return Deployment(
        metadata=ObjectMeta(name=name, labels=labels),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(matchLabels=labels),
            template=PodTemplateSpec(metadata=ObjectMeta(labels=labels),
                                     spec=PodSpec(containers=[Container(name="web", image=image)])),
        ),
    )


def test_configmap_crud(lk, namespace):
    created = lk.create(ConfigMap(metadata=ObjectMeta(name="cm", labels={"tier": "a"}), data={"k": "v"}))
    assert created.metadata.uid and created.metadata.namespace == namespace and created.data == {"k": "v"}

    got = lk.get(ConfigMap, "cm")
    got.data["k2"] = "v2"
    replaced = lk.replace(got)
    assert replaced.data == {"k": "v", "k2": "v2"}
    assert int(replaced.metadata.resourceVersion) > int(created.metadata.resourceVersion)

    patched = lk.patch(ConfigMap, "cm", {"data": {"k": "patched"}})
    assert patched.data == {"k": "patched", "k2": "v2"}

    assert [c.metadata.name for c in lk.list(ConfigMap, labels={"tier": "a"})] == ["cm"]
    lk.delete(ConfigMap, "cm")
    with pytest.raises(ApiError) as e:
        lk.get(ConfigMap, "cm")
    assert (e.value.status.code, e.value.status.reason) == (404, "NotFound")
    assert e.value.status.message == 'configmaps "cm" not found'


def test_deployment_crud_and_scale(lk, namespace):
    created = lk.create(deployment("web"))
    # The server applied upstream's defaults, which the typed model reads back.
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.template.spec.containers[0].imagePullPolicy == "IfNotPresent"

    # the Scale carries the Deployment's resourceVersion: let the controller's status writes end
    settled(lambda: lk.get(Deployment, "web").to_dict())
    scale = lk.get(Deployment.Scale, "web")
    assert scale.spec.replicas == 1
    scale.spec.replicas = 3
    lk.replace(scale, "web")
    assert lk.get(Deployment, "web").spec.replicas == 3

    lk.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.27"}]}}}})
    got = lk.get(Deployment, "web")
    assert got.spec.template.spec.containers[0].image == "nginx:1.27"
    assert got.metadata.generation == 3

    lk.delete(Deployment, "web")
    with pytest.raises(ApiError) as e:
        lk.get(Deployment, "web")
    assert e.value.status.code == 404


def test_watch_sees_added_modified_deleted(lk, namespace):
    listed = lk.list(ConfigMap, labels={"watch": "me"})
    assert list(listed) == []
    rv = listed.resourceVersion  # lightkube knows it once the list has been read
    seen: list[tuple[str, str, str]] = []
    failures: list[BaseException] = []

    def consume():
        try:
            for op, obj in lk.watch(ConfigMap, labels={"watch": "me"}, resource_version=rv, server_timeout=20):
                seen.append((op, obj.metadata.name, (obj.data or {}).get("k")))
                if op == "DELETED":
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the test thread below
            failures.append(e)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    lk.create(ConfigMap(metadata=ObjectMeta(name="watched", labels={"watch": "me"}), data={"k": "1"}))
    lk.patch(ConfigMap, "watched", {"data": {"k": "2"}})
    lk.delete(ConfigMap, "watched")
    t.join(30)
    assert not failures, failures
    assert seen == [("ADDED", "watched", "1"), ("MODIFIED", "watched", "2"), ("DELETED", "watched", "2")]


def test_server_side_apply(lk, namespace):
    cm = ConfigMap(metadata=ObjectMeta(name="applied"), data={"a": "1", "b": "2"})
    first = lk.apply(cm, field_manager="manager-a")
    assert first.data == {"a": "1", "b": "2"}

    # Re-applying without a field drops it (manager-a owned it alone).
    second = lk.apply(ConfigMap(metadata=ObjectMeta(name="applied"), data={"a": "1"}), field_manager="manager-a")
    assert second.data == {"a": "1"}

    other = ConfigMap(metadata=ObjectMeta(name="applied"), data={"a": "other"})
    with pytest.raises(ApiError) as e:
        lk.apply(other, field_manager="manager-b")
    assert (e.value.status.code, e.value.status.reason) == (409, "Conflict")
    assert e.value.status.message == 'Apply failed with 1 conflict: conflict with "manager-a": .data.a'

    forced = lk.apply(other, field_manager="manager-b", force=True)
    assert forced.data == {"a": "other"}
    managers = {m.manager for m in forced.metadata.managedFields}
    assert "manager-b" in managers and "manager-a" not in managers


def test_apply_creates_and_updates_deployment(lk, namespace):
    created = lk.apply(deployment("applied", replicas=2), field_manager="lightkube-e2e")
    assert created.spec.replicas == 2
    updated = lk.apply(deployment("applied", image="nginx:1.27", replicas=2), field_manager="lightkube-e2e")
    assert updated.spec.template.spec.containers[0].image == "nginx:1.27"
    assert updated.metadata.generation == 2


def test_generic_resource_for_a_crd(cluster, lk, namespace):
    crd_name = f"gizmos.{GROUP}"
    crd = CustomResourceDefinition.from_dict({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                   "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                               }}}}]},
    })
    lk.create(crd)
    try:
        def established():
            conds = lk.get(CustomResourceDefinition, crd_name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)
        eventually(established, timeout=30, what="gizmos CRD Established")

        Gizmo = create_namespaced_resource(GROUP, "v1", "Gizmo", "gizmos")
        created = lk.create(Gizmo(metadata={"name": "g1"}, spec={"size": 1}))
        assert created.spec == {"size": 1} and created.metadata.uid
        applied = lk.apply(Gizmo(metadata={"name": "g1"}, spec={"size": 2}), field_manager="lightkube-e2e",
                           force=True)
        assert applied.spec == {"size": 2}
        status = lk.apply(Gizmo.Status(metadata={"name": "g1"}, status={"ok": True}), "g1",
                          field_manager="lightkube-status")
        assert status.status == {"ok": True} and status.spec == {"size": 2}
        assert [g.metadata.name for g in lk.list(Gizmo)] == ["g1"]
        lk.delete(Gizmo, "g1")
        with pytest.raises(ApiError) as e:
            lk.get(Gizmo, "g1")
        assert e.value.status.code == 404
    finally:
        lk.delete(CustomResourceDefinition, crd_name)
