"""Namespaces (upstream ``pkg/registry/core/namespace``).

A new namespace is Active and carries the ``kubernetes`` spec finalizer. Deleting it marks it
Terminating (the generic store sees the spec finalizers); the namespace controller empties it
and removes the finalizer through ``finalize``, and the store then deletes it. ``spec`` changes
only through ``finalize``. DELETE answers with the object.
"""

import copy

from kubeling.api import errors, fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.api.validation import meta
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.status import StatusREST
from kubeling.apiserver.registry.strategy import Strategy

FINALIZER = "kubernetes"


class FinalizeREST:
    """PUT ``namespaces/<name>/finalize`` replaces ``spec.finalizers`` (and nothing else)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def put(self, served, namespace, name, body, ctx):
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        spec = body.get("spec") or {}
        fins = spec.get("finalizers") if isinstance(spec, dict) else None
        if not isinstance(fins or [], list) or not all(isinstance(f, str) for f in fins or []):
            raise errors.invalid("Namespace", "", name, [errors.invalid_value(
                "spec.finalizers", fins, "must be a list of finalizer names")])
        fins = list(fins or [])

        async def mutate(current):
            if current is None:
                raise errors.not_found("namespaces", "", name)
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["finalizers"] = fins
            return new

        ctx.subresource = "finalize"
        return await self.store.guaranteed_update(served, None, name, mutate, ctx)


class NamespaceStrategy(Strategy):
    group, resource, kind = "", "namespaces", "Namespace"
    namespaced = False
    name_rule = staticmethod(meta.name_is_dns_label)
    printer = printers.NAMESPACE
    field_set = fields.NAMESPACE
    status_subresource = True
    returns_deleted_object = True
    subresources = {"status": StatusREST, "finalize": FinalizeREST}

    def initial_status(self, obj):
        return {"phase": "Active"}

    def defaults(self, obj):
        defaults.set_object_defaults_namespace(obj)

    def validate(self, obj):
        return validation.validate_namespace(obj)

    def prepare_for_create(self, obj):
        super().prepare_for_create(obj)
        fins = obj.setdefault("spec", {}).setdefault("finalizers", [])
        if FINALIZER not in fins:
            fins.append(FINALIZER)

    def prepare_for_update(self, new, old):
        super().prepare_for_update(new, old)
        new["spec"] = copy.deepcopy(old.get("spec", {}))  # only finalize changes it
