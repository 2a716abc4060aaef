"""PATCH: JSON patch, merge patch, strategic merge patch and server-side apply.

A patch is applied to the object as the client sees it (the request's version), inside the
registry's compare-and-swap loop, so a concurrent writer makes us re-read and re-apply rather
than lose an update. A ``metadata.resourceVersion`` in the patch is a precondition.
Server-side apply (``application/apply-patch+yaml``) needs ``fieldManager``, creates the object
when it does not exist, and reports conflicts as 409 with one cause per field.
"""

from __future__ import annotations

import copy

from aiohttp import web

from kubeling.api import errors, schema
from kubeling.api.patch import apply as ssa
from kubeling.api.patch import jsonpatch, merge, strategic
from kubeling.apiserver import negotiation
from kubeling.apiserver.resources import Served


def patch_type(request: web.Request, served: Served) -> str:
    media = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    ptype = negotiation.PATCH_TYPES.get(media)
    if ptype is None or (ptype == "strategic" and served.res.crd):
        allowed = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        if not served.res.crd:
            allowed.append("application/strategic-merge-patch+json")
        raise errors.unsupported_media_type(allowed)
    return ptype


def decode_patch(data: bytes, ptype: str) -> object:
    if not data.strip():
        raise errors.bad_request("the body of the request was empty")
    ct = "application/apply-patch+yaml" if ptype == "apply" else "application/json"
    doc = negotiation.decode_body(data, ct)
    if ptype == "json" and not isinstance(doc, list):
        raise errors.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    if ptype != "json" and not isinstance(doc, dict):
        raise errors.bad_request("the body of the request must be a JSON or YAML object")
    return doc


def apply_patch(ptype: str, current: dict, doc, node: dict | None, crd: bool) -> dict:
    """Apply a non-apply patch to ``current`` (not modified); returns the patched object."""
    if ptype == "json":
        return jsonpatch.apply(copy.deepcopy(current), doc)
    if ptype == "merge":
        return merge.apply(copy.deepcopy(current), doc)
    return strategic.apply(copy.deepcopy(current), doc, node, None if crd else schema.get())


class Patcher:
    def __init__(self, server) -> None:
        self.server = server

    async def patch(self, request: web.Request, info, served: Served, ctx=None) -> web.Response:
        handler = self.server.handler
        ctx = ctx or handler.context(request, info, served)
        ptype = patch_type(request, served)
        doc = decode_patch(await request.read(), ptype)
        force_q = request.query.get("force")
        if ptype != "apply" and force_q is not None:
            raise errors.invalid("PatchOptions", "meta.k8s.io", "", [errors.forbidden(
                "force", "may not be specified for non-apply patch")])
        if ptype == "apply" and not ctx.field_manager:
            raise errors.invalid("PatchOptions", "meta.k8s.io", "", [errors.required(
                "fieldManager", "is required for apply patch")])
        force = force_q in ("true", "1")
        res = served.res
        registry = self.server.registry
        node = served.schema
        schemas = None if res.crd else schema.get()
        want_rv = None
        if isinstance(doc, dict):
            want_rv = (doc.get("metadata") or {}).get("resourceVersion") if isinstance(doc.get("metadata"),
                                                                                       dict) else None

        async def mutate(current: dict | None) -> dict:
            if ptype == "apply":
                applied = copy.deepcopy(doc)
                applied = registry.check_body(served, applied, ctx, name=info.name)
                if not want_rv:
                    applied["metadata"].pop("resourceVersion", None)
                if current is not None and want_rv and want_rv != current["metadata"]["resourceVersion"]:
                    raise errors.conflict(res.resource, res.group, info.name, errors.STALE_DETAIL)
                return ssa.apply(current, applied, ctx.field_manager, force, node, schemas, res.group_version,
                                 ctx.subresource, ignored=registry.ignored_fields(served, ctx))
            if current is None:
                raise errors.not_found(res.resource, res.group, info.name)
            new = apply_patch(ptype, current, doc, node, res.crd)
            if not isinstance(new, dict):
                raise errors.bad_request("the patch produced a value that is not an object")
            meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
            if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res.resource, res.group, info.name, errors.STALE_DETAIL)
            if not want_rv:
                meta.pop("resourceVersion", None)
            return registry.check_body(served, new, ctx, name=info.name)

        create_ok = ptype == "apply" and not ctx.subresource
        obj, created = await registry.guaranteed_update(served, info.namespace, info.name, mutate, ctx,
                                                        create_ok=create_ok, precondition_rv=want_rv,
                                                        managed_by_caller=ptype == "apply")
        return handler.respond(request, served, obj, 201 if created else 200, ctx)
