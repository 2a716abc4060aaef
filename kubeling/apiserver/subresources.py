"""Subresources (status, scale, binding, eviction, finalize, node-agent streams) and the
create-only virtual resources (access reviews).

- ``status``: GET returns the object; PUT/PATCH change only ``.status``.
- ``scale``: an ``autoscaling/v1`` Scale view of ``spec.replicas`` (for CRDs, of the paths the
  CRD names); PUT/PATCH of the Scale writes ``spec.replicas`` back.
- ``pods/binding``: sets ``spec.nodeName`` once (the scheduler's write).
- ``pods/eviction``: deletes the pod unless a PodDisruptionBudget forbids it (429).
- ``namespaces/finalize``: PUT replaces ``spec.finalizers``.
- ``pods/log``, ``exec``, ``attach``, ``portforward``: served by the node agent; until a pod is
  on a node that serves them the API answers with upstream's errors.
"""

from __future__ import annotations

import copy

from aiohttp import web

from kubeling.api import errors, jsonpath, labels, schema
from kubeling.apiserver import patching
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.registry import Context, now_rfc3339
from kubeling.apiserver.resources import Served

NODE_STREAMS = ("log", "exec", "attach", "portforward", "proxy")


def _get_path(obj: dict, path: str):
    vals = jsonpath.evaluate(path, obj)
    return vals[0] if vals else None


def _set_path(obj: dict, path: str, value) -> None:
    parts = [p for p in path.strip().lstrip(".").split(".") if p]
    cur = obj
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value


class Subresources:
    def __init__(self, server) -> None:
        self.server = server

    async def handle(self, request: web.Request, info, served: Served) -> web.StreamResponse:
        sub = info.subresource
        if sub == "status":
            return await self._status(request, info, served)
        if sub == "scale":
            return await self._scale(request, info, served)
        if sub == "binding" and info.verb == "create":
            return await self._binding(request, info, served)
        if sub == "eviction" and info.verb == "create":
            return await self._eviction(request, info, served)
        if sub == "finalize" and info.verb == "update":
            return await self._finalize(request, info, served)
        if sub == "ephemeralcontainers":
            return await self._status(request, info, served)
        if sub in NODE_STREAMS:
            return await self._node_stream(request, info, served)
        raise errors.method_not_allowed(info.verb, f"{info.resource}/{sub}")

    async def _status(self, request, info, served) -> web.Response:
        h = self.server.handler
        if info.verb == "get":
            return h.respond(request, served, await self.server.registry.get(served, info.namespace, info.name))
        ctx = h.context(request, info, served)
        if info.verb == "update":
            obj, _ = await self.server.registry.update(served, info.namespace, info.name, await h.body(request), ctx)
            return h.respond(request, served, obj, 200, ctx)
        if info.verb == "patch":
            return await self.server.patcher.patch(request, info, served, ctx)
        raise errors.method_not_allowed(info.verb, f"{info.resource}/status")

    # -- scale ---------------------------------------------------------------------------------

    def _scale_paths(self, served: Served) -> tuple[str, str, str | None]:
        if served.scale:
            return (served.scale.get("specReplicasPath", ".spec.replicas"),
                    served.scale.get("statusReplicasPath", ".status.replicas"),
                    served.scale.get("labelSelectorPath"))
        return ".spec.replicas", ".status.replicas", None

    def _to_scale(self, served: Served, obj: dict) -> dict:
        spec_p, status_p, sel_p = self._scale_paths(served)
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

    async def _scale(self, request, info, served) -> web.Response:
        h, reg = self.server.handler, self.server.registry
        if info.verb == "get":
            obj = await reg.get(served, info.namespace, info.name)
            return h.respond(request, served, self._to_scale(served, obj))
        if info.verb not in ("update", "patch"):
            raise errors.method_not_allowed(info.verb, f"{info.resource}/scale")
        ctx = h.context(request, info, served)
        ctx.subresource = ""  # the write goes to the main resource's spec
        if info.verb == "update":
            body = _object(await h.body(request))
            if not isinstance(body, dict) or body.get("kind") not in (None, "Scale"):
                raise errors.bad_request("expected a Scale object")
        else:
            ptype = patching.patch_type(request, served)
            doc = patching.decode_patch(await request.read(), ptype)
        spec_p, _, _ = self._scale_paths(served)
        scale_node = schema.get().for_gvk("autoscaling", "v1", "Scale")

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found(served.res.resource, served.res.group, info.name)
            scale = self._to_scale(served, current)
            if info.verb == "update":
                new_scale = body
            elif ptype == "apply":
                applied = doc.get("spec") or {}
                if not isinstance(applied, dict):
                    raise errors.bad_request("spec must be an object")
                new_scale = {**scale, "spec": {**scale["spec"], **applied}}
            else:
                new_scale = patching.apply_patch(ptype, scale, doc, scale_node, False)
            if not isinstance(new_scale, dict):
                raise errors.bad_request("the scale patch must produce an object")
            meta, spec = new_scale.get("metadata") or {}, new_scale.get("spec") or {}
            if not isinstance(meta, dict) or not isinstance(spec, dict):
                raise errors.bad_request('Scale in version "v1" cannot be handled as a Scale: metadata and spec '
                                         'must be objects')
            rv = meta.get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(served.res.resource, served.res.group, info.name, errors.STALE_DETAIL)
            replicas = spec.get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("Scale", "autoscaling", info.name, [errors.invalid_value(
                    "spec.replicas", replicas, "must be greater than or equal to 0")])
            new = copy.deepcopy(current)
            _set_path(new, spec_p, replicas)
            return new

        obj, _ = await reg.guaranteed_update(served, info.namespace, info.name, mutate, ctx)
        return h.respond(request, served, self._to_scale(served, obj), 200, ctx)

    # -- pods ----------------------------------------------------------------------------------

    async def _binding(self, request, info, served, body: dict | None = None) -> web.Response:
        h, reg = self.server.handler, self.server.registry
        ctx = h.context(request, info, served)
        ctx.subresource = ""
        body = body if body is not None else _object(await h.body(request))
        target = body.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", "", info.name, [errors.required("target.name")])

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found("pods", "", info.name)
            if current["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods", "", info.name, "pod is being deleted, cannot be assigned to a host")
            if current.get("spec", {}).get("nodeName"):
                raise errors.conflict("pods", "", info.name,
                                      f"pod {info.name} is already assigned to node "
                                      f"\"{current['spec']['nodeName']}\"")
            new = copy.deepcopy(current)
            new["spec"]["nodeName"] = node
            conds = new.setdefault("status", {}).setdefault("conditions", [])
            conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            return new

        # Binding writes spec and status together, so it bypasses the spec/status split.
        ctx.subresource = "binding"
        await reg.guaranteed_update(served, info.namespace, info.name, mutate, ctx)
        return h.respond(request, served, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                           "status": "Success", "code": 201}, 201)

    async def _eviction(self, request, info, served) -> web.Response:
        """Delete a pod unless its PodDisruptionBudget forbids it. As upstream, the budget is
        charged first (``disruptionsAllowed`` - 1, the pod in ``disruptedPods``) with a
        compare-and-swap, so two concurrent evictions cannot both spend the last disruption."""
        h, reg = self.server.handler, self.server.registry
        ctx = h.context(request, info, served)
        ctx.subresource = ""
        body = _object(await h.body(request))
        opts = body.get("deleteOptions") or {}
        if not isinstance(opts, dict):
            raise errors.bad_request("deleteOptions must be an object")
        pod = await reg.get(served, info.namespace, info.name)
        pdbs = self.server.resources.get("policy", "v1", "poddisruptionbudgets")
        _, items = await reg.list_raw(pdbs, info.namespace)
        pod_labels = pod["metadata"].get("labels") or {}
        matching = [p for p in items if _selects(p, pod_labels)]
        if len(matching) > 1:
            raise errors.internal("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                  "does not support.")
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if matching and not terminal and not ctx.dry_run:
            await self._charge_budget(pdbs, matching[0]["metadata"]["name"], info, ctx)
        await reg.delete(served, info.namespace, info.name, opts, ctx)
        return h.respond(request, served, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                           "status": "Success", "code": 201}, 201)

    async def _charge_budget(self, pdbs: Served, name: str, info, ctx) -> None:
        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found("poddisruptionbudgets", "policy", name)
            status = current.get("status") or {}
            if status.get("disruptionsAllowed", 0) < 1:
                raise errors.StatusError(
                    429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={"causes": [{"reason": "DisruptionBudget", "message":
                                         f"The disruption budget {name} needs {status.get('desiredHealthy', 0)} "
                                         f"healthy pods and has {status.get('currentHealthy', 0)} currently"}]})
            new = copy.deepcopy(current)
            st = new.setdefault("status", {})
            st["disruptionsAllowed"] = st["disruptionsAllowed"] - 1
            st.setdefault("disruptedPods", {})[info.name] = now_rfc3339()
            return new

        status_ctx = Context(user=ctx.user, groups=ctx.groups, namespace=info.namespace,
                             field_manager="kube-apiserver", subresource="status")
        await self.server.registry.guaranteed_update(pdbs, info.namespace, name, mutate, status_ctx)

    async def _finalize(self, request, info, served) -> web.Response:
        h, reg = self.server.handler, self.server.registry
        ctx = h.context(request, info, served)
        body = _object(await h.body(request))
        spec = body.get("spec") or {}
        fins = spec.get("finalizers") if isinstance(spec, dict) else None
        if not isinstance(fins or [], list) or not all(isinstance(f, str) for f in fins or []):
            raise errors.invalid("Namespace", "", info.name, [errors.invalid_value(
                "spec.finalizers", fins, "must be a list of finalizer names")])
        fins = fins or []
        ctx.subresource = "finalize"

        async def mutate(current: dict | None) -> dict:
            if current is None:
                raise errors.not_found("namespaces", "", info.name)
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["finalizers"] = list(fins)
            return new

        obj, _ = await reg.guaranteed_update(served, None, info.name, mutate, ctx)
        return h.respond(request, served, obj, 200, ctx)

    async def _node_stream(self, request, info, served) -> web.Response:
        pod = await self.server.registry.get(served, info.namespace, info.name)
        if not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(f"pod {info.name} does not have a host assigned")
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"the node agent of node {pod['spec']['nodeName']} does not serve "
                                 f"{info.subresource} yet")

    # -- virtual resources ---------------------------------------------------------------------

    async def virtual_create(self, request, info, served, ctx) -> web.Response:
        h = self.server.handler
        body = _object(await h.body(request))
        if served.res.resource == "bindings":  # POST .../bindings binds the pod named in the body
            name = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
            if not name:
                raise errors.invalid("Binding", "", "", [errors.required("metadata.name")])
            pods = self.server.resources.get("", "v1", "pods")
            info.name, info.resource = name, "pods"
            return await self._binding(request, info, pods, body)
        user: UserInfo = request["user"]
        out = copy.deepcopy(body)
        out["apiVersion"], out["kind"] = served.res.group_version, served.res.kind
        out.setdefault("metadata", {})["creationTimestamp"] = None
        if served.res.resource in ("selfsubjectaccessreviews", "subjectaccessreviews"):
            spec = out.get("spec") or {}
            if served.res.resource == "subjectaccessreviews":
                user = UserInfo(spec.get("user", ""), spec.get("uid", ""), tuple(spec.get("groups") or []))
            ra = spec.get("resourceAttributes")
            nra = spec.get("nonResourceAttributes")
            if ra:
                attrs = Attributes(user, ra.get("verb", ""), True, "", ra.get("group", ""), ra.get("version", ""),
                                   ra.get("resource", ""), ra.get("subresource", ""), ra.get("namespace", ""),
                                   ra.get("name", ""))
            elif nra:
                attrs = Attributes(user, nra.get("verb", ""), False, nra.get("path", ""))
            else:
                raise errors.invalid(served.res.kind, served.res.group, "", [errors.required(
                    "spec.resourceAttributes", "exactly one of nonResourceAttributes or resourceAttributes must "
                    "be specified")])
            d = self.server.authorizer.authorize(attrs)
            out["status"] = {"allowed": d.allowed}
            if d.reason:
                out["status"]["reason"] = d.reason
            if d.denied:
                out["status"]["denied"] = True
        elif served.res.resource == "selfsubjectrulesreviews":
            admin = "system:masters" in user.groups
            out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}] if admin
                             else [], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}] if admin
                             else [], "incomplete": False}
        elif served.res.resource == "selfsubjectreviews":
            out["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups),
                                          **({"uid": user.uid} if user.uid else {})}}
        return h.respond(request, served, out, 201, ctx)


def _object(body):
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON or YAML object")
    return body


def _selects(pdb: dict, pod_labels: dict) -> bool:
    sel = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
    return not sel.empty and sel.matches(pod_labels)
