"""The ``scale`` subresource: an ``autoscaling/v1`` Scale view of ``spec.replicas``.

Built-in workloads scale ``.spec.replicas`` and report ``.status.replicas`` and their selector;
a custom resource scales the paths its CRD names (``specReplicasPath``, ``statusReplicasPath``,
``labelSelectorPath``). A write to the Scale is a write of the main resource's spec, inside the
generic store's compare-and-swap loop; a stale ``metadata.resourceVersion`` is a 409.
"""

from __future__ import annotations

import copy
import dataclasses

from kubeling.api import errors, jsonpath, labels, schema
from kubeling.apiserver.registry.patch import apply_patch
from kubeling.apiserver.registry.rest import Deps


def _get_path(obj: dict, path: str):
    vals = jsonpath.evaluate(path, obj)
    return vals[0] if vals else None


def _set_path(obj: dict, path: str, value) -> None:
    parts = [p for p in path.strip().lstrip(".").split(".") if p]
    cur = obj
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


def _paths(served) -> tuple[str, str, str | None]:
    if served.scale:
        return (served.scale.get("specReplicasPath", ".spec.replicas"),
                served.scale.get("statusReplicasPath", ".status.replicas"),
                served.scale.get("labelSelectorPath"))
    return ".spec.replicas", ".status.replicas", None


def to_scale(served, obj: dict) -> dict:
    spec_p, status_p, sel_p = _paths(served)
    meta = obj["metadata"]
    if sel_p:
        selector = _get_path(obj, sel_p) or ""
    else:
        sel = (obj.get("spec") or {}).get("selector")
        if served.res.resource == "replicationcontrollers":
            selector = labels.format_labels(sel) if sel else ""
        else:
            selector = labels.format_label_selector(sel) if sel else ""
    status = {"replicas": _get_path(obj, status_p) or 0}
    if selector:
        status["selector"] = selector
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                         "resourceVersion": meta.get("resourceVersion"),
                         "creationTimestamp": meta.get("creationTimestamp")},
            "spec": {"replicas": _get_path(obj, spec_p) or 0}, "status": status}


class ScaleREST:
    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def get(self, served, namespace, name, ctx) -> dict:
        return to_scale(served, await self.store.get(served, namespace, name))

    async def put(self, served, namespace, name, body, ctx) -> tuple[dict, bool]:
        if not isinstance(body, dict) or body.get("kind") not in (None, "Scale"):
            raise errors.bad_request("expected a Scale object")
        return await self._write(served, namespace, name, lambda scale: body, ctx)

    async def patch(self, served, namespace, name, ptype, doc, ctx, force) -> tuple[dict, bool]:
        scale_node = schema.get().for_gvk("autoscaling", "v1", "Scale")

        def patched(scale: dict) -> dict:
            if ptype == "apply":
                applied = doc.get("spec") or {}
                if not isinstance(applied, dict):
                    raise errors.bad_request("spec must be an object")
                return {**scale, "spec": {**scale["spec"], **applied}}
            return apply_patch(ptype, scale, doc, scale_node, False)
        return await self._write(served, namespace, name, patched, ctx)

    async def _write(self, served, namespace, name, new_scale_of, ctx) -> tuple[dict, bool]:
        spec_p, _, _ = _paths(served)

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found(served.res.resource, served.res.group, name)
            new_scale = new_scale_of(to_scale(served, current))
            if not isinstance(new_scale, dict):
                raise errors.bad_request("the scale patch must produce an object")
            meta, spec = new_scale.get("metadata") or {}, new_scale.get("spec") or {}
            if not isinstance(meta, dict) or not isinstance(spec, dict):
                raise errors.bad_request('Scale in version "v1" cannot be handled as a Scale: metadata and spec '
                                         'must be objects')
            rv = meta.get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
            replicas = spec.get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("Scale", "autoscaling", name, [errors.invalid_value(
                    "spec.replicas", replicas, "must be greater than or equal to 0")])
            new = copy.deepcopy(current)
            _set_path(new, spec_p, replicas)
            return new

        # The write goes to the main resource's spec.
        obj, _ = await self.store.guaranteed_update(served, namespace, name, mutate,
                                                    dataclasses.replace(ctx, subresource=""))
        return to_scale(served, obj), False
