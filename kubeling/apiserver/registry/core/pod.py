"""Pods (upstream ``pkg/registry/core/pod``) and their subresources.

- ``status`` and ``ephemeralcontainers``: writes change only status (the kubelet's) or the
  ephemeral containers (``kubectl debug``); see `StatusREST`.
- ``binding``: sets ``spec.nodeName`` once and the PodScheduled condition (the scheduler's
  write), refusing a pod that is bound or being deleted.
- ``eviction``: deletes the pod unless its PodDisruptionBudget forbids it (429). As upstream, the
  budget is charged first (``disruptionsAllowed`` - 1, the pod in ``disruptedPods``) with a
  compare-and-swap, so two concurrent evictions cannot both spend the last disruption.
- ``log``, ``exec``, ``attach``, ``portforward``, ``proxy``: served by the node agent (issue 4);
  until a pod is on a node that serves them the API answers with upstream's errors.

Deleting a pod that is bound and running is graceful (``terminationGracePeriodSeconds``, 30 by
default); DELETE answers with the object.
"""

import copy
import dataclasses

from kubeling.api import errors, fields, labels, quantity
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import pod as printers
from kubeling.api.validation import pod as validation
from kubeling.apiserver.registry.generic import Context, now_rfc3339
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.status import StatusREST
from kubeling.apiserver.registry.strategy import Strategy

SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def qos_class(spec: dict) -> str:
    """Guaranteed when every container has equal cpu and memory requests and limits; BestEffort
    when none sets any; Burstable otherwise (upstream's GetPodQOS, simplified to cpu/memory)."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r in req or r in lim:
                any_set = True
            if r not in lim:
                guaranteed = False
            elif r in req and _qty(req[r]) != _qty(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _qty(v):
    try:
        return quantity.parse(str(v))
    except Exception:  # noqa: BLE001 - validation reports bad quantities; here they just differ
        return v


class BindingREST:
    """POST ``pods/<name>/binding`` (and the older ``bindings`` collection)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def create(self, served, namespace, name, body, ctx):
        target = body.get("target") if isinstance(body, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", "", name, [errors.required("target.name")])

        async def mutate(current):
            if current is None:
                raise errors.not_found("pods", "", name)
            if current["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods", "", name, "pod is being deleted, cannot be assigned to a host")
            if current.get("spec", {}).get("nodeName"):
                raise errors.conflict("pods", "", name, f"pod {name} is already assigned to node "
                                      f"\"{current['spec']['nodeName']}\"")
            new = copy.deepcopy(current)
            new["spec"]["nodeName"] = node
            conds = new.setdefault("status", {}).setdefault("conditions", [])
            conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            return new

        # Binding writes spec and status together, so it bypasses the spec/status split.
        await self.store.guaranteed_update(served, namespace, name, mutate,
                                           dataclasses.replace(ctx, subresource="binding"))
        return SUCCESS, 201


class EvictionREST:
    """POST ``pods/<name>/eviction``: an Eviction (policy/v1) with optional deleteOptions."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.lookup = deps.lookup

    async def create(self, served, namespace, name, body, ctx):
        ctx = dataclasses.replace(ctx, subresource="")
        opts = body.get("deleteOptions") or {}
        if not isinstance(opts, dict):
            raise errors.bad_request("deleteOptions must be an object")
        pod = await self.store.get(served, namespace, name)
        pdbs = self.lookup("policy", "v1", "poddisruptionbudgets")
        _, items = await self.store.list_raw(pdbs, namespace)
        pod_labels = pod["metadata"].get("labels") or {}
        matching = [p for p in items if _selects(p, pod_labels)]
        if len(matching) > 1:
            raise errors.internal("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                  "does not support.")
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if matching and not terminal and not ctx.dry_run:
            await self._charge_budget(pdbs, matching[0]["metadata"]["name"], namespace, name, ctx)
        await self.store.delete(served, namespace, name, opts, ctx)
        return SUCCESS, 201

    async def _charge_budget(self, pdbs, pdb_name: str, namespace: str, pod_name: str, ctx) -> None:
        async def mutate(current):
            if current is None:
                raise errors.not_found("poddisruptionbudgets", "policy", pdb_name)
            status = current.get("status") or {}
            if status.get("disruptionsAllowed", 0) < 1:
                raise errors.StatusError(
                    429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={"causes": [{"reason": "DisruptionBudget", "message":
                                         f"The disruption budget {pdb_name} needs {status.get('desiredHealthy', 0)} "
                                         f"healthy pods and has {status.get('currentHealthy', 0)} currently"}]})
            new = copy.deepcopy(current)
            st = new.setdefault("status", {})
            st["disruptionsAllowed"] = st["disruptionsAllowed"] - 1
            st.setdefault("disruptedPods", {})[pod_name] = now_rfc3339()
            return new

        status_ctx = Context(user=ctx.user, groups=ctx.groups, namespace=namespace,
                             field_manager="kube-apiserver", subresource="status")
        await self.store.guaranteed_update(pdbs, namespace, pdb_name, mutate, status_ctx)


def _selects(pdb: dict, pod_labels: dict) -> bool:
    sel = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
    return not sel.empty and sel.matches(pod_labels)


class EphemeralContainersREST:
    """``pods/<name>/ephemeralcontainers`` (``kubectl debug``): GET the pod; PUT and PATCH change
    only ``spec.ephemeralContainers`` (upstream's EphemeralContainersStrategy)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def get(self, served, namespace, name, ctx):
        return await self.store.get(served, namespace, name)

    async def put(self, served, namespace, name, body, ctx):
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        return await self._write(served, namespace, name, lambda current: body, ctx)

    async def patch(self, served, namespace, name, ptype, doc, ctx, force):
        from kubeling.apiserver.registry.patch import apply_patch
        return await self._write(served, namespace, name,
                                 lambda current: apply_patch(ptype, current, doc, served.schema, False), ctx)

    async def _write(self, served, namespace, name, updated_of, ctx):
        async def mutate(current):
            if current is None:
                raise errors.not_found("pods", "", name)
            wanted = updated_of(current)
            spec = wanted.get("spec") if isinstance(wanted, dict) else None
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["ephemeralContainers"] = copy.deepcopy(
                (spec or {}).get("ephemeralContainers") or [])
            if not new["spec"]["ephemeralContainers"]:
                new["spec"].pop("ephemeralContainers")
            return new
        return await self.store.guaranteed_update(served, namespace, name, mutate,
                                                  dataclasses.replace(ctx, subresource="ephemeralcontainers"))


class NodeStreamREST:
    """``log``, ``exec``, ``attach``, ``portforward`` and ``proxy``: answered by the pod's node
    agent. Until one serves them: 400 for an unscheduled pod (upstream's message), else 503."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def connect(self, served, namespace, name, request, info):
        pod_name = info.proxy_name or info.name
        pod = await self.store.get(served, namespace, pod_name)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise errors.bad_request(f"pod {pod_name} does not have a host assigned")
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"the node agent of node {node} does not serve {info.subresource} yet",
                                 details={"name": pod_name, "kind": "pods"})


class PodStrategy(Strategy):
    group, resource, kind = "", "pods", "Pod"
    printer = printers.PRINTER
    field_set = fields.POD
    status_subresource = True
    returns_deleted_object = True
    subresources = {"status": StatusREST, "ephemeralcontainers": EphemeralContainersREST, "binding": BindingREST,
                    "eviction": EvictionREST, "log": NodeStreamREST, "exec": NodeStreamREST,
                    "attach": NodeStreamREST, "portforward": NodeStreamREST, "proxy": NodeStreamREST}

    def initial_status(self, obj):
        return {"phase": "Pending", "qosClass": qos_class(obj.get("spec", {}))}

    def defaults(self, obj):
        defaults.set_object_defaults_pod(obj)

    def validate(self, obj):
        return validation.validate_pod(obj)

    def validate_update(self, obj, old):
        return validation.validate_pod_update(obj, old)

    def grace_period(self, obj, requested):
        spec = obj.get("spec", {})
        phase = obj.get("status", {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(requested, 0)
        return int(spec.get("terminationGracePeriodSeconds", 30) or 0)
