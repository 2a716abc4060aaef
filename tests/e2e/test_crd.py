"""Acceptance 4: a CustomResourceDefinition with a structural schema, served dynamically.

The CRD (`fixtures/crd_widgets.yaml`) has required fields, enum, minimum/maximum, pattern,
defaults, a preserve-unknown-fields subtree, status and scale subresources and printer columns.
Its custom resources are created with kubectl and the Python `CustomObjectsApi`, listed,
watched and patched (merge and JSON patch; strategic merge is 415 as upstream); unknown fields
are pruned and defaults applied; invalid ones are refused with 422 and field paths;
`kubectl get` prints the CRD's columns. `fixtures/crd_gadgets.yaml` checks that deleting a CRD
deletes its custom resources.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from harness import eventually

GROUP, VERSION, PLURAL = "e2e.kubeling.dev", "v1", "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
FIXTURES = Path(__file__).parent / "fixtures"


def established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conds = {c.type: c.status for c in (crd.status.conditions or [])} if crd.status else {}
    return conds.get("Established") == "True" and conds.get("NamesAccepted") == "True"


@pytest.fixture(scope="module")
def api(cluster):
    c = cluster.python_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def widgets_crd(cluster, api):
    ext = client.ApiextensionsV1Api(api)
    cluster.kubectl("apply", "-f", str(FIXTURES / "crd_widgets.yaml"))
    eventually(lambda: established(ext, CRD_NAME), timeout=30, what="widgets CRD Established")
    yield CRD_NAME
    if cluster.running:
        cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false", check=False)


@pytest.fixture
def custom(api, widgets_crd):
    return client.CustomObjectsApi(api)


def widget(name: str, **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 3, "color": "red", **spec}}


def status_of(e: ApiException) -> dict:
    body = json.loads(e.body)
    assert body.get("kind") == "Status", body
    return body


# -- the CRD itself ---------------------------------------------------------------------------

def test_crd_is_established_and_discoverable(cluster, widgets_crd):
    status, body = cluster.request("GET", f"/apis/{GROUP}/{VERSION}")
    assert status == 200, body
    resources = {r["name"]: r for r in json.loads(body)["resources"]}
    assert {"widgets", "widgets/status", "widgets/scale"} <= set(resources), sorted(resources)
    w = resources["widgets"]
    assert w["namespaced"] is True and w["kind"] == "Widget" and w["shortNames"] == ["wdg"]
    assert set(w["verbs"]) >= {"create", "delete", "deletecollection", "get", "list", "patch",
                               "update", "watch"}
    assert resources["widgets/scale"]["kind"] == "Scale"
    assert resources["widgets/scale"]["group"] == "autoscaling"


# -- create, get, list with kubectl and the Python client ---------------------------------------

def test_kubectl_apply_prunes_and_defaults(kubectl, namespace, widgets_crd):
    out = kubectl("apply", "-n", namespace, "-f", str(FIXTURES / "crd_widget_small.yaml"))
    assert out.stdout.strip() == "widget.e2e.kubeling.dev/small created"
    w = kubectl.json("get", "widget", "small", "-n", namespace)
    assert w["spec"]["replicas"] == 1 and w["spec"]["mode"] == "fast", "defaults applied"
    assert w["spec"]["config"] == {"anything": {"nested": [1, "two", {"three": 3}]}}
    assert w["metadata"]["generation"] == 1
    # The short name and the category resolve too.
    assert "small" in kubectl("get", "wdg", "-n", namespace, "-o", "name").stdout
    assert "widget.e2e.kubeling.dev/small" in kubectl(
        "get", "kubeling-e2e", "-n", namespace, "-o", "name").stdout


def test_custom_objects_api_crud_and_list(custom, namespace):
    ns = namespace
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("a", tags=["x"]))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert created["spec"] == {"size": 3, "color": "red", "tags": ["x"], "replicas": 1, "mode": "fast"}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                           {**widget("b"), "metadata": {"name": "b", "labels": {"k": "v"}}})
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    assert listed["kind"] == "WidgetList" and listed["apiVersion"] == f"{GROUP}/{VERSION}"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    selected = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, label_selector="k=v")
    assert [i["metadata"]["name"] for i in selected["items"]] == ["b"]
    everywhere = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL,
                                                   field_selector=f"metadata.namespace={ns}")
    assert sorted(i["metadata"]["name"] for i in everywhere["items"]) == ["a", "b"]

    got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")
    got["spec"]["size"] = 4
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a", got)
    assert replaced["spec"]["size"] == 4 and replaced["metadata"]["generation"] == 2

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "a")
    st = status_of(e.value)
    assert e.value.status == 404 and st["reason"] == "NotFound"
    assert st["message"] == f'{PLURAL}.{GROUP} "a" not found'


def test_unknown_fields_pruned_warned_or_refused(custom, cluster, namespace):
    ns = namespace
    body = widget("pruned", bogus="x")
    body["topLevelBogus"] = 1
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    assert "bogus" not in created["spec"] and "topLevelBogus" not in created
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pruned")
    assert "bogus" not in stored["spec"] and "topLevelBogus" not in stored

    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("strict", bogus="x"),
                                               field_validation="Strict")
    st = status_of(e.value)
    assert e.value.status == 400 and st["reason"] == "BadRequest"
    assert 'unknown field "spec.bogus"' in st["message"], st["message"]
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "strict")
    assert e.value.status == 404


# -- invalid custom resources -----------------------------------------------------------------

@pytest.mark.parametrize("spec, field, cause", [
    pytest.param({"size": 0}, "spec.size", "FieldValueInvalid", id="below-minimum"),
    pytest.param({"size": 11}, "spec.size", "FieldValueInvalid", id="above-maximum"),
    pytest.param({"size": "two"}, "spec.size", "FieldValueTypeInvalid", id="wrong-type"),
    pytest.param({"color": "purple"}, "spec.color", "FieldValueNotSupported", id="not-in-enum"),
    pytest.param({"code": "ABC"}, "spec.code", "FieldValueInvalid", id="pattern"),
    pytest.param({"replicas": -1}, "spec.replicas", "FieldValueInvalid", id="defaulted-field-minimum"),
    pytest.param({"color": None}, "spec.color", "FieldValueRequired", id="required-missing"),
])
def test_invalid_custom_resource_is_422_with_field_path(custom, namespace, spec, field, cause):
    body = widget("bad", **spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    st = status_of(e.value)
    assert e.value.status == 422 and st["reason"] == "Invalid", st
    assert st["message"].startswith('Widget.e2e.kubeling.dev "bad" is invalid'), st["message"]
    assert st["details"]["kind"] == "Widget" and st["details"]["group"] == GROUP
    causes = st["details"]["causes"]
    assert any(c.get("field") == field and c.get("reason") == cause for c in causes), causes
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []


def test_kubectl_reports_invalid_custom_resource(kubectl, namespace, widgets_crd):
    bad = yaml.safe_dump(widget("bad", size=42))
    out = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert out.returncode != 0
    assert "spec.size" in out.stderr and "should be less than or equal to 10" in out.stderr, out.stderr
    assert kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.strip() == ""


# -- watch ------------------------------------------------------------------------------------

def test_watch_custom_objects(custom, namespace):
    ns = namespace
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("watched"))
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "watched", {"spec": {"size": 5}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "watched")
    w = watch.Watch()
    events = []
    for ev in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                       resource_version=rv, timeout_seconds=3):
        if ev["type"] != "BOOKMARK":
            events.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["spec"]["size"]))
    assert events == [("ADDED", "watched", 3), ("MODIFIED", "watched", 5), ("DELETED", "watched", 5)]


# -- patch ------------------------------------------------------------------------------------

def test_patch_merge_json_and_strategic_is_415(custom, namespace):
    ns = namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("p", tags=["a", "b"]))
    # The client's default for custom objects is a merge patch: lists are replaced, null deletes.
    merged = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "p",
                                                   {"spec": {"tags": ["c"], "mode": None, "size": 6}})
    assert merged["spec"]["tags"] == ["c"] and merged["spec"]["size"] == 6
    assert merged["spec"]["mode"] == "fast", "a removed defaulted field is defaulted again"

    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "p",
        [{"op": "add", "path": "/spec/tags/-", "value": "d"},
         {"op": "replace", "path": "/spec/color", "value": "blue"}],
        _content_type=JSON_PATCH)
    assert patched["spec"]["tags"] == ["c", "d"] and patched["spec"]["color"] == "blue"

    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "p", {"spec": {"size": 7}},
                                              _content_type=STRATEGIC)
    st = status_of(e.value)
    assert e.value.status == 415 and st["reason"] == "UnsupportedMediaType", st
    # A patch that makes the object invalid is refused and changes nothing.
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "p", {"spec": {"size": 100}})
    assert e.value.status == 422
    after = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "p")
    assert after["spec"]["size"] == 6
    assert after["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


def test_kubectl_patch_types_on_custom_resource(kubectl, namespace, widgets_crd):
    ns = namespace
    kubectl("apply", "-n", ns, "-f", str(FIXTURES / "crd_widget_small.yaml"))
    kubectl("patch", "widget", "small", "-n", ns, "--type=merge", "-p", '{"spec":{"size":9}}')
    kubectl("patch", "widget", "small", "-n", ns, "--type=json",
            "-p", '[{"op":"replace","path":"/spec/color","value":"blue"}]')
    w = kubectl.json("get", "widget", "small", "-n", ns)
    assert (w["spec"]["size"], w["spec"]["color"]) == (9, "blue")
    out = kubectl("patch", "widget", "small", "-n", ns, "-p", '{"spec":{"size":1}}', check=False)
    assert out.returncode != 0
    assert "application/merge-patch+json" in out.stderr and "unknown format" in out.stderr, out.stderr


# -- printer columns --------------------------------------------------------------------------

def test_kubectl_get_shows_printer_columns(kubectl, cluster, custom, namespace):
    ns = namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("cols", size=7, color="blue"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "cols",
                                                 {"status": {"phase": "Ready"}})
    lines = kubectl("get", "widgets", "-n", ns).stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["NAME", "SIZE", "COLOR", "PHASE", "AGE"], lines
    row = lines[1].split()
    assert row[:4] == ["cols", "7", "blue", "Ready"], lines
    assert re.fullmatch(r"\d+s", row[4]), row

    status, body = cluster.request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}",
                                   headers={"Accept": TABLE})
    assert status == 200, body
    table = json.loads(body)
    assert table["kind"] == "Table"
    assert [(c["name"], c["type"]) for c in table["columnDefinitions"]] == [
        ("Name", "string"), ("Size", "integer"), ("Color", "string"), ("Phase", "string"),
        ("Age", "date")]
    assert table["rows"][0]["cells"][:4] == ["cols", 7, "blue", "Ready"]
    wide = kubectl("get", "widgets", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "COLOR", "PHASE", "AGE"]


# -- subresources -----------------------------------------------------------------------------

def test_status_subresource_is_separate(custom, namespace):
    ns = namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("st"))
    # Status written through the main resource is ignored; spec via /status is ignored.
    main = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "st",
                                                 {"status": {"phase": "Main"}, "spec": {"size": 4}})
    assert "status" not in main or main["status"].get("phase") != "Main"
    assert main["metadata"]["generation"] == 2
    st = custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "st",
                                                      {"status": {"phase": "Ready"}, "spec": {"size": 9}})
    assert st["status"]["phase"] == "Ready" and st["spec"]["size"] == 4
    assert st["metadata"]["generation"] == 2, "status writes do not bump generation"
    got = custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "st")
    assert got["status"] == {"phase": "Ready"}


def test_scale_subresource_with_kubectl(kubectl, custom, namespace):
    ns = namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, widget("sc"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "sc",
                                                 {"status": {"replicas": 1, "selector": "app=sc"}})
    out = kubectl("scale", "widget", "sc", "-n", ns, "--replicas=4")
    assert out.stdout.strip() == "widget.e2e.kubeling.dev/sc scaled"
    assert custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "sc")["spec"]["replicas"] == 4
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, ns, PLURAL, "sc")
    assert scale["apiVersion"] == "autoscaling/v1" and scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 4}
    assert scale["status"] == {"replicas": 1, "selector": "app=sc"}
    # Scaling to an invalid value is refused by the CRD's schema (minimum 0).
    out = kubectl("scale", "widget", "sc", "-n", ns, "--replicas=-1", check=False)
    assert out.returncode != 0


# -- deleting the CRD -------------------------------------------------------------------------

def test_deleting_crd_removes_custom_resources(cluster, api):
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    name = f"gadgets.{GROUP}"
    crd_file = str(FIXTURES / "crd_gadgets.yaml")
    cluster.kubectl("apply", "-f", crd_file)
    eventually(lambda: established(ext, name), timeout=30, what="gadgets Established")
    for i in range(3):
        custom.create_cluster_custom_object(GROUP, "v1alpha1", "gadgets",
                                            {"apiVersion": f"{GROUP}/v1alpha1", "kind": "Gadget",
                                             "metadata": {"name": f"g{i}"}, "spec": {"weight": i}})
    assert len(custom.list_cluster_custom_object(GROUP, "v1alpha1", "gadgets")["items"]) == 3

    cluster.kubectl("delete", "crd", name, timeout=60)

    def gone() -> bool:
        try:
            ext.read_custom_resource_definition(name)
        except ApiException as e:
            return e.status == 404
        return False
    eventually(gone, timeout=30, what="gadgets CRD deleted")
    status, _ = cluster.request("GET", f"/apis/{GROUP}/v1alpha1/gadgets")
    assert status == 404

    # Recreating the CRD must not bring back the old objects.
    cluster.kubectl("apply", "-f", crd_file)
    eventually(lambda: established(ext, name), timeout=30, what="gadgets re-Established")
    try:
        assert custom.list_cluster_custom_object(GROUP, "v1alpha1", "gadgets")["items"] == []
    finally:
        cluster.kubectl("delete", "crd", name, "--wait=false", check=False)
