"""OpenAPI v2 and v3 documents built from kinds.BUILTIN (+ a CRD) and upstream's schemas."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from kubeling.api import kinds, schema
from kubeling.api.kinds import Resource
from kubeling.apiserver import openapi

CRD = Resource("stable.example.com", "v1", "crontabs", "CronTab", True, ("ct",), ("all",), ("status", "scale"),
               crd=True)
CRD_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "nullable": True, "properties": {
            "cronSpec": {"type": "string", "description": "The cron line."},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        }},
    },
}
RESOURCES = [*kinds.BUILTIN, CRD]
CRD_SCHEMAS = {CRD.gvk: CRD_SCHEMA}


@pytest.fixture(scope="module")
def v2() -> dict:
    return openapi.build_v2(RESOURCES, schema.get(), CRD_SCHEMAS)


@pytest.fixture(scope="module")
def v3() -> openapi.V3Documents:
    return openapi.V3Documents(RESOURCES, schema.get(), CRD_SCHEMAS)


@pytest.fixture(scope="module")
def apps_v1(v3) -> dict:
    return orjson.loads(v3.get("apis/apps/v1")[0])


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield path, method, op


def _op(doc: dict, operation_id: str) -> tuple[str, str, dict]:
    found = [(p, m, o) for p, m, o in _operations(doc) if o["operationId"] == operation_id]
    assert len(found) == 1, operation_id
    return found[0]


def _param_names(op: dict) -> set[str]:
    return {p["name"] for p in op.get("parameters", [])}


def _assert_refs_resolve(doc: dict, prefix: str, table: dict) -> None:
    refs = {n["$ref"] for n in _walk(doc) if isinstance(n.get("$ref"), str)}
    assert refs, "document has no refs at all"
    for ref in refs:
        assert ref.startswith(prefix), ref
        assert ref[len(prefix):] in table, ref


# --- v2 -------------------------------------------------------------------------------------

OPERATIONS = [
    pytest.param("listCoreV1NamespacedPod", "/api/v1/namespaces/{namespace}/pods", "get", "list",
                 ("", "v1", "Pod"), id="list-pods"),
    pytest.param("listCoreV1PodForAllNamespaces", "/api/v1/pods", "get", "list", ("", "v1", "Pod"),
                 id="list-pods-all-namespaces"),
    pytest.param("createAppsV1NamespacedDeployment", "/apis/apps/v1/namespaces/{namespace}/deployments", "post",
                 "post", ("apps", "v1", "Deployment"), id="create-deployment"),
    pytest.param("deleteAppsV1CollectionNamespacedDeployment", "/apis/apps/v1/namespaces/{namespace}/deployments",
                 "delete", "deletecollection", ("apps", "v1", "Deployment"), id="deletecollection"),
    pytest.param("readAppsV1NamespacedDeployment", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "get",
                 "get", ("apps", "v1", "Deployment"), id="read-deployment"),
    pytest.param("replaceAppsV1NamespacedDeploymentStatus",
                 "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", "put", "put",
                 ("apps", "v1", "Deployment"), id="replace-status"),
    pytest.param("patchAppsV1NamespacedDeploymentScale",
                 "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "patch", "patch",
                 ("autoscaling", "v1", "Scale"), id="patch-scale"),
    pytest.param("watchAppsV1NamespacedDeploymentList", "/apis/apps/v1/watch/namespaces/{namespace}/deployments",
                 "get", "watchlist", ("apps", "v1", "Deployment"), id="watch-list"),
    pytest.param("watchAppsV1DeploymentListForAllNamespaces", "/apis/apps/v1/watch/deployments", "get",
                 "watchlist", ("apps", "v1", "Deployment"), id="watch-all-namespaces"),
    pytest.param("listCoreV1Node", "/api/v1/nodes", "get", "list", ("", "v1", "Node"), id="cluster-scoped"),
    pytest.param("readCoreV1NamespacedPodLog", "/api/v1/namespaces/{namespace}/pods/{name}/log", "get", "get",
                 ("", "v1", "Pod"), id="pod-log"),
    pytest.param("connectCoreV1PostNamespacedPodExec", "/api/v1/namespaces/{namespace}/pods/{name}/exec", "post",
                 "connect", ("", "v1", "PodExecOptions"), id="pod-exec"),
    pytest.param("connectCoreV1GetNamespacedPodProxyWithPath",
                 "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path}", "get", "connect",
                 ("", "v1", "PodProxyOptions"), id="pod-proxy-path"),
    pytest.param("createCoreV1NamespacedPodEviction", "/api/v1/namespaces/{namespace}/pods/{name}/eviction", "post",
                 "post", ("policy", "v1", "Eviction"), id="pod-eviction"),
    pytest.param("createCoreV1NamespacedPodBinding", "/api/v1/namespaces/{namespace}/pods/{name}/binding", "post",
                 "post", ("", "v1", "Binding"), id="pod-binding"),
    pytest.param("createCoreV1NamespacedServiceAccountToken",
                 "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", "post", "post",
                 ("authentication.k8s.io", "v1", "TokenRequest"), id="sa-token"),
    pytest.param("replaceCoreV1NamespaceFinalize", "/api/v1/namespaces/{name}/finalize", "put", "put",
                 ("", "v1", "Namespace"), id="namespace-finalize"),
    pytest.param("createAuthorizationV1SelfSubjectAccessReview",
                 "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "post", "post",
                 ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"), id="create-only"),
    pytest.param("listRbacAuthorizationV1NamespacedRoleBinding",
                 "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", "get", "list",
                 ("rbac.authorization.k8s.io", "v1", "RoleBinding"), id="dotted-group"),
    pytest.param("patchStableExampleComV1NamespacedCronTabStatus",
                 "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status", "patch", "patch",
                 ("stable.example.com", "v1", "CronTab"), id="crd-status"),
]


@pytest.mark.parametrize("operation_id,path,method,action,gvk", OPERATIONS)
def test_v2_operations(v2, operation_id, path, method, action, gvk):
    got_path, got_method, op = _op(v2, operation_id)
    assert (got_path, got_method) == (path, method)
    assert op["x-kubernetes-action"] == action
    group, version, kind = gvk
    assert op["x-kubernetes-group-version-kind"] == {"group": group, "version": version, "kind": kind}
    assert op["responses"]["401"] == {"description": "Unauthorized"}


def test_v2_document_shape(v2):
    assert v2["swagger"] == "2.0"
    assert v2["info"]["version"] == f"v{schema.KUBE_VERSION}"
    ids = [op["operationId"] for _, _, op in _operations(v2)]
    assert len(ids) == len(set(ids)), "operationIds are unique"
    for path in ("/api/", "/api/v1/", "/apis/", "/apis/apps/", "/apis/apps/v1/", "/version/"):
        assert path in v2["paths"]
    assert _op(v2, "getCodeVersion")[2]["responses"]["200"]["schema"] == {
        "$ref": "#/definitions/io.k8s.apimachinery.pkg.version.Info"}


def test_v2_refs_resolve(v2):
    _assert_refs_resolve(v2, "#/definitions/", v2["definitions"])
    assert "#/$defs/" not in json.dumps(v2)


def test_v2_hides_undiscoverable_versions(v2):
    for path in v2["paths"]:
        assert not path.startswith(("/apis/extensions/", "/apis/apps/v1beta1/", "/apis/apps/v1beta2/")), path


def test_v2_write_parameters(v2):
    _, _, patch = _op(v2, "patchAppsV1NamespacedDeployment")
    assert {"dryRun", "fieldManager", "fieldValidation", "force"} <= _param_names(patch)
    body = next(p for p in patch["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert body["required"] is True
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert "application/apply-patch+yaml" in patch["consumes"]
    validation = next(p for p in patch["parameters"] if p["name"] == "fieldValidation")
    assert validation == {**validation, "in": "query", "type": "string"}

    for op_id in ("createAppsV1NamespacedDeployment", "replaceAppsV1NamespacedDeployment"):
        _, _, op = _op(v2, op_id)
        assert {"dryRun", "fieldManager", "fieldValidation"} <= _param_names(op)
        assert "force" not in _param_names(op)


def test_v2_list_and_path_parameters(v2):
    _, _, op = _op(v2, "listCoreV1NamespacedPod")
    assert {"labelSelector", "fieldSelector", "watch", "resourceVersion", "limit", "continue"} <= _param_names(op)
    assert op["responses"]["200"]["schema"] == {"$ref": "#/definitions/io.k8s.api.core.v1.PodList"}
    item = v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]
    path_params = {p["name"]: p for p in item["parameters"]}
    assert path_params["name"]["in"] == "path" and path_params["name"]["required"] is True
    assert path_params["namespace"]["in"] == "path"
    assert path_params["pretty"]["in"] == "query"


def test_v2_definitions_converted(v2):
    defs = v2["definitions"]
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        **defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"], "type": "string", "format": "int-or-string"}
    assert defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    for node in _walk(defs):
        assert not isinstance(node.get("type"), list), node
    deployment = defs["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment", "version": "v1"}]
    assert "enum" not in deployment["properties"]["apiVersion"]
    assert deployment["properties"]["spec"] == {
        "$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec",
        "description": deployment["properties"]["spec"]["description"]}
    containers = defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]["x-kubernetes-patch-strategy"] == \
        "retainKeys"
    # Only what the operations reach: nothing from groups kubeling does not serve.
    assert not any(name.startswith("io.k8s.api.flowcontrol.") for name in defs)


def test_v2_crd(v2):
    crontab = v2["definitions"]["com.example.stable.v1.CronTab"]
    assert crontab["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}]
    assert crontab["properties"]["metadata"]["$ref"] == \
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    spec = crontab["properties"]["spec"]
    assert "nullable" not in spec
    assert "anyOf" not in spec["properties"]["port"]  # Swagger 2.0 cannot say anyOf
    assert spec["properties"]["port"]["x-kubernetes-int-or-string"] is True
    assert "com.example.stable.v1.CronTabList" in v2["definitions"]
    _, _, patch = _op(v2, "patchStableExampleComV1NamespacedCronTab")
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    assert "application/merge-patch+json" in patch["consumes"]
    _, _, scale = _op(v2, "readStableExampleComV1NamespacedCronTabScale")
    assert scale["responses"]["200"]["schema"] == {"$ref": "#/definitions/io.k8s.api.autoscaling.v1.Scale"}


def test_crd_without_schema_is_open():
    doc = openapi.build_v2([*kinds.BUILTIN, CRD], schema.get(), {})
    crontab = doc["definitions"]["com.example.stable.v1.CronTab"]
    assert crontab["x-kubernetes-preserve-unknown-fields"] is True
    assert crontab["type"] == "object"


# --- v3 -------------------------------------------------------------------------------------

def test_v3_index(v3):
    paths = v3.index["paths"]
    for path in ("api", "api/v1", "apis", "apis/apps", "apis/apps/v1", "apis/autoscaling/v2", "version",
                 "apis/stable.example.com", "apis/stable.example.com/v1"):
        body, digest = v3.get(path)
        assert paths[path] == {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
        assert digest == hashlib.sha512(body).hexdigest().upper()
    assert not any(p.startswith(("apis/extensions", "apis/apps/v1beta")) for p in paths)
    assert v3.get("apis/nope/v1") is None
    assert orjson.loads(v3.index_body) == v3.index


def test_v3_index_changes_with_crds(v3):
    builtin = openapi.build_v3_index(kinds.BUILTIN, schemas=schema.get())
    assert "apis/stable.example.com/v1" not in builtin["paths"]
    # Documents a CRD does not touch keep their hash, so clients keep their cache.
    assert builtin["paths"]["apis/apps/v1"] == v3.index["paths"]["apis/apps/v1"]


def test_v3_gv_builder_matches_served_bytes(v3, apps_v1):
    doc = openapi.build_v3_gv("apps/v1", RESOURCES, schema.get(), CRD_SCHEMAS)
    assert doc == apps_v1
    assert openapi.gv_document_hash(doc) == v3.get("apis/apps/v1")[1]
    assert openapi.build_v3_gv("apps/v1beta1", RESOURCES, schema.get()) is None
    group_doc = openapi.build_v3_document("apis/apps", RESOURCES, schema.get())
    assert list(group_doc["paths"]) == ["/apis/apps/"]


@pytest.mark.parametrize("path", ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/stable.example.com/v1", "api",
                                  "apis", "version"])
def test_v3_refs_resolve(v3, path):
    doc = orjson.loads(v3.get(path)[0])
    assert doc["openapi"].startswith("3.0")
    _assert_refs_resolve(doc, "#/components/schemas/", doc["components"]["schemas"])


def test_v3_components_are_per_group_version(apps_v1):
    schemas = apps_v1["components"]["schemas"]
    assert "io.k8s.api.apps.v1.Deployment" in schemas
    assert "io.k8s.api.autoscaling.v1.Scale" in schemas  # via deployments/scale
    assert "io.k8s.api.core.v1.PodSpec" in schemas  # via the pod template
    assert "io.k8s.api.batch.v1.Job" not in schemas
    assert all(path.startswith("/apis/apps/v1/") for path in apps_v1["paths"])


def test_v3_deployment_strategy(apps_v1):
    schemas = apps_v1["components"]["schemas"]
    strategy = schemas["io.k8s.api.apps.v1.DeploymentStrategy"]
    assert strategy["type"] == "object"
    assert set(strategy["properties"]) == {"rollingUpdate", "type"}
    assert strategy["properties"]["type"]["type"] == "string"
    rolling = strategy["properties"]["rollingUpdate"]
    assert rolling["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.RollingUpdateDeployment"}]
    assert "default" not in rolling  # a pointer field: no zero value
    spec_strategy = schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert spec_strategy["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}]
    assert spec_strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert spec_strategy["default"] == {}
    assert "$ref" not in spec_strategy


def _explain(doc: dict, gvk: dict, field_path: str) -> dict:
    """Walk a dotted field path the way kubectl explain does: by GVK, then properties/allOf/items."""
    schemas = doc["components"]["schemas"]
    node = next(s for s in schemas.values() if gvk in s.get("x-kubernetes-group-version-kind", []))

    def resolve(n):
        while True:
            if "$ref" in n:
                n = schemas[n["$ref"].rsplit("/", 1)[1]]
            elif len(n.get("allOf", [])) == 1 and "properties" not in n:
                n = n["allOf"][0]
            elif "items" in n:
                n = n["items"]
            else:
                return n

    for name in field_path.split("."):
        node = resolve(resolve(node)["properties"][name])
    return node


def test_v3_explain_walk(apps_v1):
    gvk = {"group": "apps", "kind": "Deployment", "version": "v1"}
    max_surge = _explain(apps_v1, gvk, "spec.strategy.rollingUpdate.maxSurge")
    assert max_surge == {**max_surge, "type": "string", "format": "int-or-string"}
    ports = _explain(apps_v1, gvk, "spec.template.spec.containers.ports.containerPort")
    assert ports["type"] == "integer" and ports["format"] == "int32"


def test_v3_scalar_and_element_defaults(apps_v1):
    schemas = apps_v1["components"]["schemas"]
    condition = schemas["io.k8s.api.apps.v1.DeploymentCondition"]["properties"]
    assert condition["type"]["default"] == ""  # required value field
    assert "default" not in condition["message"]  # optional
    selector = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["properties"]
    assert selector["matchLabels"]["additionalProperties"] == {"default": "", "type": "string"}
    assert selector["matchExpressions"]["items"]["default"] == {}


def test_v3_patch_declares_field_validation_for_every_resource(v3):
    """kubectl leaves validation to the server when PATCH of the GVK declares fieldValidation."""
    for res in RESOURCES:
        if not res.discoverable or res.storage_version or "patch" not in res.verbs:
            continue
        doc = orjson.loads(v3.get(f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}")[0])
        gvk = {"group": res.group, "kind": res.kind, "version": res.version}
        patches = [item["patch"] for item in doc["paths"].values()
                   if "patch" in item and item["patch"].get("x-kubernetes-group-version-kind") == gvk]
        assert patches, res
        assert all("fieldValidation" in _param_names(op) for op in patches), res


def test_v3_request_bodies(apps_v1, v3):
    path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    patch = apps_v1["paths"][path]["patch"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json",
        "application/apply-patch+yaml"}
    assert patch["requestBody"]["content"]["application/apply-patch+yaml"]["schema"] == {
        "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}
    assert {"fieldValidation", "force", "dryRun", "fieldManager"} <= _param_names(patch)
    for method in ("put",):
        op = apps_v1["paths"][path][method]
        assert op["requestBody"]["content"]["*/*"]["schema"] == {
            "$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"}
        assert "fieldValidation" in _param_names(op)
    post = apps_v1["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]
    assert "fieldValidation" in _param_names(post)
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"}
    param = next(p for p in patch["parameters"] if p["name"] == "fieldValidation")
    assert param["in"] == "query" and param["schema"]["type"] == "string"

    crd = orjson.loads(v3.get("apis/stable.example.com/v1")[0])
    crd_patch = crd["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in crd_patch["requestBody"]["content"]


def test_v3_crd_schema_keeps_openapi_v3_keywords(v3):
    doc = orjson.loads(v3.get("apis/stable.example.com/v1")[0])
    crontab = doc["components"]["schemas"]["com.example.stable.v1.CronTab"]
    spec = crontab["properties"]["spec"]
    assert spec["nullable"] is True
    assert spec["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert crontab["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
