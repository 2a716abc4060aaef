"""The OpenAPI 3.0 documents served under ``/openapi/v3``.

Upstream splits v3 into one document per group-version (``apis/apps/v1``), one
per group (``apis/apps``), and the roots ``api``, ``apis`` and ``version``; the
index at ``/openapi/v3`` lists them as ``{"paths": {"apis/apps/v1":
{"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=<HASH>"}}}``. The hash is
an ETag-like digest (`document_hash`, sha512 in upper-case hex as upstream) of
the exact bytes served, so a client holding ``?hash=`` URLs may cache the
documents forever; the server answers them with ``ETag`` and an immutable
``Cache-Control``.

kubectl 1.32 reads these documents for ``kubectl explain`` (the schema whose
``x-kubernetes-group-version-kind`` matches), for ``kubectl apply``'s patch
metadata, and to see whether PATCH declares ``fieldValidation`` (then it leaves
validation to the server).

`V3Documents` builds every document once for a set of resources; the apiserver
keeps one and replaces it when CRDs change.
"""

from __future__ import annotations

import hashlib

import orjson

from kubeling.api import schema as api_schema
from kubeling.api.kinds import Resource
from kubeling.apiserver import openapi_routes
from kubeling.apiserver.openapi_routes import Operation, Param, Route
from kubeling.apiserver.openapi_schema import V3_REF, Definitions
from kubeling.apiserver.openapi_v2 import info

SECURITY_SCHEMES = {"BearerToken": {"description": "Bearer Token authentication", "in": "header",
                                    "name": "authorization", "type": "apiKey"}}


def param_v3(p: Param) -> dict:
    out = {"description": p.description, "in": p.where, "name": p.name,
           "schema": {"type": p.type, "uniqueItems": True}}
    if p.required:
        out["required"] = True
    return out


def _schema_v3(schema) -> dict:
    return {"$ref": V3_REF + schema} if isinstance(schema, str) else dict(schema)


def operation_v3(op: Operation) -> dict:
    out: dict = {"description": op.description, "operationId": op.operation_id}
    if op.params:
        out["parameters"] = [param_v3(p) for p in op.params]
    if op.body:
        body = {"content": {media: {"schema": {"$ref": V3_REF + op.body}} for media in op.consumes}}
        if op.body_required:
            body["required"] = True
        out["requestBody"] = body
    responses = {}
    for code, (description, schema) in op.responses.items():
        resp: dict = {"description": description}
        if schema is not None:
            resp["content"] = {media: {"schema": _schema_v3(schema)} for media in op.produces}
        responses[code] = resp
    out["responses"] = responses
    out["tags"] = [op.tag]
    if op.action:
        out["x-kubernetes-action"] = op.action
    if op.gvk:
        out["x-kubernetes-group-version-kind"] = dict(op.gvk)
    return out


def _document(route_list: list[Route], defs: Definitions) -> dict:
    paths: dict[str, dict] = {}
    for route in route_list:
        item: dict = {op.method: operation_v3(op) for op in route.operations}
        if route.params:
            item["parameters"] = [param_v3(p) for p in route.params]
        paths[route.path] = item
    names = defs.closure(openapi_routes.referenced_definitions(route_list))
    return {
        "openapi": "3.0.0",
        "info": info(),
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": defs.render(names, v3=True), "securitySchemes": SECURITY_SCHEMES},
        "security": [{"BearerToken": []}],
    }


def _doc_path(route: Route) -> str:
    """Which ``/openapi/v3/<path>`` document a route belongs to."""
    if route.group_version:
        group, _, version = route.group_version.rpartition("/")
        return f"apis/{group}/{version}" if group else f"api/{version}"
    return openapi_routes.root_doc_path(route)


def _grouped(resources: list[Resource], defs: Definitions) -> dict[str, list[Route]]:
    out: dict[str, list[Route]] = {}
    for route in openapi_routes.routes(resources, defs):
        out.setdefault(_doc_path(route), []).append(route)
    return out


def build_v3_gv(group_version: str, resources: list[Resource], schemas: api_schema.Schemas,
                crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> dict | None:
    """The document for one group-version (``"v1"``, ``"apps/v1"``), or ``None`` if not served."""
    group, _, version = group_version.rpartition("/")
    return build_v3_document(f"apis/{group}/{version}" if group else f"api/{version}",
                             resources, schemas, crd_schemas)


def build_v3_document(path: str, resources: list[Resource], schemas: api_schema.Schemas,
                      crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> dict | None:
    """Any ``/openapi/v3/<path>`` document (``api``, ``apis/apps``, ``apis/apps/v1``, ...), or ``None``."""
    defs = Definitions(resources, schemas, crd_schemas)
    route_list = _grouped(resources, defs).get(path.strip("/"))
    return _document(route_list, defs) if route_list else None


def serialize(doc: dict) -> bytes:
    """The bytes served for a document (and hashed): JSON with sorted keys."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def document_hash(body: bytes) -> str:
    """Upstream's ETag for a v3 document: sha512 of its bytes, upper-case hex."""
    return hashlib.sha512(body).hexdigest().upper()


def gv_document_hash(doc: dict) -> str:
    """The hash of a document dict as `serialize` would serve it."""
    return document_hash(serialize(doc))


def build_v3_index(resources: list[Resource], hashes: dict[str, str] | None = None,
                   schemas: api_schema.Schemas | None = None,
                   crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> dict:
    """The ``/openapi/v3`` index: every document path with its ``?hash=`` URL.

    ``hashes`` maps document path -> hash (as `V3Documents` keeps them); without
    it the documents are built here to hash them.
    """
    if hashes is None:
        hashes = V3Documents(resources, schemas or api_schema.get(), crd_schemas).hashes
    return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
                      for path, digest in sorted(hashes.items())}}


class V3Documents:
    """Every ``/openapi/v3`` document for one set of resources, serialized and hashed once.

    Immutable after construction: build a new one when CRDs change and swap it in.
    """

    def __init__(self, resources: list[Resource], schemas: api_schema.Schemas,
                 crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> None:
        defs = Definitions(resources, schemas, crd_schemas)
        self.bodies: dict[str, bytes] = {}
        self.hashes: dict[str, str] = {}
        for path, route_list in _grouped(resources, defs).items():
            body = serialize(_document(route_list, defs))
            self.bodies[path] = body
            self.hashes[path] = document_hash(body)
        self.index = build_v3_index(resources, self.hashes)
        self.index_body = serialize(self.index)

    def get(self, path: str) -> tuple[bytes, str] | None:
        """``(body, hash)`` of the document at ``/openapi/v3/<path>``, or ``None``."""
        path = path.strip("/")
        body = self.bodies.get(path)
        return (body, self.hashes[path]) if body is not None else None
