"""Custom resources (upstream ``apiextensions-apiserver/pkg/registry/customresource``): one
strategy per served version of a CRD, built by the CRD controller from the CRD itself.

- the body is defaulted, pruned and validated by the version's ``openAPIV3Schema``
  (`kubeling.api.structural`); metadata by the usual rules; then the schema's CEL
  ``x-kubernetes-validations`` rules, transition rules with the old object (`celvalidation`);
- ``status`` and ``scale`` subresources when the version declares them (the scale paths are
  the CRD's); generation always;
- the Table comes from ``additionalPrinterColumns``; field selectors from ``selectableFields``;
- all versions share one storage version, and with conversion ``None`` only ``apiVersion``
  differs between them.
"""

from kubeling.api import errors, fields, jsonpath, structural
from kubeling.api.printers import crd as crd_printers
from kubeling.apiserver.registry.apiextensions.celvalidation import Validator
from kubeling.apiserver.registry.scale import ScaleREST
from kubeling.apiserver.registry.status import StatusREST
from kubeling.apiserver.registry.strategy import Strategy


class CustomResourceStrategy(Strategy):
    generation = True

    def __init__(self, group: str, resource: str, kind: str, namespaced: bool, *, schema: dict | None,
                 has_status: bool, has_scale: bool, printer_columns=(), selectable_fields=()) -> None:
        super().__init__()
        self.group, self.resource, self.kind, self.namespaced = group, resource, kind, namespaced
        self.schema = schema
        self.cel = Validator(schema)
        self.status_subresource = has_status
        self.printer = crd_printers.crd_printer(list(printer_columns))
        self.selectable = tuple(f["jsonPath"] for f in selectable_fields if f.get("jsonPath"))
        subs: dict[str, type] = {}
        if has_status:
            subs["status"] = StatusREST
        if has_scale:
            subs["scale"] = ScaleREST
        self.subresources = subs

    def defaults(self, obj):
        if self.schema is not None:
            structural.apply_defaults(obj, self.schema)

    def validate(self, obj):
        return structural.validate(obj, self.schema) if self.schema is not None else []

    def check(self, obj, old, served=None):
        errs = super().check(obj, old, served)
        if self.cel.has_rules and not errs:
            errs += self.cel.validate(obj, old)
        return errs

    def to_storage(self, obj, served):
        obj["apiVersion"] = served.storage_gv
        return obj

    def from_storage(self, obj, served):
        if obj.get("apiVersion") == served.res.group_version:
            return obj
        return {**obj, "apiVersion": served.res.group_version}

    def get_attrs(self, obj):
        out = super().get_attrs(obj)
        for path in self.selectable:
            found = jsonpath.evaluate(path, obj)
            value = fields.selectable_value(found[0]) if found else None
            if value is not None:
                out[path.lstrip(".")] = value
        return out

    def field_selector(self, selector):
        allowed = {"metadata.name", *(("metadata.namespace",) if self.namespaced else ()),
                   *(p.lstrip(".") for p in self.selectable)}

        def convert(label, value):
            if label not in allowed:
                raise errors.bad_request(f"field label not supported: {label}")
            return label, value
        return selector.transform(convert)


