"""The Swagger 2.0 document served at ``/openapi/v2``.

`build_v2` renders the routes of `openapi_routes` and the definitions they
reach (`openapi_schema.Definitions`) in upstream's v2 shape: path-level
``parameters`` (name, namespace, pretty), per-operation ``consumes``/``produces``/
``schemes``/``tags``, a ``body`` parameter, ``responses`` with ``schema`` refs,
``x-kubernetes-action`` and ``x-kubernetes-group-version-kind``. Parameters are
written inline (upstream shares them under ``#/parameters``; clients accept both,
and inline ones need no second lookup).
"""

from __future__ import annotations

from kubeling.api import schema as api_schema
from kubeling.api.kinds import Resource
from kubeling.apiserver import openapi_routes
from kubeling.apiserver.openapi_routes import Operation, Param
from kubeling.apiserver.openapi_schema import V2_REF, Definitions

SECURITY_DEFINITIONS = {"BearerToken": {"description": "Bearer Token authentication", "in": "header",
                                        "name": "authorization", "type": "apiKey"}}


def info() -> dict:
    return {"title": "Kubernetes", "version": f"v{api_schema.KUBE_VERSION}"}


def param_v2(p: Param) -> dict:
    out = {"description": p.description, "in": p.where, "name": p.name, "type": p.type, "uniqueItems": True}
    if p.required:
        out["required"] = True
    return out


def _schema_v2(schema) -> dict | None:
    if schema is None:
        return None
    if isinstance(schema, str):
        return {"$ref": V2_REF + schema}
    return dict(schema)


def operation_v2(op: Operation) -> dict:
    params = []
    if op.body:
        body = {"in": "body", "name": "body", "schema": {"$ref": V2_REF + op.body}}
        if op.body_required:
            body["required"] = True
        params.append(body)
    params.extend(param_v2(p) for p in op.params)
    responses = {}
    for code, (description, schema) in op.responses.items():
        resp = {"description": description}
        rendered = _schema_v2(schema)
        if rendered is not None:
            resp["schema"] = rendered
        responses[code] = resp
    out = {
        "consumes": list(op.consumes),
        "description": op.description,
        "operationId": op.operation_id,
        "produces": list(op.produces),
        "responses": responses,
        "schemes": ["https"],
        "tags": [op.tag],
    }
    if params:
        out["parameters"] = params
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk:
        out["x-kubernetes-group-version-kind"] = dict(op.gvk)
    return out


def build_v2(resources: list[Resource], schemas: api_schema.Schemas,
             crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> dict:
    """The whole ``/openapi/v2`` document for the given served resources.

    ``definitions`` holds exactly the definitions reachable from the operations'
    bodies and responses (and from each other).
    """
    defs = Definitions(resources, schemas, crd_schemas)
    route_list = openapi_routes.routes(resources, defs)
    paths: dict[str, dict] = {}
    for route in route_list:
        item: dict = {op.method: operation_v2(op) for op in route.operations}
        if route.params:
            item["parameters"] = [param_v2(p) for p in route.params]
        paths[route.path] = item
    names = defs.closure(openapi_routes.referenced_definitions(route_list))
    return {
        "swagger": "2.0",
        "info": info(),
        "paths": dict(sorted(paths.items())),
        "definitions": defs.render(names, v3=False),
        "securityDefinitions": SECURITY_DEFINITIONS,
        "security": [{"BearerToken": []}],
    }
