"""The REST operations of every served resource, in a form both OpenAPI dialects render.

`routes(resources, defs)` lists, per URL path, the operations upstream's
apiserver installs for a resource, with upstream's ``operationId``s
(``listCoreV1NamespacedPod``, ``patchAppsV1NamespacedDeploymentScale``,
``connectCoreV1GetNamespacedPodExec``, ``listAppsV1DeploymentForAllNamespaces``,
``watchAppsV1NamespacedDeploymentList``), ``x-kubernetes-action`` and
``x-kubernetes-group-version-kind``. Verbs gate operations: a resource without
``watch`` gets no watch paths, a create-only review resource only a POST.

A `Route`'s ``group_version`` says which ``/openapi/v3/<path>`` document it
belongs to: ``"v1"``/``"apps/v1"`` for resource routes and their
``/apis/<g>/<v>/`` listing, ``""`` for the ``/api/``, ``/apis/``, ``/apis/<g>/``
and ``/version/`` roots (see `root_doc_path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kubeling.api.kinds import Resource
from kubeling.apiserver import discovery
from kubeling.apiserver.openapi_schema import DELETE_OPTIONS, PATCH, STATUS, WATCH_EVENT, Definitions

JSON_MEDIA = ("application/json", "application/yaml")
WATCH_MEDIA = JSON_MEDIA + ("application/json;stream=watch",)
PATCH_MEDIA = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
STRING = {"type": "string"}  # an inline response schema (logs, connect)


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query"
    type: str  # "string" | "integer" | "boolean"
    description: str
    required: bool = False


@dataclass
class Operation:
    method: str  # get | put | post | delete | patch | head | options
    operation_id: str
    action: str  # x-kubernetes-action
    description: str
    tag: str
    gvk: dict | None = None
    params: list[Param] = field(default_factory=list)
    body: str | None = None  # definition name of the request body
    body_required: bool = True
    consumes: tuple[str, ...] = ("*/*",)
    produces: tuple[str, ...] = JSON_MEDIA
    # status code -> (description, schema); schema is a definition name, an inline dict or None
    responses: dict[str, tuple[str, object]] = field(default_factory=dict)


@dataclass
class Route:
    path: str
    group_version: str
    params: list[Param] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)


def _q(name: str, type_: str, description: str) -> Param:
    return Param(name, "query", type_, description)


PRETTY = _q("pretty", "string", "If 'true', the output is pretty printed.")
DRY_RUN = _q("dryRun", "string", "When present (\"All\"), the change is validated and admitted but not persisted.")
FIELD_MANAGER = _q("fieldManager", "string", "The name of the actor making these changes, recorded in managedFields.")
FIELD_VALIDATION = _q("fieldValidation", "string",
                      "How the server treats unknown or duplicate fields in the request body: "
                      "Ignore (drop them), Warn (drop them with a Warning header, the default) "
                      "or Strict (fail the request).")
FORCE = _q("force", "boolean", "Force an Apply request to take ownership of conflicting fields.")
WRITE_PARAMS = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]
PATCH_PARAMS = WRITE_PARAMS + [FORCE]
DELETE_PARAMS = [
    DRY_RUN,
    _q("gracePeriodSeconds", "integer", "Seconds before the object is deleted; zero means immediately."),
    _q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean",
       "Delete an object whose stored data can no longer be read."),
    _q("orphanDependents", "boolean", "Deprecated: use propagationPolicy. Orphan the dependents if true."),
    _q("propagationPolicy", "string", "Whether and how garbage collection deletes dependents: "
                                      "Orphan, Background or Foreground."),
]
LIST_PARAMS = [
    _q("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events on a watch."),
    _q("continue", "string", "The continue token of a previous chunked list response."),
    _q("fieldSelector", "string", "Restrict the returned objects by their fields."),
    _q("labelSelector", "string", "Restrict the returned objects by their labels."),
    _q("limit", "integer", "The maximum number of objects to return in one chunk."),
    _q("resourceVersion", "string", "The resource version the list or watch starts from."),
    _q("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
    _q("sendInitialEvents", "boolean", "Start a watch with synthetic ADDED events for the current state."),
    _q("timeoutSeconds", "integer", "Limit the duration of the list or watch call."),
    _q("watch", "boolean", "Stream add, update and delete notifications instead of a list."),
]
LOG_PARAMS = [
    _q("container", "string", "The container to read logs from; optional if the pod has one container."),
    _q("follow", "boolean", "Stream the logs as they are written."),
    _q("insecureSkipTLSVerifyBackend", "boolean", "Skip verifying the kubelet's serving certificate."),
    _q("limitBytes", "integer", "Stop after this many bytes."),
    _q("previous", "boolean", "Read the previous terminated container's logs."),
    _q("sinceSeconds", "integer", "Only logs newer than this many seconds."),
    _q("stream", "string", "Which stream to read: All, Stdout or Stderr."),
    _q("tailLines", "integer", "Only this many lines from the end of the logs."),
    _q("timestamps", "boolean", "Prefix each line with an RFC 3339 timestamp."),
]
_STREAMS = [_q("stderr", "boolean", "Redirect the standard error stream."),
            _q("stdin", "boolean", "Redirect the standard input stream."),
            _q("stdout", "boolean", "Redirect the standard output stream."),
            _q("tty", "boolean", "Allocate a terminal.")]
_CONTAINER = _q("container", "string", "The container to connect to.")
CONNECT_PARAMS = {
    "exec": [_q("command", "string", "The command to run, one argument per parameter."), _CONTAINER, *_STREAMS],
    "attach": [_CONTAINER, *_STREAMS],
    "portforward": [_q("ports", "integer", "Pod ports to forward.")],
    "proxy": [_q("path", "string", "The path to proxy to.")],
}
PROXY_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _path_param(name: str, description: str) -> Param:
    return Param(name, "path", "string", description, required=True)


NAMESPACE = _path_param("namespace", "The namespace of the object.")

# Objects some resources return from DELETE instead of a Status (graceful deletion).
_DELETE_RETURNS_OBJECT = {("", "pods"), ("", "services")}


def group_camel(group: str) -> str:
    """``""`` -> ``Core``, ``rbac.authorization.k8s.io`` -> ``RbacAuthorization``,
    ``stable.example.com`` -> ``StableExampleCom`` (the operationId segment)."""
    if not group:
        return "Core"
    parts = re.split(r"[.\-]", group.removesuffix(".k8s.io"))
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def tag(group: str, version: str) -> str:
    camel = group_camel(group)
    return f"{camel[:1].lower()}{camel[1:]}_{version}"


def _prefix(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "kind": kind, "version": version}


def _ok(schema, *codes: str) -> dict:
    names = {"200": "OK", "201": "Created", "202": "Accepted"}
    out = {code: (names[code], schema) for code in codes}
    out["401"] = ("Unauthorized", None)
    return out


class _ResourceRoutes:
    """Builds the routes of one resource; see the module docstring."""

    def __init__(self, res: Resource, defs: Definitions) -> None:
        self.res = res
        self.kind_def = defs.for_gvk(*res.gvk)
        self.list_def = defs.for_gvk(res.group, res.version, res.list_kind)
        self.defs = defs
        self.gv = res.group_version
        self.g = group_camel(res.group)
        self.v = res.version[:1].upper() + res.version[1:]
        self.tag = tag(res.group, res.version)
        self.ns = "Namespaced" if res.namespaced else ""
        self.base = _prefix(res.group, res.version)
        self.scope = "/namespaces/{namespace}" if res.namespaced else ""
        self.scope_params = [NAMESPACE] if res.namespaced else []

    def op(self, method, verb, action, description, suffix="", **kw) -> Operation:
        op_id = f"{verb}{self.g}{self.v}{suffix}"
        gvk = kw.pop("gvk", _gvk(*self.res.gvk))
        return Operation(method, op_id, action, description, self.tag, gvk=gvk, **kw)

    def routes(self) -> list[Route]:
        res, verbs, kind = self.res, set(self.res.verbs), self.res.kind
        name = _path_param("name", f"The name of the {kind}.")
        out: list[Route] = []
        collection = Route(f"{self.base}{self.scope}/{res.resource}", self.gv, [*self.scope_params, PRETTY])
        target = f"{self.ns}{kind}"
        if "list" in verbs:
            collection.operations.append(self.op(
                "get", "list", "list", f"list or watch objects of kind {kind}", target,
                params=list(LIST_PARAMS), produces=WATCH_MEDIA, responses=_ok(self.list_def, "200")))
        if "create" in verbs:
            collection.operations.append(self.op(
                "post", "create", "post", f"create a {kind}", target, params=list(WRITE_PARAMS),
                body=self.kind_def, responses=_ok(self.kind_def, "200", "201", "202")))
        if "deletecollection" in verbs:
            collection.operations.append(self.op(
                "delete", "delete", "deletecollection", f"delete a collection of {kind}",
                f"Collection{target}", params=[*DELETE_PARAMS, *LIST_PARAMS], body=DELETE_OPTIONS,
                body_required=False, responses=_ok(STATUS, "200")))
        if collection.operations:
            out.append(collection)

        item = Route(f"{collection.path}/{{name}}", self.gv, [name, *self.scope_params, PRETTY])
        if "get" in verbs:
            item.operations.append(self.op("get", "read", "get", f"read the specified {kind}", target,
                                           responses=_ok(self.kind_def, "200")))
        if "update" in verbs:
            item.operations.append(self.op("put", "replace", "put", f"replace the specified {kind}", target,
                                           params=list(WRITE_PARAMS), body=self.kind_def,
                                           responses=_ok(self.kind_def, "200", "201")))
        if "delete" in verbs:
            returned = self.kind_def if (res.group, res.resource) in _DELETE_RETURNS_OBJECT else STATUS
            item.operations.append(self.op("delete", "delete", "delete", f"delete a {kind}", target,
                                           params=list(DELETE_PARAMS), body=DELETE_OPTIONS,
                                           body_required=False, responses=_ok(returned, "200", "202")))
        if "patch" in verbs:
            item.operations.append(self.patch_op(target, f"partially update the specified {kind}",
                                                 self.kind_def))
        if item.operations:
            out.append(item)

        if res.namespaced and "list" in verbs:
            out.append(Route(f"{self.base}/{res.resource}", self.gv, [*LIST_PARAMS, PRETTY], [self.op(
                "get", "list", "list", f"list or watch objects of kind {kind}", f"{kind}ForAllNamespaces",
                produces=WATCH_MEDIA, responses=_ok(self.list_def, "200"))]))
        if "watch" in verbs:
            out.extend(self.watch_routes(name))
        for sub in res.subresources:
            out.extend(self.subresource_routes(sub, item.path, [name, *self.scope_params]))
        return out

    def patch_op(self, suffix: str, description: str, returns: str | None, gvk: dict | None = None) -> Operation:
        consumes = tuple(m for m in PATCH_MEDIA if not (self.res.crd and "strategic" in m))
        kw = {"gvk": gvk} if gvk else {}
        return self.op("patch", "patch", "patch", description, suffix, params=list(PATCH_PARAMS), body=PATCH,
                       consumes=consumes, responses=_ok(returns, "200", "201"), **kw)

    def watch_routes(self, name: Param) -> list[Route]:
        res, kind = self.res, self.res.kind
        watch_base = f"{self.base}/watch{self.scope}/{res.resource}"
        params = [*LIST_PARAMS, PRETTY]

        def watch(op_suffix: str, action: str, description: str) -> Operation:
            return self.op("get", "watch", action, description, op_suffix, produces=WATCH_MEDIA,
                           responses=_ok(WATCH_EVENT, "200"))

        out = [
            Route(watch_base, self.gv, [*self.scope_params, *params], [watch(
                f"{self.ns}{kind}List", "watchlist", f"watch individual changes to a list of {kind}")]),
            Route(f"{watch_base}/{{name}}", self.gv, [name, *self.scope_params, *params], [watch(
                f"{self.ns}{kind}", "watch", f"watch changes to an object of kind {kind}")]),
        ]
        if res.namespaced:
            out.append(Route(f"{self.base}/watch/{res.resource}", self.gv, params, [watch(
                f"{kind}ListForAllNamespaces", "watchlist", f"watch individual changes to a list of {kind}")]))
        return out

    def subresource_routes(self, sub: str, item_path: str, params: list[Param]) -> list[Route]:
        res, kind = self.res, self.res.kind
        suffix = f"{self.ns}{kind}{sub[:1].upper()}{sub[1:]}"
        sub_gvk = discovery.subresource_gvk(res, sub)
        gvk = _gvk(*sub_gvk)
        sub_def = self.defs.for_gvk(*sub_gvk)
        path = f"{item_path}/{sub}"
        verbs = set(discovery.subresource_verbs(sub))
        route = Route(path, self.gv, [*params, PRETTY])
        if sub in ("exec", "attach", "portforward", "proxy"):
            return self.connect_routes(sub, path, params, suffix, gvk)
        if sub == "log":
            route.operations.append(self.op(
                "get", "read", "get", f"read log of the specified {kind}", suffix, params=list(LOG_PARAMS),
                produces=("text/plain", "application/json", "application/yaml"), responses=_ok(STRING, "200")))
            return [route]
        if "get" in verbs:
            route.operations.append(self.op("get", "read", "get", f"read {sub} of the specified {kind}", suffix,
                                            gvk=gvk, responses=_ok(sub_def, "200")))
        if "update" in verbs:
            route.operations.append(self.op("put", "replace", "put", f"replace {sub} of the specified {kind}",
                                            suffix, gvk=gvk, params=list(WRITE_PARAMS), body=sub_def,
                                            responses=_ok(sub_def, "200", "201")))
        if "patch" in verbs:
            route.operations.append(self.patch_op(suffix, f"partially update {sub} of the specified {kind}",
                                                  sub_def, gvk))
        if "create" in verbs:
            route.operations.append(self.op("post", "create", "post", f"create {sub} of a {kind}", suffix,
                                            gvk=gvk, params=list(WRITE_PARAMS), body=sub_def,
                                            responses=_ok(sub_def, "200", "201", "202")))
        return [route]

    def connect_routes(self, sub: str, path: str, params: list[Param], suffix: str, gvk: dict) -> list[Route]:
        methods = PROXY_METHODS if sub == "proxy" else ("get", "post")
        query = [] if sub == "proxy" else CONNECT_PARAMS[sub]
        kind = self.res.kind

        def connect(method: str, op_suffix: str, extra: list[Param]) -> Operation:
            op_id_verb = f"connect{self.g}{self.v}{method.capitalize()}"
            return Operation(method, f"{op_id_verb}{op_suffix}", "connect",
                             f"connect {method.upper()} requests to {sub} of {kind}", self.tag, gvk=gvk,
                             params=list(extra), produces=("*/*",), responses=_ok(STRING, "200"))

        first = Route(path, self.gv, list(params), [
            connect(m, suffix, CONNECT_PARAMS["proxy"] if sub == "proxy" else query) for m in methods])
        if sub != "proxy":
            return [first]
        with_path = Route(f"{path}/{{path}}", self.gv, [*params, _path_param("path", "The path to proxy to.")],
                          [connect(m, f"{suffix}WithPath", CONNECT_PARAMS["proxy"]) for m in methods])
        return [first, with_path]


def resource_routes(res: Resource, defs: Definitions) -> list[Route]:
    """Every route of one served resource."""
    return _ResourceRoutes(res, defs).routes()


def group_version_route(group: str, version: str) -> Route:
    """``/api/v1/`` or ``/apis/<g>/<v>/``: the group-version's APIResourceList."""
    g, v = group_camel(group), version[:1].upper() + version[1:]
    op = Operation("get", f"get{g}{v}APIResources", "", "get available resources", tag(group, version),
                   consumes=JSON_MEDIA, responses=_ok("io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList", "200"))
    return Route(f"{_prefix(group, version)}/", f"{group}/{version}" if group else version, [], [op])


def root_routes(groups: list[str]) -> list[Route]:
    """``/api/``, ``/apis/``, ``/apis/<g>/`` and ``/version/`` (group_version ``""``)."""
    meta = "io.k8s.apimachinery.pkg.apis.meta.v1."

    def root(path, op_id, tag_, schema, description):
        return Route(path, "", [], [Operation("get", op_id, "", description, tag_, consumes=JSON_MEDIA,
                                              responses=_ok(schema, "200"))])

    out = [root("/api/", "getCoreAPIVersions", "core", meta + "APIVersions", "get available API versions"),
           root("/apis/", "getAPIVersions", "apis", meta + "APIGroupList", "get available API versions")]
    for group in groups:
        camel = group_camel(group)
        out.append(root(f"/apis/{group}/", f"get{camel}APIGroup", camel[:1].lower() + camel[1:],
                        meta + "APIGroup", "get information of a group"))
    out.append(root("/version/", "getCodeVersion", "version", "io.k8s.apimachinery.pkg.version.Info",
                    "get the version information for this server"))
    return out


def root_doc_path(route: Route) -> str:
    """The ``/openapi/v3`` document path a root route belongs to: ``api``, ``apis``, ``apis/<g>``, ``version``."""
    return route.path.strip("/")


def routes(resources: list[Resource], defs: Definitions) -> list[Route]:
    """All routes of the served, discoverable resources, plus the discovery roots."""
    served = [r for r in resources if r.discoverable and not r.storage_version]
    out: list[Route] = []
    groups: list[str] = []
    for res in served:
        if res.group and res.group not in groups:
            groups.append(res.group)
    out.extend(root_routes(groups))
    seen_gv: set[tuple[str, str]] = set()
    for res in served:
        if (res.group, res.version) not in seen_gv:
            seen_gv.add((res.group, res.version))
            out.append(group_version_route(res.group, res.version))
        out.extend(resource_routes(res, defs))
    return out


def referenced_definitions(route_list: list[Route]) -> set[str]:
    """Definition names that the routes' bodies and responses name."""
    names: set[str] = set()
    for route in route_list:
        for op in route.operations:
            if op.body:
                names.add(op.body)
            for _desc, schema in op.responses.values():
                if isinstance(schema, str):
                    names.add(schema)
    return names
