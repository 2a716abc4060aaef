"""Schema definitions for the OpenAPI documents, built from `kubeling.api.schema`.

kubernetes-validate ships upstream's definitions as JSON Schema (``#/$defs/<name>``
refs, ``["string", "null"]`` types, ``apiVersion``/``kind`` enums it added
itself). `Definitions` merges those with one definition per CRD kind (and its
List), kept in the same ``$defs`` form, and renders any subset of them as
Swagger 2.0 ``definitions`` or OpenAPI 3.0 ``components.schemas``:

- refs become ``#/definitions/<name>`` (v2) or ``#/components/schemas/<name>`` (v3);
- nullable type lists collapse to the one non-null type;
- IntOrString becomes ``{"type": "string", "format": "int-or-string"}`` and
  Quantity ``{"type": "string"}`` (how upstream publishes them);
- every ``x-kubernetes-*`` extension is kept;
- v3 only: a ref with siblings (description, extensions) is wrapped as
  ``allOf: [{$ref}]`` and value-typed fields get upstream's zero ``default``
  (``{}`` for embedded structs, ``""``/``0``/``false`` for required scalars);
- v2 only: CRD schemas lose what Swagger 2.0 cannot say (``nullable``,
  ``oneOf``/``anyOf``/``allOf``/``not``), as upstream strips them.

CRD definitions are named like upstream: the group's DNS labels reversed, then
version and kind (``stable.example.com/v1 CronTab`` -> ``com.example.stable.v1.CronTab``).
"""

from __future__ import annotations

from kubeling.api import schema as api_schema
from kubeling.api.kinds import Resource

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
OBJECT_META = META + "ObjectMeta"
LIST_META = META + "ListMeta"
STATUS = META + "Status"
DELETE_OPTIONS = META + "DeleteOptions"
PATCH = META + "Patch"
WATCH_EVENT = META + "WatchEvent"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

V2_REF = "#/definitions/"
V3_REF = "#/components/schemas/"

# Upstream publishes these two as plain strings; the JSON-Schema form has oneOf.
_SPECIAL = {
    INT_OR_STRING: {"description": "A value that holds either an integer or a string.",
                    "format": "int-or-string", "type": "string"},
    QUANTITY: {"description": "A fixed-point number written as a string, with an optional SI or "
                              "binary suffix (\"100m\", \"1Gi\").", "type": "string"},
}

# Fields that are value-typed (non-pointer) Go structs across the built-in types; upstream v3
# gives them ``default: {}``. The JSON-Schema form does not say which fields are pointers.
_STRUCT_FIELDS = frozenset({"metadata", "spec", "status", "template", "strategy", "updateStrategy"})
_ZERO = {"string": "", "integer": 0, "number": 0, "boolean": False}
_V2_UNSUPPORTED = frozenset({"nullable", "oneOf", "anyOf", "allOf", "not"})


def crd_definition_name(group: str, version: str, kind: str) -> str:
    """``stable.example.com``, ``v1``, ``CronTab`` -> ``com.example.stable.v1.CronTab``."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _refs(node, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.add(_ref_name(v))
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def _crd_definition(res: Resource, node: dict | None) -> dict:
    """A CRD kind's definition in the ``$defs`` form: its schema plus the object envelope."""
    out = dict(node) if node else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    props = dict(out.get("properties") or {})
    props["apiVersion"] = {"description": "The versioned schema of this object, \"group/version\".",
                           "type": "string"}
    props["kind"] = {"description": "The kind of this object, in CamelCase.", "type": "string"}
    props["metadata"] = {"$ref": api_schema.REF_PREFIX + OBJECT_META,
                         "description": "Standard object's metadata."}
    out["properties"] = props
    out.setdefault("type", "object")
    out["x-kubernetes-group-version-kind"] = [{"group": res.group, "kind": res.kind, "version": res.version}]
    return out


def _crd_list_definition(res: Resource, item_name: str) -> dict:
    return {
        "description": f"{res.list_kind} is a list of {res.kind}",
        "properties": {
            "apiVersion": {"description": "The versioned schema of this list, \"group/version\".",
                           "type": "string"},
            "items": {"description": f"List of {res.resource}.",
                      "items": {"$ref": api_schema.REF_PREFIX + item_name}, "type": "array"},
            "kind": {"description": "The kind of this list, in CamelCase.", "type": "string"},
            "metadata": {"$ref": api_schema.REF_PREFIX + LIST_META,
                         "description": "Standard list metadata."},
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [{"group": res.group, "kind": res.list_kind, "version": res.version}],
    }


class Definitions:
    """Upstream definitions plus the CRDs', addressable by kind and renderable per dialect.

    ``crd_schemas`` maps ``(group, version, kind)`` to the CRD version's
    ``openAPIV3Schema``; a CRD resource without an entry gets an open object.
    Instances are read-only after construction.
    """

    def __init__(self, resources: list[Resource], schemas: api_schema.Schemas,
                 crd_schemas: dict[tuple[str, str, str], dict] | None = None) -> None:
        self.schemas = schemas
        self.defs: dict[str, dict] = dict(schemas.defs)
        self.crd_names: set[str] = set()
        self._by_gvk: dict[tuple[str, str, str], str] = {}
        self._rendered: dict[tuple[str, bool], dict] = {}
        crd_schemas = crd_schemas or {}
        for res in resources:
            if not res.crd:
                continue
            name = crd_definition_name(*res.gvk)
            list_name = crd_definition_name(res.group, res.version, res.list_kind)
            self.defs[name] = _crd_definition(res, crd_schemas.get(res.gvk))
            self.defs[list_name] = _crd_list_definition(res, name)
            self.crd_names.update((name, list_name))
            self._by_gvk[res.gvk] = name
            self._by_gvk[(res.group, res.version, res.list_kind)] = list_name

    def for_gvk(self, group: str, version: str, kind: str) -> str | None:
        """The definition name of a kind, or ``None`` if there is none."""
        name = self._by_gvk.get((group, version, kind)) or self.schemas.name_for_gvk(group, version, kind)
        return name if name in self.defs else None

    def closure(self, roots) -> list[str]:
        """Every definition reachable from ``roots`` through refs, sorted by name."""
        seen: set[str] = set()
        todo = [r for r in roots if r in self.defs]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in _SPECIAL:
                continue
            found: set[str] = set()
            _refs(self.defs[name], found)
            todo.extend(n for n in found if n in self.defs and n not in seen)
        return sorted(seen)

    def render(self, names, v3: bool) -> dict[str, dict]:
        """The named definitions converted to the v2 or v3 dialect."""
        return {name: self.render_one(name, v3) for name in names}

    def render_one(self, name: str, v3: bool) -> dict:
        """One definition in the v2 or v3 dialect (cached: documents share most of them)."""
        key = (name, v3)
        if key not in self._rendered:
            if name in _SPECIAL:
                self._rendered[key] = dict(_SPECIAL[name])
            else:
                self._rendered[key] = _Converter(self.defs, v3, crd=name in self.crd_names).node(self.defs[name])
        return self._rendered[key]


class _Converter:
    """One pass from the ``$defs`` form to an OpenAPI dialect (see the module docstring)."""

    def __init__(self, defs: dict[str, dict], v3: bool, crd: bool) -> None:
        self.defs = defs
        self.v3 = v3
        self.crd = crd
        self.prefix = V3_REF if v3 else V2_REF

    def node(self, node: dict, field: str | None = None, element: bool = False) -> dict:
        out: dict = {}
        for key, value in node.items():
            if key == "type":
                value = api_schema.type_of(node)
                if value is None:
                    continue
            elif key == "$ref":
                value = self.prefix + _ref_name(value)
            elif key == "properties" and isinstance(value, dict):
                value = {k: self.node(v, field=k) for k, v in value.items()}
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                value = self.node(value, element=True)
            elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                if not self.v3 and self.crd:
                    continue
                value = [self.node(v) for v in value]
            elif key == "not" and isinstance(value, dict):
                if not self.v3 and self.crd:
                    continue
                value = self.node(value)
            elif key == "nullable" and not self.v3:
                continue
            elif key == "enum" and field in ("apiVersion", "kind") and not self.crd:
                # Added by kubernetes-validate; upstream's documents have no such enum.
                continue
            out[key] = value
        if self.v3 and not self.crd:
            self._v3_default(node, out, field, element)
        if self.v3 and "$ref" in out and len(out) > 1:
            ref = out.pop("$ref")
            out = {"allOf": [{"$ref": ref}], **out}
        return out

    def _v3_default(self, src: dict, out: dict, field: str | None, element: bool) -> None:
        """Upstream v3 states the zero value of Go value-typed fields as ``default``."""
        if "default" in out or (field is None and not element):
            return
        if "$ref" in src:
            target = self.defs.get(_ref_name(src["$ref"]), {})
            if target.get("properties") and (element or field in _STRUCT_FIELDS):
                out["default"] = {}
            return
        kind = api_schema.type_of(src)
        # kubernetes-validate writes a required field's type without "null".
        if kind in _ZERO and (element or isinstance(src.get("type"), str)):
            out["default"] = _ZERO[kind]
