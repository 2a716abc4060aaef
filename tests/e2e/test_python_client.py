"""Acceptance 3: the official ``kubernetes`` Python client (v37), unchanged, against kubeling.

Covers CRUD, watch and the three patch types on core kinds (ConfigMap, Secret, Service, Pod) and
apps kinds (Deployment with its scale subresource, ReplicaSet); a watch in the style of upstream's
own e2e (list, then watch from the listed resourceVersion and see exactly ADDED, MODIFIED,
DELETED); label-selector watches; `kubernetes.watch.Watch` resuming across server-closed
streams; pagination; optimistic concurrency; dry-run; errors as `ApiException` carrying
upstream's `Status`; and Events through core/v1 and events.k8s.io/v1 with each API's rules.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def api(cluster):
    c = cluster.python_client()
    yield c
    c.close()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


def status_of(e: ApiException) -> dict:
    """The metav1.Status the server sent with an error."""
    body = json.loads(e.body)
    assert body.get("kind") == "Status" and body.get("apiVersion") == "v1", body
    return body


def deployment(name: str, replicas: int = 1, labels: dict | None = None) -> client.V1Deployment:
    labels = labels or {"app": name}
    return client.V1Deployment.from_dict({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "web", "image": "nginx:1.25",
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "busybox:1.36"},
            ]}},
        },
    })


# -- CRUD on core kinds -----------------------------------------------------------------------

def test_configmap_crud(core, namespace):
    ns = namespace
    created = core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cm", labels={"tier": "a"}), data={"k": "v"}))
    meta = created.metadata
    assert meta.uid and meta.resource_version and meta.creation_timestamp is not None
    assert meta.namespace == ns and created.data == {"k": "v"}

    got = core.read_namespaced_config_map("cm", ns)
    assert got.metadata.uid == meta.uid and got.metadata.resource_version == meta.resource_version

    got.data["k2"] = "v2"
    replaced = core.replace_namespaced_config_map("cm", ns, got)
    assert replaced.data == {"k": "v", "k2": "v2"}
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)

    listed = core.list_namespaced_config_map(ns, label_selector="tier=a")
    assert [i.metadata.name for i in listed.items] == ["cm"]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)

    status = core.delete_namespaced_config_map("cm", ns)
    # ConfigMaps have no graceful deletion, so upstream answers with a Success Status.
    assert status["kind"] == "Status" and status["status"] == "Success", status
    assert status["details"]["name"] == "cm" and status["details"]["kind"] == "configmaps"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("cm", ns)
    assert e.value.status == 404


def test_secret_string_data_is_encoded(core, namespace):
    created = core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="s"), string_data={"user": "admin"},
        data={"pw": base64.b64encode(b"hunter2").decode()}))
    assert created.type == "Opaque"
    assert created.string_data is None
    assert base64.b64decode(created.data["user"]) == b"admin"
    assert base64.b64decode(created.data["pw"]) == b"hunter2"
    core.patch_namespaced_secret("s", namespace, {"stringData": {"user": "root"}})
    assert base64.b64decode(core.read_namespaced_secret("s", namespace).data["user"]) == b"root"
    core.delete_namespaced_secret("s", namespace)
    assert core.list_namespaced_secret(namespace, field_selector="metadata.name=s").items == []


def test_service_defaults_and_cluster_ip(core, namespace):
    created = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"),
        spec=client.V1ServiceSpec(selector={"app": "x"}, ports=[client.V1ServicePort(port=80)])))
    spec = created.spec
    assert spec.type == "ClusterIP" and spec.session_affinity == "None"
    assert spec.ports[0].protocol == "TCP" and spec.ports[0].target_port == 80
    assert spec.cluster_ip and spec.cluster_ip != "None" and spec.cluster_ips == [spec.cluster_ip]
    # Changing spec.clusterIP is forbidden (immutable field) -> 422 with the field path.
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_service("svc", namespace, {"spec": {"clusterIP": "10.0.0.254"}})
    st = status_of(e.value)
    assert e.value.status == 422 and st["reason"] == "Invalid"
    assert any(c.get("field", "").startswith("spec.clusterIP") for c in st["details"]["causes"]), st
    core.delete_namespaced_service("svc", namespace)


def test_pod_defaults_status_subresource_and_delete(core, namespace):
    ns = namespace
    pod = core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name="p"),
        # a scheduler nobody runs: the default one would write PodScheduled under the test's feet
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")],
                              scheduler_name="no-such-scheduler")))
    assert pod.spec.restart_policy == "Always" and pod.spec.dns_policy == "ClusterFirst"
    assert pod.spec.termination_grace_period_seconds == 30
    assert pod.spec.service_account_name == "default"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert pod.status.phase == "Pending"

    # The status subresource changes status only; the main resource ignores status changes.
    pod.status.phase = "Running"
    pod.spec.active_deadline_seconds = 100
    after = core.replace_namespaced_pod_status("p", ns, pod)
    assert after.status.phase == "Running" and after.spec.active_deadline_seconds is None
    core.patch_namespaced_pod("p", ns, {"status": {"phase": "Failed"},
                                        "metadata": {"labels": {"x": "y"}}})
    again = core.read_namespaced_pod("p", ns)
    assert again.status.phase == "Running" and again.metadata.labels == {"x": "y"}

    core.delete_namespaced_pod("p", ns, grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p", ns)
    assert e.value.status == 404


# -- apps kinds -------------------------------------------------------------------------------

def test_deployment_crud_generation_and_scale(apps, namespace):
    ns = namespace
    dep = apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    assert dep.metadata.generation == 1
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.strategy.rolling_update.max_surge == "25%"
    assert dep.spec.revision_history_limit == 10 and dep.spec.progress_deadline_seconds == 600

    # Metadata-only changes do not bump generation; spec changes do.
    d = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"extra": "1"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", ns, {"spec": {"minReadySeconds": 3}})
    assert d.metadata.generation == 2

    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.kind == "Scale" and scale.spec.replicas == 2
    assert scale.status.selector == "app=web"
    scaled = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 5}})
    assert scaled.spec.replicas == 5
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 5
    scale = apps.read_namespaced_deployment_scale("web", ns)
    scale.spec.replicas = 1
    # unconditional: the Deployment controller writes status (and so the resourceVersion) meanwhile
    scale.metadata.resource_version = None
    apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1

    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("web", ns)
    assert e.value.status == 404


def test_replicaset_crud_and_selector_immutable(apps, namespace):
    ns = namespace
    body = client.V1ReplicaSet.from_dict({
        "metadata": {"name": "rs", "labels": {"app": "rs"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}})
    rs = apps.create_namespaced_replica_set(ns, body)
    assert rs.spec.replicas == 0
    listed = apps.list_namespaced_replica_set(ns, label_selector="app in (rs, other)")
    assert [r.metadata.name for r in listed.items] == ["rs"]
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_replica_set(
            "rs", ns, {"spec": {"selector": {"matchLabels": {"app": "other"}}}},
            _content_type=MERGE)
    st = status_of(e.value)
    assert e.value.status == 422 and st["reason"] == "Invalid"
    assert any(c.get("field", "").startswith("spec.selector") for c in st["details"]["causes"])
    apps.delete_namespaced_replica_set("rs", ns)
    assert apps.list_namespaced_replica_set(ns).items == []


# -- patch types ------------------------------------------------------------------------------

def _containers(dep) -> dict:
    return {c.name: c for c in dep.spec.template.spec.containers}


def test_strategic_merge_patch_merges_lists_by_key(apps, namespace):
    apps.create_namespaced_deployment(namespace, deployment("smp"))
    patched = apps.patch_namespaced_deployment("smp", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "nginx:1.26", "env": [{"name": "C", "value": "3"}]}]}}}})
    cs = _containers(patched)
    assert set(cs) == {"web", "sidecar"}, "strategic merge keeps the other container"
    assert cs["web"].image == "nginx:1.26"
    assert [e.name for e in cs["web"].env] == ["C", "A", "B"]
    # $patch: delete removes a list element by merge key.
    patched = apps.patch_namespaced_deployment("smp", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}]}}}})
    assert set(_containers(patched)) == {"web"}


def test_merge_patch_replaces_lists(apps, namespace):
    apps.create_namespaced_deployment(namespace, deployment("mp"))
    patched = apps.patch_namespaced_deployment("mp", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "only", "image": "redis:7"}]}}},
        "metadata": {"labels": {"app": None, "new": "x"}}}, _content_type=MERGE)
    assert set(_containers(patched)) == {"only"}
    assert patched.metadata.labels == {"new": "x"}


def test_json_patch(core, apps, namespace):
    apps.create_namespaced_deployment(namespace, deployment("jp"))
    patched = apps.patch_namespaced_deployment("jp", namespace, [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "web"},
    ])
    assert patched.spec.replicas == 4 and patched.metadata.annotations == {"a": "b"}
    assert set(_containers(patched)) == {"web"}
    # A failing test op refuses the whole patch and changes nothing.
    rv = patched.metadata.resource_version
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment("jp", namespace, [
            {"op": "replace", "path": "/spec/replicas", "value": 9},
            {"op": "test", "path": "/spec/replicas", "value": 1}])
    assert 400 <= e.value.status < 500 and e.value.status != 404
    after = apps.read_namespaced_deployment("jp", namespace)
    assert after.spec.replicas == 4 and after.metadata.resource_version == rv


# -- watch ------------------------------------------------------------------------------------

def _events(core, ns: str, rv: str, want: int | None, timeout: int = 10, **kw) -> list[dict]:
    """Raw watch events (dicts) from ``rv``: ``want`` of them, or all until the server's
    ``timeoutSeconds`` ends the stream when ``want`` is None."""
    w = watch.Watch()
    got = []
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv,
                       timeout_seconds=timeout, deserialize=False, **kw):
        if ev["type"] == "BOOKMARK":
            continue
        got.append(ev)
        if want is not None and len(got) >= want:
            w.stop()
    return got


def test_watch_from_listed_resource_version(core, namespace):
    """Upstream's conformance pattern: list, watch from its RV, see exactly the three events.

    As upstream's conformance test does, the list and the watch use a label selector unique
    to the test, so that objects controllers add to the namespace (kube-root-ca.crt) stay out.
    """
    ns, sel = namespace, {"watch-test": "exactly-three"}
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata={"name": "existing", "labels": sel}))
    listed = core.list_namespaced_config_map(ns, label_selector="watch-test=exactly-three")
    rv = listed.metadata.resource_version
    assert [i.metadata.name for i in listed.items] == ["existing"]

    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata={"name": "w", "labels": sel},
                                                             data={"n": "1"}))
    core.patch_namespaced_config_map("w", ns, {"data": {"n": "2"}})
    core.delete_namespaced_config_map("w", ns)

    events = _events(core, ns, rv, want=None, timeout=3, label_selector="watch-test=exactly-three")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert [e["object"].get("data") for e in events[:2]] == [{"n": "1"}, {"n": "2"}]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3 and rvs[0] > int(rv), rvs


def test_watch_typed_objects(core, namespace):
    """Deserialized watch: objects are V1ConfigMap, and the watch tracks resourceVersion."""
    ns = namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata={"name": "typed"}))
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10,
                       field_selector="metadata.name=typed"):
        assert ev["type"] == "ADDED"
        assert isinstance(ev["object"], client.V1ConfigMap) and ev["object"].metadata.name == "typed"
        w.stop()
    assert w.resource_version == core.read_namespaced_config_map("typed", ns).metadata.resource_version


def test_watch_with_label_selector(core, namespace):
    ns = namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    for name, sel in (("other", "no"), ("mine", "yes")):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata={"name": name, "labels": {"sel": sel}}))
    core.patch_namespaced_config_map("other", ns, {"data": {"x": "1"}})
    core.patch_namespaced_config_map("mine", ns, {"data": {"x": "1"}})
    # Leaving the selector is seen as DELETED by this watch (upstream's cacher semantics).
    core.patch_namespaced_config_map("mine", ns, {"metadata": {"labels": {"sel": "no"}}})
    events = _events(core, ns, rv, want=3, label_selector="sel=yes")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "mine"), ("MODIFIED", "mine"), ("DELETED", "mine")]


def test_watch_class_resumes_after_server_closes_stream(core, namespace):
    """`Watch.stream` reconnects from the last seen resourceVersion when a stream ends.

    Each server-side stream lasts 1 s (timeoutSeconds passed inside the list function, so the
    `Watch` keeps its retry loop); events written between and during streams all arrive once.
    """
    ns = namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def list_short(namespace, **kw):
        return core.list_namespaced_config_map(namespace, timeout_seconds=1, **kw)

    def writer():
        for i in range(5):
            core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata={"name": f"r{i}"}))
            time.sleep(0.7)

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch(return_type="V1ConfigMap")
    names = []
    deadline = time.monotonic() + 30
    for ev in w.stream(list_short, ns, resource_version=rv):
        # Only ours: the root CA publisher may add kube-root-ca.crt to the namespace meanwhile.
        if ev["type"] == "ADDED" and ev["object"].metadata.name.startswith("r"):
            names.append(ev["object"].metadata.name)
        if len(names) >= 5 or time.monotonic() > deadline:
            w.stop()
    t.join()
    assert names == [f"r{i}" for i in range(5)]


# -- list semantics ---------------------------------------------------------------------------

def test_pagination_with_limit_and_continue(core, namespace):
    """limit/continue over Secrets (no controller writes Secrets into a new namespace, so the
    expected listing is exactly ours): a consistent snapshot with remainingItemCount."""
    ns = namespace
    for i in range(7):
        core.create_namespaced_secret(ns, client.V1Secret(metadata={"name": f"page-{i}"}))
    expected = [f"page-{i}" for i in range(7)]
    first = core.list_namespaced_secret(ns, limit=3)
    assert len(first.items) == 3 and first.metadata._continue
    assert first.metadata.remaining_item_count == 4
    # A write after the first page is not visible in later pages (consistent snapshot).
    core.create_namespaced_secret(ns, client.V1Secret(metadata={"name": "page-9"}))
    names = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_secret(ns, limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
    assert names == expected
    assert len(core.list_namespaced_secret(ns).items) == 8


def test_stale_resource_version_update_is_409(core, namespace):
    ns = namespace
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata={"name": "cas"}, data={"v": "0"}))
    core.patch_namespaced_config_map("cas", ns, {"data": {"v": "1"}})
    cm.data = {"v": "stale"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("cas", ns, cm)
    st = status_of(e.value)
    assert e.value.status == 409 and st["reason"] == "Conflict"
    assert st["message"] == ('Operation cannot be fulfilled on configmaps "cas": the object has been '
                             'modified; please apply your changes to the latest version and try again')
    assert core.read_namespaced_config_map("cas", ns).data == {"v": "1"}


def test_dry_run_create_is_not_persisted(core, namespace):
    out = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata={"name": "dry"}, data={"a": "b"}), dry_run="All")
    assert out.metadata.name == "dry" and out.data == {"a": "b"}
    assert out.metadata.uid  # a dry run returns the object as it would have been created
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("dry", namespace)
    assert e.value.status == 404
    assert core.list_namespaced_config_map(namespace, field_selector="metadata.name=dry").items == []


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, code, reason, message", [
    pytest.param(lambda core, ns: core.read_namespaced_config_map("missing", ns),
                 404, "NotFound", 'configmaps "missing" not found', id="not-found"),
    pytest.param(lambda core, ns: core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata={"name": "dup"})),
                 409, "AlreadyExists", 'configmaps "dup" already exists', id="already-exists"),
    pytest.param(lambda core, ns: core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata={"name": "Invalid_Name"})),
                 422, "Invalid", 'ConfigMap "Invalid_Name" is invalid', id="invalid-name"),
    pytest.param(lambda core, ns: core.read_namespaced_config_map("x", "no-such-ns"),
                 404, "NotFound", 'configmaps "x" not found', id="missing-namespace-get"),
    pytest.param(lambda core, ns: core.create_namespaced_config_map(
        "no-such-ns", client.V1ConfigMap(metadata={"name": "x"})),
                 404, "NotFound", 'namespaces "no-such-ns" not found', id="missing-namespace-create"),
])
def test_errors_are_api_exceptions_with_status(core, namespace, call, code, reason, message):
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata={"name": "dup"}))
    with pytest.raises(ApiException) as e:
        call(core, namespace)
    st = status_of(e.value)
    assert (e.value.status, st["code"], st["reason"], st["status"]) == (code, code, reason, "Failure")
    assert st["message"].startswith(message), st["message"]
    if reason == "Invalid":
        causes = st["details"]["causes"]
        assert causes[0]["field"] == "metadata.name" and causes[0]["reason"] == "FieldValueInvalid"
        assert st["details"] == {**st["details"], "name": "Invalid_Name", "kind": "ConfigMap"}


# -- Events through both APIs -----------------------------------------------------------------

def _reported_event(name: str, namespace: str, **fields) -> dict:
    """An events.k8s.io/v1 Event as a controller reports one (what client-go's new recorder sends)."""
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name},
          "eventTime": "2025-01-02T03:04:05.000000Z", "reportingController": "e2e.kubeling.dev/tester",
          "reportingInstance": "tester-1", "action": "Testing", "reason": "Tested", "type": "Normal",
          "note": "it works", "regarding": {"kind": "ConfigMap", "name": "cm", "namespace": namespace}}
    ev.update(fields)
    return ev


def test_events_v1_event_is_one_object_through_both_apis(api, core, namespace):
    events = client.EventsV1Api(api)
    created = events.create_namespaced_event(namespace, _reported_event("reported", namespace))
    assert (created.reporting_controller, created.note) == ("e2e.kubeling.dev/tester", "it works")
    # core/v1 names the same fields reportingComponent, message and involvedObject.
    as_core = core.read_namespaced_event("reported", namespace)
    assert (as_core.reporting_component, as_core.reporting_instance) == ("e2e.kubeling.dev/tester", "tester-1")
    assert (as_core.message, as_core.involved_object.name, as_core.action) == ("it works", "cm", "Testing")
    again = events.read_namespaced_event("reported", namespace)
    assert (again.reporting_controller, again.regarding.name) == ("e2e.kubeling.dev/tester", "cm")


@pytest.mark.parametrize("fields, message", [
    pytest.param({"reportingController": None},
                 '[reportingController: Required value, reportingController: Invalid value: "": name part must '
                 "be non-empty, reportingController: Invalid value: \"\": name part must consist of alphanumeric "
                 "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                 "'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                 "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')]", id="no-controller"),
    pytest.param({"type": "Info"}, 'type: Invalid value: "": has invalid value: Info', id="type"),
    pytest.param({"deprecatedCount": 2}, 'count: Invalid value: "": needs to be unset', id="deprecated-count"),
])
def test_events_v1_strict_rules(api, namespace, fields, message):
    """Written through events.k8s.io/v1, an Event meets rules core/v1 does not impose; errors name
    upstream's internal fields (reportingController, count)."""
    with pytest.raises(ApiException) as e:
        client.EventsV1Api(api).create_namespaced_event(namespace, _reported_event("strict", namespace, **fields))
    st = status_of(e.value)
    assert (st["code"], st["reason"]) == (422, "Invalid")
    assert st["message"] == f'Event.events.k8s.io "strict" is invalid: {message}', st["message"]


def test_core_event_accepts_what_core_v1_accepts(core, namespace):
    """core/v1 Events keep their old leniency: any type, and a generated name after a prefix
    ending in '.' (the names client-go's recorder gives are ``<object>.<hex>``)."""
    created = core.create_namespaced_event(namespace, client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="p1."), type="Info", reason="Started", message="hi",
        involved_object=client.V1ObjectReference(kind="Pod", name="p1", namespace=namespace)))
    assert created.metadata.name.startswith("p1.") and len(created.metadata.name) > len("p1.")
    assert core.read_namespaced_event(created.metadata.name, namespace).type == "Info"
