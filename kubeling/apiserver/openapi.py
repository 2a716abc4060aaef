"""OpenAPI documents built at runtime from the served resources: the public entry points.

Nothing here is vendored: the documents are rendered from `kinds.Resource`
values (the built-ins plus CRDs registered at runtime, ``crd=True``) and the
upstream definitions of `kubeling.api.schema`, so they always describe exactly
what this server serves. The apiserver builds them once and rebuilds them when
the set of CRDs changes.

- ``/openapi/v2``: `build_v2` (JSON) and `v2_protobuf` (for
  ``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``).
- ``/openapi/v3``: `V3Documents` (the index plus every per-path document,
  serialized and hashed once); `build_v3_index`, `build_v3_gv`,
  `build_v3_document` and `gv_document_hash` for one-off use.

Layout: `openapi_schema` (definitions, v2/v3 dialects), `openapi_routes`
(operations per resource, upstream operationIds), `openapi_v2`, `openapi_v3`,
`openapi_proto` (the gnostic protobuf encoding).
"""

from __future__ import annotations

from kubeling.apiserver.openapi_proto import MEDIA_TYPE as V2_PROTOBUF_MEDIA_TYPE
from kubeling.apiserver.openapi_proto import v2_protobuf
from kubeling.apiserver.openapi_proto import wants_protobuf as wants_v2_protobuf
from kubeling.apiserver.openapi_schema import Definitions, crd_definition_name
from kubeling.apiserver.openapi_v2 import build_v2
from kubeling.apiserver.openapi_v3 import (
    V3Documents,
    build_v3_document,
    build_v3_gv,
    build_v3_index,
    document_hash,
    gv_document_hash,
    serialize,
)

__all__ = [
    "V2_PROTOBUF_MEDIA_TYPE",
    "Definitions",
    "V3Documents",
    "build_v2",
    "build_v3_document",
    "build_v3_gv",
    "build_v3_index",
    "crd_definition_name",
    "document_hash",
    "gv_document_hash",
    "serialize",
    "v2_protobuf",
    "wants_v2_protobuf",
]
