"""PATCH of an object: JSON patch, merge patch, strategic merge patch and server-side apply.

A patch is applied to the object as the client sees it (the request's version), inside the
generic store's compare-and-swap loop, so a concurrent writer makes us re-read and re-apply
rather than lose an update. A ``metadata.resourceVersion`` in the patch is a precondition.
Server-side apply (``application/apply-patch+yaml``) needs ``fieldManager``, creates the object
when it does not exist, and reports conflicts as 409 with one cause per field.

`decode_patch` and `patch_type` read the request; `patch_object` applies it to the main
resource or its status (``ctx.subresource``). The scale subresource patches its Scale view
with `apply_patch` (`registry/scale.py`).
"""

from __future__ import annotations

import copy

from kubeling.api import errors, schema
from kubeling.api.patch import apply as ssa
from kubeling.api.patch import jsonpatch, merge, strategic
from kubeling.apiserver import negotiation
from kubeling.apiserver.registry.generic import off_loop
from kubeling.apiserver.resources import Served


def patch_type(content_type: str | None, served: Served) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
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
    """Apply a non-apply patch to ``current`` (not modified: each patch function copies what it
    changes); returns the patched object."""
    if ptype == "json":
        return jsonpatch.apply(current, doc)
    if ptype == "merge":
        return merge.apply(current, doc)
    return strategic.apply(current, doc, node, None if crd else schema.get())


def check_options(ptype: str, force: bool | None, ctx) -> None:
    """PatchOptions rules: ``force`` only for apply, and apply needs a field manager."""
    if ptype != "apply" and force is not None:
        raise errors.invalid("PatchOptions", "meta.k8s.io", "", [errors.forbidden(
            "force", "may not be specified for non-apply patch")])
    if ptype == "apply" and not ctx.field_manager:
        raise errors.invalid("PatchOptions", "meta.k8s.io", "", [errors.required(
            "fieldManager", "is required for apply patch")])


async def patch_object(store, served: Served, namespace: str | None, name: str, ptype: str, doc, ctx,
                       force: bool) -> tuple[dict, bool]:
    """Patch the main resource (or its status, per ``ctx.subresource``). Returns (object, created)."""
    res = served.res
    node = served.schema
    schemas = None if res.crd else schema.get()
    want_rv = None
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        want_rv = doc["metadata"].get("resourceVersion")

    async def mutate(current: dict | None) -> dict:
        if ptype == "apply":
            applied = await off_loop(ctx, store.check_body, served, copy.deepcopy(doc), ctx, name=name)
            if not want_rv:
                applied["metadata"].pop("resourceVersion", None)
            if current is not None and want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res.resource, res.group, name, errors.STALE_DETAIL)
            return await off_loop(ctx, ssa.apply, current, applied, ctx.field_manager, force, node, schemas,
                                  res.group_version, ctx.subresource, ignored=store.ignored_fields(served, ctx))
        if current is None:
            raise errors.not_found(res.resource, res.group, name)
        new = await off_loop(ctx, apply_patch, ptype, current, doc, node, res.crd)
        if not isinstance(new, dict):
            raise errors.bad_request("the patch produced a value that is not an object")
        meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        if meta.get("resourceVersion") and meta["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise errors.conflict(res.resource, res.group, name, errors.STALE_DETAIL)
        if not want_rv:
            meta.pop("resourceVersion", None)
        return await off_loop(ctx, store.check_body, served, new, ctx, name=name)

    create_ok = ptype == "apply" and not ctx.subresource
    return await store.guaranteed_update(served, namespace, name, mutate, ctx, create_ok=create_ok,
                                         precondition_rv=want_rv, managed_by_caller=ptype == "apply")
