"""Acceptance 6 (first half): bad input gets a 4xx ``Status`` and writes nothing.

Raw HTTPS requests (so that no client-side validation hides the server's answer) and kubectl:
malformed JSON and YAML, bodies that are not objects, unknown fields under
``fieldValidation=Strict`` (400 naming the field) and ``Warn`` (a ``Warning`` header), wrong
JSON types, invalid names and values (422 with ``details.causes[].field``), URL/body mismatches
and stale resourceVersions (409). After each refusal a GET shows nothing was written or changed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import harness
import pytest
import yaml

JSON = "application/json"
YAML = "application/yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def send(cluster, method: str, path: str, body: bytes | str | dict | None = None,
         ctype: str = JSON) -> tuple[int, dict, object]:
    """One request; returns (status, response headers with every Warning joined, parsed body).

    The harness' `Cluster.request` drops response headers, and Warning headers are part of
    what is under test here, so this wraps urllib with the harness' TLS context.
    """
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(cluster.url + path, data=body, method=method,
                                 headers={"Content-Type": ctype, "Accept": JSON})
    try:
        with urllib.request.urlopen(req, context=cluster.ssl_context(), timeout=30) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs["warning"] = headers.get_all("Warning") or []
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    return status, hdrs, parsed


def assert_status(resp, code: int, reason: str, *, field: str | None = None,
                  in_message: str | None = None) -> dict:
    status, _, st = resp
    assert isinstance(st, dict) and st.get("kind") == "Status", (status, st)
    assert (status, st["code"], st["reason"], st["status"]) == (code, code, reason, "Failure"), st
    if in_message is not None:
        assert in_message in st["message"], st["message"]
    if field is not None:
        causes = st.get("details", {}).get("causes", [])
        fields = [c.get("field") for c in causes]
        # 422 Invalid carries structured causes; 400 decode errors name the field in the message.
        assert field in fields or field in st["message"], (field, st)
    return st


def cm_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def deploy_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def assert_absent(cluster, path: str) -> None:
    status, _, body = send(cluster, "GET", path)
    assert status == 404, f"a refused request left {path} behind: {body}"


def deployment(name: str, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                     **spec}}


# -- malformed bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("body, ctype", [
    pytest.param('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"', JSON,
                 id="truncated-json"),
    pytest.param('{"metadata": {"name": "x"}, "data": {"a": 1,}}', JSON, id="trailing-comma"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\ndata: [", YAML,
                 id="broken-yaml-flow"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n\tdata: {}\n", YAML,
                 id="yaml-tab-indent"),
    pytest.param("[1, 2, 3]", JSON, id="json-array"),
    pytest.param('"just a string"', JSON, id="json-string"),
    pytest.param("null", JSON, id="json-null"),
    pytest.param("", JSON, id="empty"),
    pytest.param("\xff\xfe garbage", JSON, id="binary-garbage"),
])
def test_malformed_body_is_400(cluster, namespace, body, ctype):
    st = assert_status(send(cluster, "POST", cm_path(namespace), body, ctype), 400, "BadRequest")
    assert st["message"], st
    assert_absent(cluster, cm_path(namespace, "x"))


def test_malformed_patches_are_400_and_change_nothing(cluster, namespace):
    ns = namespace
    created = send(cluster, "POST", cm_path(ns), {"metadata": {"name": "p"}, "data": {"a": "1"}})
    assert created[0] == 201, created
    rv = created[2]["metadata"]["resourceVersion"]
    for body, ctype in [
        ('{"data": {"a": "2"', MERGE),
        ('{"data": {"a": "2"', STRATEGIC),
        ('[{"op": "replace", "path": "/data/a"', JSON_PATCH),
        ('{"op": "replace", "path": "/data/a", "value": "2"}', JSON_PATCH),  # not a list
        ('[{"op": "frobnicate", "path": "/data/a", "value": "2"}]', JSON_PATCH),
        ('[{"op": "replace", "path": "no-leading-slash", "value": "2"}]', JSON_PATCH),
    ]:
        resp = send(cluster, "PATCH", cm_path(ns, "p"), body, ctype)
        assert 400 <= resp[0] < 500 and resp[0] not in (404, 409), (body, resp)
        assert isinstance(resp[2], dict) and resp[2].get("kind") == "Status", (body, resp)
    got = send(cluster, "GET", cm_path(ns, "p"))[2]
    assert got["data"] == {"a": "1"} and got["metadata"]["resourceVersion"] == rv


def test_unsupported_content_type_is_415(cluster, namespace):
    assert_status(send(cluster, "POST", cm_path(namespace), "a=b", "text/plain"),
                  415, "UnsupportedMediaType")
    assert_absent(cluster, cm_path(namespace, "a"))


# -- fieldValidation --------------------------------------------------------------------------

def _unknown_fields_deployment() -> dict:
    body = deployment("strict", replicass=2)
    body["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    return body


def test_unknown_fields_strict_is_400_naming_each_field(cluster, namespace):
    resp = send(cluster, "POST", deploy_path(namespace) + "?fieldValidation=Strict",
                _unknown_fields_deployment())
    st = assert_status(resp, 400, "BadRequest", in_message="strict decoding error: ")
    assert 'unknown field "spec.replicass"' in st["message"], st["message"]
    assert 'unknown field "spec.template.spec.containers[0].imagee"' in st["message"], st["message"]
    assert_absent(cluster, deploy_path(namespace, "strict"))


def test_duplicate_field_strict_is_400(cluster, namespace):
    body = ('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},'
            '"data":{"a":"1"},"data":{"b":"2"}}')
    st = assert_status(send(cluster, "POST", cm_path(namespace) + "?fieldValidation=Strict", body),
                       400, "BadRequest")
    assert 'duplicate field "data"' in st["message"], st["message"]
    assert_absent(cluster, cm_path(namespace, "dup"))


def test_unknown_fields_warn_succeeds_with_warning_headers(cluster, namespace):
    status, headers, obj = send(cluster, "POST", deploy_path(namespace) + "?fieldValidation=Warn",
                                _unknown_fields_deployment())
    assert status == 201, obj
    warnings = headers["warning"]
    # RFC 7234 warn-text: a quoted string whose inner quotes are backslash-escaped.
    assert all(w.startswith('299 - "') and w.endswith('"') for w in warnings), warnings
    texts = [w[len('299 - "'):-1].replace('\\"', '"') for w in warnings]
    assert 'unknown field "spec.replicass"' in texts, texts
    assert 'unknown field "spec.template.spec.containers[0].imagee"' in texts, texts
    assert "replicass" not in obj["spec"]
    assert "imagee" not in obj["spec"]["template"]["spec"]["containers"][0]


def test_unknown_fields_ignore_drops_silently(cluster, namespace):
    status, headers, obj = send(cluster, "POST", deploy_path(namespace) + "?fieldValidation=Ignore",
                                _unknown_fields_deployment())
    assert status == 201, obj
    assert not any("unknown field" in w for w in headers["warning"]), headers["warning"]
    assert "replicass" not in obj["spec"]


def test_invalid_field_validation_value_is_400(cluster, namespace):
    st = assert_status(send(cluster, "POST", cm_path(namespace) + "?fieldValidation=Loud",
                            {"metadata": {"name": "loud"}}), 400, "BadRequest")
    assert "fieldValidation" in st["message"]
    assert_absent(cluster, cm_path(namespace, "loud"))


# -- wrong types and invalid values -----------------------------------------------------------

@pytest.mark.parametrize("mutate, field", [
    pytest.param(lambda d: d["spec"].update(replicas="two"), "spec.replicas", id="string-for-int"),
    pytest.param(lambda d: d["spec"]["template"]["spec"].update(containers={"name": "c"}),
                 "spec.template.spec.containers", id="object-for-list"),
    pytest.param(lambda d: d["metadata"].update(labels=["a"]), "metadata.labels", id="list-for-map"),
    pytest.param(lambda d: d["spec"].update(paused="yes"), "spec.paused", id="string-for-bool"),
    pytest.param(lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image=5),
                 "spec.template.spec.containers[0].image", id="int-for-string"),
])
def test_wrong_type_is_400_naming_the_field(cluster, namespace, mutate, field):
    body = deployment("typed")
    mutate(body)
    assert_status(send(cluster, "POST", deploy_path(namespace), body), 400, "BadRequest", field=field)
    assert_absent(cluster, deploy_path(namespace, "typed"))


@pytest.mark.parametrize("path_fn, body, field", [
    pytest.param(cm_path, {"metadata": {"name": "Invalid_Name"}}, "metadata.name", id="name-underscore"),
    pytest.param(cm_path, {"metadata": {"name": "x" * 254}}, "metadata.name", id="name-too-long"),
    pytest.param(cm_path, {"metadata": {"name": "ok", "labels": {"bad key!": "v"}}},
                 "metadata.labels", id="label-key"),
    pytest.param(cm_path, {"metadata": {"name": "ok", "labels": {"k": "-bad-"}}},
                 "metadata.labels", id="label-value"),
    pytest.param(cm_path, {"metadata": {"name": "ok"}, "data": {"bad/key": "v"}}, "data[bad/key]",
                 id="configmap-data-key"),
    pytest.param(cm_path, {"metadata": {}}, "metadata.name", id="name-missing"),
    pytest.param(deploy_path, deployment("neg", replicas=-1), "spec.replicas", id="negative-replicas"),
    pytest.param(deploy_path, deployment("sel", selector={"matchLabels": {"app": "other"}}),
                 "spec.template.metadata.labels", id="selector-mismatch"),
    pytest.param(deploy_path, {**deployment("noimg"), "spec": {
        **deployment("noimg")["spec"], "template": {"metadata": {"labels": {"app": "noimg"}},
                                                     "spec": {"containers": [{"name": "c"}]}}}},
                 "spec.template.spec.containers[0].image", id="container-image-required"),
])
def test_invalid_value_is_422_with_field_path(cluster, namespace, path_fn, body, field):
    resp = send(cluster, "POST", path_fn(namespace), body)
    st = assert_status(resp, 422, "Invalid")
    fields = [c["field"] for c in st["details"]["causes"]]
    assert field in fields, (field, st)
    name = body["metadata"].get("name")
    if name:
        assert st["details"]["name"] == name
        assert_absent(cluster, path_fn(namespace, name))


# -- mismatches and concurrency ---------------------------------------------------------------

def test_name_and_namespace_mismatch_are_400(cluster, namespace):
    ns = namespace
    assert send(cluster, "POST", cm_path(ns), {"metadata": {"name": "real"}})[0] == 201
    st = assert_status(send(cluster, "PUT", cm_path(ns, "real"), {"metadata": {"name": "other"}}),
                       400, "BadRequest")
    assert "does not match the name on the URL" in st["message"], st["message"]
    st = assert_status(send(cluster, "POST", cm_path(ns), {"metadata": {"name": "elsewhere",
                                                                         "namespace": "default"}}),
                       400, "BadRequest")
    assert "does not match the namespace" in st["message"], st["message"]
    assert_absent(cluster, cm_path(ns, "elsewhere"))
    assert_absent(cluster, cm_path("default", "elsewhere"))
    st = assert_status(send(cluster, "POST", cm_path(ns), {"apiVersion": "v1", "kind": "Secret",
                                                           "metadata": {"name": "kindless"}}),
                       400, "BadRequest")
    assert_absent(cluster, cm_path(ns, "kindless"))


def test_stale_resource_version_is_409_and_changes_nothing(cluster, namespace):
    ns = namespace
    _, _, v1 = send(cluster, "POST", cm_path(ns), {"metadata": {"name": "cas"}, "data": {"v": "1"}})
    _, _, v2 = send(cluster, "PATCH", cm_path(ns, "cas"), {"data": {"v": "2"}}, MERGE)
    stale = {**v1, "data": {"v": "stale"}}
    st = assert_status(send(cluster, "PUT", cm_path(ns, "cas"), stale), 409, "Conflict",
                       in_message="the object has been modified")
    assert st["details"] == {"name": "cas", "kind": "configmaps"}
    # A merge patch carrying a stale resourceVersion is a precondition too.
    assert_status(send(cluster, "PATCH", cm_path(ns, "cas"),
                       {"metadata": {"resourceVersion": v1["metadata"]["resourceVersion"]},
                        "data": {"v": "stale"}}, MERGE), 409, "Conflict")
    # So is a delete with a stale resourceVersion precondition.
    assert_status(send(cluster, "DELETE", cm_path(ns, "cas"),
                       {"kind": "DeleteOptions", "apiVersion": "v1",
                        "preconditions": {"resourceVersion": v1["metadata"]["resourceVersion"]}}),
                  409, "Conflict")
    got = send(cluster, "GET", cm_path(ns, "cas"))[2]
    assert got["data"] == {"v": "2"}
    assert got["metadata"]["resourceVersion"] == v2["metadata"]["resourceVersion"]


def test_update_of_missing_object_is_404(cluster, namespace):
    assert_status(send(cluster, "PUT", cm_path(namespace, "ghost"),
                       {"metadata": {"name": "ghost", "resourceVersion": "5"}}), 404, "NotFound")
    assert_absent(cluster, cm_path(namespace, "ghost"))


# -- kubectl ----------------------------------------------------------------------------------

def test_kubectl_unknown_field_is_refused_by_server(kubectl, namespace, tmp_path):
    body = yaml.safe_dump(_unknown_fields_deployment())
    out = kubectl("apply", "-n", namespace, "-f", "-", input=body, check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.replicass"' in out.stderr, out.stderr
    out = kubectl("get", "deployments", "-n", namespace, "-o", "name")
    assert "strict" not in out.stdout


def test_kubectl_wrong_type_and_invalid_name(kubectl, namespace):
    body = deployment("typed")
    body["spec"]["replicas"] = "two"
    out = kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert out.returncode != 0 and "spec.replicas" in out.stderr, out.stderr
    out = kubectl("create", "configmap", "Invalid_Name", "-n", namespace, check=False)
    assert out.returncode != 0
    assert 'ConfigMap "Invalid_Name" is invalid: metadata.name: Invalid value: "Invalid_Name"' \
        in out.stderr, out.stderr
    assert kubectl("get", "deployments,configmaps", "-n", namespace, "-o", "name",
                   "--field-selector", "metadata.name!=kube-root-ca.crt").stdout.strip() == ""


def test_kubectl_stale_replace_is_conflict(kubectl, namespace):
    kubectl("create", "configmap", "cas", "-n", namespace, "--from-literal=v=1")
    old = kubectl.json("get", "configmap", "cas", "-n", namespace)
    kubectl("patch", "configmap", "cas", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    old["data"] = {"v": "stale"}
    out = kubectl("replace", "-f", "-", input=json.dumps(old), check=False)
    assert out.returncode != 0
    assert "the object has been modified" in out.stderr, out.stderr
    assert kubectl.json("get", "configmap", "cas", "-n", namespace)["data"] == {"v": "2"}


# -- non-object metadata on every write path (found by the fuzz at 1,000 examples) ------------

@pytest.mark.parametrize("method, suffix, ctype", [
    pytest.param("PUT", "", JSON, id="update"),
    pytest.param("PATCH", "", MERGE, id="merge-patch"),
    pytest.param("PATCH", "", STRATEGIC, id="strategic-patch"),
    pytest.param("PUT", "/status", JSON, id="update-status"),
    pytest.param("PATCH", "/status", MERGE, id="patch-status"),
    pytest.param("PUT", "/scale", JSON, id="update-scale"),
    pytest.param("PATCH", "/scale", MERGE, id="patch-scale"),
])
@pytest.mark.parametrize("metadata", [True, "x", [1], 5], ids=["bool", "string", "list", "int"])
def test_non_object_metadata_is_4xx_and_changes_nothing(cluster, namespace, method, suffix,
                                                        ctype, metadata):
    ns = namespace
    # no replicas: the deployment controller's writes (revision annotation, status) end once it
    # reports the new ReplicaSet available, and nothing else writes the object after that
    created = send(cluster, "POST", deploy_path(ns), deployment("meta", replicas=0))
    assert created[0] == 201, created

    def settled():
        obj = send(cluster, "GET", deploy_path(ns, "meta"))[2]
        done = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"] and any(
            c.get("reason") == "NewReplicaSetAvailable" for c in obj["status"].get("conditions") or [])
        return obj if done else None
    before = harness.eventually(settled, timeout=30, what="the deployment controller done with the Deployment")
    body = {"metadata": metadata}
    if method == "PUT":
        body.update({k: v for k, v in before.items() if k != "metadata"})
    status, _, st = send(cluster, method, deploy_path(ns, "meta") + suffix, body, ctype)
    assert 400 <= status < 500, (status, st)
    assert isinstance(st, dict) and st.get("kind") == "Status" and st.get("code") == status, st
    after = send(cluster, "GET", deploy_path(ns, "meta"))[2]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# -- error bodies as upstream writes them -----------------------------------------------------

def test_error_bodies_are_upstreams_bytes(cluster, namespace):
    """Go struct field order, empty fields left out, and the JSON encoder's trailing newline."""
    from kubeling.api import errors

    status, raw = cluster.request("GET", cm_path(namespace, "absent"), headers={"Accept": JSON})
    assert status == 404
    assert raw == errors.encode_status(errors.not_found("configmaps", "", "absent")), raw


def test_oversized_body_is_a_413_status(cluster, namespace):
    body = json.dumps({"metadata": {"name": "huge"}, "data": {"k": "x" * (3 * 1024 * 1024)}})
    st = assert_status(send(cluster, "POST", cm_path(namespace), body), 413, "RequestEntityTooLarge")
    assert st["message"] == "Request entity too large: limit is 3145728"
    assert_absent(cluster, cm_path(namespace, "huge"))
