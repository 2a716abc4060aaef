"""Schema-driven checks of objects: JSON types, unknown fields, and CRD structural schemas.

    check(obj, node, schemas) -> (type_errors, unknown_fields)   built-ins and CRDs: decode-time checks
    prune(obj, node)                                              CRDs: drop fields the schema doesn't know
    apply_defaults(obj, node)                                     CRDs: ``default`` values of the schema
    validate(obj, node) -> list[FieldError]                       CRDs: OpenAPI v3 value validation
    is_structural(node, path) -> list[FieldError]                 CRDs: is the schema itself structural?

A *node* is a schema dict as `kubeling.api.schema` hands out: built-in
definitions may hold ``$ref`` (pass their `Schemas` as ``schemas``); a CRD's
``openAPIV3Schema`` has none (pass ``schemas=None``). Upstream order for a
custom resource write is: check (decode) -> prune -> apply_defaults -> validate.
"""

from kubeling.api.structural.check import check
from kubeling.api.structural.defaults import apply_defaults
from kubeling.api.structural.prune import prune
from kubeling.api.structural.rules import is_structural
from kubeling.api.structural.validate import validate

__all__ = ["check", "prune", "apply_defaults", "validate", "is_structural"]
